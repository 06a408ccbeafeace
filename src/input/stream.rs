//! Inputs that cannot be mapped: gzip and zstd files, pipes and other non-regular files.
//!
//! The decompressed text is cut into blocks of whole lines. A wave of blocks (one per thread)
//! is parsed in parallel straight into the growing matrix while the next wave is decompressed,
//! so at most two waves of text are held at a time, never the whole file.

use std::fs::File;
use std::io::{self, BufReader, Chain, Cursor, Read};
use std::path::Path;

use memchr::{memchr, memchr_iter, memrchr};
use rayon::prelude::*;

use super::binary::{StreamCursor, parse_records, rows_to_read};
use super::error::{Ctx, InputError};
use super::sniff::{Layout, SNIFF_BYTES, sniff};
use super::text::{LineError, check_header_count, dimension_of_first_line, is_space, parse_lines};
use super::{Compression, Format, Parsed, ReadOptions, Rows};

/// Decompressed bytes per block.
const BLOCK_BYTES: usize = 1 << 20;

/// Longest line the streaming reader will buffer. A 300-dimensional vector takes about 3 KB;
/// a line this long is not word vectors.
pub(super) const MAX_LINE_BYTES: usize = 64 << 20;

/// Rows reserved up front from a header's promise, which a hostile file can inflate.
const MAX_RESERVED_CELLS: u64 = 1 << 26;

/// Hashes every byte read through it, so the checksum covers the file as stored.
pub(super) struct Hashing<R> {
    inner: R,
    crc: crc32fast::Hasher,
    bytes: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

type Raw = Chain<Cursor<Vec<u8>>, Hashing<File>>;

/// The content of a file, decompressed if it needs to be.
enum Decoder {
    Plain(Raw),
    Gzip(flate2::read::MultiGzDecoder<Raw>),
    Zstd(Box<zstd::stream::read::Decoder<'static, BufReader<Raw>>>),
}

impl Read for Decoder {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Plain(r) => r.read(buf),
            Decoder::Gzip(r) => r.read(buf),
            Decoder::Zstd(r) => r.read(buf),
        }
    }
}

impl Decoder {
    fn into_raw(self) -> Raw {
        match self {
            Decoder::Plain(r) => r,
            Decoder::Gzip(r) => r.into_inner(),
            Decoder::Zstd(r) => r.finish().into_inner(),
        }
    }
}

impl Compression {
    /// The compression whose magic number starts `bytes`, if any.
    pub(super) fn from_magic(bytes: &[u8]) -> Option<Compression> {
        if bytes.starts_with(&[0x1f, 0x8b]) {
            Some(Compression::Gzip)
        } else if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Compression::Zstd)
        } else {
            None
        }
    }
}

/// What a streamed read produced, with the file's checksum and size.
pub(super) struct Streamed {
    pub parsed: Parsed,
    pub format: Format,
    pub compression: Option<Compression>,
    pub crc: u32,
    pub size: u64,
}

/// The file's content from its start, decompressed if its magic number says so.
pub(super) struct Opened {
    decoder: Decoder,
    /// The compression found.
    pub compression: Option<Compression>,
}

