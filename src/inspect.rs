//! Looking inside a compressed table: which words share codes, how the codes are used, which
//! words lie close to a word, and what the user probably meant by a word that is not there.
//!
//! Everything here works on the unpacked [`Codes`] and the decoded matrix, so it needs no
//! LibTorch and no original vectors.
//!
//! ```
//! use kdcompress::codes::Codes;
//! use kdcompress::inspect::{code_string, groups};
//!
//! // Three words, D = 2: the first two share their code.
//! let codes = Codes::new(4, 2, vec![3, 1, 3, 1, 0, 2]).unwrap();
//! let g = groups(&codes, 2);
//! assert_eq!(code_string(&g[0].key), "3-1");
//! assert_eq!(g[0].rows, vec![0, 1]);
//! ```

use std::collections::HashMap;
use std::path::PathBuf;

use rayon::prelude::*;

use crate::codes::Codes;
use crate::embeddings::Embeddings;
use crate::vocab::Vocab;

/// A code as people write it in the paper's Table 6: `3-1-0-4`.
pub fn code_string(codes: &[u16]) -> String {
    let mut s = String::with_capacity(codes.len() * 3);
    for (i, c) in codes.iter().enumerate() {
        if i > 0 {
            s.push('-');
        }
        s.push_str(&c.to_string());
    }
    s
}

/// Positions at which two codes differ. Codes of different lengths differ at every position
/// the shorter one lacks.
pub fn hamming(a: &[u16], b: &[u16]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x != y).count() + a.len().abs_diff(b.len())
}

/// Words whose codes agree on the first `key.len()` positions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The shared code prefix.
    pub key: Vec<u16>,
    /// Rows of the words, ascending (for frequency-sorted vocabularies: most frequent first).
    pub rows: Vec<usize>,
}

/// Groups every word by the first `prefix` positions of its code (all D when `prefix >= D`),
/// largest group first; equal sizes keep the order of their first word.
pub fn groups(codes: &Codes, prefix: usize) -> Vec<Group> {
    let j = prefix.min(codes.d());
    let mut index: HashMap<&[u16], usize> = HashMap::new();
    let mut out: Vec<Group> = Vec::new();
    for row in 0..codes.len() {
        let key = &codes.row(row)[..j];
        match index.get(key) {
            Some(&g) => out[g].rows.push(row),
            None => {
                index.insert(key, out.len());
                out.push(Group {
                    key: key.to_vec(),
                    rows: vec![row],
                });
            }
        }
    }
    // Stable: groups of one size stay in order of their first row.
    out.sort_by_key(|g| std::cmp::Reverse(g.rows.len()));
    out
}

/// A distinct code near a query code, with the words that have it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NearCode {
    /// Hamming distance to the query.
    pub distance: usize,
    /// The code.
    pub code: Vec<u16>,
    /// Rows of the words with exactly this code, ascending.
    pub rows: Vec<usize>,
}

/// The `max` distinct codes closest to `query` by Hamming distance, other than `query` itself;
/// ties go to the code whose first word comes first.
pub fn nearest_codes(codes: &Codes, query: &[u16], max: usize) -> Vec<NearCode> {
    let mut found: Vec<(usize, usize)> = (0..codes.len())
        .into_par_iter()
        .filter_map(|row| {
            let dist = hamming(codes.row(row), query);
            (dist > 0).then_some((dist, row))
        })
        .collect();
    found.sort_unstable();
    let mut index: HashMap<&[u16], usize> = HashMap::new();
    let mut out: Vec<NearCode> = Vec::new();
    for (distance, row) in found {
        let code = codes.row(row);
        if let Some(&i) = index.get(code) {
            out[i].rows.push(row);
            continue;
        }
        // Sorted by distance: once `max` codes are known, a new code can only be farther.
        if out.len() == max {
            if out.last().is_some_and(|last| last.distance < distance) {
                break;
            }
            continue;
        }
        index.insert(code, out.len());
        out.push(NearCode {
            distance,
            code: code.to_vec(),
            rows: vec![row],
        });
    }
    for c in &mut out {
        c.rows.sort_unstable();
    }
    out
}

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

