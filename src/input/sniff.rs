//! Telling the formats apart from the first bytes of the content, never from the file name.
//!
//! A first line of exactly two unsigned integers is a word2vec header (`N d`); anything else
//! starts a GloVe file. After a header, the first record decides text or binary: text if it reads
//! as a word and `d` numbers, or if its bytes look like text; raw little-endian floats almost
//! never do, since any negative value has a byte above 0x7f and a bare continuation byte is not
//! UTF-8.

use memchr::memchr;

use super::Format;
use super::error::{Ctx, InputError, excerpt};
use super::text::count_fields;

/// A word2vec header: `words dim`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Header {
    pub words: u64,
    pub dim: usize,
}

/// Where the data starts and how to read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Layout {
    pub format: Format,
    pub header: Option<Header>,
    /// Offset of the first row, after any byte-order mark and header line.
    pub data_start: u64,
}

/// How many bytes of content `sniff` wants to see.
pub(super) const SNIFF_BYTES: usize = 64 * 1024;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Works out the layout from the first bytes of the content. `complete` says that `prefix` is
/// the whole content, so a first line without a newline is still a whole line.
pub(super) fn sniff(
    prefix: &[u8],
    complete: bool,
    forced: Option<Format>,
    ctx: &Ctx<'_>,
) -> Result<Layout, InputError> {
    let bom = if prefix.starts_with(BOM) {
        BOM.len()
    } else {
        0
    };
    let rest = &prefix[bom..];
    let newline = memchr(b'\n', rest);
    let (first_line, header_len) = match newline {
        Some(i) => (&rest[..i], i + 1),
        None => (rest, rest.len()),
    };
    // A first line longer than the sniffed prefix is far too long to be a header.
    let parsed = if newline.is_some() || complete {
        parse_header(first_line)
    } else {
        None
    };
    let glove = Layout {
        format: Format::Glove,
        header: None,
        data_start: bom as u64,
    };
    let bad_header = || InputError::Header {
        path: ctx.path(),
        found: excerpt(first_line),
    };
    let header = match (forced, parsed) {
        (Some(Format::Glove), _) | (None, None) => return Ok(glove),
        (Some(_), None) => return Err(bad_header()),
        (_, Some((words, dim))) => {
            let dim = usize::try_from(dim).map_err(|_| bad_header())?;
            if dim == 0 {
                return Err(bad_header());
            }
            Header { words, dim }
        }
    };
    let format = match forced {
        Some(f) => f,
        None if looks_binary(&rest[header_len..], header.dim) => Format::Word2vecBinary,
        None => Format::Word2vecText,
    };
    Ok(Layout {
        format,
        header: Some(header),
        data_start: (bom + header_len) as u64,
    })
}

/// `N d`: two unsigned decimal integers separated by blanks, nothing else.
fn parse_header(line: &[u8]) -> Option<(u64, u64)> {
    let mut fields = line
        .split(|&b| matches!(b, b' ' | b'\t' | b'\r'))
        .filter(|f| !f.is_empty());
    let words = parse_u64(fields.next()?)?;
    let dim = parse_u64(fields.next()?)?;
    match fields.next() {
        Some(_) => None,
        None => Some((words, dim)),
    }
}

fn parse_u64(field: &[u8]) -> Option<u64> {
    if field.is_empty() || !field.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(field).ok()?.parse().ok()
}

/// Whether the first record after a header is word2vec binary rather than text.
fn looks_binary(records: &[u8], dim: usize) -> bool {
    let line = &records[..memchr(b'\n', records).unwrap_or(records.len())];
    if reads_as_text_row(line, dim) {
        return false;
    }
    let Some(space) = memchr(b' ', records) else {
        return false;
    };
    let vector = &records[space + 1..];
    let vector = &vector[..vector.len().min(dim.saturating_mul(4))];
    !looks_like_text(vector)
}

/// A word then exactly `dim` numbers.
fn reads_as_text_row(line: &[u8], dim: usize) -> bool {
    if count_fields(line) != dim + 1 {
        return false;
    }
    line.split(|&b| matches!(b, b' ' | b'\t' | b'\r'))
        .filter(|f| !f.is_empty())
        .skip(1)
        .all(|f| fast_float2::parse::<f32, _>(f).is_ok())
}

/// UTF-8 (possibly cut inside the last character) without control characters other than
/// line ends and tabs.
fn looks_like_text(bytes: &[u8]) -> bool {
    let valid = match std::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) if e.error_len().is_none() => {
            std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => return false,
    };
    valid
        .chars()
        .all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn ctx() -> Ctx<'static> {
        Ctx {
            path: Path::new("x"),
            compression: None,
        }
    }

    fn layout(bytes: &[u8]) -> Layout {
        sniff(bytes, true, None, &ctx()).unwrap()
    }

    fn binary_record(word: &str, values: &[f32]) -> Vec<u8> {
        let mut out = word.as_bytes().to_vec();
        out.push(b' ');
        for v in values {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.push(b'\n');
        out
    }

    #[test]
    fn glove_has_no_header() {
        let l = layout(b"the 0.1 0.2\nof 0.3 0.4\n");
        assert_eq!(l.format, Format::Glove);
        assert_eq!(l.data_start, 0);
    }

    #[test]
    fn bom_and_crlf_header() {
        let l = layout(b"\xEF\xBB\xBF2 3\r\nthe 1 2 3\r\n");
        assert_eq!(l.format, Format::Word2vecText);
        assert_eq!(l.header, Some(Header { words: 2, dim: 3 }));
        assert_eq!(l.data_start, 3 + 5);
    }

    #[test]
    fn binary_records_are_recognised() {
        let mut bytes = b"2 3\n".to_vec();
        bytes.extend(binary_record("the", &[0.5, -1.25, 3.0]));
        bytes.extend(binary_record("of", &[0.1, 0.2, -0.3]));
        assert_eq!(layout(&bytes).format, Format::Word2vecBinary);
    }

    #[test]
    fn a_malformed_text_row_is_still_text() {
        // Wrong value count and a non-ASCII word: the text reader should report it.
        assert_eq!(
            layout("1 3\nnaïve 1 2\n".as_bytes()).format,
            Format::Word2vecText
        );
        assert_eq!(layout(b"1 3\nword 1 2 zz\n").format, Format::Word2vecText);
    }

    #[test]
    fn a_long_first_line_is_not_a_header() {
        let l = sniff(b"12 34", false, None, &ctx()).unwrap();
        assert_eq!(l.format, Format::Glove);
    }

    #[test]
    fn forced_formats_need_their_header() {
        let e = sniff(b"the 1 2\n", true, Some(Format::Word2vecText), &ctx()).unwrap_err();
        assert!(matches!(e, InputError::Header { found, .. } if found == "the 1 2"));
        let l = sniff(b"2 3\n", true, Some(Format::Glove), &ctx()).unwrap();
        assert_eq!(l.header, None);
    }

    #[test]
    fn dimension_zero_is_refused() {
        assert!(matches!(
            sniff(b"10 0\n", true, None, &ctx()),
            Err(InputError::Header { .. })
        ));
    }
}
