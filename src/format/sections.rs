//! Each section's writer and reader, side by side so they stay mirrors of each other.
//!
//! Writers stream into any `Write` and return the bytes they wrote; the `*_len` functions declare
//! the length up front, and tests hold the two equal. Readers take the section's decoded bytes and
//! check them against the model section before building anything large.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::Path;

use byteorder::{ByteOrder, LittleEndian as LE, WriteBytesExt};
use rayon::prelude::*;

use crate::codes::{Codes, bits_per_code, pack_row, packed_row_len, unpack_row};
use crate::composer::{Composer, ComposerConfig, ComposerKind, Tensor};
use crate::compressed::Metadata;
use crate::vocab::Vocab;

use super::error::FormatError;
use super::header::SectionEntry;
use super::spec::{
    ALIGN, Codec, MAX_NDIM, MAX_TENSORS, MODEL_LEN, SectionKind, TensorDtype, ZSTD_LEVEL, align,
};

/// Where a section sits, for error messages.
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub path: &'a Path,
    pub entry: &'a SectionEntry,
}

impl Ctx<'_> {
    fn malformed(&self, at: u64, reason: impl Into<String>) -> FormatError {
        FormatError::Malformed {
            path: self.path.to_owned(),
            kind: self.entry.kind,
            offset: self.entry.offset,
            at,
            reason: reason.into(),
        }
    }

    fn length(&self, expected: u64, found: u64) -> FormatError {
        FormatError::SectionLength {
            path: self.path.to_owned(),
            kind: self.entry.kind,
            offset: self.entry.offset,
            expected,
            found,
        }
    }
}

/// Largest metadata a reader inflates; real metadata is a few hundred bytes.
const MAX_METADATA_LEN: u64 = 64 << 20;

/// The section's content after its codec: borrowed for raw, inflated for zstd.
pub(crate) fn decoded<'a>(ctx: Ctx<'_>, stored: &'a [u8]) -> Result<Cow<'a, [u8]>, FormatError> {
    let e = ctx.entry;
    let raw_length = |actual: u64| FormatError::RawLength {
        path: ctx.path.to_owned(),
        kind: e.kind,
        offset: e.offset,
        declared: e.raw_len,
        actual,
    };
    match e.codec {
        Codec::Raw => {
            if e.raw_len != e.stored_len {
                return Err(raw_length(e.stored_len));
            }
            Ok(Cow::Borrowed(stored))
        }
        Codec::Zstd if e.kind.must_be_raw() => Err(bad_codec(ctx, "this section may not use")),
        Codec::Zstd => {
            if e.kind == SectionKind::Metadata && e.raw_len > MAX_METADATA_LEN {
                return Err(ctx.malformed(
                    0,
                    format!("{} bytes of metadata is implausibly large", e.raw_len),
                ));
            }
            let decompress = |source| FormatError::Decompress {
                path: ctx.path.to_owned(),
                kind: e.kind,
                offset: e.offset,
                source,
            };
            let decoder = zstd::stream::read::Decoder::new(stored).map_err(decompress)?;
            // One byte beyond the declared length is enough to notice a lie, and the limit keeps
            // a hostile stream from inflating without bound.
            let mut out = Vec::new();
            decoder
                .take(e.raw_len.saturating_add(1))
                .read_to_end(&mut out)
                .map_err(decompress)?;
            if out.len() as u64 != e.raw_len {
                return Err(raw_length(out.len() as u64));
            }
            Ok(Cow::Owned(out))
        }
        Codec::Unknown(_) => Err(bad_codec(ctx, "this kdcompress does not know")),
    }
}

fn bad_codec(ctx: Ctx<'_>, reason: &'static str) -> FormatError {
    FormatError::BadCodec {
        path: ctx.path.to_owned(),
        kind: ctx.entry.kind,
        offset: ctx.entry.offset,
        codec: ctx.entry.codec,
        reason,
    }
}

// ---------------------------------------------------------------------------------------------
// model

/// The decode-critical numbers: everything needed to size and decode the other sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Model {
    /// Words (N).
    pub n: u64,
    /// Composer kind and sizes (D, K, d', h, d).
    pub config: ComposerConfig,
}

impl Model {
    /// Bits per packed code, `ceil(log2 K)`.
    pub fn bits_per_code(&self) -> u32 {
        bits_per_code(self.config.num_codes as u32)
    }

    /// Bytes per packed row of D codes.
    pub fn row_bytes(&self) -> usize {
        packed_row_len(self.config.num_codebooks, self.bits_per_code())
    }
}

pub(crate) fn kind_code(kind: ComposerKind) -> u32 {
    match kind {
        ComposerKind::Linear => 0,
        ComposerKind::Mlp => 1,
        ComposerKind::Lstm => 2,
        ComposerKind::Concat => 3,
        // Since format 1.1.
        ComposerKind::Split => 4,
        // Since format 1.2.
        ComposerKind::Conditioned => 5,
        // Since format 1.3.
        ComposerKind::Sum => 6,
    }
}

