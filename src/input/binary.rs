//! word2vec binary: a `N d` header line, then per word `word<space>` and `d` little-endian f32,
//! usually followed by a newline.
//!
//! Records have no fixed size (words vary) and the float bytes may hold any value, newlines and
//! spaces included, so the only way to find record `i` is to walk records `0..i`. Walking is
//! cheap next to decoding (a string allocation per word, a copy and a check per value), so a
//! mapped file is walked once to find the records, then decoded on all cores; a stream is read
//! in one sequential pass.

use std::fs::File;
use std::io::{self, Read};

use memchr::memchr;

use super::error::{Ctx, InputError, Location, escape_invalid_utf8};
use rayon::prelude::*;

use super::map::{MappedCursor, crc32_file, map_range, range_len};
use super::sniff::{Header, Layout};
use super::text::{allocate, decode_word, is_space};
use super::{Parsed, ReadOptions, Rows};

/// Longest word accepted, in bytes: word2vec itself caps words at 100 bytes, fastText at a few
/// hundred; anything near this limit is a file in some other format.
pub(super) const MAX_WORD_BYTES: usize = 64 * 1024;

/// Bytes mapped (or buffered) at a time.
const WINDOW: usize = 8 << 20;

/// A forward-only byte source: a mapped file or a decompressing stream.
pub(super) trait ByteSource {
    /// Bytes from the current position: at least `want` of them unless the input ends first.
    fn fill(&mut self, want: usize) -> io::Result<&[u8]>;
    /// Moves past `n` bytes returned by `fill`.
    fn consume(&mut self, n: usize);
    /// Position in the (decompressed) content.
    fn offset(&self) -> u64;
}

impl ByteSource for MappedCursor<'_> {
    fn fill(&mut self, want: usize) -> io::Result<&[u8]> {
        MappedCursor::fill(self, want)
    }
    fn consume(&mut self, n: usize) {
        MappedCursor::consume(self, n)
    }
    fn offset(&self) -> u64 {
        MappedCursor::offset(self)
    }
}

/// A buffered reader that hands out as many contiguous bytes as a record needs.
pub(super) struct StreamCursor<R> {
    reader: R,
    buf: Vec<u8>,
    start: usize,
    offset: u64,
    eof: bool,
}

impl<R: Read> StreamCursor<R> {
    /// A cursor whose first bytes, at content offset `offset`, are `buffered`.
    pub fn new(reader: R, buffered: Vec<u8>, offset: u64) -> Self {
        StreamCursor {
            reader,
            buf: buffered,
            start: 0,
            offset,
            eof: false,
        }
    }
}

impl<R: Read> ByteSource for StreamCursor<R> {
    fn fill(&mut self, want: usize) -> io::Result<&[u8]> {
        if self.buf.len() - self.start < want && !self.eof {
            self.buf.drain(..self.start);
            self.start = 0;
            let need = want.max(WINDOW) - self.buf.len();
            let got = (&mut self.reader)
                .take(need as u64)
                .read_to_end(&mut self.buf)?;
            self.eof = got < need;
        }
        Ok(&self.buf[self.start..])
    }
    fn consume(&mut self, n: usize) {
        let n = n.min(self.buf.len() - self.start);
        self.start += n;
        self.offset += n as u64;
    }
    fn offset(&self) -> u64 {
        self.offset
    }
}

/// Records decoded per parallel task.
const BATCH_ROWS: usize = 16 * 1024;

