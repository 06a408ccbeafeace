//! Text formats (GloVe, word2vec text, fastText `.vec`): one `word v1 ... vd` row per line.
//!
//! A mapped file is read in two parallel passes over windows of a few megabytes. The first
//! counts newlines (and hashes the bytes); that fixes every row's index before any parsing, so
//! the matrix is allocated once at its final size and each chunk of lines parses straight into
//! its own rows. Blank lines are refused except at the end of the file, which is what lets a
//! newline count stand for a row count.

use std::fs::File;
use std::io;

use memchr::{memchr, memchr_iter};
use rayon::prelude::*;

use super::error::{Ctx, InputError, Location, escape_invalid_utf8, excerpt};
use super::float::parse_f32_at;
use super::map::{map_range, range_len, windows};
use super::sniff::Layout;
use super::{Parsed, ReadOptions, Rows};

/// Blanks that may end a line or separate fields. `\r` counts so that CRLF files parse.
#[inline]
fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t' || b == b'\r'
}

/// Whitespace that may trail the last row.
#[inline]
pub(super) fn is_space(b: u8) -> bool {
    is_blank(b) || b == b'\n'
}

/// What is wrong with one line, before it is known which file and line number it is.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum LineFault {
    EmptyLine,
    EmptyWord,
    Dimension { found: usize },
    Number { index: usize, found: String },
    NonFinite { index: usize, value: f32 },
    Utf8 { found: String },
}

impl LineFault {
    /// The error for this fault on 1-based `line` of a file with vectors of `dim` values.
    pub(super) fn at(self, ctx: &Ctx<'_>, line: u64, dim: usize) -> InputError {
        let path = ctx.path();
        match self {
            LineFault::EmptyLine => InputError::EmptyLine { path, line },
            LineFault::EmptyWord => InputError::EmptyWord {
                path,
                at: Location::Line(line),
            },
            LineFault::Dimension { found } => InputError::Dimension {
                path,
                line,
                expected: dim,
                found,
            },
            LineFault::Number { index, found } => InputError::Number {
                path,
                line,
                index,
                found,
            },
            LineFault::NonFinite { index, value } => InputError::NonFinite {
                path,
                at: Location::Line(line),
                index,
                value,
            },
            LineFault::Utf8 { found } => InputError::Utf8 {
                path,
                at: Location::Line(line),
                found,
            },
        }
    }
}

/// A fault on the `line`-th (0-based) line of a chunk.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct LineError {
    pub line: usize,
    pub fault: LineFault,
}

/// Decodes a word, lossily if asked.
pub(super) fn decode_word(bytes: &[u8], lossy: bool) -> Option<String> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Some(s.to_owned()),
        Err(_) if lossy => Some(String::from_utf8_lossy(bytes).into_owned()),
        Err(_) => None,
    }
}

/// Parses `words.len()` lines from the start of `bytes` into `words` and `matrix`
/// (`words.len()` rows of `dim` values). Lines beyond those are left alone.
pub(super) fn parse_lines(
    bytes: &[u8],
    dim: usize,
    words: &mut [String],
    matrix: &mut [f32],
    lossy: bool,
) -> Result<(), LineError> {
    if dim == 0 || matrix.len() != words.len() * dim {
        // Callers derive both from the same counts; refuse rather than index out of bounds.
        return Err(LineError {
            line: 0,
            fault: LineFault::Dimension { found: 0 },
        });
    }
    let mut pos = 0;
    for (line, (word, row)) in words
        .iter_mut()
        .zip(matrix.chunks_exact_mut(dim))
        .enumerate()
    {
        pos =
            parse_line(bytes, pos, word, row, lossy).map_err(|fault| LineError { line, fault })?;
    }
    Ok(())
}