fn kind_from_code(code: u32) -> Option<ComposerKind> {
    ComposerKind::ALL
        .into_iter()
        .find(|&k| kind_code(k) == code)
}

/// Writes the model section; the caller has checked every size fits its field.
pub(crate) fn write_model<W: Write>(w: &mut W, m: &Model) -> io::Result<u64> {
    let c = &m.config;
    let mut b = [0u8; MODEL_LEN];
    LE::write_u64(&mut b[0..8], m.n);
    LE::write_u32(&mut b[8..12], kind_code(c.kind));
    LE::write_u32(&mut b[12..16], c.num_codes as u32);
    LE::write_u32(&mut b[16..20], c.num_codebooks as u32);
    LE::write_u32(&mut b[20..24], m.bits_per_code());
    LE::write_u64(&mut b[24..32], m.row_bytes() as u64);
    LE::write_u32(&mut b[32..36], c.code_dim as u32);
    LE::write_u32(&mut b[36..40], c.hidden as u32);
    LE::write_u32(&mut b[40..44], c.out_dim as u32);
    w.write_all(&b)?;
    Ok(MODEL_LEN as u64)
}

/// Reads the model section and checks its numbers agree with each other. `version` is the
/// file's `(major, minor)`, named when the file needs a newer reader.
pub(crate) fn read_model(
    ctx: Ctx<'_>,
    version: (u16, u16),
    b: &[u8],
) -> Result<Model, FormatError> {
    if b.len() != MODEL_LEN {
        return Err(ctx.length(MODEL_LEN as u64, b.len() as u64));
    }
    let n = LE::read_u64(&b[0..8]);
    let kind = LE::read_u32(&b[8..12]);
    let k = LE::read_u32(&b[12..16]);
    let d = LE::read_u32(&b[16..20]);
    let bits = LE::read_u32(&b[20..24]);
    let row_bytes = LE::read_u64(&b[24..32]);
    let (code_dim, hidden, out_dim) = (
        LE::read_u32(&b[32..36]),
        LE::read_u32(&b[36..40]),
        LE::read_u32(&b[40..44]),
    );
    if n > u64::from(u32::MAX) {
        return Err(ctx.malformed(0, format!("N = {n} words is more than 2^32 - 1")));
    }
    // A later minor version may add kinds; decoding with the wrong math would be worse than
    // refusing, so an unknown kind stops the reader with a pointer to a newer one.
    let kind = kind_from_code(kind).ok_or_else(|| FormatError::UnknownComposerKind {
        path: ctx.path.to_owned(),
        offset: ctx.entry.offset,
        kind,
        max_known: ComposerKind::ALL
            .into_iter()
            .map(kind_code)
            .max()
            .unwrap_or(0),
        major: version.0,
        minor: version.1,
    })?;
    if !(2..=crate::codes::MAX_K).contains(&k) {
        return Err(ctx.malformed(12, format!("K = {k} is outside 2..=65536")));
    }
    if !(1..=crate::codes::MAX_D as u32).contains(&d) {
        return Err(ctx.malformed(16, format!("D = {d} is outside 1..=1024")));
    }
    if bits != bits_per_code(k) {
        return Err(ctx.malformed(
            20,
            format!(
                "{bits} bits per code disagrees with K = {k}, which needs {}",
                bits_per_code(k)
            ),
        ));
    }
    let model = Model {
        n,
        config: ComposerConfig {
            kind,
            num_codebooks: d as usize,
            num_codes: k as usize,
            code_dim: code_dim as usize,
            hidden: hidden as usize,
            out_dim: out_dim as usize,
        },
    };
    if row_bytes != model.row_bytes() as u64 {
        return Err(ctx.malformed(
            24,
            format!(
                "{row_bytes} bytes per row disagrees with D = {d} codes of {bits} bits, which need {}",
                model.row_bytes()
            ),
        ));
    }
    if code_dim == 0 || out_dim == 0 {
        return Err(ctx.malformed(32, "code and output widths must be positive"));
    }
    if matches!(kind, ComposerKind::Mlp | ComposerKind::Lstm) && hidden == 0 {
        return Err(ctx.malformed(
            36,
            format!("the {} composer needs a positive hidden width", kind.name()),
        ));
    }
    // Bytes 44..48 are reserved: ignored, so that a later minor version may use them.
    Ok(model)
}

// ---------------------------------------------------------------------------------------------
// metadata

/// The metadata section's bytes: compact JSON.
pub(crate) fn metadata_bytes(m: &Metadata) -> Result<Vec<u8>, String> {
    // JSON cannot hold NaN or infinity; serde_json would write `null` and the reader would fail.
    if let Some((name, v)) = m.metrics.iter().find(|(_, v)| !v.is_finite()) {
        return Err(format!("metric {name:?} is {v}, which JSON cannot hold"));
    }
    if !m.train_seconds.is_finite() {
        return Err(format!(
            "train_seconds is {}, which JSON cannot hold",
            m.train_seconds
        ));
    }
    serde_json::to_vec(m).map_err(|e| format!("metadata cannot be written as JSON: {e}"))
}

