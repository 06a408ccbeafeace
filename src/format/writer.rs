//! Writes a [`Compressed`] as a `.kdz`: all of it, or nothing.

use std::io::{self, Write};
use std::path::Path;

use crate::atomic_file::{Failure, write_atomically};
use crate::codes::MAX_D;
use crate::composer::ComposerKind;
use crate::compressed::Compressed;

use super::error::FormatError;
use super::header::{Header, SectionEntry, first_section_offset, padding_after};
use super::sections::{self, Model};
use super::spec::{Codec, FLAG_REQUIRED, MAJOR, MODEL_LEN, SectionKind, TensorDtype};

/// A section's content, kept as a reference where it is large so it can be streamed twice
/// (once for its checksum, once into the file) instead of copied.
enum Body<'a> {
    Bytes(Vec<u8>),
    Model(Model),
    Codes(&'a crate::codes::Codes),
    Tensors(
        &'a std::collections::BTreeMap<String, crate::composer::Tensor>,
        TensorDtype,
    ),
    Norms(&'a [f32]),
}

impl Body<'_> {
    /// The length the section's writer promises, computed without writing.
    fn declared_len(&self) -> u64 {
        match self {
            Body::Bytes(b) => b.len() as u64,
            Body::Model(_) => MODEL_LEN as u64,
            Body::Codes(c) => sections::codes_len(c),
            Body::Tensors(t, dtype) => sections::tensors_len(t, *dtype),
            Body::Norms(n) => sections::norms_len(n),
        }
    }

    fn write_to<W: Write>(&self, w: &mut W) -> io::Result<u64> {
        match self {
            Body::Bytes(b) => w.write_all(b).map(|()| b.len() as u64),
            Body::Model(m) => sections::write_model(w, m),
            Body::Codes(c) => sections::write_codes(w, c),
            Body::Tensors(t, dtype) => sections::write_tensors(w, t, *dtype),
            Body::Norms(n) => sections::write_norms(w, n),
        }
    }
}

/// Counts and checksums what passes through.
struct Tally<W> {
    inner: W,
    crc: crc32fast::Hasher,
    len: u64,
}

impl<W: Write> Write for Tally<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct Planned<'a> {
    entry: SectionEntry,
    body: Body<'a>,
}

