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
        if data.len() % d != 0 {
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
