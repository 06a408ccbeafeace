//! Constants of the `.kdz` layout, mirroring `docs/kdz-format.md` (the authority).

use std::fmt;

/// First eight bytes of every `.kdz`, PNG-style: a high-bit byte, `KDZ`, CR LF, 0x1A, LF.
pub const MAGIC: [u8; 8] = [0x89, b'K', b'D', b'Z', b'\r', b'\n', 0x1A, b'\n'];
/// Major version this crate reads and writes; a file of any other major is refused.
pub const MAJOR: u16 = 1;
/// Newest minor version this crate writes; any minor of [`MAJOR`] is read. 1.1 added composer
/// kind 4 (`split`); 1.2 added tensor dtype [`DTYPE_F16`] and composer kind 5 (`conditioned`); 1.3
/// added composer kind 6 (`sum`).
/// An older reader refuses each of these by name. The writer stamps a file with the lowest minor
/// whose additions it uses, so a file an older reader can read says so.
pub const MINOR: u16 = 3;

/// Size of the fixed header.
pub const HEADER_LEN: usize = 64;
/// Bytes of the header covered by the header checksum (the checksum sits right after).
pub const HEADER_CRC_AT: usize = 60;
/// Size of one section table entry.
pub const ENTRY_LEN: usize = 48;
/// Most section table entries a reader accepts, which caps the table at 12 KiB.
pub const MAX_SECTIONS: u32 = 256;
/// Every section, and every tensor inside the tensors section, starts on this boundary.
pub const ALIGN: u64 = 64;

/// Section flag: a reader that does not know the kind must refuse the file.
pub const FLAG_REQUIRED: u32 = 1;

/// Size of the model section.
pub const MODEL_LEN: usize = 48;
/// Most tensors a tensors section may list.
pub const MAX_TENSORS: u32 = 64;
/// Most dimensions of one tensor.
pub const MAX_NDIM: u8 = 8;
/// Tensor dtype code for little-endian IEEE binary32.
pub const DTYPE_F32: u8 = 1;
/// Tensor dtype code for little-endian IEEE binary16, since format 1.2.
pub const DTYPE_F16: u8 = 2;

/// zstd level for the vocabulary. On the 400k GloVe words (3.4 MB) level 9 writes 1.68 MB in
/// 0.75 s and level 19 1.62 MB in 11.5 s: 0.7% of the file for seconds of every compression.
pub const ZSTD_LEVEL: i32 = 9;

/// `x` rounded up to the next multiple of [`ALIGN`], or `None` on overflow.
pub fn align(x: u64) -> Option<u64> {
    x.checked_add(ALIGN - 1).map(|v| v & !(ALIGN - 1))
}

/// What a section holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SectionKind {
    /// The decode-critical numbers (N, K, D, composer sizes).
    Model,
    /// Provenance as JSON.
    Metadata,
    /// Words in row order.
    Vocabulary,
    /// Bit-packed code rows.
    Codes,
    /// Codebooks and composer weights as named f32 tensors.
    Tensors,
    /// Per-word L2 norms of the source vectors.
    Norms,
    /// A kind this version does not know (written by a newer minor version).
    Unknown(u32),
}

impl SectionKind {
    /// Every kind this version writes, in file order.
    pub const KNOWN: [SectionKind; 6] = [
        SectionKind::Model,
        SectionKind::Metadata,
        SectionKind::Vocabulary,
        SectionKind::Codes,
        SectionKind::Tensors,
        SectionKind::Norms,
    ];

    /// The number stored in the section table.
    pub fn code(self) -> u32 {
        match self {
            SectionKind::Model => 1,
            SectionKind::Metadata => 2,
            SectionKind::Vocabulary => 3,
            SectionKind::Codes => 4,
            SectionKind::Tensors => 5,
            SectionKind::Norms => 6,
            SectionKind::Unknown(c) => c,
        }
    }

    /// The kind stored as `code`.
    pub fn from_code(code: u32) -> Self {
        Self::KNOWN
            .into_iter()
            .find(|k| k.code() == code)
            .unwrap_or(SectionKind::Unknown(code))
    }

    /// Whether a file lacking this section is refused.
    pub fn is_required(self) -> bool {
        !matches!(self, SectionKind::Norms | SectionKind::Unknown(_))
    }

    /// Whether the section must be stored raw so it can be used from a memory map.
    pub fn must_be_raw(self) -> bool {
        matches!(
            self,
            SectionKind::Model | SectionKind::Codes | SectionKind::Tensors | SectionKind::Norms
        )
    }
}