/// Parses the line starting at `start`; returns where the next line starts.
#[inline]
fn parse_line(
    bytes: &[u8],
    start: usize,
    word: &mut String,
    row: &mut [f32],
    lossy: bool,
) -> Result<usize, LineFault> {
    let (end, next) = match memchr(b'\n', &bytes[start..]) {
        Some(i) => (start + i, start + i + 1),
        None => (bytes.len(), bytes.len()),
    };
    let mut line = &bytes[start..end];
    while let [rest @ .., last] = line
        && is_blank(*last)
    {
        line = rest;
    }
    let n = line.len();
    let mut i = 0;
    while i < n && !is_separator(line[i]) {
        i += 1;
    }
    if i == 0 {
        return Err(if n == 0 {
            LineFault::EmptyLine
        } else {
            LineFault::EmptyWord
        });
    }
    let word_bytes = &line[..i];
    *word = decode_word(word_bytes, lossy).ok_or_else(|| LineFault::Utf8 {
        found: escape_invalid_utf8(word_bytes),
    })?;
    for (k, slot) in row.iter_mut().enumerate() {
        while i < n && is_separator(line[i]) {
            i += 1;
        }
        if i >= n {
            return Err(LineFault::Dimension { found: k });
        }
        match parse_f32_at(line, i) {
            Some((value, after)) if after == n || is_separator(line[after]) => {
                if !value.is_finite() {
                    return Err(LineFault::NonFinite {
                        index: k + 1,
                        value,
                    });
                }
                *slot = value;
                // Step over the separator just checked: values are usually one space apart.
                i = after + 1;
            }
            _ => {
                let token_end = line[i..]
                    .iter()
                    .position(|&b| is_separator(b))
                    .map_or(n, |p| i + p);
                return Err(LineFault::Number {
                    index: k + 1,
                    found: excerpt(&line[i..token_end]),
                });
            }
        }
    }
    // Trailing blanks are gone, so anything left is another value.
    if i < n {
        return Err(LineFault::Dimension {
            found: row.len() + count_fields(&line[i..]),
        });
    }
    Ok(next)
}

/// What separates the word and the values: ASCII space and tab. (`\r` only ever ends a line.)
#[inline]
fn is_separator(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Number of blank-separated fields in one line.
pub(super) fn count_fields(line: &[u8]) -> usize {
    let mut fields = 0;
    let mut in_field = false;
    for &b in line {
        let blank = is_blank(b);
        if !blank && !in_field {
            fields += 1;
        }
        in_field = !blank;
    }
    fields
}

/// The dimension that the first data line declares by its number of values (GloVe has no
/// header), or the error for a line that declares none.
pub(super) fn dimension_of_first_line(
    line: &[u8],
    ctx: &Ctx<'_>,
    line_no: u64,
) -> Result<usize, InputError> {
    match count_fields(line) {
        0 => Err(InputError::EmptyLine {
            path: ctx.path(),
            line: line_no,
        }),
        1 => Err(InputError::NoValues {
            path: ctx.path(),
            line: line_no,
            word: excerpt(
                line.split(|&b| is_blank(b))
                    .find(|w| !w.is_empty())
                    .unwrap_or(line),
            ),
        }),
        n => Ok(n - 1),
    }
}

/// The header's word count must match the rows, as far as `max_words` lets us look.
pub(super) fn check_header_count(
    ctx: &Ctx<'_>,
    promised: Option<u64>,
    found: u64,
    max_words: Option<usize>,
) -> Result<(), InputError> {
    let Some(expected) = promised else {
        return Ok(());
    };
    let cap = max_words.map_or(u64::MAX, |m| m as u64);
    if found.min(cap) != expected.min(cap) {
        return Err(InputError::HeaderCount {
            path: ctx.path(),
            expected,
            found,
        });
    }
    Ok(())
}

/// What the first pass learns about one window of the file.
struct WindowScan {
    crc: crc32fast::Hasher,
    /// Newlines inside the data region.
    newlines: u64,
    /// Absolute offset of the first of them.
    first_newline: Option<u64>,
}

/// A run of whole lines parsed by one task.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    start: u64,
    end: u64,
    /// Rows (= lines) of the data region before this chunk.
    first_row: u64,
    rows: u64,
}

