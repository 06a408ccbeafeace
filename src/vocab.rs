//! The vocabulary: words in row order with O(1) lookup both ways.

use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

/// Words in row order, with a hash index from word to row.
///
/// The index holds row numbers only and hashes each word where it lives in `words`: no word is
/// stored twice, and building the index hashes each word once.
#[derive(Debug, Clone, Default)]
pub struct Vocab {
    words: Vec<String>,
    index: HashTable<u32>,
    hasher: RandomState,
}

impl PartialEq for Vocab {
    fn eq(&self, other: &Self) -> bool {
        // The index is a function of the words.
        self.words == other.words
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

impl Vocab {
    /// Builds a vocabulary, refusing a word that occurs twice.
    pub fn new(words: Vec<String>) -> Result<Self, DuplicateWord> {
        let hasher = RandomState::new();
        let mut index = HashTable::with_capacity(words.len());
        for (row, w) in words.iter().enumerate() {
            let hash = hasher.hash_one(w.as_str());
            let same = |&r: &u32| words[r as usize] == *w;
            let rehash = |&r: &u32| hasher.hash_one(words[r as usize].as_str());
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
        }
        Ok(Vocab {
            words,
            index,
            hasher,
        })
    }

    /// Number of words.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// True when there are no words.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The word at `row`, if any.
    pub fn word(&self, row: usize) -> Option<&str> {
        self.words.get(row).map(String::as_str)
    }

    /// The row of `word`, if present.
    pub fn row(&self, word: &str) -> Option<usize> {
        self.index
            .find(self.hasher.hash_one(word), |&r| {
                self.words[r as usize] == word
            })
            .map(|&r| r as usize)
    }

    /// All words in row order.
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// Keeps only the first `n` words.
    pub fn truncate(&mut self, n: usize) {
        if n < self.words.len() {
            self.index.retain(|&mut r| (r as usize) < n);
            self.words.truncate(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_both_ways() {
        let v = Vocab::new(vec!["the".into(), "of".into()]).unwrap();
        assert_eq!(v.row("of"), Some(1));
        assert_eq!(v.word(0), Some("the"));
        assert_eq!(v.row("missing"), None);
    }

    #[test]
    fn duplicate_reports_both_rows() {
        let err = Vocab::new(vec!["a".into(), "b".into(), "a".into()]).unwrap_err();
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
        let mut v = Vocab::new(vec!["a".into(), "b".into(), "c".into()]).unwrap();
        v.truncate(1);
        assert_eq!(v.len(), 1);
        assert_eq!(v.row("b"), None);
    }
}