/// Parses the metadata section.
pub(crate) fn read_metadata(ctx: Ctx<'_>, b: &[u8]) -> Result<Metadata, FormatError> {
    serde_json::from_slice(b).map_err(|e| {
        let at = byte_position(b, e.line(), e.column());
        ctx.malformed(at, format!("invalid metadata JSON: {e}"))
    })
}

/// Byte offset of serde_json's 1-based line and column.
fn byte_position(b: &[u8], line: usize, column: usize) -> u64 {
    let line_start = b
        .iter()
        .enumerate()
        .filter(|&(_, &c)| c == b'\n')
        .nth(line.saturating_sub(2))
        .map_or(0, |(i, _)| i + 1);
    let start = if line <= 1 { 0 } else { line_start };
    (start + column.saturating_sub(1)) as u64
}

// ---------------------------------------------------------------------------------------------
// vocabulary

/// Length of the vocabulary content before compression.
pub(crate) fn vocab_raw_len(v: &Vocab) -> u64 {
    8 + 4 * v.len() as u64 + v.text().len() as u64
}

/// Writes the vocabulary content (uncompressed): count, byte lengths, concatenated UTF-8.
pub(crate) fn write_vocab_raw<W: Write>(w: &mut W, v: &Vocab) -> io::Result<u64> {
    let mut n = 0u64;
    w.write_u64::<LE>(v.len() as u64)?;
    n += 8;
    for word in v.words() {
        let len = u32::try_from(word.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "word longer than 4 GiB"))?;
        w.write_u32::<LE>(len)?;
        n += 4;
    }
    w.write_all(v.text().as_bytes())?;
    n += v.text().len() as u64;
    Ok(n)
}

/// The vocabulary section as stored: zstd of [`write_vocab_raw`]'s bytes.
pub(crate) fn vocab_stored(v: &Vocab) -> io::Result<(Vec<u8>, u64)> {
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL)?;
    // The frame records the size, so a reader can tell a truncated stream from a short one.
    enc.set_pledged_src_size(Some(vocab_raw_len(v)))?;
    enc.include_contentsize(true)?;
    let raw_len = write_vocab_raw(&mut enc, v)?;
    Ok((enc.finish()?, raw_len))
}

/// Parses vocabulary content; `n` is N from the model section.
pub(crate) fn read_vocab(ctx: Ctx<'_>, b: &[u8], n: u64) -> Result<Vocab, FormatError> {
    let count = b
        .get(0..8)
        .map(LE::read_u64)
        .ok_or_else(|| ctx.malformed(0, "shorter than its 8-byte word count"))?;
    if count != n {
        return Err(FormatError::VocabularyCount {
            path: ctx.path.to_owned(),
            offset: ctx.entry.offset,
            words: count,
            n,
        });
    }
    // n <= u32::MAX (checked with the model), so this fits.
    let lengths_end = 8 + 4 * n as usize;
    let lengths = b.get(8..lengths_end).ok_or_else(|| {
        ctx.malformed(
            b.len() as u64,
            format!("too short for the byte lengths of {n} words"),
        )
    })?;
    let mut pos = lengths_end;
    let mut words = Vec::with_capacity(n as usize);
    for (row, len) in lengths.chunks_exact(4).map(LE::read_u32).enumerate() {
        let end = pos
            .checked_add(len as usize)
            .filter(|&e| e <= b.len())
            .ok_or_else(|| {
                ctx.malformed(
                    pos as u64,
                    format!("word {row} ({len} bytes) runs past the end"),
                )
            })?;
        let word = std::str::from_utf8(&b[pos..end])
            .map_err(|e| ctx.malformed(pos as u64, format!("word {row} is not UTF-8: {e}")))?;
        words.push(word.to_owned());
        pos = end;
    }
    if pos != b.len() {
        return Err(ctx.malformed(
            pos as u64,
            format!("{} bytes follow the last word", b.len() - pos),
        ));
    }
    Vocab::new(words).map_err(|d| {
        ctx.malformed(
            lengths_end as u64,
            format!("rows {} and {} hold the same word", d.first, d.second),
        )
    })
}

// ---------------------------------------------------------------------------------------------
// codes

/// Length of the codes section.
pub(crate) fn codes_len(c: &Codes) -> u64 {
    c.len() as u64 * c.packed_row_len() as u64
}

/// Rows packed per write, so a large table streams without a second copy in memory.
const ROWS_PER_CHUNK: usize = 4096;

/// Writes every row packed.
pub(crate) fn write_codes<W: Write>(w: &mut W, c: &Codes) -> io::Result<u64> {
    let (d, bits, row_len) = (c.d(), c.bits_per_code(), c.packed_row_len());
    let mut buf = vec![0u8; row_len * ROWS_PER_CHUNK];
    let mut n = 0u64;
    for rows in c.as_slice().chunks(d * ROWS_PER_CHUNK) {
        let used = rows.len() / d * row_len;
        for (dst, src) in buf[..used]
            .chunks_exact_mut(row_len)
            .zip(rows.chunks_exact(d))
        {
            pack_row(src, bits, dst);
        }
        w.write_all(&buf[..used])?;
        n += used as u64;
    }
    Ok(n)
}

