//! A `.kdz` as a trainable embedding layer on LibTorch (feature `train`).
//!
//! [`KdEmbedding`] stands in for `tch::nn::Embedding` in a downstream model: the codes stay
//! fixed, the codebooks and the composer are variables of the model's `VarStore`, and
//! [`KdEmbedding::f_forward`] rebuilds vectors through the trainer's own composer,
//! [`ComposerNet`], whose math is that of [`crate::composer`]. Fine-tuning
//! therefore adapts a compressed table to a task while it stays compressed:
//! [`KdEmbedding::to_composer`] hands the tuned weights back for a new `.kdz`.
//!
//! Variables are named as in the `.kdz` and the safetensors export (`codebooks`,
//! `composer.out.weight`, ...) below the path the layer is built on.
//!
//! ```no_run
//! use tch::{nn, Device, Kind, Tensor};
//! use kdcompress::train::embedding_layer::KdEmbedding;
//!
//! let kdz = kdcompress::format::Kdz::open("vectors.kdz")?;
//! let vs = nn::VarStore::new(Device::Cpu);
//! let emb = KdEmbedding::new(&vs.root().sub("embedding"), &kdz);
//! let rows = Tensor::from_slice(&[0i64, 5, 7]);
//! let vectors = emb.f_forward(&rows)?; // [3, d]
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use tch::{Kind, TchError, Tensor, nn};

use super::model::{ComposerNet, ExportError};
use crate::codes::Codes;
use crate::composer::{Composer, ComposerConfig, ComposerError};
use crate::format::Kdz;

/// Frozen KD codes, trainable codebooks and composer: an embedding table of N words.
#[derive(Debug)]
pub struct KdEmbedding {
    words: i64,
    /// `[N, D]` in the narrowest integer kind that holds K values; no gradient.
    codes: Tensor,
    /// The codebooks and the composer, as variables under their export names.
    net: ComposerNet,
}

/// Tuned weights that cannot become a [`Composer`] again.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddingLayerError {
    /// LibTorch refused to copy a tensor out.
    #[error("cannot copy tensor {name} out of LibTorch")]
    Copy {
        /// The tensor.
        name: String,
        /// The underlying error.
        #[source]
        source: TchError,
    },
    /// The weights no longer fit the configuration.
    #[error("the tuned weights do not form a composer")]
    Composer(#[from] ComposerError),
}

impl From<ExportError> for EmbeddingLayerError {
    fn from(e: ExportError) -> Self {
        match e {
            ExportError::Torch { name, source } => EmbeddingLayerError::Copy { name, source },
            ExportError::Composer(e) => EmbeddingLayerError::Composer(e),
        }
    }
}

impl KdEmbedding {
    /// The layer for `kdz`'s words, with variables under `p` initialised from the file.
    pub fn new(p: &nn::Path, kdz: &Kdz) -> Self {
        Self::from_parts(p, &kdz.codes(), kdz.composer())
    }

    /// The layer for `codes` and `composer` (for example a [`crate::compressed::Compressed`]'s).
    ///
    /// Panics if they disagree on D or K, which a `Compressed` or `.kdz` never does.
    pub fn from_parts(p: &nn::Path, codes: &Codes, composer: &Composer) -> Self {
        let config = *composer.config();
        assert_eq!(codes.d(), config.num_codebooks, "codes and composer D");
        assert_eq!(codes.k() as usize, config.num_codes, "codes and composer K");
        let (n, d) = (codes.len() as i64, codes.d() as i64);
        let codes_tensor = if config.num_codes <= 256 {
            let v: Vec<u8> = codes.as_slice().iter().map(|&c| c as u8).collect();
            Tensor::from_slice(&v)
        } else if config.num_codes <= 32_768 {
            let v: Vec<i16> = codes.as_slice().iter().map(|&c| c as i16).collect();
            Tensor::from_slice(&v)
        } else {
            let v: Vec<i32> = codes.as_slice().iter().map(|&c| i32::from(c)).collect();
            Tensor::from_slice(&v)
        };
        KdEmbedding {
            words: n,
            codes: codes_tensor.reshape([n, d]).to_device(p.device()),
            net: ComposerNet::from_composer(p, composer),
        }
    }

    /// Number of words (N).
    pub fn num_embeddings(&self) -> i64 {
        self.words
    }

    /// Width of a vector (d).
    pub fn embedding_dim(&self) -> i64 {
        self.config().out_dim as i64
    }

    /// Sizes and composer kind.
    pub fn config(&self) -> &ComposerConfig {
        self.net.config()
    }

    /// The trainable `codebooks` variable, `[D, K, d']`.
    pub fn codebooks(&self) -> &Tensor {
        &self.net.codebooks
    }

    /// The frozen codes, `[N, D]`.
    pub fn codes(&self) -> &Tensor {
        &self.codes
    }

    /// Vectors `[..., d]` for the word rows in `indices` (any shape, any integer kind).
    /// Refuses floating-point indices and rows outside `0..N`.
    pub fn f_forward(&self, indices: &Tensor) -> Result<Tensor, TchError> {
        if !matches!(
            indices.kind(),
            Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8
        ) {
            return Err(TchError::Kind(format!(
                "embedding indices must be integers, got {:?}",
                indices.kind()
            )));
        }
        let rows = indices.f_reshape([-1])?.f_to_kind(Kind::Int64)?;
        if rows.size()[0] > 0 {
            let lo = rows.f_min()?.f_int64_value(&[])?;
            let hi = rows.f_max()?.f_int64_value(&[])?;
            if lo < 0 || hi >= self.words {
                return Err(TchError::Shape(format!(
                    "embedding index {} is outside 0..{}",
                    if lo < 0 { lo } else { hi },
                    self.words
                )));
            }
        }
        let codes = self
            .codes
            .f_index_select(0, &rows.f_to_device(self.codes.device())?)?;
        let y = self.net.decode(&codes);
        let mut shape = indices.size();
        shape.push(self.config().out_dim as i64);
        y.f_reshape(shape)
    }

    /// The current (possibly tuned) weights as a pure-Rust [`Composer`], to decode without
    /// LibTorch or to write a new `.kdz` with the same codes.
    pub fn to_composer(&self) -> Result<Composer, EmbeddingLayerError> {
        Ok(self.net.export()?)
    }
}

/// `nn::Embedding`'s interface. Like `nn::Embedding`, it panics on indices that are not
/// integers or lie outside `0..N`; [`KdEmbedding::f_forward`] returns those as errors.
impl nn::Module for KdEmbedding {
    fn forward(&self, xs: &Tensor) -> Tensor {
        match self.f_forward(xs) {
            Ok(y) => y,
            Err(e) => panic!("KdEmbedding::forward: {e}"),
        }
    }
}
