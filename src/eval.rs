//! Quality of decoded vectors against the originals, in pure Rust (no LibTorch).
//!
//! - [`mse`]: mean over words of the squared L2 error of the whole vector.
//! - [`mean_cosine`]: mean cosine between each decoded vector and its original.
//! - [`NeighbourReference::overlap`]: for sampled words, the share of their 10 nearest cosine
//!   neighbours (by decoded vectors, among all decoded vectors) that are also among their 10
//!   nearest by original vectors; a word is never its own neighbour.
//! - [`similarity_spearman`]: Spearman correlation of cosine similarities with human scores
//!   (WordSim-353, SimLex-999 files).
//! - [`code_usage`]: how many distinct code rows are used and the largest group sharing one.
//!
//! Neighbours are found by [`crate::neighbours`], code usage is counted by [`crate::code_stats`].

use std::path::{Path, PathBuf};

use rayon::prelude::*;

pub use crate::code_stats::{CodeUsage, code_usage};
use crate::linalg::dot;
use crate::neighbours::{NearestLists, inverse_norm, nearest_rows};

/// What can go wrong while measuring.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Two matrices that should match do not.
    #[error("{what}: expected {expected} floats, found {found}")]
    Shape {
        /// Which input.
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Actual length.
        found: usize,
    },
    /// The vector width is zero or does not divide the matrix.
    #[error("a matrix of {len} floats is not made of rows of width {dim}")]
    Width {
        /// Matrix length.
        len: usize,
        /// Claimed width.
        dim: usize,
    },
    /// A similarity file could not be read.
    #[error("cannot read similarity file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A similarity file line is malformed.
    #[error("{path}:{line}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Line number, from 1.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

fn rows_of(matrix: &[f32], dim: usize) -> Result<usize, EvalError> {
    if dim == 0 || !matrix.len().is_multiple_of(dim) {
        return Err(EvalError::Width {
            len: matrix.len(),
            dim,
        });
    }
    Ok(matrix.len() / dim)
}

fn same_shape(original: &[f32], decoded: &[f32], dim: usize) -> Result<usize, EvalError> {
    let n = rows_of(original, dim)?;
    if decoded.len() != original.len() {
        return Err(EvalError::Shape {
            what: "decoded matrix",
            expected: original.len(),
            found: decoded.len(),
        });
    }
    Ok(n)
}

/// Squared L2 error of every row.
pub fn squared_errors(
    original: &[f32],
    decoded: &[f32],
    dim: usize,
) -> Result<Vec<f64>, EvalError> {
    same_shape(original, decoded, dim)?;
    Ok(original
        .par_chunks(dim)
        .zip(decoded.par_chunks(dim))
        .map(|(a, b)| a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum())
        .collect())
}

/// Mean over rows of the squared L2 error (0 for an empty matrix).
pub fn mse(original: &[f32], decoded: &[f32], dim: usize) -> Result<f64, EvalError> {
    let n = same_shape(original, decoded, dim)?;
    let total: f64 = squared_errors(original, decoded, dim)?.iter().sum();
    Ok(if n == 0 { 0.0 } else { total / n as f64 })
}

/// Mean cosine between each decoded row and its original; a zero vector has cosine 0.
pub fn mean_cosine(original: &[f32], decoded: &[f32], dim: usize) -> Result<f64, EvalError> {
    let n = same_shape(original, decoded, dim)?;
    if n == 0 {
        return Ok(0.0);
    }
    let total: f64 = original
        .par_chunks(dim)
        .zip(decoded.par_chunks(dim))
        .map(|(a, b)| f64::from(dot(a, b) * inverse_norm(a) * inverse_norm(b)))
        .sum();
    Ok(total / n as f64)
}

/// A small seeded generator (SplitMix64) so that sampling needs no extra dependency and is the
/// same on every platform.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`), by rejection so there is no modulo bias.
    pub fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let v = self.next_u64();
            if v < zone {
                return v % n;
            }
        }
    }
}

/// `count` distinct rows of `0..n` (all of them if `count >= n`), in random order.
pub fn sample_rows(n: usize, count: usize, seed: u64) -> Vec<usize> {
    let mut rng = SplitMix64::new(seed);
    let mut all: Vec<usize> = (0..n).collect();
    let take = count.min(n);
    for i in 0..take {
        let j = i + rng.below((n - i) as u64) as usize;
        all.swap(i, j);
    }
    all.truncate(take);
    all
}