/// Checks the packed codes: the right length, every code below K, padding bits zero.
pub(crate) fn check_codes(ctx: Ctx<'_>, b: &[u8], m: &Model) -> Result<(), FormatError> {
    let row_len = m.row_bytes();
    let expected = m.n.checked_mul(row_len as u64);
    if expected != Some(b.len() as u64) {
        return Err(ctx.length(expected.unwrap_or(u64::MAX), b.len() as u64));
    }
    let (d, bits, k) = (
        m.config.num_codebooks,
        m.bits_per_code(),
        m.config.num_codes as u32,
    );
    let used_bits = (d * bits as usize) % 8;
    let pad_mask: u8 = if used_bits == 0 {
        0
    } else {
        !((1u8 << used_bits) - 1)
    };
    let every_value_valid = k.is_power_of_two();
    let bad = b
        .par_chunks(row_len * ROWS_PER_CHUNK)
        .enumerate()
        .find_map_first(|(chunk, rows)| {
            let mut codes = vec![0u16; d];
            for (i, row) in rows.chunks_exact(row_len).enumerate() {
                let r = (chunk * ROWS_PER_CHUNK + i) as u64;
                if row.last().is_some_and(|&last| last & pad_mask != 0) {
                    return Some(FormatError::RowPadding {
                        path: ctx.path.to_owned(),
                        offset: ctx.entry.offset,
                        row: r,
                    });
                }
                if every_value_valid {
                    continue;
                }
                unpack_row(row, bits, &mut codes);
                if let Some(dim) = codes.iter().position(|&c| u32::from(c) >= k) {
                    return Some(FormatError::CodeOutOfRange {
                        path: ctx.path.to_owned(),
                        offset: ctx.entry.offset,
                        row: r,
                        dim,
                        value: u32::from(codes[dim]),
                        k,
                    });
                }
            }
            None
        });
    bad.map_or(Ok(()), Err)
}

// ---------------------------------------------------------------------------------------------
// tensors

/// Where each tensor's data goes, relative to the section start, and where the section ends.
struct TensorLayout {
    directory_len: u64,
    offsets: Vec<u64>,
    len: u64,
}

fn directory_entry_len(name: &str, ndim: usize) -> u64 {
    2 + name.len() as u64 + 2 + 8 * ndim as u64 + 16
}

fn tensor_layout(tensors: &BTreeMap<String, Tensor>, dtype: TensorDtype) -> Option<TensorLayout> {
    let directory_len = tensors.iter().try_fold(8u64, |acc, (name, t)| {
        acc.checked_add(directory_entry_len(name, t.shape.len()))
    })?;
    let mut end = directory_len;
    let mut offsets = Vec::with_capacity(tensors.len());
    for t in tensors.values() {
        let start = align(end)?;
        offsets.push(start);
        end = start.checked_add((t.data.len() as u64).checked_mul(dtype.size())?)?;
    }
    Some(TensorLayout {
        directory_len,
        offsets,
        len: end,
    })
}

/// Length of the tensors section with every tensor stored as `dtype`.
pub(crate) fn tensors_len(tensors: &BTreeMap<String, Tensor>, dtype: TensorDtype) -> u64 {
    tensor_layout(tensors, dtype).map_or(u64::MAX, |l| l.len)
}

/// Checks that every tensor can be described by a directory entry and stored as `dtype`.
pub(crate) fn check_tensors_writable(
    tensors: &BTreeMap<String, Tensor>,
    dtype: TensorDtype,
) -> Result<(), String> {
    if tensors.len() > MAX_TENSORS as usize {
        return Err(format!(
            "{} tensors, at most {MAX_TENSORS} fit",
            tensors.len()
        ));
    }
    for (name, t) in tensors {
        if name.is_empty() || name.len() > 255 {
            return Err(format!("tensor name {name:?} must be 1 to 255 bytes"));
        }
        if t.shape.is_empty() || t.shape.len() > MAX_NDIM as usize {
            return Err(format!(
                "tensor {name:?} has {} dimensions, 1 to {MAX_NDIM} fit",
                t.shape.len()
            ));
        }
    }
    // Rounding must never turn a finite weight into an infinity: that file would decode to
    // infinities and NaNs where the table had numbers.
    for (name, t) in tensors {
        if let Some((i, v)) = t
            .data
            .iter()
            .enumerate()
            .find(|&(_, &v)| v.is_finite() && !dtype.round(v).is_finite())
        {
            return Err(format!(
                "tensor {name:?} holds {v} at index {i}, beyond the {dtype} range; store it as f32"
            ));
        }
    }
    tensor_layout(tensors, dtype)
        .map(|_| ())
        .ok_or_else(|| "tensors too large to lay out".to_string())
}

