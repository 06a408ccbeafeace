//! Opens a `.kdz` from a memory map, checks all of it, and decodes words without LibTorch.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::ops::{Deref, Range};
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use rayon::prelude::*;

use crate::codes::{Codes, MAX_D, unpack_row};
use crate::composer::Composer;
use crate::compressed::{Compressed, Metadata};
use crate::vocab::Vocab;

use super::error::FormatError;
use super::header::{Header, SectionEntry, decode_table};
use super::sections::{self, Ctx, Model};
use super::spec::{HEADER_LEN, SectionKind, TensorDtype};

/// The file's bytes: mapped when opened from disk, owned when given in memory.
enum Bytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// Maps `file` read-only.
///
/// # Safety
///
/// A memory map is only sound while no one changes or truncates the file underneath it: the
/// bytes could change after they were validated, and reading past a truncation raises SIGBUS.
/// This function is safe to call because the contract is met for every file this crate writes:
/// [`super::write`] never modifies a file in place, it renames a complete new file over the old
/// path, which leaves existing maps of the old file intact. A user who edits a `.kdz` in place
/// while it is open breaks the contract, as with any memory-mapped reader.
#[allow(unsafe_code)]
fn map_read_only(file: &File) -> io::Result<Mmap> {
    // SAFETY: see the function's `# Safety` section.
    unsafe { Mmap::map(file) }
}

/// An open, fully validated `.kdz`.
///
/// Opening checks the header, the section table and every checksum, that the sections agree
/// with each other (N, K, D, shapes) and that every code is below K; after that, lookups and
/// decoding cannot fail on the file's content.
pub struct Kdz {
    path: PathBuf,
    bytes: Bytes,
    header: Header,
    sections: Vec<SectionEntry>,
    model: Model,
    metadata: Metadata,
    vocab: Vocab,
    composer: Composer,
    tensor_dtypes: BTreeMap<String, TensorDtype>,
    codes: Range<usize>,
    norms: Option<Vec<f32>>,
}

impl std::fmt::Debug for Kdz {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kdz")
            .field("path", &self.path)
            .field("version", &self.version())
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl Kdz {
    /// Opens and validates the `.kdz` at `path`, memory-mapping it.
    pub fn open(path: impl AsRef<Path>) -> Result<Kdz, FormatError> {
        let path = path.as_ref();
        let io_err = |action: &'static str| {
            move |source| FormatError::Io {
                path: path.to_owned(),
                action,
                source,
            }
        };
        let mut file = File::open(path).map_err(io_err("open for reading"))?;
        let len = file.metadata().map_err(io_err("read the size of"))?.len();
        // Too short to be valid; reading it gives the same errors without mapping an empty file.
        let bytes = if len < HEADER_LEN as u64 {
            let mut v = Vec::new();
            file.read_to_end(&mut v).map_err(io_err("read"))?;
            Bytes::Owned(v)
        } else {
            Bytes::Mapped(map_read_only(&file).map_err(io_err("memory-map"))?)
        };
        Self::parse(path.to_owned(), bytes)
    }

