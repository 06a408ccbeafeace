//! What can go wrong while reading word vectors, always with the file and the place in it.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use super::Compression;

/// A place in an input file: a line for text formats, a byte offset for word2vec binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// 1-based line number in the (decompressed) text.
    Line(u64),
    /// 0-based byte offset in the (decompressed) file.
    Offset(u64),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Line(line) => write!(f, "line {line}"),
            Location::Offset(offset) => write!(f, "byte offset {offset}"),
        }
    }
}

/// Why a file could not be read as word vectors. Every message starts with the file's path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// The file is missing or cannot be opened.
    #[error("cannot open {}: {source}", .path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// The path names a directory.
    #[error("{} is a directory, expected a word-vector file", .path.display())]
    Directory {
        /// The directory.
        path: PathBuf,
    },
    /// Reading failed part-way.
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// A compressed file is corrupt or cut short.
    #[error("cannot decompress {compression} data in {}: {source}", .path.display())]
    Decompress {
        /// The file.
        path: PathBuf,
        /// Its compression.
        compression: Compression,
        /// What the decoder said.
        source: io::Error,
    },
    /// The file holds no word vectors at all.
    #[error("{} is empty, expected word vectors", .path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// A word2vec header is missing or malformed.
    #[error(
        "{}, line 1: expected a word2vec header `<words> <dimension>` with a dimension of at \
         least 1, found `{found}`",
        .path.display()
    )]
    Header {
        /// The file.
        path: PathBuf,
        /// The first line as found (shortened, escaped).
        found: String,
    },
    /// A word2vec binary header promises more data than the file holds.
    #[error(
        "{}: the header promises {words} words of dimension {dim}, which needs at least {needed} \
         bytes, but only {available} bytes follow it",
        .path.display()
    )]
    TooShort {
        /// The file.
        path: PathBuf,
        /// Words promised.
        words: u64,
        /// Dimension promised.
        dim: usize,
        /// Smallest possible size of that many records.
        needed: u64,
        /// Bytes after the header.
        available: u64,
    },
    /// The header's word count disagrees with the rows found.
    #[error("{}: the header promises {expected} words, found {found}", .path.display())]
    HeaderCount {
        /// The file.
        path: PathBuf,
        /// Words the header promises.
        expected: u64,
        /// Rows found.
        found: u64,
    },
    /// A blank line between rows.
    #[error("{}, line {line}: empty line, expected a word and its values", .path.display())]
    EmptyLine {
        /// The file.
        path: PathBuf,
        /// The blank line.
        line: u64,
    },
    /// A row starts with a separator instead of a word.
    #[error("{}, {at}: empty word, expected a word before the values", .path.display())]
    EmptyWord {
        /// The file.
        path: PathBuf,
        /// Where the row starts.
        at: Location,
    },
    /// The first row of a GloVe file has a word but no values, so there is no dimension.
    #[error("{}, line {line}: expected values after the word `{word}`, found none", .path.display())]
    NoValues {
        /// The file.
        path: PathBuf,
        /// The line.
        line: u64,
        /// The word (shortened, escaped).
        word: String,
    },
    /// A row has a different number of values than the dimension.
    #[error(
        "{}, line {line}: expected {expected} values after the word, found {found}",
        .path.display()
    )]
    Dimension {
        /// The file.
        path: PathBuf,
        /// The line.
        line: u64,
        /// The dimension (from the header or the first row).
        expected: usize,
        /// Values on this line.
        found: usize,
    },
    /// A value is not a number.
    #[error("{}, line {line}: value {index} is `{found}`, expected a number", .path.display())]
    Number {
        /// The file.
        path: PathBuf,
        /// The line.
        line: u64,
        /// 1-based position of the value after the word.
        index: usize,
        /// The token as found (shortened, escaped).
        found: String,
    },
    /// A value is NaN or infinite.
    #[error("{}, {at}: value {index} is {value}, expected a finite number", .path.display())]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// The line, or the value's byte offset in a binary file.
        at: Location,
        /// 1-based position of the value after the word.
        index: usize,
        /// The value.
        value: f32,
    },
    /// A word is not valid UTF-8 and lossy decoding was not asked for.
    #[error(
        "{}, {at}: the word is not valid UTF-8, found `{found}` (lossy decoding would accept it)",
        .path.display()
    )]
    Utf8 {
        /// The file.
        path: PathBuf,
        /// Where the word is.
        at: Location,
        /// The word with the bad bytes escaped.
        found: String,
    },
    /// The same word appears twice.
    #[error("{}, {second}: the word `{word}` repeats the one at {first}", .path.display())]
    Duplicate {
        /// The file.
        path: PathBuf,
        /// The word (shortened, escaped).
        word: String,
        /// Where it first appears.
        first: Location,
        /// Where it appears again.
        second: Location,
    },
    /// A word2vec binary file ends inside a record.
    #[error(
        "{}, byte offset {offset}: the file ends inside word {record}: expected {needed} bytes of \
         {what}, found {available}",
        .path.display()
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Offset of the record.
        offset: u64,
        /// 1-based number of the record.
        record: u64,
        /// What was being read: the word or the vector.
        what: &'static str,
        /// Bytes needed.
        needed: u64,
        /// Bytes left.
        available: u64,
    },
    /// A word2vec binary file goes on after the records its header promises.
    #[error(
        "{}, byte offset {offset}: more data after the last of the words the header promises \
         ({words})",
        .path.display()
    )]
    TrailingData {
        /// The file.
        path: PathBuf,
        /// Where the extra data starts.
        offset: u64,
        /// Words the header promises.
        words: u64,
    },
    /// A word2vec binary word runs on without the space that ends it.
    #[error(
        "{}, byte offset {offset}: no space within {limit} bytes, expected a word followed by a \
         space",
        .path.display()
    )]
    WordTooLong {
        /// The file.
        path: PathBuf,
        /// Offset of the record.
        offset: u64,
        /// The longest word accepted, in bytes.
        limit: usize,
    },
    /// A line of a compressed or piped text is longer than the streaming reader buffers.
    #[error("{}, line {line}: line longer than {limit} bytes", .path.display())]
    LineTooLong {
        /// The file.
        path: PathBuf,
        /// The line.
        line: u64,
        /// The longest line accepted, in bytes.
        limit: usize,
    },
    /// The matrix would not fit in memory.
    #[error(
        "{}: a matrix of {words} words by {dim} values does not fit in memory",
        .path.display()
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Rows.
        words: u64,
        /// Dimension.
        dim: usize,
    },
}

