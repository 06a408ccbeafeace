//! The fixed header and the section table: encoding, and validation of a file's layout.

use std::path::Path;

use byteorder::{ByteOrder, LittleEndian as LE};

use super::error::FormatError;
use super::spec::{
    ALIGN, Codec, ENTRY_LEN, FLAG_REQUIRED, HEADER_CRC_AT, HEADER_LEN, MAGIC, MAJOR, MAX_SECTIONS,
    SectionKind, align,
};

/// The fixed 64-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Major version.
    pub major: u16,
    /// Minor version.
    pub minor: u16,
    /// Entries in the section table.
    pub section_count: u32,
    /// Total file length.
    pub file_len: u64,
    /// CRC-32 of the section table.
    pub table_crc: u32,
}

impl Header {
    /// The header's bytes, with its checksum.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        LE::write_u16(&mut b[8..10], self.major);
        LE::write_u16(&mut b[10..12], self.minor);
        LE::write_u32(&mut b[12..16], self.section_count);
        LE::write_u64(&mut b[16..24], self.file_len);
        LE::write_u32(&mut b[24..28], self.table_crc);
        let crc = crc32fast::hash(&b[..HEADER_CRC_AT]);
        LE::write_u32(&mut b[HEADER_CRC_AT..HEADER_LEN], crc);
        b
    }

    /// Reads and checks the header of `bytes`, the whole file: magic, version, checksum, length.
    pub fn decode(path: &Path, bytes: &[u8]) -> Result<Header, FormatError> {
        let len = bytes.len() as u64;
        let Some(b) = bytes.get(..HEADER_LEN) else {
            // A short file that does not even start with the magic is more usefully "not a .kdz".
            let n = bytes.len().min(MAGIC.len());
            if bytes[..n] != MAGIC[..n] {
                return Err(bad_magic(path, &bytes[..n]));
            }
            return Err(FormatError::Truncated {
                path: path.to_owned(),
                what: "the header",
                needed: HEADER_LEN as u64,
                len,
            });
        };
        if b[0..8] != MAGIC {
            return Err(bad_magic(path, &b[0..8]));
        }
        let major = LE::read_u16(&b[8..10]);
        let minor = LE::read_u16(&b[10..12]);
        // The version is checked before the checksum: a future major may lay out the rest of the
        // header differently, and its reader should still be named.
        if major != MAJOR {
            return Err(FormatError::UnsupportedVersion {
                path: path.to_owned(),
                major,
                minor,
            });
        }
        let stored = LE::read_u32(&b[HEADER_CRC_AT..HEADER_LEN]);
        let computed = crc32fast::hash(&b[..HEADER_CRC_AT]);
        if stored != computed {
            return Err(FormatError::HeaderChecksum {
                path: path.to_owned(),
                stored,
                computed,
            });
        }
        let header = Header {
            major,
            minor,
            section_count: LE::read_u32(&b[12..16]),
            file_len: LE::read_u64(&b[16..24]),
            table_crc: LE::read_u32(&b[24..28]),
        };
        if len < header.file_len {
            return Err(FormatError::Truncated {
                path: path.to_owned(),
                what: "the file length in the header",
                needed: header.file_len,
                len,
            });
        }
        if len > header.file_len {
            return Err(FormatError::TrailingBytes {
                path: path.to_owned(),
                declared: header.file_len,
                extra: len - header.file_len,
            });
        }
        if header.section_count == 0 || header.section_count > MAX_SECTIONS {
            return Err(FormatError::SectionCount {
                path: path.to_owned(),
                count: header.section_count,
                max: MAX_SECTIONS,
            });
        }
        Ok(header)
    }
}

