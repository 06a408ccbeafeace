//! Options for reading the input vectors, shared by every command that reads them.

use kdcompress::input::{DuplicatePolicy, Format, ReadOptions};

/// How to read the input vectors (flatten into a command with `#[command(flatten)]`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct InputArgs {
    /// Input format; detected from the content when absent (never from the file name).
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<Format>,
    /// Read only the first N words (the rest of the file is not parsed).
    #[arg(long, value_name = "N", value_parser = parse_max_words)]
    pub max_words: Option<usize>,
    /// When a word occurs twice, keep its first vector instead of failing.
    #[arg(long)]
    pub keep_first_duplicate: bool,
    /// Replace invalid UTF-8 in words with U+FFFD instead of failing.
    #[arg(long)]
    pub lossy_utf8: bool,
}

impl InputArgs {
    /// The library's reading options for these arguments.
    pub fn to_options(&self) -> ReadOptions {
        ReadOptions {
            format: self.format,
            max_words: self.max_words,
            duplicates: if self.keep_first_duplicate {
                DuplicatePolicy::KeepFirst
            } else {
                DuplicatePolicy::Error
            },
            lossy_utf8: self.lossy_utf8,
        }
    }
}

/// A word count of at least 1: zero words cannot be compressed.
fn parse_max_words(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_string()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Debug, Parser)]
    struct Probe {
        #[command(flatten)]
        input: InputArgs,
    }

    #[test]
    fn verify_args() {
        Probe::command().debug_assert();
    }

    #[test]
    fn flags_become_options() {
        let p = Probe::try_parse_from([
            "x",
            "--format",
            "vec",
            "--max-words",
            "10",
            "--keep-first-duplicate",
            "--lossy-utf8",
        ])
        .unwrap();
        assert_eq!(
            p.input.to_options(),
            ReadOptions {
                format: Some(Format::Word2vecText),
                max_words: Some(10),
                duplicates: DuplicatePolicy::KeepFirst,
                lossy_utf8: true,
            }
        );
        let p = Probe::try_parse_from(["x"]).unwrap();
        assert_eq!(p.input.to_options(), ReadOptions::default());
    }

    #[test]
    fn format_names_and_aliases() {
        for (name, format) in [
            ("glove", Format::Glove),
            ("word2vec-text", Format::Word2vecText),
            ("fasttext", Format::Word2vecText),
            ("word2vec-binary", Format::Word2vecBinary),
            ("bin", Format::Word2vecBinary),
        ] {
            let p = Probe::try_parse_from(["x", "--format", name]).unwrap();
            assert_eq!(p.input.format, Some(format), "{name}");
        }
        assert!(Probe::try_parse_from(["x", "--format", "csv"]).is_err());
        assert!(Probe::try_parse_from(["x", "--max-words", "0"]).is_err());
    }
}
