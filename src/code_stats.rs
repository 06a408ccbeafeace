//! How a table's words spread over its codes: how many distinct codes, how many words share
//! each, and how evenly each of the D positions uses its K values. One count serves `groups
//! --stats`, the report, `eval` and the trainer's report.
//!
//! ```
//! use kdcompress::codes::Codes;
//! use kdcompress::code_stats::CodeStats;
//!
//! // Three words, K = 4, D = 2: the first two share their code.
//! let stats = CodeStats::new(&Codes::new(4, 2, vec![3, 1, 3, 1, 0, 2]).unwrap());
//! assert_eq!((stats.distinct_codes, stats.largest_group()), (2, 2));
//! ```

use std::collections::HashMap;

use crate::codes::Codes;

/// How one code position is used across the vocabulary.
#[derive(Debug, Clone, PartialEq)]
pub struct DimUsage {
    /// Words per code value, K of them.
    pub counts: Vec<usize>,
    /// Code values used by at least one word.
    pub distinct: usize,
    /// Shannon entropy of the value distribution, in bits; at most `log2 K`.
    pub entropy_bits: f64,
}

/// How the codes are used: distinct codes, how words spread over them, and per-position usage.
#[derive(Debug, Clone, PartialEq)]
pub struct CodeStats {
    /// Words (N).
    pub words: usize,
    /// Codes per position (K).
    pub k: usize,
    /// Distinct full codes.
    pub distinct_codes: usize,
    /// `(group size, number of codes shared by exactly that many words)`, ascending by size.
    pub group_sizes: Vec<(usize, usize)>,
    /// One entry per code position, D of them.
    pub dims: Vec<DimUsage>,
}

impl CodeStats {
    /// Measures `codes`.
    pub fn new(codes: &Codes) -> Self {
        let k = codes.k() as usize;
        let mut per_code: HashMap<&[u16], usize> = HashMap::new();
        let mut counts = vec![vec![0usize; k]; codes.d()];
        for row in 0..codes.len() {
            let code = codes.row(row);
            *per_code.entry(code).or_default() += 1;
            for (dim, &c) in code.iter().enumerate() {
                counts[dim][c as usize] += 1;
            }
        }
        let mut sizes: HashMap<usize, usize> = HashMap::new();
        for &size in per_code.values() {
            *sizes.entry(size).or_default() += 1;
        }
        let mut group_sizes: Vec<(usize, usize)> = sizes.into_iter().collect();
        group_sizes.sort_unstable();
        let n = codes.len();
        let dims = counts
            .into_iter()
            .map(|counts| DimUsage {
                distinct: counts.iter().filter(|&&c| c > 0).count(),
                entropy_bits: entropy_bits(&counts, n),
                counts,
            })
            .collect();
        CodeStats {
            words: n,
            k,
            distinct_codes: per_code.len(),
            group_sizes,
            dims,
        }
    }

    /// `log2 K`: the entropy of a position whose values are used evenly.
    pub fn max_entropy_bits(&self) -> f64 {
        (self.k as f64).log2()
    }

    /// Words whose full code no other word has.
    pub fn unique_words(&self) -> usize {
        self.group_sizes
            .iter()
            .find(|&&(size, _)| size == 1)
            .map_or(0, |&(_, groups)| groups)
    }

    /// The largest number of words sharing one code (0 for an empty table).
    pub fn largest_group(&self) -> usize {
        self.group_sizes.last().map_or(0, |&(size, _)| size)
    }

    /// The summary the trainer reports.
    pub fn usage(&self) -> CodeUsage {
        CodeUsage {
            distinct_rows: self.distinct_codes,
            largest_group: self.largest_group(),
            min_values_per_position: self.dims.iter().map(|d| d.distinct).min().unwrap_or(0),
        }
    }
}

fn entropy_bits(counts: &[usize], total: usize) -> f64 {
    if total == 0 {
        return 0.0;
    }
    let total = total as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / total;
            -p * p.log2()
        })
        .sum::<f64>()
        // -0.0 for a single used value reads oddly in reports.
        .max(0.0)
}

/// Groups `group_sizes` into power-of-two buckets `1, 2, 3-4, 5-8, ...` for display:
/// `(lowest size, highest size, codes, words)` per non-empty bucket.
pub fn size_buckets(group_sizes: &[(usize, usize)]) -> Vec<(usize, usize, usize, usize)> {
    let mut out: Vec<(usize, usize, usize, usize)> = Vec::new();
    for &(size, count) in group_sizes {
        if size == 0 {
            continue;
        }
        let hi = size.next_power_of_two();
        let lo = if hi == 1 { 1 } else { hi / 2 + 1 };
        match out.last_mut() {
            Some(b) if b.1 == hi => {
                b.2 += count;
                b.3 += count * size;
            }
            _ => out.push((lo, hi, count, count * size)),
        }
    }
    out
}

/// The summary of [`CodeStats`] that training reports: how the words spread over code rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CodeUsage {
    /// Distinct code rows (words with exactly the same D codes count once).
    pub distinct_rows: usize,
    /// Largest number of words sharing one code row (such words decode identically).
    pub largest_group: usize,
    /// Smallest number of distinct values used at any one of the D positions.
    pub min_values_per_position: usize,
}

/// Counts distinct code rows and the largest group of words sharing one.
pub fn code_usage(codes: &Codes) -> CodeUsage {
    CodeStats::new(codes).usage()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(k: u32, d: usize, rows: &[&[u16]]) -> Codes {
        Codes::new(k, d, rows.concat()).unwrap()
    }

    #[test]
    fn stats_count_codes_sizes_and_entropy() {
        // K = 4, D = 2; position 0 uses values 0 and 1 evenly (1 bit), position 1 only 2 (0 bits).
        let c = codes(
            4,
            2,
            &[&[0, 2], &[0, 2], &[1, 2], &[1, 2], &[0, 2], &[1, 2]],
        );
        let s = CodeStats::new(&c);
        assert_eq!(s.words, 6);
        assert_eq!(s.distinct_codes, 2);
        assert_eq!(s.group_sizes, vec![(3, 2)]);
        assert_eq!(s.dims[0].counts, vec![3, 3, 0, 0]);
        assert_eq!(s.dims[0].distinct, 2);
        assert!((s.dims[0].entropy_bits - 1.0).abs() < 1e-12);
        assert_eq!(s.dims[1].distinct, 1);
        assert_eq!(s.dims[1].entropy_bits, 0.0);
        assert_eq!(s.max_entropy_bits(), 2.0);
        assert_eq!(s.unique_words(), 0);
        assert_eq!(s.largest_group(), 3);
    }

    #[test]
    fn buckets_are_powers_of_two() {
        let b = size_buckets(&[(1, 10), (2, 4), (3, 2), (4, 1), (7, 1), (40, 1)]);
        assert_eq!(
            b,
            vec![
                (1, 1, 10, 10),
                (2, 2, 4, 8),
                (3, 4, 3, 10),
                (5, 8, 1, 7),
                (33, 64, 1, 40)
            ]
        );
    }

    #[test]
    fn code_usage_counts_groups() {
        let codes = Codes::new(4, 2, vec![0, 1, 0, 1, 2, 3, 0, 1]).unwrap();
        let u = code_usage(&codes);
        assert_eq!(u.distinct_rows, 2);
        assert_eq!(u.largest_group, 3);
        assert_eq!(u.min_values_per_position, 2);
    }
}