fn bad_magic(path: &Path, found: &[u8]) -> FormatError {
    let hint = if found.len() >= 4 && found[1..4] == *b"KDZ" {
        if found.get(4..6) == Some(b"\n\x1a") || found.get(4..7) == Some(b"\r\r\n") {
            " (line endings were converted: the file was copied in text mode)"
        } else if found[0] != MAGIC[0] {
            " (the high bit of the first byte was lost: the file went through a 7-bit channel)"
        } else {
            " (the magic is damaged)"
        }
    } else {
        ""
    };
    FormatError::BadMagic {
        path: path.to_owned(),
        found: found.to_vec(),
        expected: MAGIC,
        hint,
    }
}

/// One section table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectionEntry {
    /// What the section holds.
    pub kind: SectionKind,
    /// Flag bits ([`FLAG_REQUIRED`]).
    pub flags: u32,
    /// How it is stored.
    pub codec: Codec,
    /// CRC-32 of the stored bytes.
    pub crc: u32,
    /// Absolute offset.
    pub offset: u64,
    /// Bytes in the file.
    pub stored_len: u64,
    /// Bytes after decoding.
    pub raw_len: u64,
}

impl SectionEntry {
    /// Whether a reader that does not know the kind must refuse the file.
    pub fn is_required(&self) -> bool {
        self.flags & FLAG_REQUIRED != 0
    }

    /// The entry's 48 bytes.
    pub fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut b = [0u8; ENTRY_LEN];
        LE::write_u32(&mut b[0..4], self.kind.code());
        LE::write_u32(&mut b[4..8], self.flags);
        LE::write_u32(&mut b[8..12], self.codec.code());
        LE::write_u32(&mut b[12..16], self.crc);
        LE::write_u64(&mut b[16..24], self.offset);
        LE::write_u64(&mut b[24..32], self.stored_len);
        LE::write_u64(&mut b[32..40], self.raw_len);
        b
    }

    /// Parses 48 bytes; the caller has checked the length.
    fn decode(b: &[u8]) -> SectionEntry {
        SectionEntry {
            kind: SectionKind::from_code(LE::read_u32(&b[0..4])),
            flags: LE::read_u32(&b[4..8]),
            codec: Codec::from_code(LE::read_u32(&b[8..12])),
            crc: LE::read_u32(&b[12..16]),
            offset: LE::read_u64(&b[16..24]),
            stored_len: LE::read_u64(&b[24..32]),
            raw_len: LE::read_u64(&b[32..40]),
        }
    }
}

/// Offset of the first section for a table of `count` entries.
pub fn first_section_offset(count: u32) -> Option<u64> {
    (ENTRY_LEN as u64)
        .checked_mul(u64::from(count))?
        .checked_add(HEADER_LEN as u64)
        .and_then(align)
}

/// Reads the section table and checks that its sections tile the file: each at the next 64-byte
/// boundary after what precedes it, inside the file, zero padding between, the last ending at
/// the end of the file, every stored checksum matching.
pub fn decode_table(
    path: &Path,
    bytes: &[u8],
    header: &Header,
) -> Result<Vec<SectionEntry>, FormatError> {
    let file_len = bytes.len() as u64;
    // The count is capped at MAX_SECTIONS, so this cannot overflow.
    let table_end = HEADER_LEN + ENTRY_LEN * header.section_count as usize;
    let Some(table) = bytes.get(HEADER_LEN..table_end) else {
        return Err(FormatError::Truncated {
            path: path.to_owned(),
            what: "the section table",
            needed: table_end as u64,
            len: file_len,
        });
    };
    let computed = crc32fast::hash(table);
    if computed != header.table_crc {
        return Err(FormatError::TableChecksum {
            path: path.to_owned(),
            offset: HEADER_LEN as u64,
            stored: header.table_crc,
            computed,
        });
    }
    let entries: Vec<SectionEntry> = table
        .chunks_exact(ENTRY_LEN)
        .map(SectionEntry::decode)
        .collect();
    let mut previous_end = table_end as u64;
    for (index, e) in entries.iter().enumerate() {
        let kind = e.kind;
        if e.offset < previous_end {
            return Err(FormatError::SectionOverlap {
                path: path.to_owned(),
                index,
                kind,
                offset: e.offset,
                previous_end,
            });
        }
        let expected = align(previous_end).unwrap_or(u64::MAX);
        if e.offset != expected {
            return Err(FormatError::SectionPlacement {
                path: path.to_owned(),
                index,
                kind,
                offset: e.offset,
                expected,
            });
        }
        let end = e
            .offset
            .checked_add(e.stored_len)
            .filter(|&end| end <= file_len)
            .ok_or_else(|| FormatError::SectionOutOfBounds {
                path: path.to_owned(),
                index,
                kind,
                offset: e.offset,
                len: e.stored_len,
                file_len,
            })?;
        check_zero(path, bytes, previous_end, e.offset)?;
        // Bounds were checked just above, so these conversions and slices hold.
        let stored = &bytes[e.offset as usize..end as usize];
        let computed = crc32fast::hash(stored);
        if computed != e.crc {
            return Err(FormatError::SectionChecksum {
                path: path.to_owned(),
                kind,
                offset: e.offset,
                stored: e.crc,
                computed,
            });
        }
        previous_end = end;
    }
    if previous_end != file_len {
        return Err(FormatError::FileLength {
            path: path.to_owned(),
            sections_end: previous_end,
            declared: header.file_len,
        });
    }
    Ok(entries)
}

