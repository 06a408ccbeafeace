//! Discrete codes: D codes per word, each in `0..K`.
//!
//! In memory a code is a `u16` (K is at most 65,536); on disk the format packs each row into
//! `ceil(log2 K)` bits per code (see `pack`/`unpack`).

/// The codes of every word, row-major: `n` rows of `d` codes, each below `k`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codes {
    k: u32,
    d: usize,
    data: Vec<u16>,
}

/// A code that does not fit its K, or a matrix of the wrong size.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodesError {
    /// K or D outside the supported range.
    #[error("K must be in 2..=65536 and D in 1..=1024, got K={k} D={d}")]
    Shape {
        /// Codes per dimension.
        k: u32,
        /// Code dimensions.
        d: usize,
    },
    /// The data is not a whole number of rows.
    #[error("{len} codes is not a whole number of rows of D={d}")]
    Ragged {
        /// Codes given.
        len: usize,
        /// Code dimensions.
        d: usize,
    },
    /// A code is not below K.
    #[error("code {code} at row {row}, dimension {dim} is not below K={k}")]
    OutOfRange {
        /// The offending code.
        code: u16,
        /// Its row.
        row: usize,
        /// Its position in the row.
        dim: usize,
        /// Codes per dimension.
        k: u32,
    },
}

/// Largest supported K.
pub const MAX_K: u32 = 65_536;
/// Largest supported D.
pub const MAX_D: usize = 1024;

impl Codes {
    /// Checks the shape and that every code is below `k`.
    pub fn new(k: u32, d: usize, data: Vec<u16>) -> Result<Self, CodesError> {
        if !(2..=MAX_K).contains(&k) || !(1..=MAX_D).contains(&d) {
            return Err(CodesError::Shape { k, d });
        }
        if !data.len().is_multiple_of(d) {
            return Err(CodesError::Ragged { len: data.len(), d });
        }
        if let Some(i) = data.iter().position(|&c| u32::from(c) >= k) {
            return Err(CodesError::OutOfRange {
                code: data[i],
                row: i / d,
                dim: i % d,
                k,
            });
        }
        Ok(Codes { k, d, data })
    }

    /// Codes per dimension (K).
    pub fn k(&self) -> u32 {
        self.k
    }

    /// Code dimensions per word (D).
    pub fn d(&self) -> usize {
        self.d
    }

    /// Number of words.
    pub fn len(&self) -> usize {
        self.data.len() / self.d
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// One word's codes.
    pub fn row(&self, row: usize) -> &[u16] {
        &self.data[row * self.d..(row + 1) * self.d]
    }

    /// All codes, row-major.
    pub fn as_slice(&self) -> &[u16] {
        &self.data
    }

    /// Bits per code on disk: `ceil(log2 K)`.
    pub fn bits_per_code(&self) -> u32 {
        bits_per_code(self.k)
    }
}

/// `ceil(log2 k)` for `k >= 2`.
pub fn bits_per_code(k: u32) -> u32 {
    32 - (k - 1).leading_zeros()
}

/// Bytes of one packed row of `d` codes of `bits` bits: rows are padded to whole bytes only.
pub fn packed_row_len(d: usize, bits: u32) -> usize {
    (d * bits as usize).div_ceil(8)
}

/// Packs one row: code `j` takes bits `j*bits..(j+1)*bits` of the row read as a little-endian
/// integer; the unused high bits of the last byte are zero. `bits` must be in 1..=16, `out` must
/// be [`packed_row_len`] bytes and each code must fit in `bits` bits.
///
/// Panics if the lengths disagree; callers size their buffers from the same `d` and `bits`.
pub fn pack_row(codes: &[u16], bits: u32, out: &mut [u8]) {
    assert!((1..=16).contains(&bits), "bits per code must be in 1..=16");
    assert_eq!(
        out.len(),
        packed_row_len(codes.len(), bits),
        "row buffer size"
    );
    let mask = (1u64 << bits) - 1;
    // At most 7 pending bits plus 16 new ones, so a u64 never overflows.
    let mut acc = 0u64;
    let mut have = 0u32;
    let mut bytes = out.iter_mut();
    for &c in codes {
        debug_assert!(u64::from(c) <= mask, "code {c} does not fit in {bits} bits");
        acc |= (u64::from(c) & mask) << have;
        have += bits;
        while have >= 8 {
            if let Some(b) = bytes.next() {
                *b = acc as u8;
            }
            acc >>= 8;
            have -= 8;
        }
    }
    if have > 0
        && let Some(b) = bytes.next()
    {
        *b = acc as u8;
    }
}

/// Unpacks one row written by [`pack_row`]. Padding bits are ignored.
///
/// Panics if `row` is not [`packed_row_len`]`(out.len(), bits)` bytes or `bits` is not in 1..=16.
pub fn unpack_row(row: &[u8], bits: u32, out: &mut [u16]) {
    assert!((1..=16).contains(&bits), "bits per code must be in 1..=16");
    assert_eq!(
        row.len(),
        packed_row_len(out.len(), bits),
        "packed row size"
    );
    let mask = (1u64 << bits) - 1;
    let mut acc = 0u64;
    let mut have = 0u32;
    let mut bytes = row.iter();
    for o in out {
        while have < bits {
            // The length check above guarantees enough bytes for every code.
            acc |= u64::from(bytes.next().copied().unwrap_or(0)) << have;
            have += 8;
        }
        *o = (acc & mask) as u16;
        acc >>= bits;
        have -= bits;
    }
}

impl Codes {
    /// Bytes of one packed row.
    pub fn packed_row_len(&self) -> usize {
        packed_row_len(self.d, self.bits_per_code())
    }

