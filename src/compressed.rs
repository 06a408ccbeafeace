//! A compressed embedding table in memory: what the trainer produces and the `.kdz` writer takes.

use crate::codes::Codes;
use crate::composer::Composer;
use crate::vocab::Vocab;

/// Where the vectors came from.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Source {
    /// File name (no directories).
    pub file_name: String,
    /// Size in bytes of the source file.
    pub file_size: u64,
    /// Hex digest of the source file (see [`crate::compressed::Source::hash_algorithm`]).
    pub hash: String,
    /// Algorithm of `hash`, e.g. `crc32`.
    pub hash_algorithm: String,
    /// Input format name, e.g. `glove`.
    pub format: String,
}

/// Everything about how a file was made that is not needed to decode it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Metadata {
    /// `kdcompress` version that wrote the file.
    pub tool_version: String,
    /// Method that learned the codes (`kd`, `dccl`, `dpq-sx`, `dpq-vq`, ...).
    pub method: String,
    /// The source vectors.
    pub source: Source,
    /// Training options as given (free-form JSON object).
    pub training: serde_json::Value,
    /// Seed of every random choice.
    pub seed: u64,
    /// Device that trained, e.g. `cpu` or `cuda:0`.
    pub device: String,
    /// Final metrics on the discrete codes, by name (e.g. `mse`, `mean_cosine`).
    pub metrics: std::collections::BTreeMap<String, f64>,
    /// Training wall time in seconds.
    pub train_seconds: f64,
}

/// Vocabulary, codes and composer, with metadata: a complete compressed table.
#[derive(Debug, Clone)]
pub struct Compressed {
    /// Words in row order; row i has codes row i.
    pub vocab: Vocab,
    /// D codes per word.
    pub codes: Codes,
    /// Rebuilds vectors from codes.
    pub composer: Composer,
    /// How it was made.
    pub metadata: Metadata,
    /// Optional per-word L2 norms of the source vectors.
    pub norms: Option<Vec<f32>>,
}

impl Compressed {
    /// Decodes every word, row-major `[n, d]`.
    pub fn decode_all(&self) -> Vec<f32> {
        let d = self.composer.config().out_dim;
        let mut out = vec![0f32; self.codes.len() * d];
        self.composer.decode_batch(self.codes.as_slice(), &mut out);
        out
    }

    /// Bits of code per word: `D * ceil(log2 K)`.
    pub fn bits_per_word(&self) -> u64 {
        self.codes.d() as u64 * u64::from(self.codes.bits_per_code())
    }
}
