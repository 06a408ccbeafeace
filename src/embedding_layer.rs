//! A `.kdz` as a trainable embedding layer on LibTorch (feature `train`).
//!
//! [`KdEmbedding`] stands in for `tch::nn::Embedding` in a downstream model: the codes stay
//! fixed, the codebooks and the composer are variables of the model's `VarStore`, and
//! [`KdEmbedding::f_forward`] rebuilds vectors with the math of [`crate::composer`]. Fine-tuning
//! therefore adapts a compressed table to a task while it stays compressed:
//! [`KdEmbedding::to_composer`] hands the tuned weights back for a new `.kdz`.
//!
//! Variables are named as in the `.kdz` and the safetensors export (`codebooks`,
//! `composer.out.weight`, ...) below the path the layer is built on.
//!
//! ```no_run
//! use tch::{nn, Device, Kind, Tensor};
//! use kdcompress::embedding_layer::KdEmbedding;
//!
//! let kdz = kdcompress::format::Kdz::open("vectors.kdz")?;
//! let vs = nn::VarStore::new(Device::Cpu);
//! let emb = KdEmbedding::new(&vs.root().sub("embedding"), &kdz);
//! let rows = Tensor::from_slice(&[0i64, 5, 7]);
//! let vectors = emb.f_forward(&rows)?; // [3, d]
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;

use tch::{Kind, TchError, Tensor, nn};

use crate::codes::Codes;
use crate::composer::{
    CODEBOOKS, Composer, ComposerConfig, ComposerError, ComposerKind, HIDDEN_BIAS,
    HIDDEN_OUT_WEIGHT, HIDDEN_WEIGHT, LSTM_BIAS_HH, LSTM_BIAS_IH, LSTM_WEIGHT_HH, LSTM_WEIGHT_IH,
    OUT_BIAS, OUT_WEIGHT,
};
use crate::format::Kdz;

/// Frozen KD codes, trainable codebooks and composer: an embedding table of N words.
#[derive(Debug)]
pub struct KdEmbedding {
    config: ComposerConfig,
    words: i64,
    /// `[N, D]` in the narrowest integer kind that holds K values; no gradient.
    codes: Tensor,
    /// `[D]`: `i * K`, turning code `c` at position `i` into row `i*K + c` of the flat codebooks.
    offsets: Tensor,
    /// concat and split: `[d]`, where each output column sits in the `D·d'` chosen values.
    positions: Option<Tensor>,
    /// `codebooks` and the composer tensors, as variables, by their export names.
    vars: BTreeMap<&'static str, Tensor>,
}