/// Checks `c` can be written with its tensors stored as `dtype` and lays out every section.
fn plan<'a>(
    path: &Path,
    c: &'a Compressed,
    dtype: TensorDtype,
) -> Result<Vec<Planned<'a>>, FormatError> {
    let unwritable = |reason: String| FormatError::Unwritable {
        path: path.to_owned(),
        reason,
    };
    let config = *c.composer.config();
    let n = c.codes.len();
    if c.vocab.len() != n {
        return Err(unwritable(format!(
            "the vocabulary has {} words but there are codes for {n}",
            c.vocab.len()
        )));
    }
    if c.codes.k() as usize != config.num_codes || c.codes.d() != config.num_codebooks {
        return Err(unwritable(format!(
            "the codes have K = {}, D = {} but the composer expects K = {}, D = {}",
            c.codes.k(),
            c.codes.d(),
            config.num_codes,
            config.num_codebooks
        )));
    }
    if u32::try_from(n).is_err() {
        return Err(unwritable(format!("{n} words is more than 2^32 - 1")));
    }
    debug_assert!(config.num_codebooks <= MAX_D, "Codes guarantees D <= MAX_D");
    for (what, v) in [
        ("code width", config.code_dim),
        ("hidden width", config.hidden),
        ("output width", config.out_dim),
    ] {
        if u32::try_from(v).is_err() {
            return Err(unwritable(format!(
                "the {what} {v} does not fit in 32 bits"
            )));
        }
    }
    if let Some(row) = c
        .vocab
        .words()
        .position(|w| u32::try_from(w.len()).is_err())
    {
        return Err(unwritable(format!("word {row} is longer than 4 GiB")));
    }
    if let Some(norms) = &c.norms
        && norms.len() != n
    {
        return Err(unwritable(format!("{} norms for {n} words", norms.len())));
    }
    sections::check_tensors_writable(c.composer.tensors(), dtype).map_err(unwritable)?;
    let metadata = sections::metadata_bytes(&c.metadata).map_err(unwritable)?;
    let io_err = |source| FormatError::Io {
        path: path.to_owned(),
        action: "compress the vocabulary for",
        source,
    };
    let (vocab, vocab_raw_len) = sections::vocab_stored(&c.vocab).map_err(io_err)?;

    let model = Model {
        n: n as u64,
        config,
    };
    let mut bodies = vec![
        (SectionKind::Model, Codec::Raw, None, Body::Model(model)),
        (
            SectionKind::Metadata,
            Codec::Raw,
            None,
            Body::Bytes(metadata),
        ),
        (
            SectionKind::Vocabulary,
            Codec::Zstd,
            Some(vocab_raw_len),
            Body::Bytes(vocab),
        ),
        (SectionKind::Codes, Codec::Raw, None, Body::Codes(&c.codes)),
        (
            SectionKind::Tensors,
            Codec::Raw,
            None,
            Body::Tensors(c.composer.tensors(), dtype),
        ),
    ];
    if let Some(norms) = &c.norms {
        bodies.push((SectionKind::Norms, Codec::Raw, None, Body::Norms(norms)));
    }

    let count = bodies.len() as u32;
    let mut offset = first_section_offset(count).unwrap_or(u64::MAX);
    let mut planned = Vec::with_capacity(bodies.len());
    for (kind, codec, raw_len, body) in bodies {
        let mut tally = Tally {
            inner: io::sink(),
            crc: crc32fast::Hasher::new(),
            len: 0,
        };
        body.write_to(&mut tally)
            .map_err(|source| FormatError::Io {
                path: path.to_owned(),
                action: "lay out",
                source,
            })?;
        if tally.len != body.declared_len() {
            return Err(length_bug(path, kind, tally.len, body.declared_len()));
        }
        let entry = SectionEntry {
            kind,
            flags: if kind.is_required() { FLAG_REQUIRED } else { 0 },
            codec,
            crc: tally.crc.finalize(),
            offset,
            stored_len: tally.len,
            raw_len: raw_len.unwrap_or(tally.len),
        };
        offset = offset + tally.len + padding_after(offset + tally.len);
        planned.push(Planned { entry, body });
    }
    Ok(planned)
}

/// The lowest minor version whose readers know a composer kind: 1.1 up to `split` (code 4), 1.2
/// for `conditioned` (5), 1.3 for `sum` (6).
fn kind_minor(kind: ComposerKind) -> u16 {
    match sections::kind_code(kind) {
        0..=4 => 1,
        5 => 2,
        _ => 3,
    }
}

/// The lowest minor version whose readers know everything a file uses: its composer kind and its
/// tensors' dtype. 1.1 is also what this writer stamps on every file without newer content, so
/// such files stay what earlier versions wrote.
fn file_minor(kind: ComposerKind, dtype: TensorDtype) -> u16 {
    kind_minor(kind).max(dtype.minor())
}