impl InputError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            InputError::Open { path, .. }
            | InputError::Directory { path }
            | InputError::Read { path, .. }
            | InputError::Decompress { path, .. }
            | InputError::Empty { path }
            | InputError::Header { path, .. }
            | InputError::TooShort { path, .. }
            | InputError::HeaderCount { path, .. }
            | InputError::EmptyLine { path, .. }
            | InputError::EmptyWord { path, .. }
            | InputError::NoValues { path, .. }
            | InputError::Dimension { path, .. }
            | InputError::Number { path, .. }
            | InputError::NonFinite { path, .. }
            | InputError::Utf8 { path, .. }
            | InputError::Duplicate { path, .. }
            | InputError::Truncated { path, .. }
            | InputError::TrailingData { path, .. }
            | InputError::WordTooLong { path, .. }
            | InputError::LineTooLong { path, .. }
            | InputError::TooLarge { path, .. } => path,
        }
    }
}

/// The file being read and how, so that low-level failures become errors that name it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ctx<'a> {
    pub path: &'a Path,
    pub compression: Option<Compression>,
}

impl Ctx<'_> {
    pub fn path(&self) -> PathBuf {
        self.path.to_path_buf()
    }

    /// A failed read: from a decoder it is almost always corrupt or cut-short data.
    pub fn io(&self, source: io::Error) -> InputError {
        match self.compression {
            Some(compression) => InputError::Decompress {
                path: self.path(),
                compression,
                source,
            },
            None => InputError::Read {
                path: self.path(),
                source,
            },
        }
    }

    pub fn too_large(&self, words: u64, dim: usize) -> InputError {
        InputError::TooLarge {
            path: self.path(),
            words,
            dim,
        }
    }
}

/// Longest excerpt of input quoted in a message, in characters.
const EXCERPT_CHARS: usize = 40;

/// Input bytes made printable for a message: lossy UTF-8, escaped, cut to a readable length.
pub(super) fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == EXCERPT_CHARS {
            out.push('…');
            break;
        }
        out.extend(c.escape_debug());
    }
    out
}

/// A word with its invalid UTF-8 bytes shown as `\xNN`, so the user can find it.
pub(super) fn escape_invalid_utf8(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
        if out.chars().count() > EXCERPT_CHARS {
            out.push('…');
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_escapes_and_shortens() {
        assert_eq!(excerpt(b"a\tb"), "a\\tb");
        let long = excerpt(&[b'x'; 100]);
        assert_eq!(long.chars().count(), EXCERPT_CHARS + 1);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn invalid_bytes_are_shown_in_hex() {
        assert_eq!(escape_invalid_utf8(b"ab\xffc"), "ab\\xffc");
    }

    #[test]
    fn locations_read_naturally() {
        assert_eq!(Location::Line(3).to_string(), "line 3");
        assert_eq!(Location::Offset(17).to_string(), "byte offset 17");
    }
}