/// A word the table does not hold, with the closest words it does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{path}: {word:?} is not in the vocabulary ({words} words){}",
    did_you_mean(suggestions)
)]
pub struct UnknownWord {
    /// The file whose vocabulary was searched.
    pub path: PathBuf,
    /// The word asked for.
    pub word: String,
    /// Vocabulary size.
    pub words: usize,
    /// Close matches, best first.
    pub suggestions: Vec<String>,
}

fn did_you_mean(suggestions: &[String]) -> String {
    if suggestions.is_empty() {
        "; no word in it is close".to_string()
    } else {
        format!("; did you mean {}?", suggestions.join(", "))
    }
}

/// The row of `word` in `vocab`, or an [`UnknownWord`] with up to five suggestions;
/// `path` names the file in the message.
pub fn lookup(vocab: &Vocab, word: &str, path: impl Into<PathBuf>) -> Result<usize, UnknownWord> {
    vocab.row(word).ok_or_else(|| UnknownWord {
        path: path.into(),
        word: word.to_string(),
        words: vocab.len(),
        suggestions: suggest(vocab, word, 5),
    })
}

/// Up to `max` words of `vocab` that `word` was probably meant to be, best first: other
/// capitalisations, then words within a small edit distance ignoring case (closest first, then
/// by row, which in frequency-sorted vocabularies prefers common words), then words that start
/// with `word`.
pub fn suggest(vocab: &Vocab, word: &str, max: usize) -> Vec<String> {
    if max == 0 {
        return Vec::new();
    }
    let folded = word.to_lowercase();
    let query: Vec<char> = folded.chars().collect();
    // One typo per three characters, at least one: "teh" finds "the", but "cat" does not find "dog".
    let bound = (query.len() / 3).max(1);
    let mut scored: Vec<(usize, usize, usize)> = (0..vocab.len())
        .into_par_iter()
        .filter_map(|row: usize| {
            let w = vocab.word(row)?;
            if w == word {
                return None;
            }
            let w = w.to_lowercase();
            if w == folded {
                return Some((0, 0, row));
            }
            let len = w.chars().count();
            if len.abs_diff(query.len()) <= bound
                && let Some(d) = bounded_edit_distance(&query, &w, bound)
            {
                return Some((1, d, row));
            }
            (!folded.is_empty() && w.starts_with(&folded)).then_some((2, len, row))
        })
        .collect();
    scored.sort_unstable();
    scored
        .into_iter()
        .take(max)
        .filter_map(|(_, _, row)| vocab.word(row).map(str::to_string))
        .collect()
}

/// Edit distance between `a` and `b` in characters, counting an insertion, a deletion, a
/// substitution or a swap of two neighbours as one edit (optimal string alignment), if it is at
/// most `bound`. Swaps count once because they are the commonest typo ("teh").
fn bounded_edit_distance(a: &[char], b: &str, bound: usize) -> Option<usize> {
    let b: Vec<char> = b.chars().collect();
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0usize; b.len() + 1];
    for (i, &ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        let mut row_min = cur[0];
        for (j, &cb) in b.iter().enumerate() {
            let mut d = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
            if i > 0 && j > 0 && ca == b[j - 1] && a[i - 1] == cb {
                d = d.min(before[j - 1] + 1);
            }
            cur[j + 1] = d;
            row_min = row_min.min(d);
        }
        // A swap reaches back two rows, so the cut-off needs two rows above the bound.
        if row_min > bound && prev.iter().min().is_some_and(|&m| m > bound) {
            return None;
        }
        std::mem::swap(&mut before, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    let d = prev[b.len()];
    (d <= bound).then_some(d)
}

/// Rows of a matrix scaled to unit length, for cosine similarity by dot product.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitRows {
    dim: usize,
    data: Vec<f32>,
}