/// Writes the directory, then each tensor's data as `dtype` at its aligned offset.
pub(crate) fn write_tensors<W: Write>(
    w: &mut W,
    tensors: &BTreeMap<String, Tensor>,
    dtype: TensorDtype,
) -> io::Result<u64> {
    let layout = tensor_layout(tensors, dtype)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "tensors too large"))?;
    let mut dir = Vec::with_capacity(layout.directory_len as usize);
    dir.write_u32::<LE>(tensors.len() as u32)?;
    dir.write_u32::<LE>(0)?;
    for ((name, t), &offset) in tensors.iter().zip(&layout.offsets) {
        dir.write_u16::<LE>(name.len() as u16)?;
        dir.write_all(name.as_bytes())?;
        dir.write_u8(dtype.code())?;
        dir.write_u8(t.shape.len() as u8)?;
        for &s in &t.shape {
            dir.write_u64::<LE>(s as u64)?;
        }
        dir.write_u64::<LE>(offset)?;
        dir.write_u64::<LE>(t.data.len() as u64 * dtype.size())?;
    }
    w.write_all(&dir)?;
    let mut pos = dir.len() as u64;
    let mut bytes = Vec::new();
    for (t, &offset) in tensors.values().zip(&layout.offsets) {
        write_zeros(w, offset - pos)?;
        encode_values(&t.data, dtype, &mut bytes);
        w.write_all(&bytes)?;
        pos = offset + bytes.len() as u64;
    }
    Ok(pos)
}

/// `values` as `dtype` stores them, little-endian, into `out` (resized to fit).
fn encode_values(values: &[f32], dtype: TensorDtype, out: &mut Vec<u8>) {
    out.resize(values.len() * dtype.size() as usize, 0);
    match dtype {
        TensorDtype::F32 => LE::write_f32_into(values, out),
        TensorDtype::F16 => {
            for (o, &v) in out.chunks_exact_mut(2).zip(values) {
                o.copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
            }
        }
    }
}

/// The values of `raw`, stored as `dtype`, widened to f32 (exactly: every f16 is an f32).
fn decode_values(raw: &[u8], dtype: TensorDtype) -> Vec<f32> {
    match dtype {
        TensorDtype::F32 => {
            let mut data = vec![0f32; raw.len() / 4];
            LE::read_f32_into(raw, &mut data);
            data
        }
        TensorDtype::F16 => raw
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
    }
}

/// A forward-only reader over a section's bytes that reports where it failed.
struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|s| s[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(LE::read_u16)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(LE::read_u32)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).map(LE::read_u64)
    }
}

/// The composer read from a tensors section, with the dtype each tensor was stored as.
pub(crate) struct ReadTensors {
    pub composer: Composer,
    pub dtypes: BTreeMap<String, TensorDtype>,
}