/// Reads a plain word2vec binary file through windowed memory maps; returns the rows and the
/// file's CRC-32.
///
/// A sequential scan finds where each record starts (that is the only part that cannot be
/// split), then batches of records are decoded in parallel straight into the matrix.
pub(super) fn read_mapped(
    file: &File,
    len: u64,
    ctx: &Ctx<'_>,
    layout: &Layout,
    opts: &ReadOptions,
) -> Result<(Parsed, u32), InputError> {
    let header = layout.header.ok_or_else(|| InputError::Header {
        path: ctx.path(),
        found: String::new(),
    })?;
    if header.words == 0 {
        return Err(InputError::Empty { path: ctx.path() });
    }
    let rows = rows_to_read(header, opts);
    // Each record takes at least a one-byte word, a space and the vector; a header promising
    // more than the file can hold is refused before anything is allocated.
    let available = len - layout.data_start;
    let needed = (header.dim as u64)
        .checked_mul(4)
        .and_then(|v| v.checked_add(2))
        .and_then(|r| r.checked_mul(rows))
        .unwrap_or(u64::MAX);
    if needed > available {
        return Err(InputError::TooShort {
            path: ctx.path(),
            words: header.words,
            dim: header.dim,
            needed,
            available,
        });
    }
    let (scan, crc) = rayon::join(
        || {
            let mut cursor = MappedCursor::new(file, len, layout.data_start, WINDOW);
            scan_records(&mut cursor, ctx, header, rows)
        },
        || crc32_file(file, len, WINDOW as u64),
    );
    let scan = scan?;
    let crc = crc.map_err(|e| ctx.io(e))?;

    let dim = header.dim;
    let (mut words, mut matrix) = allocate(ctx, scan.starts.len() as u64, dim)?;
    let batches: Vec<_> = scan
        .starts
        .chunks(BATCH_ROWS)
        .zip(words.chunks_mut(BATCH_ROWS))
        .zip(matrix.chunks_mut(BATCH_ROWS * dim))
        .enumerate()
        .map(|(i, ((starts, words), matrix))| {
            let end = scan
                .starts
                .get((i + 1) * BATCH_ROWS)
                .copied()
                .unwrap_or(scan.end);
            (starts, end, words, matrix)
        })
        .collect();
    let outcomes: Vec<Result<(), InputError>> = batches
        .into_par_iter()
        .map(|(starts, end, words, matrix)| {
            let base = starts[0];
            let map = map_range(file, base, range_len(base, end).map_err(|e| ctx.io(e))?)
                .map_err(|e| ctx.io(e))?;
            for ((&at, word), row) in starts.iter().zip(words).zip(matrix.chunks_mut(dim)) {
                let record = &map[(at - base) as usize..];
                // The scan found this space and the whole vector after it.
                let word_len = memchr(b' ', record).unwrap_or(record.len());
                *word = decode_record(record, word_len, row, ctx, at, opts.lossy_utf8)?;
            }
            Ok(())
        })
        .collect();
    // Batches are in file order: the first error found is the first in the file, and an error
    // the scan stopped at comes after every record before it.
    outcomes.into_iter().collect::<Result<(), _>>()?;
    if let Some(stop) = scan.stop {
        return Err(stop);
    }
    let parsed = Parsed {
        words,
        matrix,
        dim,
        rows: Rows::Offsets(scan.starts),
    };
    Ok((parsed, crc))
}

/// Where the records of a file are.
struct Scan {
    /// Offset of each whole record (its word's first byte).
    starts: Vec<u64>,
    /// Offset just past the last whole record's vector.
    end: u64,
    /// What ended the scan early, to report once the records before it are checked.
    stop: Option<InputError>,
}

/// Walks `rows` records without decoding them.
fn scan_records<S: ByteSource>(
    src: &mut S,
    ctx: &Ctx<'_>,
    header: Header,
    rows: u64,
) -> Result<Scan, InputError> {
    let too_large = || ctx.too_large(header.words, header.dim);
    let vector_bytes = header.dim.checked_mul(4).ok_or_else(too_large)?;
    let mut starts: Vec<u64> = Vec::new();
    starts
        .try_reserve_exact(usize::try_from(rows).map_err(|_| too_large())?)
        .map_err(|_| too_large())?;
    let mut end = src.offset();
    let stop = (|| {
        for row in 0..rows {
            let (at, _, bytes) = next_record(src, ctx, row, header.words, vector_bytes)?;
            let record = bytes.len();
            starts.push(at);
            src.consume(record);
            end = src.offset();
        }
        if rows == header.words {
            check_trailing(src, ctx, header)?;
        }
        Ok(())
    })()
    .err();
    Ok(Scan { starts, end, stop })
}

/// The next record, past the newlines that may precede it: its offset, its word's length and
/// its bytes (the word, the space and `vector_bytes` of vector), or an error naming row `row`
/// of the `promised` if the word has no space after it or the vector is cut short.
fn next_record<'s, S: ByteSource>(
    src: &'s mut S,
    ctx: &Ctx<'_>,
    row: u64,
    promised: u64,
    vector_bytes: usize,
) -> Result<(u64, usize, &'s [u8]), InputError> {
    let at = skip_newlines(src, ctx)?;
    let word_len = find_space(src, ctx, at, row, promised)?;
    let record = word_len + 1 + vector_bytes;
    let bytes = src.fill(record).map_err(|e| ctx.io(e))?;
    if bytes.len() < record {
        return Err(truncated_vector(
            ctx,
            at,
            row,
            vector_bytes,
            bytes.len() - word_len - 1,
        ));
    }
    Ok((at, word_len, &bytes[..record]))
}

/// Skips the newlines that may separate records; returns the offset of the next record.
fn skip_newlines<S: ByteSource>(src: &mut S, ctx: &Ctx<'_>) -> Result<u64, InputError> {
    // word2vec writes a newline after each vector; other writers do not.
    while src.fill(1).map_err(|e| ctx.io(e))?.first() == Some(&b'\n') {
        src.consume(1);
    }
    Ok(src.offset())
}