impl UnitRows {
    /// Normalises each row of the row-major `matrix` of width `dim`; all-zero rows stay zero and
    /// are never anyone's neighbour. Panics if `dim` is zero or does not divide the length,
    /// which is a caller's bug.
    pub fn new(mut matrix: Vec<f32>, dim: usize) -> Self {
        assert!(
            dim > 0 && matrix.len().is_multiple_of(dim),
            "matrix is not rows of {dim}"
        );
        matrix.par_chunks_mut(dim).for_each(normalize);
        UnitRows { dim, data: matrix }
    }

    /// Row width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.data.len() / self.dim
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// One unit row.
    pub fn row(&self, row: usize) -> &[f32] {
        &self.data[row * self.dim..(row + 1) * self.dim]
    }

    /// The `k` rows most similar by cosine to `query` (any length; normalised here), among the
    /// first `limit` rows (all when `None`), leaving out `exclude`; most similar first, ties
    /// to the lower row.
    pub fn nearest(
        &self,
        query: &[f32],
        k: usize,
        limit: Option<usize>,
        exclude: &[usize],
    ) -> Vec<Neighbour> {
        assert_eq!(query.len(), self.dim, "query width");
        let mut q = query.to_vec();
        normalize(&mut q);
        let rows = limit.map_or(self.len(), |l| l.min(self.len()));
        const CHUNK: usize = 4096;
        let partial: Vec<Vec<Neighbour>> = self.data[..rows * self.dim]
            .par_chunks(CHUNK * self.dim)
            .enumerate()
            .map(|(chunk, block)| {
                let mut top = TopK::new(k);
                for (i, v) in block.chunks_exact(self.dim).enumerate() {
                    let row = chunk * CHUNK + i;
                    let s = dot(v, &q);
                    // A zero row has no direction: it is nobody's neighbour.
                    if s == 0.0 && v.iter().all(|&x| x == 0.0) {
                        continue;
                    }
                    if !exclude.contains(&row) {
                        top.offer(row, s);
                    }
                }
                top.into_sorted()
            })
            .collect();
        let mut top = TopK::new(k);
        for n in partial.into_iter().flatten() {
            top.offer(n.row, n.cosine);
        }
        top.into_sorted()
    }
}

/// The original vectors of a table's words, in the table's row order.
#[derive(Debug, Clone, PartialEq)]
pub struct Aligned {
    /// `[N, d]`: row r is the original vector of the table's word r, zero where it has none.
    pub matrix: Vec<f32>,
    /// Whether the original has word r.
    pub present: Vec<bool>,
    /// How many words the original has.
    pub found: usize,
}

impl Aligned {
    /// Looks up every word of `vocab` in `original`.
    pub fn new(vocab: &Vocab, original: &Embeddings) -> Self {
        let dim = original.dim();
        let mut matrix = vec![0f32; vocab.len() * dim];
        let mut present = vec![false; vocab.len()];
        let mut found = 0;
        for (row, word) in vocab.words().enumerate() {
            if let Some(v) = original.get(word) {
                matrix[row * dim..(row + 1) * dim].copy_from_slice(v);
                present[row] = true;
                found += 1;
            }
        }
        Aligned {
            matrix,
            present,
            found,
        }
    }
}

/// A row and its cosine similarity to a query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbour {
    /// The row.
    pub row: usize,
    /// Cosine similarity, in [-1, 1].
    pub cosine: f32,
}

/// The best `k` of a stream of scored rows, kept sorted; small k makes a sorted vector faster
/// than a heap.
pub(crate) struct TopK {
    k: usize,
    items: Vec<Neighbour>,
}

impl TopK {
    pub(crate) fn new(k: usize) -> Self {
        TopK {
            k,
            items: Vec::with_capacity(k + 1),
        }
    }

    /// Better means a higher score, or an equal score on a lower row; NaN scores never enter.
    fn better(a: &Neighbour, b: &Neighbour) -> bool {
        a.cosine > b.cosine || (a.cosine == b.cosine && a.row < b.row)
    }