/// Tuned weights that cannot become a [`Composer`] again.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddingLayerError {
    /// LibTorch refused to copy a tensor out.
    #[error("cannot copy tensor {name} out of LibTorch")]
    Copy {
        /// The tensor.
        name: &'static str,
        /// The underlying error.
        #[source]
        source: TchError,
    },
    /// The weights no longer fit the configuration.
    #[error("the tuned weights do not form a composer")]
    Composer(#[from] ComposerError),
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
        let device = p.device();
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
        let offsets: Vec<i64> = (0..d).map(|i| i * config.num_codes as i64).collect();
        let mut vars = BTreeMap::new();
        for (name, shape) in Composer::expected_shapes(&config) {
            let t = &composer.tensors()[name];
            let shape: Vec<i64> = shape.iter().map(|&s| s as i64).collect();
            let init = Tensor::from_slice(&t.data).reshape(&shape);
            // "composer.out.weight" lives at p / "composer" / "out" as "weight".
            let (dirs, leaf) = name.rsplit_once('.').unwrap_or(("", name));
            let path = dirs
                .split('.')
                .filter(|s| !s.is_empty())
                .fold(p.clone(), |path, s| path.sub(s));
            vars.insert(name, path.var_copy(leaf, &init));
        }
        let positions = config.assembled_positions().map(|p| {
            let p: Vec<i64> = p.into_iter().map(|x| x as i64).collect();
            Tensor::from_slice(&p).to_device(device)
        });
        KdEmbedding {
            config,
            words: n,
            codes: codes_tensor.reshape([n, d]).to_device(device),
            offsets: Tensor::from_slice(&offsets).to_device(device),
            positions,
            vars,
        }
    }

    /// Number of words (N).
    pub fn num_embeddings(&self) -> i64 {
        self.words
    }

    /// Width of a vector (d).
    pub fn embedding_dim(&self) -> i64 {
        self.config.out_dim as i64
    }

    /// Sizes and composer kind.
    pub fn config(&self) -> &ComposerConfig {
        &self.config
    }

    /// The trainable `codebooks` variable, `[D, K, d']`.
    pub fn codebooks(&self) -> &Tensor {
        &self.vars[CODEBOOKS]
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
        let b = rows.size()[0];
        if b > 0 {
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
        let c = &self.config;
        let (dd, k, e) = (
            c.num_codebooks as i64,
            c.num_codes as i64,
            c.code_dim as i64,
        );
        let flat_rows = self
            .codes
            .f_index_select(0, &rows.f_to_device(self.codes.device())?)?
            .f_to_kind(Kind::Int64)?
            .f_add(&self.offsets)?
            .f_reshape([-1])?;
        let chosen = self
            .codebooks()
            .f_reshape([dd * k, e])?
            .f_index_select(0, &flat_rows)?
            .f_reshape([b, dd, e])?;
        let v = |name: &str| &self.vars[name];
        let y = match (c.kind, &self.positions) {
            // A gather rather than a narrow so that split's padding values never reach the output
            // (and get no gradient, so they stay zero through fine-tuning).
            (ComposerKind::Concat | ComposerKind::Split, Some(positions)) => chosen
                .f_reshape([b, dd * e])?
                .f_index_select(1, positions)?,
            (ComposerKind::Concat | ComposerKind::Split, None) => {
                unreachable!("from_parts sets the positions of concat and split")
            }
            (ComposerKind::Linear | ComposerKind::Mlp, _) => {
                let s = chosen.f_sum_dim_intlist(Some(&[1i64][..]), false, None::<Kind>)?;
                let mut y = s.f_linear(v(OUT_WEIGHT), Some(v(OUT_BIAS)))?;
                if c.kind == ComposerKind::Mlp {
                    let hidden = s
                        .f_linear(v(HIDDEN_WEIGHT), Some(v(HIDDEN_BIAS)))?
                        .f_tanh()?;
                    y = y.f_add(&hidden.f_linear::<&Tensor>(v(HIDDEN_OUT_WEIGHT), None)?)?;
                }
                y
            }
            (ComposerKind::Lstm, _) => {
                let opts = (chosen.kind(), chosen.device());
                let h0 = c.hidden as i64;
                let mut h = Tensor::f_zeros([b, h0], opts)?;
                let mut cell = Tensor::f_zeros([b, h0], opts)?;
                let mut total = Tensor::f_zeros([b, h0], opts)?;
                for t in 0..dd {
                    let x = chosen.f_select(1, t)?;
                    let gates = x
                        .f_linear(v(LSTM_WEIGHT_IH), Some(v(LSTM_BIAS_IH)))?
                        .f_add(&h.f_linear(v(LSTM_WEIGHT_HH), Some(v(LSTM_BIAS_HH)))?)?;
                    // PyTorch's gate order: input, forget, cell, output.
                    let g = gates.f_chunk(4, 1)?;
                    let (i, f, gg, o) = (
                        g[0].f_sigmoid()?,
                        g[1].f_sigmoid()?,
                        g[2].f_tanh()?,
                        g[3].f_sigmoid()?,
                    );
                    cell = f.f_mul(&cell)?.f_add(&i.f_mul(&gg)?)?;
                    h = o.f_mul(&cell.f_tanh()?)?;
                    total = total.f_add(&h)?;
                }
                total.f_linear(v(OUT_WEIGHT), Some(v(OUT_BIAS)))?
            }
        };
        let mut shape = indices.size();
        shape.push(c.out_dim as i64);
        y.f_reshape(shape)
    }

    /// The current (possibly tuned) weights as a pure-Rust [`Composer`], to decode without
    /// LibTorch or to write a new `.kdz` with the same codes.
    pub fn to_composer(&self) -> Result<Composer, EmbeddingLayerError> {
        let mut tensors = BTreeMap::new();
        for (&name, t) in &self.vars {
            let copy = |source| EmbeddingLayerError::Copy { name, source };
            let flat = t
                .f_detach()
                .and_then(|t| t.f_to_device(tch::Device::Cpu))
                .and_then(|t| t.f_to_kind(Kind::Float))
                .and_then(|t| t.f_reshape([-1]))
                .map_err(copy)?;
            let data = Vec::<f32>::try_from(&flat).map_err(copy)?;
            let shape: Vec<usize> = t.size().iter().map(|&s| s as usize).collect();
            let tensor = crate::composer::Tensor::new(shape.clone(), data).ok_or_else(|| {
                ComposerError::Shape {
                    name: name.to_string(),
                    found: shape.clone(),
                    expected: shape,
                }
            })?;
            tensors.insert(name.to_string(), tensor);
        }
        Ok(Composer::new(self.config, tensors)?)
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