/// Opens `file` as a stream, looking at its first bytes for a compression magic number.
pub(super) fn open(file: File, path: &Path) -> Result<Opened, InputError> {
    let mut raw = Hashing {
        inner: file,
        crc: crc32fast::Hasher::new(),
        bytes: 0,
    };
    let mut magic = Vec::with_capacity(4);
    (&mut raw)
        .take(4)
        .read_to_end(&mut magic)
        .map_err(|source| InputError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    let compression = Compression::from_magic(&magic);
    let ctx = Ctx { path, compression };
    let raw = Cursor::new(magic).chain(raw);
    let decoder = match compression {
        None => Decoder::Plain(raw),
        Some(Compression::Gzip) => Decoder::Gzip(flate2::read::MultiGzDecoder::new(raw)),
        Some(Compression::Zstd) => Decoder::Zstd(Box::new(
            zstd::stream::read::Decoder::new(raw).map_err(|e| ctx.io(e))?,
        )),
    };
    Ok(Opened {
        decoder,
        compression,
    })
}

impl Opened {
    /// The first [`SNIFF_BYTES`] of content, and whether that is all of it.
    pub fn prefix(&mut self, ctx: &Ctx<'_>) -> Result<(Vec<u8>, bool), InputError> {
        let mut prefix = Vec::new();
        (&mut self.decoder)
            .take(SNIFF_BYTES as u64)
            .read_to_end(&mut prefix)
            .map_err(|e| ctx.io(e))?;
        let complete = prefix.len() < SNIFF_BYTES;
        Ok((prefix, complete))
    }
}

/// Reads `file` from its start as a stream, decompressing if its magic number says so.
pub(super) fn read(file: File, path: &Path, opts: &ReadOptions) -> Result<Streamed, InputError> {
    let mut opened = open(file, path)?;
    let compression = opened.compression;
    let ctx = Ctx { path, compression };
    let (mut prefix, complete) = opened.prefix(&ctx)?;
    if prefix.is_empty() {
        return Err(InputError::Empty { path: ctx.path() });
    }
    let layout = sniff(&prefix, complete, opts.format, &ctx)?;
    let data = prefix.split_off(layout.data_start as usize);
    let decoder = &mut opened.decoder;
    let parsed = match layout.format {
        Format::Word2vecBinary => read_binary(decoder, data, &ctx, &layout, opts)?,
        Format::Glove | Format::Word2vecText => read_text(decoder, data, &ctx, &layout, opts)?,
    };

    // The checksum covers the whole file even when `max_words` stopped decoding early.
    let (_, mut raw) = opened.decoder.into_raw().into_inner();
    io::copy(&mut raw, &mut io::sink()).map_err(|source| InputError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Streamed {
        parsed,
        format: layout.format,
        compression,
        crc: raw.crc.finalize(),
        size: raw.bytes,
    })
}

fn read_binary<R: Read>(
    reader: R,
    data: Vec<u8>,
    ctx: &Ctx<'_>,
    layout: &Layout,
    opts: &ReadOptions,
) -> Result<Parsed, InputError> {
    let header = layout.header.ok_or_else(|| InputError::Header {
        path: ctx.path(),
        found: String::new(),
    })?;
    let rows = rows_to_read(header, opts);
    if header.words == 0 {
        return Err(InputError::Empty { path: ctx.path() });
    }
    let reserve = rows.min(MAX_RESERVED_CELLS / header.dim as u64);
    let mut cursor = StreamCursor::new(reader, data, layout.data_start);
    parse_records(&mut cursor, ctx, header, opts, rows, reserve)
}

/// Whole lines of decompressed text.
struct Block {
    bytes: Vec<u8>,
    /// 1-based line number of its first line.
    first_line: u64,
    rows: u64,
}

/// Cuts a stream into blocks that end on a line that is not blank, so that blank lines at the
/// very end of the input can be dropped without holding them back indefinitely.
struct Blocks<'a, R> {
    reader: R,
    ctx: &'a Ctx<'a>,
    carry: Vec<u8>,
    done: bool,
    first_line: u64,
    /// Rows emitted so far.
    rows: u64,
    /// Stop emitting once this many rows are out.
    max_rows: u64,
    block_bytes: usize,
}

impl<R: Read> Blocks<'_, R> {
    fn next_block(&mut self) -> Result<Option<Block>, InputError> {
        if self.done {
            return Ok(None);
        }
        let mut buf = std::mem::take(&mut self.carry);
        loop {
            let want = self.block_bytes;
            buf.try_reserve(want)
                .map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))
                .map_err(|e| self.ctx.io(e))?;
            let got = (&mut self.reader)
                .take(want as u64)
                .read_to_end(&mut buf)
                .map_err(|e| self.ctx.io(e))?;
            if got < want {
                self.done = true;
                let end = buf.iter().rposition(|&b| !is_space(b)).map_or(0, |i| i + 1);
                buf.truncate(end);
                return Ok((!buf.is_empty()).then(|| self.emit(buf, true)));
            }
            if let Some(cut) = cut_after_last_full_line(&buf) {
                self.carry = buf.split_off(cut);
                return Ok(Some(self.emit(buf, false)));
            }
            if buf.len() > MAX_LINE_BYTES {
                return Err(InputError::LineTooLong {
                    path: self.ctx.path(),
                    line: self.first_line,
                    limit: MAX_LINE_BYTES,
                });
            }
        }
    }

    fn emit(&mut self, bytes: Vec<u8>, last: bool) -> Block {
        let newlines = memchr_iter(b'\n', &bytes).count() as u64;
        let rows = newlines + u64::from(last);
        let block = Block {
            bytes,
            first_line: self.first_line,
            rows,
        };
        self.first_line += newlines;
        self.rows += rows;
        block
    }

    /// Up to `n` blocks, fewer at the end of the input or once `max_rows` rows are out (but
    /// always the first block, which carries the dimension).
    fn next_wave(&mut self, n: usize) -> Result<Vec<Block>, InputError> {
        let mut wave = Vec::with_capacity(n);
        while wave.len() < n && (self.rows < self.max_rows || self.first_line_pending()) {
            match self.next_block()? {
                Some(block) => wave.push(block),
                None => break,
            }
        }
        Ok(wave)
    }

    fn first_line_pending(&self) -> bool {
        self.rows == 0 && !self.done
    }
}

