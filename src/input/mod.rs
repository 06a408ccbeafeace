//! Reading pretrained word vectors: GloVe text, word2vec text and binary, fastText `.vec`, each
//! optionally gzip- or zstd-compressed, into [`Embeddings`].
//!
//! The format is recognised from the content, never from the file name (see [`detect`]).
//! Plain files are read through memory maps, a window at a time, and parsed on all cores
//! straight into one matrix allocated at its final size: reading takes the matrix and the
//! vocabulary in memory and little more. Compressed files and pipes cannot be mapped; they are
//! decompressed in blocks of whole lines that are parsed in parallel as they arrive.
//!
//! Every malformed input gives an [`InputError`] naming the file and the line (or, in a binary
//! file, the byte offset) and what was expected there.
//!
//! ```
//! use kdcompress::input::{read, Format, ReadOptions};
//!
//! let loaded = read("fixtures/glove.6B.50d.head1k.w2v.bin".as_ref(), &ReadOptions::default())?;
//! assert_eq!(loaded.format, Format::Word2vecBinary);
//! assert_eq!(loaded.embeddings.len(), 1000);
//! assert_eq!(loaded.embeddings.dim(), 50);
//! assert_eq!(loaded.embeddings.vocab().word(0), Some("the"));
//! # Ok::<(), kdcompress::input::InputError>(())
//! ```
#![deny(unsafe_code)]

mod binary;
mod error;
mod float;
mod map;
mod repeats;
mod sniff;
mod stream;
mod text;

use std::fmt;
use std::fs::File;
use std::path::Path;

pub use error::{InputError, Location};

use crate::compressed::Source;
use crate::embeddings::Embeddings;
use crate::vocab::Vocab;
use error::{Ctx, excerpt};

/// A word-vector file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Format {
    /// GloVe text: one `word v1 ... vd` line per word, no header.
    Glove,
    /// word2vec text, also fastText `.vec`: a `words dim` header line, then GloVe-style lines.
    #[value(alias = "vec", alias = "fasttext", alias = "w2v-text")]
    Word2vecText,
    /// word2vec binary: a `words dim` header line, then per word `word<space>`, `dim`
    /// little-endian f32 and an optional newline.
    #[value(alias = "bin", alias = "w2v-bin")]
    Word2vecBinary,
}

impl Format {
    /// The name used on the command line and in [`Source::format`].
    pub fn name(self) -> &'static str {
        match self {
            Format::Glove => "glove",
            Format::Word2vecText => "word2vec-text",
            Format::Word2vecBinary => "word2vec-binary",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A compression wrapped around the format, recognised by its magic number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// gzip (`.gz`), including concatenated members as written by `pigz` and `bgzip`.
    Gzip,
    /// Zstandard (`.zst`).
    Zstd,
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        })
    }
}

/// What to do when a word occurs twice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DuplicatePolicy {
    /// Refuse the file, naming both places.
    #[default]
    Error,
    /// Keep the first occurrence and drop the later rows.
    KeepFirst,
}

/// How to read a file. The default detects the format and reads every word strictly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// The format, overriding detection.
    pub format: Option<Format>,
    /// Keep only the first this many rows and stop parsing after them. With
    /// [`DuplicatePolicy::KeepFirst`], duplicates among them are then dropped, so fewer words
    /// may remain. `Some(0)` reads just enough to learn the dimension.
    pub max_words: Option<usize>,
    /// What to do with repeated words.
    pub duplicates: DuplicatePolicy,
    /// Decode invalid UTF-8 in words with U+FFFD instead of failing (word2vec binaries from the
    /// wild often cut multi-byte characters).
    pub lossy_utf8: bool,
}

/// Word vectors read from a file, with what is known about the file.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The vocabulary and matrix.
    pub embeddings: Embeddings,
    /// The format read.
    pub format: Format,
    /// The compression around it, if any.
    pub compression: Option<Compression>,
    /// Name, size, checksum (CRC-32 of the file as stored) and format of the file.
    pub source: Source,
    /// Rows dropped as repeats under [`DuplicatePolicy::KeepFirst`].
    pub dropped_duplicates: usize,
}

/// What [`detect`] finds out about a file without reading it all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detected {
    /// The format.
    pub format: Format,
    /// The compression, if any.
    pub compression: Option<Compression>,
    /// The header's `(words, dim)`, for word2vec formats.
    pub header: Option<(u64, usize)>,
}