    /// Validates a `.kdz` held in memory; `name` stands for the file in error messages.
    pub fn from_bytes(name: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<Kdz, FormatError> {
        Self::parse(name.into(), Bytes::Owned(bytes))
    }

    fn parse(path: PathBuf, bytes: Bytes) -> Result<Kdz, FormatError> {
        let header = Header::decode(&path, &bytes)?;
        let sections = decode_table(&path, &bytes, &header)?;
        let mut index: BTreeMap<SectionKind, usize> = BTreeMap::new();
        for (i, e) in sections.iter().enumerate() {
            match e.kind {
                // A newer minor may add sections; only those it marks required stop us.
                SectionKind::Unknown(kind) if e.is_required() => {
                    return Err(FormatError::UnknownRequiredSection {
                        path,
                        index: i,
                        kind,
                        offset: e.offset,
                        major: header.major,
                        minor: header.minor,
                    });
                }
                SectionKind::Unknown(_) => {}
                kind => {
                    if index.insert(kind, i).is_some() {
                        return Err(FormatError::DuplicateSection {
                            path,
                            kind,
                            offset: e.offset,
                        });
                    }
                }
            }
        }
        if let Some(&kind) = SectionKind::KNOWN
            .iter()
            .find(|k| k.is_required() && !index.contains_key(k))
        {
            return Err(FormatError::MissingSection { path, kind });
        }
        let section = |kind: SectionKind| -> Option<(&SectionEntry, Range<usize>)> {
            let e = &sections[*index.get(&kind)?];
            // decode_table checked that every section lies inside the file.
            Some((e, e.offset as usize..(e.offset + e.stored_len) as usize))
        };
        let stored = |range: &Range<usize>| bytes.get(range.clone()).unwrap_or(&[]);

        // Required sections are present (checked above); `?` on None cannot trigger.
        let missing = |kind| FormatError::MissingSection {
            path: path.clone(),
            kind,
        };
        let (e, r) = section(SectionKind::Model).ok_or_else(|| missing(SectionKind::Model))?;
        let ctx = Ctx {
            path: &path,
            entry: e,
        };
        let model = sections::read_model(
            ctx,
            (header.major, header.minor),
            &sections::decoded(ctx, stored(&r))?,
        )?;

        let (e, codes) = section(SectionKind::Codes).ok_or_else(|| missing(SectionKind::Codes))?;
        let ctx = Ctx {
            path: &path,
            entry: e,
        };
        sections::decoded(ctx, stored(&codes))?;
        sections::check_codes(ctx, stored(&codes), &model)?;

        let (e, r) =
            section(SectionKind::Vocabulary).ok_or_else(|| missing(SectionKind::Vocabulary))?;
        let ctx = Ctx {
            path: &path,
            entry: e,
        };
        let vocab = sections::read_vocab(ctx, &sections::decoded(ctx, stored(&r))?, model.n)?;

        let (e, r) = section(SectionKind::Tensors).ok_or_else(|| missing(SectionKind::Tensors))?;
        let ctx = Ctx {
            path: &path,
            entry: e,
        };
        let sections::ReadTensors {
            composer,
            dtypes: tensor_dtypes,
        } = sections::read_tensors(
            ctx,
            (header.major, header.minor),
            &sections::decoded(ctx, stored(&r))?,
            &model,
        )?;

        let norms = match section(SectionKind::Norms) {
            Some((e, r)) => {
                let ctx = Ctx {
                    path: &path,
                    entry: e,
                };
                Some(sections::read_norms(
                    ctx,
                    &sections::decoded(ctx, stored(&r))?,
                    model.n,
                )?)
            }
            None => None,
        };

        let (e, r) =
            section(SectionKind::Metadata).ok_or_else(|| missing(SectionKind::Metadata))?;
        let ctx = Ctx {
            path: &path,
            entry: e,
        };
        let metadata = sections::read_metadata(ctx, &sections::decoded(ctx, stored(&r))?)?;

        Ok(Kdz {
            path,
            bytes,
            header,
            sections,
            model,
            metadata,
            vocab,
            composer,
            tensor_dtypes,
            codes,
            norms,
        })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Format version of the file, `(major, minor)`.
    pub fn version(&self) -> (u16, u16) {
        (self.header.major, self.header.minor)
    }

    /// Total bytes of the file.
    pub fn file_len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// The section table, in file order, including sections this version skipped.
    pub fn sections(&self) -> &[SectionEntry] {
        &self.sections
    }

    /// The decode-critical numbers.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Number of words (N).
    pub fn len(&self) -> usize {
        self.vocab.len()
    }

    /// True when the file holds no words.
    pub fn is_empty(&self) -> bool {
        self.vocab.is_empty()
    }

    /// Width of a decoded vector (d).
    pub fn dim(&self) -> usize {
        self.model.config.out_dim
    }

    /// The words in row order, with lookup both ways.
    pub fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    /// How the file was made.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The decoder.
    pub fn composer(&self) -> &Composer {
        &self.composer
    }

    /// How each tensor is stored in the file, by name; [`Kdz::composer`] holds them all as f32.
    pub fn tensor_dtypes(&self) -> &BTreeMap<String, TensorDtype> {
        &self.tensor_dtypes
    }

    /// Per-word norms of the source vectors, if the file has them.
    pub fn norms(&self) -> Option<&[f32]> {
        self.norms.as_deref()
    }

    /// The codes section as stored: N packed rows of [`Model::row_bytes`] bytes.
    pub fn packed_codes(&self) -> &[u8] {
        self.bytes.get(self.codes.clone()).unwrap_or(&[])
    }

    /// One word's packed row.
    pub fn packed_row(&self, row: usize) -> Option<&[u8]> {
        let len = self.model.row_bytes();
        let start = row.checked_mul(len)?;
        self.packed_codes().get(start..start.checked_add(len)?)
    }

    /// Unpacks row `row`'s codes into `out` (D long); false if there is no such row.
    fn unpack_into(&self, row: usize, out: &mut [u16]) -> bool {
        match self.packed_row(row) {
            Some(packed) => {
                unpack_row(packed, self.model.bits_per_code(), out);
                true
            }
            None => false,
        }
    }

    /// The D codes of the word at `row`.
    pub fn code_of(&self, row: usize) -> Option<Vec<u16>> {
        let mut out = vec![0u16; self.model.config.num_codebooks];
        self.unpack_into(row, &mut out).then_some(out)
    }

    /// The D codes of `word`.
    pub fn code(&self, word: &str) -> Option<Vec<u16>> {
        self.code_of(self.vocab.row(word)?)
    }

    /// The decoded vector of the word at `row`.
    pub fn embedding_of(&self, row: usize) -> Option<Vec<f32>> {
        let mut buf = [0u16; MAX_D];
        let codes = &mut buf[..self.model.config.num_codebooks];
        if !self.unpack_into(row, codes) {
            return None;
        }
        let mut out = vec![0f32; self.dim()];
        self.composer.decode(codes, &mut out);
        Some(out)
    }

    /// The decoded vector of `word`.
    pub fn embedding(&self, word: &str) -> Option<Vec<f32>> {
        self.embedding_of(self.vocab.row(word)?)
    }

    /// Decodes every word into `out`, row-major `[N, d]`, on all cores.
    pub fn decode_into(&self, out: &mut [f32]) -> Result<(), FormatError> {
        let expected = self.len() * self.dim();
        if out.len() != expected {
            return Err(FormatError::OutputSize {
                path: self.path.clone(),
                expected,
                found: out.len(),
            });
        }
        self.decode_rows(out);
        Ok(())
    }

    /// Decodes every word into `out`, which is exactly `N * d` long.
    fn decode_rows(&self, out: &mut [f32]) {
        let (d, dd) = (self.dim(), self.model.config.num_codebooks);
        let (bits, row_len) = (self.model.bits_per_code(), self.model.row_bytes());
        // Chunks big enough to amortise the scratch buffers, small enough to balance cores.
        const ROWS: usize = 2048;
        out.par_chunks_mut(ROWS * d)
            .zip(self.packed_codes().par_chunks(ROWS * row_len))
            .for_each(|(out, packed)| {
                let mut codes = vec![0u16; dd];
                let mut scratch = vec![0f32; self.composer.scratch_len()];
                for (o, p) in out.chunks_exact_mut(d).zip(packed.chunks_exact(row_len)) {
                    unpack_row(p, bits, &mut codes);
                    self.composer.decode_with(&codes, o, &mut scratch);
                }
            });
    }

    /// Decodes every word, row-major `[N, d]`.
    pub fn decode_all(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.len() * self.dim()];
        self.decode_rows(&mut out);
        out
    }

    /// Every code unpacked, as the trainer produced them.
    pub fn codes(&self) -> Codes {
        let dd = self.model.config.num_codebooks;
        let mut data = vec![0u16; self.len() * dd];
        let (bits, row_len) = (self.model.bits_per_code(), self.model.row_bytes());
        for (o, p) in data
            .chunks_exact_mut(dd)
            .zip(self.packed_codes().chunks_exact(row_len))
        {
            unpack_row(p, bits, o);
        }
        Codes::new(self.model.config.num_codes as u32, dd, data)
            .expect("open checked K, D and every code")
    }

    /// The whole table back in memory, as the writer took it.
    pub fn to_compressed(&self) -> Compressed {
        Compressed {
            vocab: self.vocab.clone(),
            codes: self.codes(),
            composer: self.composer.clone(),
            metadata: self.metadata.clone(),
            norms: self.norms.clone(),
        }
    }
}