    /// All rows packed with [`pack_row`], one after another.
    pub fn pack(&self) -> Vec<u8> {
        let row_len = self.packed_row_len();
        let mut out = vec![0u8; row_len * self.len()];
        if row_len > 0 {
            for (dst, src) in out
                .chunks_exact_mut(row_len)
                .zip(self.data.chunks_exact(self.d))
            {
                pack_row(src, self.bits_per_code(), dst);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_per_code_is_ceil_log2() {
        assert_eq!(bits_per_code(2), 1);
        assert_eq!(bits_per_code(3), 2);
        assert_eq!(bits_per_code(16), 4);
        assert_eq!(bits_per_code(17), 5);
        assert_eq!(bits_per_code(32), 5);
        assert_eq!(bits_per_code(65_536), 16);
    }

    /// Expected bytes worked out by hand from the layout in docs/kdz-format.md.
    #[test]
    fn packs_rows_as_documented() {
        // K = 5, b = 3: [1, 4, 2] is 1 + 4·8 + 2·64 = 161; [3, 0, 4] is 3 + 4·64 = 259.
        let codes = Codes::new(5, 3, vec![1, 4, 2, 3, 0, 4]).unwrap();
        assert_eq!(codes.pack(), vec![0xA1, 0x00, 0x03, 0x01]);
        // K = 3, b = 2: [2, 1, 0, 2, 1] is 2 + 1·4 + 2·64 + 1·256 = 390.
        let codes = Codes::new(3, 5, vec![2, 1, 0, 2, 1]).unwrap();
        assert_eq!(codes.pack(), vec![0x86, 0x01]);
        // K = 65536: two little-endian u16 per row.
        let codes = Codes::new(65_536, 2, vec![0x1234, 0xFFFF]).unwrap();
        assert_eq!(codes.pack(), vec![0x34, 0x12, 0xFF, 0xFF]);
        // K = 2: one bit per code, eight to a byte, first code in the lowest bit.
        let codes = Codes::new(2, 9, vec![1, 0, 0, 0, 0, 0, 0, 1, 1]).unwrap();
        assert_eq!(codes.pack(), vec![0x81, 0x01]);
        // K = 32, b = 5: [31, 1] is 31 + 1·32 = 63 in ten bits.
        let codes = Codes::new(32, 2, vec![31, 1]).unwrap();
        assert_eq!(codes.pack(), vec![0x3F, 0x00]);
    }

    #[test]
    fn unpack_ignores_padding_bits() {
        let mut out = [0u16; 3];
        unpack_row(&[0xA1, 0xFE], 3, &mut out);
        assert_eq!(out, [1, 4, 2]);
    }

    proptest::proptest! {
        #[test]
        fn pack_unpack_round_trip(
            bits in 1u32..=16,
            raw in proptest::collection::vec(proptest::num::u16::ANY, 1..300),
        ) {
            let codes: Vec<u16> = raw.iter().map(|&c| (u32::from(c) & ((1 << bits) - 1)) as u16).collect();
            let mut row = vec![0u8; packed_row_len(codes.len(), bits)];
            pack_row(&codes, bits, &mut row);
            let used = codes.len() * bits as usize;
            if !used.is_multiple_of(8) {
                let last = row[row.len() - 1];
                proptest::prop_assert_eq!(last >> (used % 8), 0, "padding bits must be zero");
            }
            let mut back = vec![0u16; codes.len()];
            unpack_row(&row, bits, &mut back);
            proptest::prop_assert_eq!(back, codes);
        }
    }

    #[test]
    fn rejects_code_not_below_k() {
        let err = Codes::new(4, 2, vec![0, 1, 3, 4]).unwrap_err();
        assert_eq!(
            err,
            CodesError::OutOfRange {
                code: 4,
                row: 1,
                dim: 1,
                k: 4
            }
        );
    }

    #[test]
    fn rejects_ragged_and_bad_shape() {
        assert!(matches!(
            Codes::new(4, 3, vec![0; 4]),
            Err(CodesError::Ragged { .. })
        ));
        assert!(matches!(
            Codes::new(1, 3, vec![]),
            Err(CodesError::Shape { .. })
        ));
        assert!(matches!(
            Codes::new(70_000, 3, vec![]),
            Err(CodesError::Shape { .. })
        ));
    }
}