/// The `k` nearest rows by cosine to each of `queries` (rows of `matrix`), excluding the query
/// itself, best first, ranked as [`crate::neighbours`] ranks.
pub fn nearest_by_cosine(
    matrix: &[f32],
    dim: usize,
    queries: &[usize],
    k: usize,
) -> Result<Vec<Vec<u32>>, EvalError> {
    let n = rows_of(matrix, dim)?;
    if let Some(&bad) = queries.iter().find(|&&q| q >= n) {
        return Err(EvalError::Shape {
            what: "query row",
            expected: n,
            found: bad,
        });
    }
    Ok(nearest_rows(matrix, dim, queries, k))
}

/// The original neighbours of sampled words, computed once and compared against many decodings.
#[derive(Debug, Clone)]
pub struct NeighbourReference {
    dim: usize,
    len: usize,
    k: usize,
    rows: Vec<usize>,
    neighbours: Vec<Vec<u32>>,
}

/// Words sampled for the neighbour overlap.
pub const NEIGHBOUR_SAMPLES: usize = 2000;
/// Neighbours compared per sampled word.
pub const NEIGHBOURS: usize = 10;

impl NeighbourReference {
    /// Samples `samples` rows with `seed` and finds their `k` nearest original neighbours.
    pub fn new(
        original: &[f32],
        dim: usize,
        samples: usize,
        k: usize,
        seed: u64,
    ) -> Result<Self, EvalError> {
        let len = rows_of(original, dim)?;
        let rows = sample_rows(len, samples, seed);
        let neighbours = nearest_by_cosine(original, dim, &rows, k)?;
        Ok(NeighbourReference {
            dim,
            len,
            k,
            rows,
            neighbours,
        })
    }

    /// The sampled rows.
    pub fn rows(&self) -> &[usize] {
        &self.rows
    }

    /// Mean share of each sampled word's original neighbours that are also its decoded neighbours.
    pub fn overlap(&self, decoded: &[f32]) -> Result<f64, EvalError> {
        if decoded.len() != self.len * self.dim {
            return Err(EvalError::Shape {
                what: "decoded matrix",
                expected: self.len * self.dim,
                found: decoded.len(),
            });
        }
        if self.rows.is_empty() {
            return Ok(0.0);
        }
        let got = nearest_by_cosine(decoded, self.dim, &self.rows, self.k)?;
        Ok(self.overlap_of(&got))
    }

    /// Mean share of each sampled word's original neighbours found in `got` (one list per
    /// sampled word, in the order of [`NeighbourReference::rows`]).
    fn overlap_of(&self, got: &[Vec<u32>]) -> f64 {
        if self.rows.is_empty() {
            return 0.0;
        }
        let total: f64 = got
            .iter()
            .zip(&self.neighbours)
            .map(|(a, b)| {
                let shared = a.iter().filter(|x| b.contains(x)).count();
                shared as f64 / b.len().max(1) as f64
            })
            .sum();
        total / self.rows.len() as f64
    }

    /// A [`ChunkScorer`] against `original`, given the decoded vectors of the sampled rows
    /// (`decoded_rows`, one row per [`NeighbourReference::rows`] entry, in that order).
    pub fn scorer<'a>(
        &'a self,
        original: &'a [f32],
        decoded_rows: &[f32],
    ) -> Result<ChunkScorer<'a>, EvalError> {
        if original.len() != self.len * self.dim {
            return Err(EvalError::Shape {
                what: "original matrix",
                expected: self.len * self.dim,
                found: original.len(),
            });
        }
        if decoded_rows.len() != self.rows.len() * self.dim {
            return Err(EvalError::Shape {
                what: "decoded sampled rows",
                expected: self.rows.len() * self.dim,
                found: decoded_rows.len(),
            });
        }
        Ok(ChunkScorer {
            reference: self,
            original,
            squared_error: 0.0,
            cosine: 0.0,
            nearest: NearestLists::new(decoded_rows.to_vec(), self.dim, self.rows.clone(), self.k),
        })
    }
}

/// What [`ChunkScorer::finish`] measures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    /// Mean over words of the squared L2 error.
    pub mse: f64,
    /// Mean cosine between decoded and original vectors.
    pub mean_cosine: f64,
    /// Neighbour overlap of the sampled words (see [`NeighbourReference::overlap`]).
    pub neighbour_overlap: f64,
}

