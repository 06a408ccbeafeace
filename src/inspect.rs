//! Looking inside a compressed table: which words share codes, which codes lie close to a code,
//! and what the user probably meant by a word that is not there. How the codes are used is
//! counted in [`crate::code_stats`]; which words lie close to a word, in [`crate::neighbours`].
//!
//! Everything here works on the unpacked [`Codes`], so it needs no LibTorch and no original
//! vectors.
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
    fn aligned_follows_the_table_rows() {
        let table = vocab(&["b", "zz", "a"]);
        let original = Embeddings::new(vocab(&["a", "b", "c"]), 2, vec![1., 2., 3., 4., 5., 6.]);
        let a = Aligned::new(&table, &original);
        assert_eq!(a.matrix, vec![3., 4., 0., 0., 1., 2.]);
        assert_eq!(a.present, vec![true, false, true]);
        assert_eq!(a.found, 2);
    }
}