/// Where to cut `buf` so that the block ends with the newline of its last non-blank line and
/// the rest (a partial line, or blank lines) carries over. `None` when there is no such line.
fn cut_after_last_full_line(buf: &[u8]) -> Option<usize> {
    let last = buf.iter().rposition(|&b| !is_space(b))?;
    match memchr(b'\n', &buf[last..]) {
        Some(i) => Some(last + i + 1),
        None => memrchr(b'\n', &buf[..last]).map(|i| i + 1),
    }
}

fn read_text<R: Read + Send>(
    reader: R,
    data: Vec<u8>,
    ctx: &Ctx<'_>,
    layout: &Layout,
    opts: &ReadOptions,
) -> Result<Parsed, InputError> {
    read_text_blocks(reader, data, ctx, layout, opts, BLOCK_BYTES)
}

fn read_text_blocks<R: Read + Send>(
    reader: R,
    data: Vec<u8>,
    ctx: &Ctx<'_>,
    layout: &Layout,
    opts: &ReadOptions,
    block_bytes: usize,
) -> Result<Parsed, InputError> {
    let header_lines = u64::from(layout.header.is_some());
    let max_rows = opts.max_words.map_or(u64::MAX, |m| m as u64);
    let mut blocks = Blocks {
        reader,
        ctx,
        carry: data,
        done: false,
        first_line: header_lines + 1,
        rows: 0,
        max_rows,
        block_bytes: block_bytes.max(1),
    };
    let threads = rayon::current_num_threads().max(1);
    let mut wave = blocks.next_wave(threads)?;
    let Some(first) = wave.first() else {
        return Err(InputError::Empty { path: ctx.path() });
    };
    let dim = match layout.header {
        Some(h) => h.dim,
        None => {
            let end = memchr(b'\n', &first.bytes).unwrap_or(first.bytes.len());
            dimension_of_first_line(&first.bytes[..end], ctx, first.first_line)?
        }
    };

    let mut words: Vec<String> = Vec::new();
    let mut matrix: Vec<f32> = Vec::new();
    if let Some(h) = layout.header {
        let rows = h.words.min(max_rows).min(MAX_RESERVED_CELLS / dim as u64) as usize;
        reserve(&mut words, &mut matrix, rows, dim, ctx)?;
    }
    let lossy = opts.lossy_utf8;
    while !wave.is_empty() {
        let mut kept = words.len() as u64;
        let mut rows_in_block = Vec::with_capacity(wave.len());
        for block in &wave {
            let rows = block.rows.min(max_rows - kept);
            rows_in_block.push(rows as usize);
            kept += rows;
        }
        let old = words.len();
        let new_rows = (kept as usize) - old;
        reserve(&mut words, &mut matrix, new_rows, dim, ctx)?;
        words.resize(old + new_rows, String::new());
        matrix.resize((old + new_rows) * dim, 0.0);

        let mut jobs = Vec::with_capacity(wave.len());
        let mut words_left = &mut words[old..];
        let mut matrix_left = &mut matrix[old * dim..];
        for (block, &rows) in wave.iter().zip(&rows_in_block) {
            let (w, w_rest) = std::mem::take(&mut words_left).split_at_mut(rows);
            let (m, m_rest) = std::mem::take(&mut matrix_left).split_at_mut(rows * dim);
            words_left = w_rest;
            matrix_left = m_rest;
            jobs.push((block, w, m));
        }
        let (outcomes, next) = rayon::join(
            || {
                jobs.into_par_iter()
                    .map(|(block, w, m)| {
                        parse_lines(&block.bytes, dim, w, m, lossy)
                            .map_err(|e: LineError| (block.first_line, e))
                    })
                    .collect::<Vec<_>>()
            },
            || blocks.next_wave(threads),
        );
        for outcome in outcomes {
            if let Err((first_line, e)) = outcome {
                return Err(e.fault.at(ctx, first_line + e.line as u64, dim));
            }
        }
        wave = next?;
    }
    check_header_count(
        ctx,
        layout.header.map(|h| h.words),
        blocks.rows,
        opts.max_words,
    )?;
    Ok(Parsed {
        words,
        matrix,
        dim,
        rows: Rows::Lines {
            first: header_lines + 1,
        },
    })
}

