//! Everything that can go wrong reading or writing a `.kdz`, each naming the file and where.

use std::io;
use std::path::PathBuf;

use crate::composer::ComposerError;

use super::spec::{Codec, MAJOR, MINOR, SectionKind};

/// A `.kdz` that cannot be read or written. Every message starts with the file's path.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The operating system refused an operation on the file.
    #[error("{path}: cannot {action}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done, e.g. `open for reading`.
        action: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The output exists and replacing it was not asked for.
    #[error("{path}: the file already exists; pass --force to overwrite it")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// The file ends before something it declares.
    #[error("{path}: file is truncated: {what} needs {needed} bytes but the file has {len}")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// What did not fit.
        what: &'static str,
        /// Bytes that would be needed.
        needed: u64,
        /// Bytes present.
        len: u64,
    },
    /// Bytes follow the end the header declares.
    #[error(
        "{path}: {extra} unexpected bytes after the declared end of the file at offset {declared}"
    )]
    TrailingBytes {
        /// The file.
        path: PathBuf,
        /// Declared length.
        declared: u64,
        /// Bytes beyond it.
        extra: u64,
    },
    /// The first eight bytes are not the `.kdz` magic.
    #[error(
        "{path}: not a .kdz file: magic bytes are {found:02x?}, expected {expected:02x?}{hint}"
    )]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The bytes found.
        found: Vec<u8>,
        /// The magic.
        expected: [u8; 8],
        /// A likely cause, or empty.
        hint: &'static str,
    },
    /// The file's major version is not the one this reader knows.
    #[error(
        "{path}: .kdz format version {major}.{minor} needs a reader for major version {major}; \
         this kdcompress reads version {MAJOR}.x"
    )]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Major version in the file.
        major: u16,
        /// Minor version in the file.
        minor: u16,
    },
    /// The header checksum does not match the header bytes.
    #[error(
        "{path}: header (bytes 0..64) is corrupt: checksum {stored:08x} stored, {computed:08x} computed"
    )]
    HeaderChecksum {
        /// The file.
        path: PathBuf,
        /// Checksum in the file.
        stored: u32,
        /// Checksum of the bytes.
        computed: u32,
    },
    /// The section count is zero or above the cap.
    #[error("{path}: header declares {count} sections; a .kdz has 1 to {max}")]
    SectionCount {
        /// The file.
        path: PathBuf,
        /// Count in the header.
        count: u32,
        /// Largest accepted.
        max: u32,
    },
    /// The section table checksum does not match the table bytes.
    #[error(
        "{path}: section table at offset {offset} is corrupt: checksum {stored:08x} stored, {computed:08x} computed"
    )]
    TableChecksum {
        /// The file.
        path: PathBuf,
        /// Where the table starts.
        offset: u64,
        /// Checksum in the header.
        stored: u32,
        /// Checksum of the bytes.
        computed: u32,
    },
    /// A section's byte range reaches past the end of the file.
    #[error(
        "{path}: section {index} ({kind}) at offset {offset} with {len} bytes reaches past the end of the file ({file_len} bytes)"
    )]
    SectionOutOfBounds {
        /// The file.
        path: PathBuf,
        /// Position in the section table.
        index: usize,
        /// Section kind.
        kind: SectionKind,
        /// Declared offset.
        offset: u64,
        /// Declared stored length.
        len: u64,
        /// File length.
        file_len: u64,
    },
    /// A section starts before the previous one (or the table) ends.
    #[error(
        "{path}: section {index} ({kind}) at offset {offset} overlaps what precedes it, which ends at {previous_end}"
    )]
    SectionOverlap {
        /// The file.
        path: PathBuf,
        /// Position in the section table.
        index: usize,
        /// Section kind.
        kind: SectionKind,
        /// Declared offset.
        offset: u64,
        /// End of the previous section or of the table.
        previous_end: u64,
    },
    /// A section does not start at the next 64-byte boundary after what precedes it.
    #[error(
        "{path}: section {index} ({kind}) at offset {offset} should start at {expected}, the next 64-byte boundary (misaligned, or a hole)"
    )]
    SectionPlacement {
        /// The file.
        path: PathBuf,
        /// Position in the section table.
        index: usize,
        /// Section kind.
        kind: SectionKind,
        /// Declared offset.
        offset: u64,
        /// Where it must start.
        expected: u64,
    },
    /// The last section does not end where the header says the file ends.
    #[error(
        "{path}: sections end at offset {sections_end} but the header declares {declared} bytes"
    )]
    FileLength {
        /// The file.
        path: PathBuf,
        /// End of the last section.
        sections_end: u64,
        /// `file_len` in the header.
        declared: u64,
    },
    /// Alignment padding that must be zero is not.
    #[error("{path}: padding byte at offset {offset} is not zero")]
    NonZeroPadding {
        /// The file.
        path: PathBuf,
        /// Offset of the first non-zero padding byte.
        offset: u64,
    },
    /// A section's stored bytes do not match their checksum.
    #[error(
        "{path}: {kind} section at offset {offset} is corrupt: checksum {stored:08x} stored, {computed:08x} computed"
    )]
    SectionChecksum {
        /// The file.
        path: PathBuf,
        /// Section kind.
        kind: SectionKind,
        /// Section offset.
        offset: u64,
        /// Checksum in the table.
        stored: u32,
        /// Checksum of the bytes.
        computed: u32,
    },
    /// A known section appears twice.
    #[error("{path}: second {kind} section at offset {offset}; each kind may appear once")]
    DuplicateSection {
        /// The file.
        path: PathBuf,
        /// Section kind.
        kind: SectionKind,
        /// Offset of the second one.
        offset: u64,
    },
    /// A required section is absent.
    #[error("{path}: the required {kind} section is missing")]
    MissingSection {
        /// The file.
        path: PathBuf,
        /// Section kind.
        kind: SectionKind,
    },
    /// A section this reader does not know is marked required.
    #[error(
        "{path}: section {index} at offset {offset} has kind {kind}, which this kdcompress does not know \
         and the file (format {major}.{minor}) marks as required; a newer kdcompress is needed"
    )]
    UnknownRequiredSection {
        /// The file.
        path: PathBuf,
        /// Position in the section table.
        index: usize,
        /// The unknown kind number.
        kind: u32,
        /// Section offset.
        offset: u64,
        /// File major version.
        major: u16,
        /// File minor version.
        minor: u16,
    },
    /// The model section names a composer kind this reader does not know.
    #[error(
        "{path}: the model section (offset {offset}) uses composer kind {kind}, which this kdcompress \
         does not know (it reads kinds 0 to {max_known} of format {MAJOR}.{MINOR}; the file is format \
         {major}.{minor}); a newer kdcompress is needed"
    )]
    UnknownComposerKind {
        /// The file.
        path: PathBuf,
        /// Model section offset.
        offset: u64,
        /// The unknown kind number.
        kind: u32,
        /// The highest kind number this reader knows.
        max_known: u32,
        /// File major version.
        major: u16,
        /// File minor version.
        minor: u16,
    },
    /// A tensor is stored in a dtype this reader does not know.
    #[error(
        "{path}: tensors section at offset {offset}, byte {at} of its content: tensor {name:?} is \
         stored as dtype {dtype}, which this kdcompress does not know (it reads dtypes 1 (f32) and \
         2 (f16) of format {MAJOR}.{MINOR}; the file is format {major}.{minor}); a newer \
         kdcompress is needed"
    )]
    UnknownDtype {
        /// The file.
        path: PathBuf,
        /// Tensors section offset.
        offset: u64,
        /// Position of the dtype byte within the section.
        at: u64,
        /// The tensor's name.
        name: String,
        /// The unknown dtype code.
        dtype: u8,
        /// File major version.
        major: u16,
        /// File minor version.
        minor: u16,
    },
    /// A section's codec is unknown or not allowed for its kind.
    #[error("{path}: {kind} section at offset {offset} uses codec {codec}, which {reason}")]
    BadCodec {
        /// The file.
        path: PathBuf,
        /// Section kind.
        kind: SectionKind,
        /// Section offset.
        offset: u64,
        /// The codec.
        codec: Codec,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A section does not decode to its declared raw length.
    #[error(
        "{path}: {kind} section at offset {offset} decodes to {actual} bytes, the table declares {declared}"
    )]
    RawLength {
        /// The file.
        path: PathBuf,
        /// Section kind.
        kind: SectionKind,
        /// Section offset.
        offset: u64,
        /// Declared raw length.
        declared: u64,
        /// Length found (for zstd: up to one byte beyond the declared length).
        actual: u64,
    },
    /// A zstd section cannot be decompressed.
    #[error("{path}: {kind} section at offset {offset} is not a valid zstd stream")]
    Decompress {
        /// The file.
        path: PathBuf,
        /// Section kind.
        kind: SectionKind,
        /// Section offset.
        offset: u64,
        /// The decoder's complaint.
        #[source]
        source: io::Error,
    },
    /// A section's content does not follow its layout.
    #[error(
        "{path}: {kind} section at offset {offset} is malformed at byte {at} of its content: {reason}"
    )]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Section kind.
        kind: SectionKind,
        /// Section offset.
        offset: u64,
        /// Position within the decoded content.
        at: u64,
        /// What is wrong.
        reason: String,
    },
    /// A section is not the length the model section implies.
    #[error(
        "{path}: {kind} section at offset {offset} holds {found} bytes; the model implies {expected}"
    )]
    SectionLength {
        /// The file.
        path: PathBuf,
        /// Section kind.
        kind: SectionKind,
        /// Section offset.
        offset: u64,
        /// Implied length.
        expected: u64,
        /// Actual length.
        found: u64,
    },
    /// The vocabulary does not hold N words.
    #[error(
        "{path}: vocabulary section at offset {offset} holds {words} words but the codes are for N = {n} words"
    )]
    VocabularyCount {
        /// The file.
        path: PathBuf,
        /// Vocabulary section offset.
        offset: u64,
        /// Words in the vocabulary.
        words: u64,
        /// N from the model section.
        n: u64,
    },
    /// A packed code is not below K, or a row's padding bits are set.
    #[error(
        "{path}: codes section at offset {offset}: row {row}, code {dim}: {value} is not below K = {k}"
    )]
    CodeOutOfRange {
        /// The file.
        path: PathBuf,
        /// Codes section offset.
        offset: u64,
        /// Word row.
        row: u64,
        /// Code position in the row.
        dim: usize,
        /// The value found.
        value: u32,
        /// K.
        k: u32,
    },
    /// A packed row's padding bits are not zero.
    #[error("{path}: codes section at offset {offset}: row {row} has non-zero padding bits")]
    RowPadding {
        /// The file.
        path: PathBuf,
        /// Codes section offset.
        offset: u64,
        /// Word row.
        row: u64,
    },
    /// The tensors do not fit the composer the model section describes.
    #[error("{path}: tensors section at offset {offset} does not fit the model")]
    Composer {
        /// The file.
        path: PathBuf,
        /// Tensors section offset.
        offset: u64,
        /// The mismatch.
        #[source]
        source: ComposerError,
    },
    /// The value to write has parts that disagree, or cannot be represented.
    #[error("cannot write {path}: {reason}")]
    Unwritable {
        /// The target file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A caller's output buffer has the wrong size.
    #[error("{path}: decoding needs an output of {expected} floats, got {found}")]
    OutputSize {
        /// The file.
        path: PathBuf,
        /// Floats needed.
        expected: usize,
        /// Floats given.
        found: usize,
    },
}
