//! The one rule for every file a command writes, checked before any work starts:
//! - an output is never one of the command's inputs, whatever `--force` says, compared as files
//!   (device and inode after following links), not as path strings;
//! - an existing output is replaced only with `--force`;
//! - two outputs of one command are never the same file.

use std::path::Path;

use anyhow::bail;

/// What `--force` says, stated once for every command's help.
pub const FORCE_HELP: &str = "Replace output files that already exist (an input is never replaced)";

/// Refuses `outputs` (each `Some` path) that would destroy one of `inputs` or, without `force`,
/// replace an existing file.
pub fn check(
    outputs: &[Option<&Path>],
    inputs: &[Option<&Path>],
    force: bool,
) -> anyhow::Result<()> {
    let outputs: Vec<&Path> = outputs.iter().flatten().copied().collect();
    for (i, out) in outputs.iter().enumerate() {
        for input in inputs.iter().flatten() {
            // A path that does not exist yet cannot be the input.
            if same_file::is_same_file(out, input).unwrap_or(false) {
                bail!(
                    "{}: this output is the input file {}; refusing to write over it \
                     (choose another output path)",
                    out.display(),
                    input.display()
                );
            }
        }
        for other in &outputs[..i] {
            if out == other || same_file::is_same_file(out, other).unwrap_or(false) {
                bail!(
                    "{}: two outputs of this command name the same file ({})",
                    out.display(),
                    other.display()
                );
            }
        }
        // `symlink_metadata`: a dangling link is an existing file too.
        if !force && out.symlink_metadata().is_ok() {
            bail!(
                "{}: the file already exists; pass --force to overwrite it",
                out.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(r: anyhow::Result<()>) -> String {
        format!("{:#}", r.unwrap_err())
    }

    #[test]
    fn an_input_is_never_an_output_even_through_links_or_with_force() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("vectors.txt");
        std::fs::write(&input, "a 1 2\n").unwrap();
        let link = dir.path().join("link.txt");
        std::os::unix::fs::symlink(&input, &link).unwrap();
        let relative = dir.path().join(".").join("vectors.txt");
        for out in [&input, &link, &relative] {
            for force in [false, true] {
                let m = message(check(&[Some(out)], &[Some(&input)], force));
                assert!(m.contains("is the input file"), "{m}");
                // Named through the link, the input is still recognised.
                let m = message(check(&[Some(&input)], &[Some(out)], force));
                assert!(m.contains("is the input file"), "{m}");
            }
        }
        assert_eq!(std::fs::read_to_string(&input).unwrap(), "a 1 2\n");
    }

    #[test]
    fn existing_outputs_need_force_and_new_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.txt");
        std::fs::write(&input, "x").unwrap();
        let existing = dir.path().join("old.kdz");
        std::fs::write(&existing, "y").unwrap();
        let fresh = dir.path().join("new.kdz");
        let m = message(check(&[Some(&existing)], &[Some(&input)], false));
        assert!(m.contains("already exists; pass --force"), "{m}");
        check(&[Some(&existing)], &[Some(&input)], true).unwrap();
        check(&[Some(&fresh), None], &[Some(&input), None], false).unwrap();
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        let m = message(check(&[Some(&dangling)], &[Some(&input)], false));
        assert!(m.contains("already exists"), "{m}");
    }

    #[test]
    fn two_outputs_may_not_be_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.txt");
        let m = message(check(&[Some(&a), Some(&a)], &[], true));
        assert!(m.contains("same file"), "{m}");
    }
}