/// Parses the directory and data, and builds the composer the model describes. `version` is the
/// file's `(major, minor)`, named when a tensor's dtype needs a newer reader.
pub(crate) fn read_tensors(
    ctx: Ctx<'_>,
    version: (u16, u16),
    b: &[u8],
    m: &Model,
) -> Result<ReadTensors, FormatError> {
    let mut c = Cursor { b, pos: 0 };
    let short = |c: &Cursor<'_>| ctx.malformed(c.pos as u64, "the tensor directory ends early");
    let count = c.u32().ok_or_else(|| short(&c))?;
    c.u32().ok_or_else(|| short(&c))?; // reserved
    if count > MAX_TENSORS {
        return Err(ctx.malformed(0, format!("{count} tensors, at most {MAX_TENSORS} allowed")));
    }
    struct Dir<'n> {
        name: &'n str,
        dtype: TensorDtype,
        shape: Vec<usize>,
        offset: u64,
        len: u64,
        at: u64,
    }
    let mut dir: Vec<Dir<'_>> = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let at = c.pos as u64;
        let name_len = c.u16().ok_or_else(|| short(&c))?;
        if name_len == 0 || name_len > 255 {
            return Err(ctx.malformed(
                at,
                format!("tensor name of {name_len} bytes (1 to 255 allowed)"),
            ));
        }
        let name = c.take(name_len as usize).ok_or_else(|| short(&c))?;
        let name = std::str::from_utf8(name)
            .map_err(|_| ctx.malformed(at + 2, "tensor name is not UTF-8"))?;
        if dir.iter().any(|d| d.name == name) {
            return Err(ctx.malformed(at, format!("tensor {name:?} is listed twice")));
        }
        let code = c.u8().ok_or_else(|| short(&c))?;
        // Widening a dtype this reader does not know would give wrong numbers; a later minor
        // version may add one, so say that a newer reader is what is missing.
        let dtype = TensorDtype::from_code(code).ok_or_else(|| FormatError::UnknownDtype {
            path: ctx.path.to_owned(),
            offset: ctx.entry.offset,
            at: c.pos as u64 - 1,
            name: name.to_owned(),
            dtype: code,
            major: version.0,
            minor: version.1,
        })?;
        let ndim = c.u8().ok_or_else(|| short(&c))?;
        if ndim == 0 || ndim > MAX_NDIM {
            return Err(ctx.malformed(
                c.pos as u64 - 1,
                format!("tensor {name:?} has {ndim} dimensions (1 to {MAX_NDIM} allowed)"),
            ));
        }
        let mut shape = Vec::with_capacity(ndim as usize);
        for _ in 0..ndim {
            let s = c.u64().ok_or_else(|| short(&c))?;
            shape.push(
                usize::try_from(s)
                    .map_err(|_| ctx.malformed(c.pos as u64 - 8, "dimension too large"))?,
            );
        }
        let offset = c.u64().ok_or_else(|| short(&c))?;
        let len = c.u64().ok_or_else(|| short(&c))?;
        dir.push(Dir {
            name,
            dtype,
            shape,
            offset,
            len,
            at,
        });
    }
    // Data must follow the directory exactly as the writer lays it out.
    let mut end = c.pos as u64;
    let mut tensors = BTreeMap::new();
    let mut dtypes = BTreeMap::new();
    for d in &dir {
        let expected_offset = align(end).unwrap_or(u64::MAX);
        if d.offset != expected_offset {
            return Err(ctx.malformed(d.at, format!(
                "tensor {:?} data at {}, expected {expected_offset} (next {ALIGN}-byte boundary)",
                d.name, d.offset
            )));
        }
        let floats = d.shape.iter().try_fold(1usize, |a, &s| a.checked_mul(s));
        let expected_len = floats.and_then(|f| (f as u64).checked_mul(d.dtype.size()));
        if expected_len != Some(d.len) {
            return Err(ctx.malformed(
                d.at,
                format!(
                    "tensor {:?} of shape {:?} and dtype {} declares {} bytes of data",
                    d.name, d.shape, d.dtype, d.len
                ),
            ));
        }
        let data_end = d
            .offset
            .checked_add(d.len)
            .filter(|&e| e <= b.len() as u64)
            .ok_or_else(|| {
                ctx.malformed(
                    d.at,
                    format!("tensor {:?} data runs past the end of the section", d.name),
                )
            })?;
        let (start, stop) = (d.offset as usize, data_end as usize);
        if let Some(i) = b[end as usize..start].iter().position(|&x| x != 0) {
            return Err(ctx.malformed(end + i as u64, "padding before tensor data is not zero"));
        }
        let data = decode_values(&b[start..stop], d.dtype);
        // Shape and data length agree by the check above.
        let t = Tensor::new(d.shape.clone(), data)
            .ok_or_else(|| ctx.malformed(d.at, "tensor shape disagrees with its data"))?;
        tensors.insert(d.name.to_owned(), t);
        dtypes.insert(d.name.to_owned(), d.dtype);
        end = data_end;
    }
    if end != b.len() as u64 {
        return Err(ctx.malformed(
            end,
            format!("{} bytes follow the last tensor", b.len() as u64 - end),
        ));
    }
    let composer = Composer::new(m.config, tensors).map_err(|source| FormatError::Composer {
        path: ctx.path.to_owned(),
        offset: ctx.entry.offset,
        source,
    })?;
    Ok(ReadTensors { composer, dtypes })
}

// ---------------------------------------------------------------------------------------------
// norms

/// Length of the norms section.
pub(crate) fn norms_len(norms: &[f32]) -> u64 {
    4 * norms.len() as u64
}

/// Writes N little-endian f32.
pub(crate) fn write_norms<W: Write>(w: &mut W, norms: &[f32]) -> io::Result<u64> {
    let mut bytes = vec![0u8; norms.len() * 4];
    LE::write_f32_into(norms, &mut bytes);
    w.write_all(&bytes)?;
    Ok(bytes.len() as u64)
}

/// Reads N norms.
pub(crate) fn read_norms(ctx: Ctx<'_>, b: &[u8], n: u64) -> Result<Vec<f32>, FormatError> {
    if b.len() as u64 != 4 * n {
        return Err(ctx.length(4 * n, b.len() as u64));
    }
    let mut out = vec![0f32; n as usize];
    LE::read_f32_into(b, &mut out);
    Ok(out)
}