/// Bytes mapped at a time when reading plain text: large enough that a window costs far more
/// to parse than to map, small enough that the mapped file adds little to the resident memory.
const TEXT_WINDOW: u64 = 2 << 20;

/// Reads the word vectors in `path`.
pub fn read(path: &Path, opts: &ReadOptions) -> Result<Loaded, InputError> {
    read_with_window(path, opts, TEXT_WINDOW)
}

/// Recognises the format and compression of `path` from its first bytes.
pub fn detect(path: &Path) -> Result<Detected, InputError> {
    let mut opened = stream::open(open(path)?, path)?;
    let compression = opened.compression;
    let ctx = Ctx { path, compression };
    let (head, complete) = opened.prefix(&ctx)?;
    if head.iter().all(|&b| text::is_space(b)) {
        return Err(InputError::Empty { path: ctx.path() });
    }
    let layout = sniff::sniff(&head, complete, None, &ctx)?;
    Ok(Detected {
        format: layout.format,
        compression,
        header: layout.header.map(|h| (h.words, h.dim)),
    })
}

/// Opens `path` for reading, refusing directories with an error that says so.
fn open(path: &Path) -> Result<File, InputError> {
    let meta = std::fs::metadata(path).map_err(|source| InputError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.is_dir() {
        return Err(InputError::Directory {
            path: path.to_path_buf(),
        });
    }
    File::open(path).map_err(|source| InputError::Open {
        path: path.to_path_buf(),
        source,
    })
}

/// [`read`] with the text window as a parameter, so tests can make every chunk boundary fall
/// somewhere awkward.
fn read_with_window(path: &Path, opts: &ReadOptions, window: u64) -> Result<Loaded, InputError> {
    let file = open(path)?;
    let meta = file.metadata().map_err(|source| InputError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let plain = Ctx {
        path,
        compression: None,
    };
    // Size 0 is an empty file, or a /proc-style file whose size is not known up front: either
    // way the stream reader finds out by reading.
    let len = meta.len();
    let head_len = len.min(sniff::SNIFF_BYTES as u64) as usize;
    // Some file systems cannot map files; those are read as streams like pipes.
    let head = if meta.is_file() && len > 0 {
        map::map_range(&file, 0, head_len).ok()
    } else {
        None
    };
    let (parsed, format, compression, size, crc) = if let Some(head) = head {
        if Compression::from_magic(&head).is_some() {
            drop(head);
            let s = stream::read(file, path, opts)?;
            (s.parsed, s.format, s.compression, s.size, s.crc)
        } else {
            let layout = sniff::sniff(&head, head_len as u64 == len, opts.format, &plain)?;
            drop(head);
            let (parsed, crc) = match layout.format {
                Format::Word2vecBinary => binary::read_mapped(&file, len, &plain, &layout, opts)?,
                Format::Glove | Format::Word2vecText => {
                    text::read_mapped(&file, len, &plain, &layout, opts, window)?
                }
            };
            (parsed, layout.format, None, len, crc)
        }
    } else {
        // Pipes, devices, files of unknown size and files that cannot be mapped: read once, as
        // a stream.
        let s = stream::read(file, path, opts)?;
        (s.parsed, s.format, s.compression, s.size, s.crc)
    };
    let ctx = Ctx { path, compression };
    let (embeddings, dropped_duplicates) = assemble(parsed, opts.duplicates, &ctx)?;
    let file_name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    Ok(Loaded {
        embeddings,
        format,
        compression,
        source: Source {
            file_name,
            file_size: size,
            hash: format!("{crc:08x}"),
            hash_algorithm: "crc32".to_string(),
            format: format.name().to_string(),
        },
        dropped_duplicates,
    })
}

/// Rows as read, before duplicates are dealt with.
#[derive(Debug)]
pub(super) struct Parsed {
    words: Vec<String>,
    matrix: Vec<f32>,
    dim: usize,
    rows: Rows,
}

/// How to name where a row came from.
#[derive(Debug)]
pub(super) enum Rows {
    /// Row `i` is on line `first + i`: text refuses blank lines between rows.
    Lines { first: u64 },
    /// Row `i` starts at `offsets[i]`.
    Offsets(Vec<u64>),
}

impl Rows {
    fn locate(&self, row: usize) -> Location {
        match self {
            Rows::Lines { first } => Location::Line(first + row as u64),
            Rows::Offsets(offsets) => Location::Offset(offsets.get(row).copied().unwrap_or(0)),
        }
    }
}

/// Turns parsed rows into embeddings, refusing or dropping repeated words.
fn assemble(
    parsed: Parsed,
    policy: DuplicatePolicy,
    ctx: &Ctx<'_>,
) -> Result<(Embeddings, usize), InputError> {
    let Parsed {
        mut words,
        mut matrix,
        dim,
        rows,
        ..
    } = parsed;
    let repeats = repeats::repeated_rows(&words);
    if let (DuplicatePolicy::Error, Some(&(second, first))) = (policy, repeats.first()) {
        return Err(InputError::Duplicate {
            path: ctx.path(),
            word: excerpt(words[second].as_bytes()),
            first: rows.locate(first),
            second: rows.locate(second),
        });
    }
    let repeats: Vec<usize> = repeats.into_iter().map(|(row, _)| row).collect();
    if !repeats.is_empty() {
        drop_rows(&mut words, &mut matrix, dim, &repeats);
    }
    let vocab = Vocab::new(words).map_err(|d| InputError::Duplicate {
        path: ctx.path(),
        word: String::new(),
        first: rows.locate(d.first),
        second: rows.locate(d.second),
    })?;
    Ok((Embeddings::new(vocab, dim, matrix), repeats.len()))
}

/// Removes the rows listed in `drop` (ascending) in place, keeping the others in order.
fn drop_rows(words: &mut Vec<String>, matrix: &mut Vec<f32>, dim: usize, drop: &[usize]) {
    let mut next_drop = drop.iter().copied().peekable();
    let mut kept = 0;
    for row in 0..words.len() {
        if next_drop.peek() == Some(&row) {
            next_drop.next();
            continue;
        }
        if kept != row {
            words.swap(kept, row);
            matrix.copy_within(row * dim..(row + 1) * dim, kept * dim);
        }
        kept += 1;
    }
    words.truncate(kept);
    matrix.truncate(kept * dim);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    #[test]
    fn drop_rows_keeps_order() {
        let mut w: Vec<String> = ["a", "b", "a", "c", "b"].map(String::from).to_vec();
        let mut m = vec![0.0, 1.0, 2.0, 3.0, 4.0];
        drop_rows(&mut w, &mut m, 1, &[2, 4]);
        assert_eq!(w, ["a", "b", "c"]);
        assert_eq!(m, [0.0, 1.0, 3.0]);
    }

    #[test]
    fn every_window_size_reads_the_same() {
        let text = "3 2\nthe 0.1 0.2\nof -1 2e-3 \r\nand 5 6\n\n";
        let f = write(text.as_bytes());
        let want = read(f.path(), &ReadOptions::default()).unwrap();
        assert_eq!(want.embeddings.len(), 3);
        for window in 1..=text.len() as u64 {
            let got = read_with_window(f.path(), &ReadOptions::default(), window).unwrap();
            assert_eq!(got.embeddings, want.embeddings, "window {window}");
            assert_eq!(got.source, want.source, "window {window}");
        }
    }

    #[test]
    fn errors_name_the_same_line_for_any_window() {
        let text = "a 1 2\nb 3 4\nc 5 6\nd 7\ne 8 9\n";
        let f = write(text.as_bytes());
        for window in 1..=text.len() as u64 {
            let e = read_with_window(f.path(), &ReadOptions::default(), window).unwrap_err();
            assert!(
                matches!(
                    e,
                    InputError::Dimension {
                        line: 4,
                        expected: 2,
                        found: 1,
                        ..
                    }
                ),
                "window {window}: {e}"
            );
        }
    }

    #[test]
    fn max_words_for_any_window() {
        let text = "a 1\nb 2\nc 3\nd x\n";
        let f = write(text.as_bytes());
        let opts = ReadOptions {
            max_words: Some(3),
            ..ReadOptions::default()
        };
        for window in 1..=text.len() as u64 {
            let got = read_with_window(f.path(), &opts, window).unwrap();
            assert_eq!(
                got.embeddings.vocab().words().collect::<Vec<_>>(),
                ["a", "b", "c"]
            );
        }
    }

    #[test]
    fn format_names_match_the_command_line() {
        use clap::ValueEnum;
        for f in Format::value_variants() {
            assert_eq!(f.to_possible_value().unwrap().get_name(), f.name());
        }
    }
}