/// Writes the planned sections after the header and table.
fn emit<W: Write>(
    path: &Path,
    planned: &[Planned<'_>],
    minor: u16,
    w: &mut W,
) -> Result<u64, FormatError> {
    let io_err = |source| FormatError::Io {
        path: path.to_owned(),
        action: "write",
        source,
    };
    let table: Vec<u8> = planned.iter().flat_map(|p| p.entry.encode()).collect();
    let last = planned.last().map(|p| p.entry);
    let file_len = last.map_or(0, |e| e.offset + e.stored_len);
    let header = Header {
        major: MAJOR,
        minor,
        section_count: planned.len() as u32,
        file_len,
        table_crc: crc32fast::hash(&table),
    };
    let mut tally = Tally {
        inner: w,
        crc: crc32fast::Hasher::new(),
        len: 0,
    };
    tally.write_all(&header.encode()).map_err(io_err)?;
    tally.write_all(&table).map_err(io_err)?;
    for p in planned {
        let pad = p.entry.offset - tally.len;
        sections::write_zeros(&mut tally, pad).map_err(io_err)?;
        let before = tally.len;
        p.body.write_to(&mut tally).map_err(io_err)?;
        // The layout was computed from a first pass over the same data; a difference is a bug
        // here, and a file that disagrees with its own table must never be written.
        if tally.len - before != p.entry.stored_len {
            return Err(length_bug(
                path,
                p.entry.kind,
                tally.len - before,
                p.entry.stored_len,
            ));
        }
    }
    tally.flush().map_err(io_err)?;
    Ok(tally.len)
}

fn length_bug(path: &Path, kind: SectionKind, written: u64, declared: u64) -> FormatError {
    FormatError::Unwritable {
        path: path.to_owned(),
        reason: format!(
            "internal error: the {kind} section came out {written} bytes long, {declared} were declared"
        ),
    }
}

/// The bytes of `c` as a `.kdz` file, tensors stored as f32.
pub fn to_bytes(c: &Compressed) -> Result<Vec<u8>, FormatError> {
    to_bytes_as(c, TensorDtype::F32)
}

/// The bytes of `c` as a `.kdz` file with every tensor stored as `dtype`. A file holding f16
/// tensors is format 1.2; with f32 tensors it is byte for byte what [`to_bytes`] gives.
pub fn to_bytes_as(c: &Compressed, dtype: TensorDtype) -> Result<Vec<u8>, FormatError> {
    let path = Path::new("<memory>");
    let planned = plan(path, c, dtype)?;
    let mut out = Vec::new();
    emit(
        path,
        &planned,
        file_minor(c.composer.config().kind, dtype),
        &mut out,
    )?;
    Ok(out)
}

/// The length [`to_bytes_as`] would give, computed without holding the file: every section is
/// laid out (the vocabulary compressed) but nothing is kept.
pub fn file_len_as(c: &Compressed, dtype: TensorDtype) -> Result<u64, FormatError> {
    let planned = plan(Path::new("<memory>"), c, dtype)?;
    Ok(planned
        .last()
        .map_or(0, |p| p.entry.offset + p.entry.stored_len))
}

/// Writes `c` to `path` as a `.kdz`.
///
/// The file is written under a temporary name in the same directory, flushed to disk and then
/// renamed over `path`, so a crash leaves either the old file or the complete new one, never a
/// partial `.kdz`. An existing file at `path` is replaced; [`write_new`] refuses to.
pub fn write(path: impl AsRef<Path>, c: &Compressed) -> Result<(), FormatError> {
    write_with(path.as_ref(), c, TensorDtype::F32, true)
}

/// Writes `c` to `path` as [`write`] does, but fails with [`FormatError::Exists`] when `path`
/// exists, also when it appeared while the file was being written.
pub fn write_new(path: impl AsRef<Path>, c: &Compressed) -> Result<(), FormatError> {
    write_with(path.as_ref(), c, TensorDtype::F32, false)
}

/// Writes `c` as [`write`] does, with every tensor stored as `dtype`. Storing f16 fails with
/// [`FormatError::Unwritable`], before anything is written, if a finite weight lies beyond the
/// f16 range.
pub fn write_as(
    path: impl AsRef<Path>,
    c: &Compressed,
    dtype: TensorDtype,
) -> Result<(), FormatError> {
    write_with(path.as_ref(), c, dtype, true)
}

/// Writes `c` as [`write_new`] does, with every tensor stored as `dtype`.
pub fn write_new_as(
    path: impl AsRef<Path>,
    c: &Compressed,
    dtype: TensorDtype,
) -> Result<(), FormatError> {
    write_with(path.as_ref(), c, dtype, false)
}

fn write_with(
    path: &Path,
    c: &Compressed,
    dtype: TensorDtype,
    overwrite: bool,
) -> Result<(), FormatError> {
    let planned = plan(path, c, dtype)?;
    let minor = file_minor(c.composer.config().kind, dtype);
    write_atomically(path, overwrite, |w| {
        emit(path, &planned, minor, w).map(drop)
    })
    .map_err(|failure| match failure {
        Failure::Exists => FormatError::Exists {
            path: path.to_owned(),
        },
        Failure::Io { action, source } => FormatError::Io {
            path: path.to_owned(),
            action,
            source,
        },
        Failure::Fill(e) => e,
    })
}
