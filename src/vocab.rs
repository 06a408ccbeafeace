//! The vocabulary: words in row order with O(1) lookup both ways.

use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

/// Words in row order, with a hash index from word to row.
///
/// The words live end to end in one string, with the end offset of each: 400,000 GloVe words
/// take 5 MB this way instead of 22 MB as separate `String`s (a heap block and a 24-byte header
/// each). The index holds row numbers only and hashes each word where it lives: no word is stored
/// twice, and building the index hashes each word once.
#[derive(Debug, Clone, Default)]
pub struct Vocab {
    text: String,
    ends: Vec<usize>,
    index: HashTable<u32>,
    hasher: RandomState,
}

impl PartialEq for Vocab {
    fn eq(&self, other: &Self) -> bool {
        // The index is a function of the words.
        self.ends == other.ends && self.text == other.text
    }
}

/// Two rows hold the same word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DuplicateWord {
    /// Row of the first occurrence.
    pub first: usize,
    /// Row of the repeated occurrence.
    pub second: usize,
}

/// The word at `row` of the packed words (`row` must be in range).
fn packed<'a>(text: &'a str, ends: &[usize], row: usize) -> &'a str {
    let start = if row == 0 { 0 } else { ends[row - 1] };
    &text[start..ends[row]]
}

impl Vocab {
    /// Builds a vocabulary, refusing a word that occurs twice. Takes any words (`String`s,
    /// `&str`s) and packs them, dropping each as it goes.
    pub fn new<W: AsRef<str>>(words: impl IntoIterator<Item = W>) -> Result<Self, DuplicateWord> {
        let words = words.into_iter();
        let hasher = RandomState::new();
        let mut index = HashTable::with_capacity(words.size_hint().0);
        let mut text = String::new();
        let mut ends = Vec::with_capacity(words.size_hint().0);
        for (row, w) in words.enumerate() {
            let w = w.as_ref();
            let hash = hasher.hash_one(w);
            let same = |&r: &u32| packed(&text, &ends, r as usize) == w;
            let rehash = |&r: &u32| hasher.hash_one(packed(&text, &ends, r as usize));
            match index.entry(hash, same, rehash) {
                Entry::Occupied(first) => {
                    return Err(DuplicateWord {
                        first: *first.get() as usize,
                        second: row,
                    });
                }
                Entry::Vacant(slot) => {
                    slot.insert(row as u32);
                }
            }
            text.push_str(w);
            ends.push(text.len());
        }
        text.shrink_to_fit();
        Ok(Vocab {
            text,
            ends,
            index,
            hasher,
        })
    }

    /// Number of words.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when there are no words.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The word at `row`, if any.
    pub fn word(&self, row: usize) -> Option<&str> {
        (row < self.ends.len()).then(|| packed(&self.text, &self.ends, row))
    }

    /// The row of `word`, if present.
    pub fn row(&self, word: &str) -> Option<usize> {
        self.index
            .find(self.hasher.hash_one(word), |&r| {
                packed(&self.text, &self.ends, r as usize) == word
            })
            .map(|&r| r as usize)
    }

    /// All words in row order.
    pub fn words(&self) -> impl ExactSizeIterator<Item = &str> + DoubleEndedIterator + Clone {
        (0..self.ends.len()).map(|r| packed(&self.text, &self.ends, r))
    }

    /// The words of `rows`, in order (rows past the end are left out).
    pub fn words_in(
        &self,
        rows: std::ops::Range<usize>,
    ) -> impl ExactSizeIterator<Item = &str> + DoubleEndedIterator + Clone {
        let end = rows.end.min(self.ends.len());
        (rows.start.min(end)..end).map(|r| packed(&self.text, &self.ends, r))
    }

    /// Every word end to end, in row order: the bytes of word `r` follow those of word `r - 1`.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Keeps only the first `n` words.
    pub fn truncate(&mut self, n: usize) {
        if n < self.ends.len() {
            self.index.retain(|&mut r| (r as usize) < n);
            self.text
                .truncate(if n == 0 { 0 } else { self.ends[n - 1] });
            self.ends.truncate(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_both_ways() {
        let v = Vocab::new(["the", "of"]).unwrap();
        assert_eq!(v.row("of"), Some(1));
        assert_eq!(v.word(0), Some("the"));
        assert_eq!(v.row("missing"), None);
    }

    #[test]
    fn duplicate_reports_both_rows() {
        let err = Vocab::new(["a", "b", "a"]).unwrap_err();
        assert_eq!(
            err,
            DuplicateWord {
                first: 0,
                second: 2
            }
        );
    }

    #[test]
    fn truncate_drops_index_entries() {
        let mut v = Vocab::new(["a", "bb", "c"]).unwrap();
        v.truncate(1);
        assert_eq!(v.len(), 1);
        assert_eq!(v.row("bb"), None);
        assert_eq!(v.words().collect::<Vec<_>>(), ["a"]);
        assert_eq!(v, Vocab::new(["a"]).unwrap());
        v.truncate(0);
        assert!(v.is_empty());
        assert_eq!(v.text(), "");
    }

    #[test]
    fn packed_words_keep_their_bounds() {
        // Words that are prefixes of each other, an empty word, and multi-byte text.
        let words = ["ab", "a", "", "ñandú", "abñ"];
        let v = Vocab::new(words).unwrap();
        assert_eq!(v.words().collect::<Vec<_>>(), words);
        for (row, w) in words.iter().enumerate() {
            assert_eq!(v.row(w), Some(row));
            assert_eq!(v.word(row), Some(*w));
        }
        assert_eq!(v.word(words.len()), None);
        assert_eq!(v.row("abñx"), None);
        assert_eq!(v.words().next_back(), Some("abñ"));
        assert_eq!(v.text(), words.concat());
        assert_eq!(v.words_in(1..3).collect::<Vec<_>>(), ["a", ""]);
        assert_eq!(v.words_in(4..99).collect::<Vec<_>>(), ["abñ"]);
        assert_eq!(v.words_in(7..9).count(), 0);
    }
}