impl fmt::Display for SectionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SectionKind::Model => f.write_str("model"),
            SectionKind::Metadata => f.write_str("metadata"),
            SectionKind::Vocabulary => f.write_str("vocabulary"),
            SectionKind::Codes => f.write_str("codes"),
            SectionKind::Tensors => f.write_str("tensors"),
            SectionKind::Norms => f.write_str("norms"),
            SectionKind::Unknown(c) => write!(f, "unknown kind {c}"),
        }
    }
}

/// How the values of a tensor are stored. In memory every tensor is f32; f16 is only a storage
/// encoding, rounded to nearest-even on write and widened exactly on read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TensorDtype {
    /// IEEE binary32, little-endian: 4 bytes a value, stored exactly.
    #[default]
    F32,
    /// IEEE binary16, little-endian: 2 bytes a value, 11 significant bits, finite up to ±65504.
    F16,
}

impl TensorDtype {
    /// Every dtype this version reads and writes.
    pub const ALL: [TensorDtype; 2] = [TensorDtype::F32, TensorDtype::F16];

    /// The number stored in a tensor directory entry.
    pub fn code(self) -> u8 {
        match self {
            TensorDtype::F32 => DTYPE_F32,
            TensorDtype::F16 => DTYPE_F16,
        }
    }

    /// The dtype stored as `code`, if this version knows it.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.code() == code)
    }

    /// Bytes per stored value.
    pub fn size(self) -> u64 {
        match self {
            TensorDtype::F32 => 4,
            TensorDtype::F16 => 2,
        }
    }

    /// The lowest minor version of [`MAJOR`] whose readers know this dtype. The writer stamps
    /// files that store only f32 with 1, as it did before f16 existed, so that those files stay
    /// byte for byte what earlier versions wrote.
    pub fn minor(self) -> u16 {
        match self {
            TensorDtype::F32 => 1,
            TensorDtype::F16 => 2,
        }
    }

    /// `v` as this dtype stores it: unchanged for f32, rounded to the nearest f16 (ties to even)
    /// for f16, which overflows to an infinity beyond ±65504.
    pub fn round(self, v: f32) -> f32 {
        match self {
            TensorDtype::F32 => v,
            TensorDtype::F16 => half::f16::from_f32(v).to_f32(),
        }
    }

    /// Name as `info` prints it: `f32`, `f16`.
    pub fn name(self) -> &'static str {
        match self {
            TensorDtype::F32 => "f32",
            TensorDtype::F16 => "f16",
        }
    }
}

impl fmt::Display for TensorDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a section's bytes are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// As is.
    Raw,
    /// One zstd frame.
    Zstd,
    /// A codec this version does not know.
    Unknown(u32),
}

impl Codec {
    /// The number stored in the section table.
    pub fn code(self) -> u32 {
        match self {
            Codec::Raw => 0,
            Codec::Zstd => 1,
            Codec::Unknown(c) => c,
        }
    }

    /// The codec stored as `code`.
    pub fn from_code(code: u32) -> Self {
        match code {
            0 => Codec::Raw,
            1 => Codec::Zstd,
            c => Codec::Unknown(c),
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Codec::Raw => f.write_str("raw"),
            Codec::Zstd => f.write_str("zstd"),
            Codec::Unknown(c) => write!(f, "unknown codec {c}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_codes() {
        for k in SectionKind::KNOWN {
            assert_eq!(SectionKind::from_code(k.code()), k);
        }
        assert_eq!(SectionKind::from_code(99), SectionKind::Unknown(99));
        assert_eq!(Codec::from_code(Codec::Zstd.code()), Codec::Zstd);
        assert_eq!(Codec::from_code(7), Codec::Unknown(7));
    }

    #[test]
    fn dtypes_round_trip_through_codes() {
        for d in TensorDtype::ALL {
            assert_eq!(TensorDtype::from_code(d.code()), Some(d));
            assert!(d.minor() <= MINOR);
        }
        assert_eq!(TensorDtype::from_code(0), None);
        assert_eq!(TensorDtype::from_code(3), None);
        assert_eq!(TensorDtype::F16.round(1.0 + 1.0 / 4096.0), 1.0);
        assert_eq!(TensorDtype::F16.round(65504.0), 65504.0);
        assert!(TensorDtype::F16.round(1e5).is_infinite());
        assert_eq!(TensorDtype::F32.round(1e5), 1e5);
    }

    #[test]
    fn align_rounds_up_and_reports_overflow() {
        assert_eq!(align(0), Some(0));
        assert_eq!(align(1), Some(64));
        assert_eq!(align(64), Some(64));
        assert_eq!(align(65), Some(128));
        assert_eq!(align(u64::MAX), None);
    }
}