/// Measures decoded vectors chunk by chunk, so that no decoded matrix needs to exist: sums of
/// squared errors and cosines, and each sampled word's nearest decoded neighbours so far.
///
/// Feed every row once, in any order and from any number of scorers ([`ChunkScorer::fork`],
/// [`ChunkScorer::merge`]); the result equals [`mse`], [`mean_cosine`] and
/// [`NeighbourReference::overlap`] on the whole decoded matrix (up to the order of summation).
#[derive(Debug)]
pub struct ChunkScorer<'a> {
    reference: &'a NeighbourReference,
    original: &'a [f32],
    squared_error: f64,
    cosine: f64,
    /// Each sampled word's nearest decoded rows so far (its decoded vector is the query).
    nearest: NearestLists,
}

impl ChunkScorer<'_> {
    /// An empty scorer sharing this one's reference and queries, for another thread.
    pub fn fork(&self) -> Self {
        ChunkScorer {
            reference: self.reference,
            original: self.original,
            squared_error: 0.0,
            cosine: 0.0,
            nearest: self.nearest.fork(),
        }
    }

    /// Scores decoded rows `start..start + decoded.len() / d`.
    pub fn add(&mut self, start: usize, decoded: &[f32]) -> Result<(), EvalError> {
        let dim = self.reference.dim;
        let rows = rows_of(decoded, dim)?;
        if start + rows > self.reference.len {
            return Err(EvalError::Shape {
                what: "decoded chunk end",
                expected: self.reference.len,
                found: start + rows,
            });
        }
        let original = &self.original[start * dim..(start + rows) * dim];
        for (row, orig) in decoded.chunks_exact(dim).zip(original.chunks_exact(dim)) {
            self.squared_error += row
                .iter()
                .zip(orig)
                .map(|(y, x)| f64::from(x - y).powi(2))
                .sum::<f64>();
            self.cosine += f64::from(dot(orig, row) * inverse_norm(orig) * inverse_norm(row));
        }
        self.nearest.add(start, decoded, dim);
        Ok(())
    }

    /// Adds what `other` has scored.
    pub fn merge(&mut self, other: ChunkScorer) {
        self.squared_error += other.squared_error;
        self.cosine += other.cosine;
        self.nearest.merge(other.nearest);
    }

    /// The scores over every row fed (each row must have been fed exactly once).
    pub fn finish(self) -> Scores {
        let n = self.reference.len;
        let got = self.nearest.rows();
        let per_word = |v: f64| if n == 0 { 0.0 } else { v / n as f64 };
        Scores {
            mse: per_word(self.squared_error),
            mean_cosine: per_word(self.cosine),
            neighbour_overlap: self.reference.overlap_of(&got),
        }
    }
}

/// One scored word pair of a similarity data set.
#[derive(Debug, Clone, PartialEq)]
pub struct SimilarityPair {
    /// First word, lowercased.
    pub a: String,
    /// Second word, lowercased.
    pub b: String,
    /// Human score.
    pub score: f64,
}

/// Reads a similarity file: `word1 word2 score` per line (tabs or spaces), `#` comments.
pub fn read_similarity(path: &Path) -> Result<Vec<SimilarityPair>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|source| EvalError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_similarity(&text, path)
}

/// Parses the text of a similarity file; `path` only names it in errors.
pub fn parse_similarity(text: &str, path: &Path) -> Result<Vec<SimilarityPair>, EvalError> {
    let mut pairs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let bad = |reason: String| EvalError::Parse {
            path: path.to_path_buf(),
            line: i + 1,
            reason,
        };
        let [a, b, score, ..] = fields[..] else {
            return Err(bad(format!(
                "expected `word word score`, found {} field(s)",
                fields.len()
            )));
        };
        let score: f64 = score
            .parse()
            .ok()
            .filter(|s: &f64| s.is_finite())
            .ok_or_else(|| bad(format!("score {score:?} is not a number")))?;
        pairs.push(SimilarityPair {
            a: a.to_lowercase(),
            b: b.to_lowercase(),
            score,
        });
    }
    Ok(pairs)
}

/// Ranks from 1, ties sharing their average rank.
fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut out = vec![0.0; values.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && values[order[j + 1]] == values[order[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &o in &order[i..=j] {
            out[o] = avg;
        }
        i = j + 1;
    }
    out
}

/// Spearman's rank correlation; `None` with fewer than 3 pairs or a constant side.
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() || x.len() < 3 {
        return None;
    }
    let (rx, ry) = (ranks(x), ranks(y));
    let n = rx.len() as f64;
    let (mx, my) = (rx.iter().sum::<f64>() / n, ry.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in rx.iter().zip(&ry) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx).powi(2);
        syy += (b - my).powi(2);
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

/// Spearman of one set of vectors on one similarity data set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimilarityScore {
    /// The correlation, if defined.
    pub spearman: Option<f64>,
    /// Pairs whose both words have vectors.
    pub found: usize,
    /// Pairs in the data set.
    pub total: usize,
}