/// Checks that `bytes[from..to]` (padding) is all zero.
fn check_zero(path: &Path, bytes: &[u8], from: u64, to: u64) -> Result<(), FormatError> {
    let pad = bytes.get(from as usize..to as usize).unwrap_or(&[]);
    match pad.iter().position(|&b| b != 0) {
        Some(i) => Err(FormatError::NonZeroPadding {
            path: path.to_owned(),
            offset: from + i as u64,
        }),
        None => Ok(()),
    }
}

/// Padding needed after `pos` to reach the next section boundary.
pub fn padding_after(pos: u64) -> u64 {
    align(pos).map_or(0, |a| a - pos)
}

const _: () = assert!(ALIGN.is_power_of_two() && (HEADER_LEN as u64).is_multiple_of(ALIGN));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_bytes_are_as_documented() {
        let h = Header {
            major: 1,
            minor: 0,
            section_count: 5,
            file_len: 0x0102,
            table_crc: 0xAABBCCDD,
        };
        let b = h.encode();
        assert_eq!(&b[0..8], b"\x89KDZ\r\n\x1a\n");
        assert_eq!(&b[8..12], &[1, 0, 0, 0]);
        assert_eq!(&b[12..16], &[5, 0, 0, 0]);
        assert_eq!(&b[16..24], &[2, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&b[24..28], &[0xDD, 0xCC, 0xBB, 0xAA]);
        assert!(b[28..60].iter().all(|&x| x == 0));
        assert_eq!(LE::read_u32(&b[60..64]), crc32fast::hash(&b[..60]));
    }

    #[test]
    fn entry_round_trips() {
        let e = SectionEntry {
            kind: SectionKind::Codes,
            flags: FLAG_REQUIRED,
            codec: Codec::Raw,
            crc: 7,
            offset: 128,
            stored_len: 9,
            raw_len: 9,
        };
        let b = e.encode();
        assert_eq!(&b[0..4], &[4, 0, 0, 0]);
        assert_eq!(SectionEntry::decode(&b), e);
    }

    #[test]
    fn magic_hints_name_the_mangling() {
        let p = Path::new("x.kdz");
        let crlf_to_lf = b"\x89KDZ\n\x1a\n\0";
        assert!(bad_magic(p, crlf_to_lf).to_string().contains("text mode"));
        let seven_bit = b"\x09KDZ\r\n\x1a\n";
        assert!(bad_magic(p, seven_bit).to_string().contains("7-bit"));
        assert!(!bad_magic(p, b"GIF89a").to_string().contains('('));
    }

    #[test]
    fn first_section_follows_the_table() {
        assert_eq!(first_section_offset(1), Some(128));
        assert_eq!(first_section_offset(6), Some(384));
    }
}