/// Offset just after the last non-whitespace byte of `start..end`, scanning back a window at a
/// time so that trailing blank lines cost nothing to find.
fn trim_end(file: &File, start: u64, end: u64, window: u64) -> io::Result<u64> {
    let mut end = end;
    while end > start {
        let from = end.saturating_sub(window).max(start);
        let map = map_range(file, from, range_len(from, end)?)?;
        if let Some(i) = map.iter().rposition(|&b| !is_space(b)) {
            return Ok(from + i as u64 + 1);
        }
        end = from;
    }
    Ok(start)
}

/// Splits the data region into chunks of whole lines, one starting after the first newline of
/// each window, and numbers their rows.
fn chunks(scans: &[WindowScan], data_start: u64, data_end: u64) -> Vec<Chunk> {
    let mut starts = vec![(data_start, 0u64)];
    let mut before = 0u64;
    for (k, scan) in scans.iter().enumerate() {
        if k > 0
            && let Some(nl) = scan.first_newline
            && nl + 1 < data_end
        {
            starts.push((nl + 1, before + 1));
        }
        before += scan.newlines;
    }
    let total_newlines = before;
    (0..starts.len())
        .map(|i| {
            let (start, first_row) = starts[i];
            let (end, rows) = match starts.get(i + 1) {
                Some(&(next, next_row)) => (next, next_row - first_row),
                // The last line has no newline: the data region ends on a non-space byte.
                None => (data_end, total_newlines - first_row + 1),
            };
            Chunk {
                start,
                end,
                first_row,
                rows,
            }
        })
        .collect()
}

/// Why a parallel chunk task stopped.
enum ChunkError {
    Io(io::Error),
    Line { first_row: u64, error: LineError },
}

