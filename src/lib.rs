//! # kdcompress
//!
//! Compresses pretrained word vectors (GloVe, word2vec, fastText) into KD codes: every word gets
//! D discrete codes of K values each, and a small shared composer rebuilds its vector from them
//! (Chen, Min & Sun, ICML 2018).
//!
//! Data flows one way: [`input`] reads a file into [`embeddings::Embeddings`]; the trainer
//! (feature `train`, LibTorch) learns a [`compressed::Compressed`] under the options of
//! [`train_config`] (which need no LibTorch); [`format`] writes and reads it as a `.kdz`;
//! decoding, inspection and export need no LibTorch.
#![deny(missing_docs)]

pub mod analogy;
mod atomic_file;
pub mod code_stats;
pub mod codes;
pub mod composer;
pub mod compressed;
/// The trainable embedding layer, at its former path (it lives in [`train::embedding_layer`]).
#[cfg(feature = "train")]
pub use train::embedding_layer;
pub mod embeddings;
pub mod eval;
pub mod export;
pub mod format;
pub mod input;
pub mod inspect;
mod linalg;
pub mod method;
pub mod neighbours;
pub mod precision;
pub mod progress;
pub mod report;
#[cfg(feature = "train")]
pub mod train;
pub mod train_config;
mod vector;
pub mod vocab;
