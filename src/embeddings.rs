//! A vocabulary with its dense row-major f32 matrix.

use crate::vocab::Vocab;

/// Pre-trained word vectors: one row of `dim` floats per vocabulary word.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    vocab: Vocab,
    dim: usize,
    data: Vec<f32>,
}

impl Embeddings {
    /// Joins a vocabulary and its matrix. Panics if the matrix is not `vocab.len() * dim` long,
    /// which is a bug in the caller, not bad input.
    pub fn new(vocab: Vocab, dim: usize, data: Vec<f32>) -> Self {
        assert_eq!(
            data.len(),
            vocab.len() * dim,
            "matrix size disagrees with vocabulary"
        );
        Embeddings { vocab, dim, data }
    }

    /// The vocabulary.
    pub fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    /// Number of words (rows).
    pub fn len(&self) -> usize {
        self.vocab.len()
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.vocab.is_empty()
    }

    /// Vector width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The whole matrix, row-major.
    pub fn matrix(&self) -> &[f32] {
        &self.data
    }

    /// One word's vector.
    pub fn row(&self, row: usize) -> &[f32] {
        &self.data[row * self.dim..(row + 1) * self.dim]
    }

    /// The vector of `word`, if present.
    pub fn get(&self, word: &str) -> Option<&[f32]> {
        self.vocab.row(word).map(|r| self.row(r))
    }

    /// Keeps the first `n` rows.
    pub fn truncate(&mut self, n: usize) {
        self.vocab.truncate(n);
        self.data.truncate(self.vocab.len() * self.dim);
    }

    /// Splits into vocabulary and matrix.
    pub fn into_parts(self) -> (Vocab, usize, Vec<f32>) {
        (self.vocab, self.dim, self.data)
    }
}