/// Reads a plain (uncompressed) text file of `len` bytes through memory maps of `window` bytes;
/// returns the rows and the file's CRC-32.
pub(super) fn read_mapped(
    file: &File,
    len: u64,
    ctx: &Ctx<'_>,
    layout: &Layout,
    opts: &ReadOptions,
    window: u64,
) -> Result<(Parsed, u32), InputError> {
    let data_start = layout.data_start;
    let data_end = trim_end(file, data_start, len, window).map_err(|e| ctx.io(e))?;

    let scans = windows(0, len, window)
        .into_par_iter()
        .map(|(start, end)| {
            let map = map_range(file, start, range_len(start, end)?)?;
            let mut crc = crc32fast::Hasher::new();
            crc.update(&map);
            let lo = (data_start.clamp(start, end) - start) as usize;
            let hi = (data_end.clamp(start, end) - start) as usize;
            let data = &map[lo..hi];
            Ok(WindowScan {
                crc,
                newlines: memchr_iter(b'\n', data).count() as u64,
                first_newline: memchr(b'\n', data).map(|i| start + (lo + i) as u64),
            })
        })
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| ctx.io(e))?;
    let mut crc = crc32fast::Hasher::new();
    for scan in &scans {
        crc.combine(&scan.crc);
    }
    let crc = crc.finalize();

    if data_end <= data_start {
        return Err(InputError::Empty { path: ctx.path() });
    }
    let header_lines = u64::from(layout.header.is_some());
    let chunks = chunks(&scans, data_start, data_end);
    let total_rows = chunks.iter().map(|c| c.rows).sum::<u64>();

    let dim = match layout.header {
        Some(h) => h.dim,
        None => {
            let first_end = scans
                .iter()
                .find_map(|s| s.first_newline)
                .unwrap_or(data_end);
            let line = if first_end > data_start {
                map_range(
                    file,
                    data_start,
                    range_len(data_start, first_end).map_err(|e| ctx.io(e))?,
                )
                .map_err(|e| ctx.io(e))?
                .to_vec()
            } else {
                Vec::new()
            };
            dimension_of_first_line(&line, ctx, header_lines + 1)?
        }
    };

    check_header_count(
        ctx,
        layout.header.map(|h| h.words),
        total_rows,
        opts.max_words,
    )?;
    let kept = opts
        .max_words
        .map_or(total_rows, |m| total_rows.min(m as u64));
    let (mut words, mut matrix) = allocate(ctx, kept, dim)?;

    let mut jobs = Vec::with_capacity(chunks.len());
    let mut words_left = &mut words[..];
    let mut matrix_left = &mut matrix[..];
    for chunk in chunks.iter().filter(|c| c.first_row < kept) {
        let rows = chunk.rows.min(kept - chunk.first_row) as usize;
        let (w, w_rest) = std::mem::take(&mut words_left).split_at_mut(rows);
        let (m, m_rest) = std::mem::take(&mut matrix_left).split_at_mut(rows * dim);
        words_left = w_rest;
        matrix_left = m_rest;
        jobs.push((*chunk, w, m));
    }
    let lossy = opts.lossy_utf8;
    let outcomes = jobs
        .into_par_iter()
        .map(|(chunk, words, matrix)| {
            let len = range_len(chunk.start, chunk.end).map_err(ChunkError::Io)?;
            let map = map_range(file, chunk.start, len).map_err(ChunkError::Io)?;
            parse_lines(&map, dim, words, matrix, lossy).map_err(|error| ChunkError::Line {
                first_row: chunk.first_row,
                error,
            })
        })
        .collect::<Vec<_>>();
    // Chunks are in file order, so the first failure reported is the first in the file.
    for outcome in outcomes {
        match outcome {
            Ok(()) => {}
            Err(ChunkError::Io(e)) => return Err(ctx.io(e)),
            Err(ChunkError::Line { first_row, error }) => {
                let line = header_lines + first_row + error.line as u64 + 1;
                return Err(error.fault.at(ctx, line, dim));
            }
        }
    }
    let parsed = Parsed {
        words,
        matrix,
        dim,
        rows: Rows::Lines {
            first: header_lines + 1,
        },
    };
    Ok((parsed, crc))
}