/// Writes `n` zero bytes.
pub(crate) fn write_zeros<W: Write>(w: &mut W, n: u64) -> io::Result<()> {
    io::copy(&mut io::repeat(0).take(n), w).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::composer::{CODEBOOKS, OUT_BIAS, OUT_WEIGHT};

    fn entry(kind: SectionKind) -> SectionEntry {
        SectionEntry {
            kind,
            flags: 1,
            codec: Codec::Raw,
            crc: 0,
            offset: 128,
            stored_len: 0,
            raw_len: 0,
        }
    }

    fn model() -> Model {
        Model {
            n: 3,
            config: ComposerConfig {
                kind: ComposerKind::Linear,
                num_codebooks: 3,
                num_codes: 5,
                code_dim: 2,
                hidden: 0,
                out_dim: 2,
            },
        }
    }

    fn tensors() -> BTreeMap<String, Tensor> {
        let t = |s: Vec<usize>| {
            let n = s.iter().product::<usize>();
            Tensor::new(s, (0..n).map(|i| i as f32 * 0.5 - 1.0).collect()).unwrap()
        };
        [
            (CODEBOOKS.to_string(), t(vec![3, 5, 2])),
            (OUT_WEIGHT.to_string(), t(vec![2, 2])),
            (OUT_BIAS.to_string(), t(vec![2])),
        ]
        .into_iter()
        .collect()
    }

    fn vocab() -> Vocab {
        Vocab::new(["the", "ñandú", "a\nb\0"]).unwrap()
    }

    // Habit 1: the declared length of every section equals the bytes its writer emits, and the
    // reader takes back what the writer wrote.

    #[test]
    fn model_length_and_round_trip() {
        let mut buf = Vec::new();
        let n = write_model(&mut buf, &model()).unwrap();
        assert_eq!((n, buf.len()), (MODEL_LEN as u64, MODEL_LEN));
        let e = entry(SectionKind::Model);
        let ctx = Ctx {
            path: Path::new("t.kdz"),
            entry: &e,
        };
        assert_eq!(read_model(ctx, (1, 1), &buf).unwrap(), model());
    }

    #[test]
    fn vocab_length_and_round_trip() {
        let mut buf = Vec::new();
        let n = write_vocab_raw(&mut buf, &vocab()).unwrap();
        assert_eq!(n, vocab_raw_len(&vocab()));
        assert_eq!(buf.len() as u64, n);
        let (stored, raw_len) = vocab_stored(&vocab()).unwrap();
        assert_eq!(raw_len, n);
        let mut e = entry(SectionKind::Vocabulary);
        e.codec = Codec::Zstd;
        e.raw_len = raw_len;
        e.stored_len = stored.len() as u64;
        let ctx = Ctx {
            path: Path::new("t.kdz"),
            entry: &e,
        };
        let raw = decoded(ctx, &stored).unwrap();
        assert_eq!(&*raw, &buf[..]);
        assert_eq!(read_vocab(ctx, &raw, 3).unwrap(), vocab());
    }

    #[test]
    fn codes_length_and_round_trip() {
        let codes = Codes::new(5, 3, (0..30).map(|i| (i % 5) as u16).collect()).unwrap();
        let mut buf = Vec::new();
        let n = write_codes(&mut buf, &codes).unwrap();
        assert_eq!(n, codes_len(&codes));
        assert_eq!(buf.len() as u64, n);
        assert_eq!(buf, codes.pack());
        let e = entry(SectionKind::Codes);
        let ctx = Ctx {
            path: Path::new("t.kdz"),
            entry: &e,
        };
        let m = Model { n: 10, ..model() };
        check_codes(ctx, &buf, &m).unwrap();
    }

    #[test]
    fn codes_stream_across_chunks() {
        let n = ROWS_PER_CHUNK * 2 + 17;
        let codes = Codes::new(3, 1, (0..n).map(|i| (i % 3) as u16).collect()).unwrap();
        let mut buf = Vec::new();
        assert_eq!(write_codes(&mut buf, &codes).unwrap(), codes_len(&codes));
        assert_eq!(buf, codes.pack());
    }

    #[test]
    fn tensors_length_and_round_trip() {
        // Every value of `tensors()` is a multiple of 0.5 below 16, exact in f16 too.
        for dtype in TensorDtype::ALL {
            let mut buf = Vec::new();
            let n = write_tensors(&mut buf, &tensors(), dtype).unwrap();
            assert_eq!(n, tensors_len(&tensors(), dtype));
            assert_eq!(buf.len() as u64, n);
            let layout = tensor_layout(&tensors(), dtype).unwrap();
            assert!(layout.offsets.iter().all(|o| o % ALIGN == 0));
            let e = entry(SectionKind::Tensors);
            let ctx = Ctx {
                path: Path::new("t.kdz"),
                entry: &e,
            };
            let read = read_tensors(ctx, (1, 2), &buf, &model()).unwrap();
            assert_eq!(read.composer.tensors(), &tensors());
            assert!(read.dtypes.values().all(|&d| d == dtype));
            assert_eq!(read.dtypes.len(), tensors().len());
        }
    }

    #[test]
    fn f16_tensors_round_to_nearest_and_take_half_the_bytes() {
        let values = vec![0.1f32, -3.0e-5, 1.0 + 1.0 / 1024.0, 65504.0, 1.0e-8, -0.0];
        let one: BTreeMap<String, Tensor> = [(
            "t".to_string(),
            Tensor::new(vec![6], values.clone()).unwrap(),
        )]
        .into();
        let mut buf = Vec::new();
        write_tensors(&mut buf, &one, TensorDtype::F16).unwrap();
        let (dir_end, data_len) = (64, 12);
        assert_eq!(buf.len(), dir_end + data_len);
        // name length 1, "t", dtype 2, ndim 1, shape 6, offset 64, 12 bytes.
        assert_eq!(&buf[8..13], &[1, 0, b't', 2, 1]);
        assert_eq!(LE::read_u64(&buf[29..37]), 12);
        let back = decode_values(&buf[dir_end..], TensorDtype::F16);
        for (v, b) in values.iter().zip(&back) {
            assert_eq!(*b, half::f16::from_f32(*v).to_f32());
            assert!((v - b).abs() <= v.abs() / 2048.0 + 6.0e-8, "{v} -> {b}");
        }
        assert_eq!(back[2], 1.0 + 1.0 / 1024.0, "exact in f16");
        assert!(back[5].is_sign_negative());
    }

    #[test]
    fn f16_refuses_finite_values_beyond_its_range() {
        let t = |v: f32| -> BTreeMap<String, Tensor> {
            [(
                "composer.out.weight".to_string(),
                Tensor::new(vec![3], vec![0.5, v, 1.0]).unwrap(),
            )]
            .into()
        };
        let err = check_tensors_writable(&t(1.0e5), TensorDtype::F16).unwrap_err();
        assert!(
            err.contains("\"composer.out.weight\" holds 100000 at index 1, beyond the f16 range"),
            "{err}"
        );
        check_tensors_writable(&t(1.0e5), TensorDtype::F32).unwrap();
        check_tensors_writable(&t(65504.0), TensorDtype::F16).unwrap();
        // Not made infinite by rounding: stored as it is, as f32 would store it.
        check_tensors_writable(&t(f32::INFINITY), TensorDtype::F16).unwrap();
    }

    #[test]
    fn tensor_directory_bytes_are_as_documented() {
        let one: BTreeMap<String, Tensor> = [(
            "ab".to_string(),
            Tensor::new(vec![2], vec![1.0, -2.0]).unwrap(),
        )]
        .into();
        let mut buf = Vec::new();
        write_tensors(&mut buf, &one, TensorDtype::F32).unwrap();
        let mut expected = vec![1, 0, 0, 0, 0, 0, 0, 0, 2, 0, b'a', b'b', 1, 1];
        expected.extend_from_slice(&2u64.to_le_bytes());
        expected.extend_from_slice(&64u64.to_le_bytes());
        expected.extend_from_slice(&8u64.to_le_bytes());
        expected.resize(64, 0);
        expected.extend_from_slice(&1f32.to_le_bytes());
        expected.extend_from_slice(&(-2f32).to_le_bytes());
        assert_eq!(buf, expected);
    }

    #[test]
    fn norms_length_and_round_trip() {
        let norms = [1.5f32, 0.0, 3.25];
        let mut buf = Vec::new();
        let n = write_norms(&mut buf, &norms).unwrap();
        assert_eq!(
            (n, buf.len() as u64),
            (norms_len(&norms), norms_len(&norms))
        );
        let e = entry(SectionKind::Norms);
        let ctx = Ctx {
            path: Path::new("t.kdz"),
            entry: &e,
        };
        assert_eq!(read_norms(ctx, &buf, 3).unwrap(), norms);
    }

    #[test]
    fn metadata_round_trip_and_non_finite_metrics_refused() {
        let mut m = Metadata {
            method: "kd".into(),
            ..Default::default()
        };
        m.metrics.insert("mse".into(), 0.125);
        let bytes = metadata_bytes(&m).unwrap();
        let e = entry(SectionKind::Metadata);
        let ctx = Ctx {
            path: Path::new("t.kdz"),
            entry: &e,
        };
        assert_eq!(read_metadata(ctx, &bytes).unwrap(), m);
        m.metrics.insert("loss".into(), f64::NAN);
        assert!(metadata_bytes(&m).unwrap_err().contains("\"loss\""));
    }

    #[test]
    fn json_error_position_counts_lines() {
        assert_eq!(byte_position(b"{\"a\":1,\n\"b\":x}", 2, 5), 12);
        assert_eq!(byte_position(b"{x}", 1, 2), 1);
    }

    #[test]
    fn model_rejects_inconsistent_numbers() {
        let e = entry(SectionKind::Model);
        let ctx = Ctx {
            path: Path::new("t.kdz"),
            entry: &e,
        };
        let mut buf = Vec::new();
        write_model(&mut buf, &model()).unwrap();
        let mut bad = buf.clone();
        LE::write_u32(&mut bad[20..24], 4);
        let err = read_model(ctx, (1, 1), &bad).unwrap_err().to_string();
        assert!(
            err.contains("4 bits per code disagrees with K = 5"),
            "{err}"
        );
        let mut bad = buf.clone();
        LE::write_u64(&mut bad[24..32], 3);
        let err = read_model(ctx, (1, 1), &bad).unwrap_err().to_string();
        assert!(err.contains("3 bytes per row"), "{err}");
        let mut bad = buf.clone();
        LE::write_u32(&mut bad[12..16], 65_537);
        assert!(
            read_model(ctx, (1, 1), &bad)
                .unwrap_err()
                .to_string()
                .contains("K = 65537")
        );
        let mut bad = buf;
        LE::write_u32(&mut bad[8..12], 9);
        assert!(
            read_model(ctx, (1, 1), &bad)
                .unwrap_err()
                .to_string()
                .contains("composer kind 9, which this kdcompress does not know")
        );
    }
}