/// Room for `rows` more rows, or the error that says they do not fit.
fn reserve(
    words: &mut Vec<String>,
    matrix: &mut Vec<f32>,
    rows: usize,
    dim: usize,
    ctx: &Ctx<'_>,
) -> Result<(), InputError> {
    let total = words.len() + rows;
    let too_large = || ctx.too_large(total as u64, dim);
    let cells = rows.checked_mul(dim).ok_or_else(too_large)?;
    words.try_reserve(rows).map_err(|_| too_large())?;
    matrix.try_reserve(cells).map_err(|_| too_large())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::sniff::Header;

    fn ctx() -> Ctx<'static> {
        Ctx {
            path: Path::new("s.txt"),
            compression: None,
        }
    }

    fn glove() -> Layout {
        Layout {
            format: Format::Glove,
            header: None,
            data_start: 0,
        }
    }

    fn read_small(text: &str, block: usize, max: Option<usize>) -> Result<Parsed, InputError> {
        let opts = ReadOptions {
            max_words: max,
            ..ReadOptions::default()
        };
        let bytes = text.as_bytes();
        // Part of the text arrives as already-sniffed data, the rest through the reader.
        let split = bytes.len().min(3);
        read_text_blocks(
            Cursor::new(bytes[split..].to_vec()),
            bytes[..split].to_vec(),
            &ctx(),
            &glove(),
            &opts,
            block,
        )
    }

    #[test]
    fn tiny_blocks_parse_like_one_block() {
        let text = "the 1 2\nof 3 4\r\nlonger_word_here -5 6e1\nz 7 8 \n\n \n";
        let whole = read_small(text, 1 << 20, None).unwrap();
        assert_eq!(whole.words, ["the", "of", "longer_word_here", "z"]);
        for block in 1..20 {
            let p = read_small(text, block, None).unwrap();
            assert_eq!(p.words, whole.words, "block {block}");
            assert_eq!(p.matrix, whole.matrix, "block {block}");
        }
    }

    #[test]
    fn errors_carry_line_numbers_across_blocks() {
        let text = "a 1\nb 2\nc 3\nd x\n";
        for block in [1, 3, 100] {
            let e = read_small(text, block, None).unwrap_err();
            assert!(
                matches!(
                    e,
                    InputError::Number {
                        line: 4,
                        index: 1,
                        ..
                    }
                ),
                "block {block}: {e}"
            );
        }
        let e = read_small("a 1\n\nb 2\n", 2, None).unwrap_err();
        assert!(matches!(e, InputError::EmptyLine { line: 2, .. }), "{e}");
    }

    #[test]
    fn max_words_stops_early() {
        let text = "a 1\nb 2\nc 3\nd x\n";
        let p = read_small(text, 2, Some(2)).unwrap();
        assert_eq!(p.words, ["a", "b"]);
        let p = read_small(text, 2, Some(0)).unwrap();
        assert!(p.words.is_empty());
    }

    #[test]
    fn header_count_is_checked() {
        let layout = Layout {
            format: Format::Word2vecText,
            header: Some(Header { words: 3, dim: 1 }),
            data_start: 0,
        };
        let e = read_text_blocks(
            Cursor::new(b"a 1\nb 2\n".to_vec()),
            Vec::new(),
            &ctx(),
            &layout,
            &ReadOptions::default(),
            4,
        )
        .unwrap_err();
        assert!(matches!(
            e,
            InputError::HeaderCount {
                expected: 3,
                found: 2,
                ..
            }
        ));
    }

    #[test]
    fn cut_points() {
        assert_eq!(cut_after_last_full_line(b"a 1\nb 2\nc"), Some(8));
        assert_eq!(cut_after_last_full_line(b"a 1\nb 2\n\n \n"), Some(8));
        assert_eq!(cut_after_last_full_line(b"a 1"), None);
        assert_eq!(cut_after_last_full_line(b" \n\n"), None);
    }
}