/// The words and matrix of `rows` rows, allocated once, refusing sizes that do not fit.
pub(super) fn allocate(
    ctx: &Ctx<'_>,
    rows: u64,
    dim: usize,
) -> Result<(Vec<String>, Vec<f32>), InputError> {
    let too_large = || ctx.too_large(rows, dim);
    let n = usize::try_from(rows).map_err(|_| too_large())?;
    let cells = n.checked_mul(dim).ok_or_else(too_large)?;
    let mut matrix: Vec<f32> = Vec::new();
    matrix.try_reserve_exact(cells).map_err(|_| too_large())?;
    // Filled on all cores: first touch of 80 MB is page faults and zeroing, not free.
    matrix.par_extend(rayon::iter::repeat_n(0.0, cells));
    let mut words: Vec<String> = Vec::new();
    words.try_reserve_exact(n).map_err(|_| too_large())?;
    words.par_extend(rayon::iter::repeat_n(String::new(), n));
    Ok((words, matrix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, rows: usize, dim: usize) -> Result<(Vec<String>, Vec<f32>), LineError> {
        let mut words = vec![String::new(); rows];
        let mut matrix = vec![0.0; rows * dim];
        parse_lines(text.as_bytes(), dim, &mut words, &mut matrix, false)?;
        Ok((words, matrix))
    }

    #[test]
    fn parses_odd_tokens_crlf_and_trailing_blanks() {
        let (words, m) = parse(". 1 -2.5e-1 \r\n,\t3\t4\nnaïve 5 6", 3, 2).unwrap();
        assert_eq!(words, [".", ",", "naïve"]);
        assert_eq!(m, [1.0, -0.25, 3.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn stops_after_the_rows_asked_for() {
        let (words, _) = parse("a 1\nb 2\nc x\n", 2, 1).unwrap();
        assert_eq!(words, ["a", "b"]);
    }

    #[test]
    fn reports_each_fault_with_its_line() {
        let fault = |text: &str, dim| {
            let rows = text.lines().count();
            parse(text, rows, dim).unwrap_err()
        };
        assert_eq!(
            fault("a 1 2\nb 1\n", 2),
            LineError {
                line: 1,
                fault: LineFault::Dimension { found: 1 }
            }
        );
        assert_eq!(
            fault("a 1 2 3 4\n", 2).fault,
            LineFault::Dimension { found: 4 }
        );
        assert_eq!(
            fault("a 1 2x\n", 2).fault,
            LineFault::Number {
                index: 2,
                found: "2x".into()
            }
        );
        assert_eq!(
            fault("a 1 inf\n", 2).fault,
            LineFault::NonFinite {
                index: 2,
                value: f32::INFINITY
            }
        );
        assert!(matches!(
            fault("a NaN 1\n", 2).fault,
            LineFault::NonFinite { index: 1, .. }
        ));
        assert_eq!(fault("a 1\n \r\nb 2\n", 1).fault, LineFault::EmptyLine);
        assert_eq!(fault(" 1 2\n", 1).fault, LineFault::EmptyWord);
    }

    #[test]
    fn overflowing_values_are_not_finite() {
        let e = parse("w 1e999\n", 1, 1).unwrap_err();
        assert_eq!(
            e.fault,
            LineFault::NonFinite {
                index: 1,
                value: f32::INFINITY
            }
        );
    }

    #[test]
    fn invalid_utf8_is_refused_or_replaced() {
        let bytes = b"ab\xff 1\n";
        let mut words = vec![String::new()];
        let mut m = vec![0.0];
        let e = parse_lines(bytes, 1, &mut words, &mut m, false).unwrap_err();
        assert_eq!(
            e.fault,
            LineFault::Utf8 {
                found: "ab\\xff".into()
            }
        );
        parse_lines(bytes, 1, &mut words, &mut m, true).unwrap();
        assert_eq!(words, ["ab\u{fffd}"]);
    }

    #[test]
    fn counts_fields_across_blank_runs() {
        assert_eq!(count_fields(b"  a \t b\r"), 2);
        assert_eq!(count_fields(b""), 0);
    }

    fn scan(data: &[u8], window: u64, data_start: u64, data_end: u64) -> Vec<WindowScan> {
        windows(0, data.len() as u64, window)
            .into_iter()
            .map(|(s, e)| {
                let lo = data_start.clamp(s, e) as usize;
                let hi = data_end.clamp(s, e) as usize;
                let d = &data[lo..hi];
                WindowScan {
                    crc: crc32fast::Hasher::new(),
                    newlines: memchr_iter(b'\n', d).count() as u64,
                    first_newline: memchr(b'\n', d).map(|i| (lo + i) as u64),
                }
            })
            .collect()
    }

    #[test]
    fn chunks_hold_whole_lines_for_any_window() {
        let data = b"4 1\na 1\nbbbbbbbbbbbbbbbb 2\nc 3\nd 4\n\n";
        let (start, end) = (4u64, data.len() as u64 - 2);
        for window in 1..40 {
            let cs = chunks(&scan(data, window, start, end), start, end);
            assert_eq!(cs.first().unwrap().start, start);
            assert_eq!(cs.last().unwrap().end, end);
            let mut row = 0;
            for c in &cs {
                assert_eq!(c.first_row, row, "window {window}");
                let text = &data[c.start as usize..c.end as usize];
                assert!(c.start == start || data[c.start as usize - 1] == b'\n');
                let lines = text
                    .split(|&b| b == b'\n')
                    .filter(|l| !l.is_empty())
                    .count();
                assert_eq!(lines as u64, c.rows, "window {window}");
                row += c.rows;
            }
            assert_eq!(row, 4);
        }
    }
}