    pub(crate) fn offer(&mut self, row: usize, cosine: f32) {
        if self.k == 0 || cosine.is_nan() {
            return;
        }
        let n = Neighbour { row, cosine };
        if self.items.len() == self.k && !Self::better(&n, &self.items[self.k - 1]) {
            return;
        }
        let at = self.items.partition_point(|x| Self::better(x, &n));
        self.items.insert(at, n);
        self.items.truncate(self.k);
    }

    pub(crate) fn into_sorted(self) -> Vec<Neighbour> {
        self.items
    }
}

pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

pub(crate) fn normalize(v: &mut [f32]) {
    let norm = dot(v, v).sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(k: u32, d: usize, rows: &[&[u16]]) -> Codes {
        Codes::new(k, d, rows.concat()).unwrap()
    }

    fn vocab(words: &[&str]) -> Vocab {
        Vocab::new(words).unwrap()
    }

    #[test]
    fn code_string_joins_with_dashes() {
        assert_eq!(code_string(&[3, 1, 0, 4]), "3-1-0-4");
        assert_eq!(code_string(&[12]), "12");
        assert_eq!(code_string(&[]), "");
    }

    #[test]
    fn hamming_counts_differing_positions() {
        assert_eq!(hamming(&[1, 2, 3], &[1, 2, 3]), 0);
        assert_eq!(hamming(&[1, 2, 3], &[0, 2, 4]), 2);
        assert_eq!(hamming(&[1, 2], &[1, 2, 3]), 1);
    }

    #[test]
    fn groups_by_full_code_and_by_prefix() {
        let c = codes(
            4,
            3,
            &[
                &[0, 1, 2],
                &[3, 3, 3],
                &[0, 1, 2],
                &[0, 1, 3],
                &[3, 3, 3],
                &[0, 1, 2],
            ],
        );
        let full = groups(&c, 3);
        assert_eq!(
            full,
            vec![
                Group {
                    key: vec![0, 1, 2],
                    rows: vec![0, 2, 5]
                },
                Group {
                    key: vec![3, 3, 3],
                    rows: vec![1, 4]
                },
                Group {
                    key: vec![0, 1, 3],
                    rows: vec![3]
                },
            ]
        );
        let by_two = groups(&c, 2);
        assert_eq!(by_two[0].key, vec![0, 1]);
        assert_eq!(by_two[0].rows, vec![0, 2, 3, 5]);
        assert_eq!(by_two[1].rows, vec![1, 4]);
        // A prefix longer than D means the full code.
        assert_eq!(groups(&c, 99), full);
    }

    #[test]
    fn nearest_codes_by_hamming_distance() {
        let c = codes(
            4,
            3,
            &[
                &[0, 0, 0], // query's own code
                &[0, 0, 1], // distance 1
                &[3, 3, 3], // distance 3
                &[0, 2, 1], // distance 2
                &[0, 0, 1], // distance 1, same code as row 1
                &[1, 0, 0], // distance 1
            ],
        );
        let near = nearest_codes(&c, &[0, 0, 0], 3);
        assert_eq!(
            near,
            vec![
                NearCode {
                    distance: 1,
                    code: vec![0, 0, 1],
                    rows: vec![1, 4]
                },
                NearCode {
                    distance: 1,
                    code: vec![1, 0, 0],
                    rows: vec![5]
                },
                NearCode {
                    distance: 2,
                    code: vec![0, 2, 1],
                    rows: vec![3]
                },
            ]
        );
        assert_eq!(nearest_codes(&c, &[0, 0, 0], 0), vec![]);
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
    fn suggests_case_typos_then_prefixes() {
        let v = vocab(&[
            "the", "king", "kings", "queen", "King", "kingdom", "walking",
        ]);
        assert_eq!(suggest(&v, "kingg", 5), vec!["king", "kings", "King"]);
        assert_eq!(
            suggest(&v, "kingd", 5),
            vec!["king", "kings", "King", "kingdom"]
        );
        assert_eq!(suggest(&v, "KING", 2), vec!["king", "King"]);
        assert_eq!(suggest(&v, "teh", 5), vec!["the"]);
        assert_eq!(suggest(&v, "zzzzzz", 5), Vec::<String>::new());
        assert_eq!(suggest(&v, "kingg", 0), Vec::<String>::new());
    }

    #[test]
    fn unknown_word_message_names_file_and_suggestions() {
        let v = vocab(&["monday", "tuesday"]);
        let err = lookup(&v, "mondya", "x.kdz").unwrap_err();
        assert_eq!(
            err.to_string(),
            "x.kdz: \"mondya\" is not in the vocabulary (2 words); did you mean monday?"
        );
        let err = lookup(&v, "qqq", "x.kdz").unwrap_err();
        assert!(err.to_string().ends_with("no word in it is close"), "{err}");
        assert_eq!(lookup(&v, "tuesday", "x.kdz"), Ok(1));
    }

    #[test]
    fn edit_distance_is_levenshtein_within_bound() {
        let q: Vec<char> = "kitten".chars().collect();
        assert_eq!(bounded_edit_distance(&q, "sitting", 3), Some(3));
        assert_eq!(bounded_edit_distance(&q, "sitting", 2), None);
        assert_eq!(bounded_edit_distance(&q, "kitten", 0), Some(0));
        let q: Vec<char> = "für".chars().collect();
        assert_eq!(bounded_edit_distance(&q, "fur", 1), Some(1));
        let q: Vec<char> = "teh".chars().collect();
        assert_eq!(bounded_edit_distance(&q, "the", 1), Some(1));
        let q: Vec<char> = "abcdef".chars().collect();
        assert_eq!(bounded_edit_distance(&q, "badcfe", 3), Some(3));
    }

    #[test]
    fn nearest_by_cosine_excludes_and_limits() {
        let m = UnitRows::new(
            vec![
                1.0, 0.0, // 0
                0.0, 2.0, // 1: orthogonal to the query
                3.0, 0.1, // 2: nearly the query
                -1.0, 0.0, // 3: opposite
                0.0, 0.0, // 4: zero row
            ],
            2,
        );
        let near = m.nearest(&[1.0, 0.0], 4, None, &[0]);
        let rows: Vec<usize> = near.iter().map(|n| n.row).collect();
        assert_eq!(rows, vec![2, 1, 3]);
        assert!((near[0].cosine - 3.0 / (9.01f32).sqrt()).abs() < 1e-6);
        let rows: Vec<usize> = m
            .nearest(&[1.0, 0.0], 10, Some(2), &[])
            .iter()
            .map(|n| n.row)
            .collect();
        assert_eq!(rows, vec![0, 1]);
    }

    #[test]
    fn aligned_follows_the_table_rows() {
        let table = vocab(&["b", "zz", "a"]);
        let original = Embeddings::new(vocab(&["a", "b", "c"]), 2, vec![1., 2., 3., 4., 5., 6.]);
        let a = Aligned::new(&table, &original);
        assert_eq!(a.matrix, vec![3., 4., 0., 0., 1., 2.]);
        assert_eq!(a.present, vec![true, false, true]);
        assert_eq!(a.found, 2);
    }

    #[test]
    fn nearest_by_cosine_across_chunks_matches_brute_force() {
        let dim = 3;
        let n = 10_000;
        let data: Vec<f32> = (0..n * dim)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let m = UnitRows::new(data.clone(), dim);
        let q = [0.3, -0.2, 0.9];
        let got: Vec<usize> = m.nearest(&q, 5, None, &[]).iter().map(|n| n.row).collect();
        let mut all: Vec<(f32, usize)> = (0..n)
            .map(|r| {
                (
                    dot(m.row(r), &{
                        let mut q = q.to_vec();
                        normalize(&mut q);
                        q
                    }),
                    r,
                )
            })
            .collect();
        all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let want: Vec<usize> = all.iter().take(5).map(|x| x.1).collect();
        assert_eq!(got, want);
    }
}
