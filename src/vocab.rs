//! The vocabulary: words in row order with O(1) lookup both ways.

use std::collections::HashMap;

/// Words in row order, with a hash index from word to row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Vocab {
    words: Vec<String>,
    index: HashMap<String, u32>,
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
        let mut index = HashMap::with_capacity(words.len());
        for (row, w) in words.iter().enumerate() {
            if let Some(&first) = index.get(w.as_str()) {
                return Err(DuplicateWord {
                    first: first as usize,
                    second: row,
                });
            }
            index.insert(w.clone(), row as u32);
        }
        Ok(Vocab { words, index })
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
        self.index.get(word).map(|&r| r as usize)
    }

    /// All words in row order.
    pub fn words(&self) -> &[String] {
        &self.words
    }

    /// Keeps only the first `n` words.
    pub fn truncate(&mut self, n: usize) {
        if n < self.words.len() {
            for w in self.words.drain(n..) {
                self.index.remove(&w);
            }
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