fn truncated_vector(
    ctx: &Ctx<'_>,
    at: u64,
    row: u64,
    needed: usize,
    available: usize,
) -> InputError {
    InputError::Truncated {
        path: ctx.path(),
        offset: at,
        record: row + 1,
        what: "vector",
        needed: needed as u64,
        available: available as u64,
    }
}

/// After the last record only whitespace may follow; anything else means the header
/// undercounts.
fn check_trailing<S: ByteSource>(
    src: &mut S,
    ctx: &Ctx<'_>,
    header: Header,
) -> Result<(), InputError> {
    loop {
        let bytes = src.fill(1).map_err(|e| ctx.io(e))?;
        if bytes.is_empty() {
            return Ok(());
        }
        match bytes.iter().position(|&b| !is_space(b)) {
            Some(i) => {
                src.consume(i);
                return Err(InputError::TrailingData {
                    path: ctx.path(),
                    offset: src.offset(),
                    words: header.words,
                });
            }
            None => {
                let n = bytes.len();
                src.consume(n);
            }
        }
    }
}

/// Decodes one record (`record` starts at its word, whose length is `word_len`) into `row`;
/// returns the word.
fn decode_record(
    record: &[u8],
    word_len: usize,
    row: &mut [f32],
    ctx: &Ctx<'_>,
    at: u64,
    lossy: bool,
) -> Result<String, InputError> {
    let word_bytes = &record[..word_len];
    if word_bytes.is_empty() {
        return Err(InputError::EmptyWord {
            path: ctx.path(),
            at: Location::Offset(at),
        });
    }
    let word = decode_word(word_bytes, lossy).ok_or_else(|| InputError::Utf8 {
        path: ctx.path(),
        at: Location::Offset(at),
        found: escape_invalid_utf8(word_bytes),
    })?;
    let values = &record[word_len + 1..word_len + 1 + 4 * row.len()];
    for (slot, b) in row.iter_mut().zip(values.chunks_exact(4)) {
        *slot = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    if let Some(i) = row.iter().position(|v| !v.is_finite()) {
        return Err(InputError::NonFinite {
            path: ctx.path(),
            at: Location::Offset(at + (word_len + 1 + 4 * i) as u64),
            index: i + 1,
            value: row[i],
        });
    }
    Ok(word)
}

/// Records to read: the header's count, or fewer if `max_words` says so.
pub(super) fn rows_to_read(header: Header, opts: &ReadOptions) -> u64 {
    opts.max_words
        .map_or(header.words, |m| header.words.min(m as u64))
}

/// Reads `rows` records in one sequential pass, reserving room for `reserve_rows` up front:
/// for streams, which cannot be read twice.
pub(super) fn parse_records<S: ByteSource>(
    src: &mut S,
    ctx: &Ctx<'_>,
    header: Header,
    opts: &ReadOptions,
    rows: u64,
    reserve_rows: u64,
) -> Result<Parsed, InputError> {
    let dim = header.dim;
    let too_large = || ctx.too_large(header.words, dim);
    let vector_bytes = dim.checked_mul(4).ok_or_else(too_large)?;
    let reserve = usize::try_from(reserve_rows).map_err(|_| too_large())?;
    let mut matrix: Vec<f32> = Vec::new();
    matrix
        .try_reserve_exact(reserve.checked_mul(dim).ok_or_else(too_large)?)
        .map_err(|_| too_large())?;
    let mut words: Vec<String> = Vec::new();
    words.try_reserve_exact(reserve).map_err(|_| too_large())?;
    let mut offsets: Vec<u64> = Vec::new();
    offsets
        .try_reserve_exact(reserve)
        .map_err(|_| too_large())?;

    for row in 0..rows {
        let (at, word_len, bytes) = next_record(src, ctx, row, header.words, vector_bytes)?;
        let record = bytes.len();
        let start = matrix.len();
        matrix.try_reserve(dim).map_err(|_| too_large())?;
        matrix.resize(start + dim, 0.0);
        let word = decode_record(
            bytes,
            word_len,
            &mut matrix[start..],
            ctx,
            at,
            opts.lossy_utf8,
        )?;
        words.try_reserve(1).map_err(|_| too_large())?;
        words.push(word);
        offsets.try_reserve(1).map_err(|_| too_large())?;
        offsets.push(at);
        src.consume(record);
    }
    if rows == header.words {
        check_trailing(src, ctx, header)?;
    }
    Ok(Parsed {
        words,
        matrix,
        dim,
        rows: Rows::Offsets(offsets),
    })
}

/// Length of the word starting at the cursor, which must end in a space.
fn find_space<S: ByteSource>(
    src: &mut S,
    ctx: &Ctx<'_>,
    at: u64,
    row: u64,
    promised: u64,
) -> Result<usize, InputError> {
    let mut want = 64;
    loop {
        let bytes = src.fill(want).map_err(|e| ctx.io(e))?;
        if bytes.is_empty() {
            return Err(InputError::HeaderCount {
                path: ctx.path(),
                expected: promised,
                found: row,
            });
        }
        let searched = &bytes[..bytes.len().min(MAX_WORD_BYTES + 1)];
        if let Some(i) = memchr(b' ', searched) {
            return Ok(i);
        }
        if searched.len() > MAX_WORD_BYTES {
            return Err(InputError::WordTooLong {
                path: ctx.path(),
                offset: at,
                limit: MAX_WORD_BYTES,
            });
        }
        if bytes.len() < want {
            return Err(InputError::Truncated {
                path: ctx.path(),
                offset: at,
                record: row + 1,
                what: "word and the space after it",
                needed: bytes.len() as u64 + 1,
                available: bytes.len() as u64,
            });
        }
        want = (want * 8).min(MAX_WORD_BYTES + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn record(word: &[u8], values: &[f32], newline: bool) -> Vec<u8> {
        let mut out = word.to_vec();
        out.push(b' ');
        for v in values {
            out.extend_from_slice(&v.to_le_bytes());
        }
        if newline {
            out.push(b'\n');
        }
        out
    }

    fn parse(bytes: &[u8], words: u64, dim: usize) -> Result<Parsed, InputError> {
        let ctx = Ctx {
            path: Path::new("v.bin"),
            compression: None,
        };
        // A tiny buffer, so that records straddle refills.
        let mut src = StreamCursor::new(io::Cursor::new(bytes.to_vec()), Vec::new(), 0);
        let header = Header { words, dim };
        parse_records(&mut src, &ctx, header, &ReadOptions::default(), words, 1)
    }

    #[test]
    fn newline_after_vectors_is_optional() {
        let mut bytes = record(b"a", &[1.0, 10.0], true);
        // 10.0f32 is 00 00 20 41: a space inside the vector must not end the next word early.
        bytes.extend(record(b"b", &[2.0, 3.0], false));
        bytes.extend(record(b"c", &[4.0, 5.0], true));
        let p = parse(&bytes, 3, 2).unwrap();
        assert_eq!(p.words, ["a", "b", "c"]);
        assert_eq!(p.matrix, [1.0, 10.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(p.rows.locate(2), Location::Offset(21));
    }

    #[test]
    fn truncation_is_located() {
        let bytes = record(b"word", &[1.0, 2.0], false);
        let e = parse(&bytes[..bytes.len() - 3], 1, 2).unwrap_err();
        assert!(matches!(
            e,
            InputError::Truncated {
                offset: 0,
                record: 1,
                needed: 8,
                available: 5,
                ..
            }
        ));
        let e = parse(b"wor", 1, 2).unwrap_err();
        assert!(matches!(e, InputError::Truncated { available: 3, .. }));
    }

    #[test]
    fn missing_and_extra_records_are_refused() {
        let one = record(b"a", &[1.0], true);
        assert!(matches!(
            parse(&one, 2, 1).unwrap_err(),
            InputError::HeaderCount {
                expected: 2,
                found: 1,
                ..
            }
        ));
        let mut two = one.clone();
        two.extend(record(b"b", &[1.0], true));
        assert!(matches!(
            parse(&two, 1, 1).unwrap_err(),
            InputError::TrailingData { offset: 7, .. }
        ));
        let mut spaced = one;
        spaced.extend_from_slice(b"\n \r\n");
        assert_eq!(parse(&spaced, 1, 1).unwrap().words, ["a"]);
    }

    #[test]
    fn bad_values_and_words() {
        let e = parse(&record(b"a", &[1.0, f32::NAN], true), 1, 2).unwrap_err();
        assert!(matches!(
            e,
            InputError::NonFinite {
                at: Location::Offset(6),
                index: 2,
                ..
            }
        ));
        let e = parse(&record(b"", &[1.0], true), 1, 1).unwrap_err();
        assert!(matches!(e, InputError::EmptyWord { .. }));
        let e = parse(&record(b"\xc3(", &[1.0], true), 1, 1).unwrap_err();
        assert!(matches!(e, InputError::Utf8 { found, .. } if found == "\\xc3("));
        let e = parse(&vec![b'x'; MAX_WORD_BYTES + 10], 1, 1).unwrap_err();
        assert!(matches!(e, InputError::WordTooLong { .. }));
    }
}
