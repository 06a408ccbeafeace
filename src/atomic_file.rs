//! Writing a file so that a failure or a crash leaves either the old file or the complete new
//! one, never a partial one: every output of kdcompress, the `.kdz` included, is written here.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

/// Why [`write_atomically`] failed; the caller names the file in its own error.
#[derive(Debug)]
pub(crate) enum Failure<E> {
    /// The target exists and overwriting was not asked for (also when it appeared meanwhile).
    Exists,
    /// The operating system refused `action` (worded to follow "cannot").
    Io {
        action: &'static str,
        source: io::Error,
    },
    /// `fill` failed.
    Fill(E),
}

/// Writes through a temporary file beside `path` that replaces `path` only once `fill`
/// succeeded and the data reached the disk; without `overwrite`, an existing `path` (even one
/// created meanwhile) is left alone.
pub(crate) fn write_atomically<E>(
    path: &Path,
    overwrite: bool,
    fill: impl FnOnce(&mut BufWriter<&File>) -> Result<(), E>,
) -> Result<(), Failure<E>> {
    let io = |action: &'static str| move |source| Failure::Io { action, source };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    // tempfile makes files private (0600); an output is an ordinary file and gets what any new
    // file gets, 0666 less the umask.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let tmp = builder
        .tempfile_in(dir)
        .map_err(io("create a temporary file beside"))?;
    {
        let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file());
        fill(&mut w).map_err(Failure::Fill)?;
        w.flush().map_err(io("write"))?;
    }
    tmp.as_file().sync_all().map_err(io("flush to disk"))?;
    let persisted = if overwrite {
        tmp.persist(path)
    } else {
        tmp.persist_noclobber(path)
    };
    persisted.map_err(|e| match e.error.kind() {
        io::ErrorKind::AlreadyExists => Failure::Exists,
        _ => io("move the finished temporary file to")(e.error),
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_only_when_asked_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        let write = |overwrite, text: &'static str| {
            write_atomically(&path, overwrite, |w| w.write_all(text.as_bytes()))
        };
        write(false, "one").unwrap();
        assert!(matches!(write(false, "two"), Err(Failure::Exists)));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one");
        let failed = write_atomically(&path, true, |w| {
            w.write_all(b"half").map_err(|_| "cannot write")?;
            Err("no more")
        });
        assert!(matches!(failed, Err(Failure::Fill("no more"))));
        write(true, "three").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
        let missing = dir.path().join("no/such/dir/out.txt");
        let err = write_atomically(&missing, true, |_| Ok::<(), io::Error>(()));
        assert!(matches!(
            err,
            Err(Failure::Io {
                action: "create a temporary file beside",
                ..
            })
        ));
    }
}