/// Correlates the cosine of each pair's vectors (from `vector`) with its human score; pairs with a
/// missing word are skipped.
pub fn similarity_spearman<'a>(
    pairs: &[SimilarityPair],
    vector: impl Fn(&str) -> Option<&'a [f32]>,
) -> SimilarityScore {
    let (mut got, mut gold) = (Vec::new(), Vec::new());
    for p in pairs {
        if let (Some(a), Some(b)) = (vector(&p.a), vector(&p.b)) {
            got.push(f64::from(dot(a, b) * inverse_norm(a) * inverse_norm(b)));
            gold.push(p.score);
        }
    }
    SimilarityScore {
        spearman: spearman(&got, &gold),
        found: got.len(),
        total: pairs.len(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn mse_sums_over_dims_and_averages_over_words() {
        let a = [1.0, 2.0, 0.0, 0.0];
        let b = [0.0, 0.0, 0.0, 3.0];
        // row 0: 1 + 4 = 5; row 1: 9
        assert_eq!(mse(&a, &b, 2).unwrap(), 7.0);
        assert!(matches!(mse(&a, &b[..2], 2), Err(EvalError::Shape { .. })));
        assert!(matches!(mse(&a, &b, 3), Err(EvalError::Width { .. })));
    }

    #[test]
    fn cosine_of_scaled_copy_is_one_and_zero_vector_is_zero() {
        let a = [1.0, 2.0, 3.0, 4.0];
        let b = [2.0, 4.0, 0.0, 0.0];
        let c = mean_cosine(&a, &b, 2).unwrap();
        assert!((c - 0.5).abs() < 1e-6, "{c}");
    }

    #[test]
    fn chunk_scorer_in_any_order_equals_whole_matrix_scores() {
        // Pseudo-random rows with exact ties (duplicated rows) so the lower-row rule matters.
        let (n, d) = (300usize, 6usize);
        let mut rng = SplitMix64::new(7);
        let mut unit = || (rng.next_u64() % 2001) as f32 / 1000.0 - 1.0;
        let original: Vec<f32> = (0..n * d).map(|_| unit()).collect();
        let mut decoded: Vec<f32> = original.iter().map(|v| v + 0.3 * unit()).collect();
        decoded.copy_within(0..10 * d, 50 * d);
        let reference = NeighbourReference::new(&original, d, 40, 5, 3).unwrap();
        let queries: Vec<f32> = reference
            .rows()
            .iter()
            .flat_map(|&r| decoded[r * d..(r + 1) * d].to_vec())
            .collect();
        let whole = Scores {
            mse: mse(&original, &decoded, d).unwrap(),
            mean_cosine: mean_cosine(&original, &decoded, d).unwrap(),
            neighbour_overlap: reference.overlap(&decoded).unwrap(),
        };
        // Two scorers, chunks fed out of order, then merged.
        let mut a = reference.scorer(&original, &queries).unwrap();
        let mut b = a.fork();
        for (i, start) in [250usize, 0, 120, 37, 200].into_iter().enumerate() {
            let end = match start {
                250 => 300,
                0 => 37,
                120 => 200,
                37 => 120,
                _ => 250,
            };
            let target = if i % 2 == 0 { &mut a } else { &mut b };
            target.add(start, &decoded[start * d..end * d]).unwrap();
        }
        a.merge(b);
        let got = a.finish();
        assert!(
            (got.mse - whole.mse).abs() < 1e-9 * whole.mse.max(1.0),
            "{got:?} {whole:?}"
        );
        assert!(
            (got.mean_cosine - whole.mean_cosine).abs() < 1e-9,
            "{got:?} {whole:?}"
        );
        assert_eq!(got.neighbour_overlap, whole.neighbour_overlap);
        assert!(whole.neighbour_overlap > 0.0 && whole.neighbour_overlap < 1.0);
        let mut c = reference.scorer(&original, &queries).unwrap();
        assert!(matches!(
            c.add(299, &decoded[..2 * d]),
            Err(EvalError::Shape { .. })
        ));
        assert!(reference.scorer(&original, &queries[..d]).is_err());
    }

    #[test]
    fn nearest_excludes_self_and_orders_by_cosine() {
        // Rows on the unit circle at angles 0, 10, 30, 90 degrees; magnitude must not matter.
        let deg = |a: f32, m: f32| [m * a.to_radians().cos(), m * a.to_radians().sin()];
        let m: Vec<f32> = [deg(0., 1.), deg(10., 5.), deg(30., 0.1), deg(90., 2.)].concat();
        let nn = nearest_by_cosine(&m, 2, &[0, 3], 2).unwrap();
        assert_eq!(nn, vec![vec![1, 2], vec![2, 1]]);
    }

    #[test]
    fn overlap_is_one_for_identity_and_drops_for_noise() {
        let mut rng = SplitMix64::new(7);
        let x: Vec<f32> = (0..300 * 4)
            .map(|_| rng.below(1000) as f32 / 1000.0 - 0.5)
            .collect();
        let r = NeighbourReference::new(&x, 4, 50, 10, 1).unwrap();
        assert_eq!(r.overlap(&x).unwrap(), 1.0);
        let y: Vec<f32> = x
            .iter()
            .map(|v| v + (rng.below(1000) as f32 / 1000.0 - 0.5))
            .collect();
        assert!(r.overlap(&y).unwrap() < 0.9);
    }

    #[test]
    fn sample_rows_is_distinct_and_seeded() {
        let a = sample_rows(100, 30, 3);
        let mut s = a.clone();
        s.sort();
        s.dedup();
        assert_eq!(s.len(), 30);
        assert_eq!(a, sample_rows(100, 30, 3));
        assert_ne!(a, sample_rows(100, 30, 4));
        assert_eq!(sample_rows(5, 30, 3).len(), 5);
    }

    #[test]
    fn spearman_handles_ties_and_degenerate_input() {
        let r = spearman(&[1.0, 2.0, 3.0, 4.0], &[10.0, 20.0, 30.0, 40.0]).unwrap();
        assert!((r - 1.0).abs() < 1e-12);
        let r = spearman(&[1.0, 2.0, 3.0, 4.0], &[4.0, 3.0, 2.0, 1.0]).unwrap();
        assert!((r + 1.0).abs() < 1e-12);
        // Ties: ranks of [1, 1, 2] are [1.5, 1.5, 3].
        assert_eq!(ranks(&[1.0, 1.0, 2.0]), vec![1.5, 1.5, 3.0]);
        assert_eq!(spearman(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]), None);
        assert_eq!(spearman(&[1.0, 2.0], &[1.0, 2.0]), None);
    }

    #[test]
    fn similarity_file_parses_and_reports_bad_lines() {
        let p = Path::new("sims.txt");
        let pairs = parse_similarity("# header\nTiger\tcat\t7.35\n\nold new 1.5\n", p).unwrap();
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs[0].a, "tiger");
        let err = parse_similarity("a b\n", p).unwrap_err();
        assert!(err.to_string().contains("sims.txt:1"), "{err}");
        let err = parse_similarity("# x\na b c\n", p).unwrap_err();
        assert!(err.to_string().contains("sims.txt:2"), "{err}");
    }

    #[test]
    fn similarity_skips_missing_words() {
        let pairs = vec![
            SimilarityPair {
                a: "a".into(),
                b: "b".into(),
                score: 1.0,
            },
            SimilarityPair {
                a: "a".into(),
                b: "c".into(),
                score: 2.0,
            },
            SimilarityPair {
                a: "b".into(),
                b: "c".into(),
                score: 3.0,
            },
            SimilarityPair {
                a: "a".into(),
                b: "zzz".into(),
                score: 3.0,
            },
        ];
        let vecs: HashMap<&str, Vec<f32>> = [
            ("a", vec![1.0, 0.0]),
            ("b", vec![0.0, 1.0]),
            ("c", vec![1.0, 1.0]),
        ]
        .into_iter()
        .collect();
        let s = similarity_spearman(&pairs, |w| vecs.get(w).map(|v| v.as_slice()));
        assert_eq!((s.found, s.total), (3, 4));
        // cosines: a-b 0, a-c 0.707, b-c 0.707 against 1, 2, 3: ranks [1, 2.5, 2.5] vs [1, 2, 3].
        assert!((s.spearman.unwrap() - 0.8660254).abs() < 1e-6);
    }
}
