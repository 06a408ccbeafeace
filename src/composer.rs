//! The composer f in pure Rust: rebuilds a word's vector from its D codes.
//!
//! This is the contract shared by the trainer (which learns these tensors on LibTorch) and every
//! reader of a `.kdz` (which decodes with this code, without LibTorch). Tensor names are the same
//! in the trainer, the `.kdz` file and the safetensors export.
//!
//! Every kind starts from `codebooks` `[D, K, d']`: `e_i = codebooks[i, c_i]` for the word's codes
//! `c_0..c_{D-1}`. Then, with `s = Σ_i e_i`:
//!
//! | kind     | output `y` (width d)                                                      | tensors besides `codebooks` |
//! |----------|---------------------------------------------------------------------------|-----------------------------|
//! | `linear` | `W_out s + b_out`                                                         | `composer.out.weight [d, d']`, `composer.out.bias [d]` |
//! | `sum`    | `s` (needs `d' = d`): `linear` with `W_out` the identity and `b_out = 0`, stored without them | none |
//! | `mlp`    | `W_out s + b_out + W_ho tanh(W_h s + b_h)` (hidden layer as a residual)   | linear's, `composer.hidden.weight [h, d']`, `composer.hidden.bias [h]`, `composer.hidden_out.weight [d, h]` |
//! | `lstm`   | `W_out Σ_t h_t + b_out`, `h_t` the LSTM state after reading `e_0..e_t`    | `composer.lstm.weight_ih [4h, d']`, `composer.lstm.weight_hh [4h, h]`, `composer.lstm.bias_ih [4h]`, `composer.lstm.bias_hh [4h]`, `composer.out.weight [d, h]`, `composer.out.bias [d]` |
//! | `concat` | the first d values of `e_0 ‖ e_1 ‖ … ‖ e_{D-1}` (needs `D·d' ≥ d`)          | none |
//! | `split`  | columns `⌊i·d/D⌋..⌊(i+1)·d/D⌋` are the first values of `e_i` (needs `D ≤ d`, `d' = ⌈d/D⌉`) | none |
//! | `conditioned` | `x̂_D`, with `x̂_0 = 0`, `x̂_i = x̂_{i-1} + e_{i-1} + W_o relu(W_c e_{i-1} + W_s x̂_{i-1} + t_{i-1})` (needs `d' = d`) | `composer.cond.code.weight [h, d]` (`W_c`), `composer.cond.sum.weight [h, d]` (`W_s`), `composer.cond.step [D, h]` (`t`), `composer.cond.out.weight [d, h]` (`W_o`) |
//!
//! `split` is product quantization with balanced groups: widths differ by at most one and tile
//! the d columns exactly, so no code is spent on padding when D does not divide d (with
//! `concat`, d = 50 and D = 32 would leave 7 of the 32 code vectors outside the output). Each
//! `e_i` stores d' values of which the first `width_i` are used; writers store zeros in the rest
//! and decoders ignore them. When D divides d, `split` decodes exactly as `concat`.
//!
//! The LSTM follows PyTorch: gates in the order input, forget, cell, output; zero initial state.
//!
//! `conditioned` decodes step by step: the code vector chosen at step i is corrected by one small
//! network, shared by all steps (told apart by the step embedding `t_i`), that sees the
//! reconstruction so far (implicit neural codebooks, Huijben et al., ICML 2024). With `W_o = 0`
//! it is exactly the additive sum `Σ_i e_i`. Readers need not work in d dimensions: with
//! `u_i = W_s x̂_i`, `z_i = relu(A[i, c_i] + u_i)` and `u_{i+1} = u_i + B[i, c_i] + P z_i`, where
//! `A[i, k] = W_c codebooks[i, k] + t_i`, `B[i, k] = W_s codebooks[i, k]` and `P = W_s W_o`, the
//! output is `Σ_i e_i + W_o Σ_i z_i`: a decode costs at most (D−1)·h² multiply-adds (only the
//! units relu leaves active add `P z_i`) plus one `[d, h]` product.

use std::collections::BTreeMap;
use std::ops::Range;

use rayon::prelude::*;

use crate::linalg::dot;

/// How the chosen code vectors become a word vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[derive(clap::ValueEnum)]
#[value(rename_all = "lowercase")]
pub enum ComposerKind {
    /// Sum of code vectors, then a linear map.
    Linear,
    /// Linear, plus one tanh hidden layer added as a residual.
    Mlp,
    /// An LSTM over the code vectors, outputs summed, then a linear map.
    Lstm,
    /// Concatenation of the code vectors (product quantization layout).
    Concat,
    /// Code vector i fills output columns `⌊i·d/D⌋..⌊(i+1)·d/D⌋` (balanced product quantization).
    Split,
    /// Code vectors added in order, each corrected by a shared network that sees the sum so far.
    Conditioned,
    /// Sum of code vectors (d' = d): linear with the identity map, stored without it.
    Sum,
}

impl ComposerKind {
    /// Every kind, in the order of their codes in the `.kdz` model section.
    pub const ALL: [ComposerKind; 7] = [
        ComposerKind::Linear,
        ComposerKind::Mlp,
        ComposerKind::Lstm,
        ComposerKind::Concat,
        ComposerKind::Split,
        ComposerKind::Conditioned,
        ComposerKind::Sum,
    ];

    /// Whether the output is assembled from slices of the code vectors (`concat`, `split`)
    /// rather than computed by a network: there are no tensors besides `codebooks`.
    pub fn is_assembled(self) -> bool {
        matches!(self, ComposerKind::Concat | ComposerKind::Split)
    }

    /// Whether the output passes through `composer.out` (linear, mlp, lstm).
    pub fn has_out_map(self) -> bool {
        matches!(
            self,
            ComposerKind::Linear | ComposerKind::Mlp | ComposerKind::Lstm
        )
    }

    /// The name used in files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ComposerKind::Linear => "linear",
            ComposerKind::Mlp => "mlp",
            ComposerKind::Lstm => "lstm",
            ComposerKind::Concat => "concat",
            ComposerKind::Split => "split",
            ComposerKind::Conditioned => "conditioned",
            ComposerKind::Sum => "sum",
        }
    }

    /// Parses [`ComposerKind::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// The sizes that fix every tensor's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ComposerConfig {
    /// Composer kind.
    pub kind: ComposerKind,
    /// Code dimensions per word (D).
    pub num_codebooks: usize,
    /// Codes per dimension (K).
    pub num_codes: usize,
    /// Width of a code vector (d').
    pub code_dim: usize,
    /// Hidden width h (mlp, lstm and conditioned; ignored otherwise).
    pub hidden: usize,
    /// Width of the rebuilt vector (d).
    pub out_dim: usize,
}

/// A dense f32 tensor, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Values, `shape.iter().product()` of them.
    pub data: Vec<f32>,
}

impl Tensor {
    /// A tensor; `None` if the data length disagrees with the shape.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Option<Self> {
        let n = shape.iter().try_fold(1usize, |a, &b| a.checked_mul(b))?;
        (n == data.len()).then_some(Tensor { shape, data })
    }
}

/// Weights that do not fit the configuration.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ComposerError {
    /// A tensor the kind needs is absent.
    #[error("composer tensor {name:?} is missing")]
    Missing {
        /// Tensor name.
        name: String,
    },
    /// A tensor has the wrong shape.
    #[error("composer tensor {name:?} has shape {found:?}, expected {expected:?}")]
    Shape {
        /// Tensor name.
        name: String,
        /// Shape found.
        found: Vec<usize>,
        /// Shape the configuration implies.
        expected: Vec<usize>,
    },
    /// A size is zero or too large, or concat or split cannot cover the output.
    #[error("invalid composer sizes: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// A tensor is not among those the kind uses.
    #[error("composer tensor {name:?} is not used by the {kind} composer")]
    Unexpected {
        /// Tensor name.
        name: String,
        /// Composer kind.
        kind: &'static str,
    },
}

/// Name of the code vector table.
pub const CODEBOOKS: &str = "codebooks";
/// Output map weight.
pub const OUT_WEIGHT: &str = "composer.out.weight";
/// Output map bias.
pub const OUT_BIAS: &str = "composer.out.bias";
/// Hidden layer weight (mlp).
pub const HIDDEN_WEIGHT: &str = "composer.hidden.weight";
/// Hidden layer bias (mlp).
pub const HIDDEN_BIAS: &str = "composer.hidden.bias";
/// Hidden-to-output weight (mlp).
pub const HIDDEN_OUT_WEIGHT: &str = "composer.hidden_out.weight";
/// LSTM input weights.
pub const LSTM_WEIGHT_IH: &str = "composer.lstm.weight_ih";
/// LSTM recurrent weights.
pub const LSTM_WEIGHT_HH: &str = "composer.lstm.weight_hh";
/// LSTM input bias.
pub const LSTM_BIAS_IH: &str = "composer.lstm.bias_ih";
/// LSTM recurrent bias.
pub const LSTM_BIAS_HH: &str = "composer.lstm.bias_hh";

/// Conditioned: weight applied to each chosen code vector (`W_c`).
pub const COND_CODE_WEIGHT: &str = "composer.cond.code.weight";
/// Conditioned: weight applied to the reconstruction so far (`W_s`).
pub const COND_SUM_WEIGHT: &str = "composer.cond.sum.weight";
/// Conditioned: one hidden bias per step (`t`).
pub const COND_STEP: &str = "composer.cond.step";
/// Conditioned: hidden-to-output weight (`W_o`), zero at the start of training.
pub const COND_OUT_WEIGHT: &str = "composer.cond.out.weight";

/// Whether the conditioned decode at hidden width `h` and output width `d` runs in the hidden
/// space (module docs; about h²/2 multiply-adds a step, relu silencing half the units) or, for
/// networks wider than 3·d, in d dimensions from the table of each code's hidden part (`W_s x̂`
/// and the active rows of `W_o`: about 1.5·d·h). At d = 50, h = 512 that is 38k against 131k a
/// step.
fn in_hidden_space(h: usize, d: usize) -> bool {
    h <= 3 * d
}

/// Multiply-adds of one word's conditioned decode with a table, at hidden width `h`, output
/// width `d` and `num_codebooks` steps (see [`in_hidden_space`]).
pub fn conditioned_decode_macs(h: usize, d: usize, num_codebooks: usize) -> usize {
    num_codebooks
        * if in_hidden_space(h, d) {
            h * h / 2
        } else {
            3 * d * h / 2
        }
}

/// Beyond this many floats a per-code lookup table is not worth its memory.
const TABLE_LIMIT: usize = 1 << 24;

/// A validated composer, ready to decode.
#[derive(Debug, Clone)]
pub struct Composer {
    config: ComposerConfig,
    tensors: BTreeMap<String, Tensor>,
    /// For linear and mlp: `W_out e + b_out/D` per (i, k), `[D*K, d]`, so a linear decode is D adds.
    /// For lstm: `W_ih e + b_ih + b_hh` per (i, k), `[D*K, 4h]`.
    /// For conditioned: `A` of the module docs `[D*K, h]`; in the hidden space (h ≤ 3d) then `B`
    /// `[D*K, h]` and `Pᵀ` `[h, h]`, else `W_sᵀ` `[d, h]`; then `W_oᵀ` `[h, d]`.
    table: Option<Vec<f32>>,
}

impl Composer {
    /// The tensors each kind needs, with their shapes.
    pub fn expected_shapes(c: &ComposerConfig) -> Vec<(&'static str, Vec<usize>)> {
        let (dd, k, e, h, d) = (
            c.num_codebooks,
            c.num_codes,
            c.code_dim,
            c.hidden,
            c.out_dim,
        );
        let mut v = vec![(CODEBOOKS, vec![dd, k, e])];
        match c.kind {
            ComposerKind::Linear => {
                v.push((OUT_WEIGHT, vec![d, e]));
                v.push((OUT_BIAS, vec![d]));
            }
            ComposerKind::Mlp => {
                v.push((OUT_WEIGHT, vec![d, e]));
                v.push((OUT_BIAS, vec![d]));
                v.push((HIDDEN_WEIGHT, vec![h, e]));
                v.push((HIDDEN_BIAS, vec![h]));
                v.push((HIDDEN_OUT_WEIGHT, vec![d, h]));
            }
            ComposerKind::Lstm => {
                v.push((LSTM_WEIGHT_IH, vec![4 * h, e]));
                v.push((LSTM_WEIGHT_HH, vec![4 * h, h]));
                v.push((LSTM_BIAS_IH, vec![4 * h]));
                v.push((LSTM_BIAS_HH, vec![4 * h]));
                v.push((OUT_WEIGHT, vec![d, h]));
                v.push((OUT_BIAS, vec![d]));
            }
            ComposerKind::Conditioned => {
                v.push((COND_CODE_WEIGHT, vec![h, e]));
                v.push((COND_SUM_WEIGHT, vec![h, d]));
                v.push((COND_STEP, vec![dd, h]));
                v.push((COND_OUT_WEIGHT, vec![d, h]));
            }
            ComposerKind::Concat | ComposerKind::Split | ComposerKind::Sum => {}
        }
        v
    }

    /// Checks the configuration and that `tensors` holds exactly the right shapes.
    pub fn new(
        config: ComposerConfig,
        tensors: BTreeMap<String, Tensor>,
    ) -> Result<Self, ComposerError> {
        let c = config;
        let bad = |reason: &str| {
            Err(ComposerError::Config {
                reason: reason.to_string(),
            })
        };
        if c.num_codebooks == 0 || c.num_codes == 0 || c.code_dim == 0 || c.out_dim == 0 {
            return bad("D, K, d' and d must all be positive");
        }
        if matches!(
            c.kind,
            ComposerKind::Mlp | ComposerKind::Lstm | ComposerKind::Conditioned
        ) && c.hidden == 0
        {
            return bad("the hidden width must be positive for mlp, lstm and conditioned");
        }
        if matches!(c.kind, ComposerKind::Conditioned | ComposerKind::Sum)
            && c.code_dim != c.out_dim
        {
            return bad(&format!(
                "{} adds code vectors to the output: d' must equal d = {}, got {}",
                c.kind.name(),
                c.out_dim,
                c.code_dim
            ));
        }
        if c.kind == ComposerKind::Concat
            && c.num_codebooks
                .checked_mul(c.code_dim)
                .is_none_or(|w| w < c.out_dim)
        {
            return bad("concat needs D * d' >= d");
        }
        if c.kind == ComposerKind::Split {
            let (dd, d) = (c.num_codebooks, c.out_dim);
            if dd > d {
                return bad(&format!(
                    "split needs D <= d: {dd} groups cannot each hold some of {d} values"
                ));
            }
            if c.code_dim != d.div_ceil(dd) {
                return bad(&format!(
                    "split of d = {d} into D = {dd} groups needs d' = ceil(d / D) = {}, got {}",
                    d.div_ceil(dd),
                    c.code_dim
                ));
            }
        }
        let expected = Self::expected_shapes(&c);
        for (name, shape) in &expected {
            let t = tensors.get(*name).ok_or_else(|| ComposerError::Missing {
                name: name.to_string(),
            })?;
            if &t.shape != shape {
                return Err(ComposerError::Shape {
                    name: name.to_string(),
                    found: t.shape.clone(),
                    expected: shape.clone(),
                });
            }
        }
        if let Some(extra) = tensors
            .keys()
            .find(|n| !expected.iter().any(|(e, _)| e == n))
        {
            return Err(ComposerError::Unexpected {
                name: extra.clone(),
                kind: c.kind.name(),
            });
        }
        let mut composer = Composer {
            config,
            tensors,
            table: None,
        };
        composer.table = composer.build_table();
        Ok(composer)
    }

    /// The configuration.
    pub fn config(&self) -> &ComposerConfig {
        &self.config
    }

    /// All tensors by name.
    pub fn tensors(&self) -> &BTreeMap<String, Tensor> {
        &self.tensors
    }

    /// One tensor's values. Only called with names `new` has checked.
    fn t(&self, name: &str) -> &[f32] {
        &self.tensors[name].data
    }

    /// The same decode with fewer tensors: a `linear` composer whose map is exactly the identity
    /// and whose bias is exactly zero (what least-squares tables give, d' = d) becomes `sum`,
    /// which stores neither (on the 768-dimensional mpnet table at K=256, 589,824 values: 12% of a
    /// 160-bit file). Anything else is returned as it is.
    pub fn simplified(self) -> Self {
        let c = self.config;
        let is_identity = |w: &Tensor| {
            w.data
                .iter()
                .enumerate()
                .all(|(i, &v)| v == if i % (c.out_dim + 1) == 0 { 1.0 } else { 0.0 })
        };
        if c.kind != ComposerKind::Linear
            || c.code_dim != c.out_dim
            || !is_identity(&self.tensors[OUT_WEIGHT])
            || self.tensors[OUT_BIAS].data.iter().any(|&b| b != 0.0)
        {
            return self;
        }
        let mut tensors = self.tensors;
        tensors.retain(|name, _| name == CODEBOOKS);
        Composer::new(
            ComposerConfig {
                kind: ComposerKind::Sum,
                hidden: 0,
                ..c
            },
            tensors,
        )
        .expect("the codebooks of a valid linear composer with d' = d make a valid sum")
    }

    /// Number of f32 parameters.
    pub fn num_params(&self) -> usize {
        self.tensors.values().map(|t| t.data.len()).sum()
    }

    fn build_table(&self) -> Option<Vec<f32>> {
        let c = &self.config;
        let rows = c.num_codebooks * c.num_codes;
        let e = c.code_dim;
        let cb = self.t(CODEBOOKS);
        match c.kind {
            ComposerKind::Linear | ComposerKind::Mlp => {
                let d = c.out_dim;
                if rows.checked_mul(d)? > TABLE_LIMIT {
                    return None;
                }
                let w = self.t(OUT_WEIGHT);
                let b = self.t(OUT_BIAS);
                let share = 1.0 / c.num_codebooks as f32;
                let mut table = vec![0f32; rows * d];
                table.par_chunks_mut(d).enumerate().for_each(|(r, out)| {
                    matvec(w, &cb[r * e..(r + 1) * e], out);
                    for (o, bi) in out.iter_mut().zip(b) {
                        *o += bi * share;
                    }
                });
                Some(table)
            }
            ComposerKind::Lstm => {
                let g = 4 * c.hidden;
                if rows.checked_mul(g)? > TABLE_LIMIT {
                    return None;
                }
                let w = self.t(LSTM_WEIGHT_IH);
                let (bi, bh) = (self.t(LSTM_BIAS_IH), self.t(LSTM_BIAS_HH));
                let mut table = vec![0f32; rows * g];
                table.par_chunks_mut(g).enumerate().for_each(|(r, out)| {
                    matvec(w, &cb[r * e..(r + 1) * e], out);
                    for ((o, x), y) in out.iter_mut().zip(bi).zip(bh) {
                        *o += x + y;
                    }
                });
                Some(table)
            }
            ComposerKind::Conditioned => {
                // A = W_c e + t_i, then (in the hidden space) B = W_s e and P = W_s W_o (see the
                // module docs), then W_o. P and W_o are stored transposed: row j is what unit j
                // adds, so a decode adds whole rows and skips the units relu silenced.
                let h = c.hidden;
                let d = c.out_dim;
                let hidden_space = in_hidden_space(h, d);
                let len = if hidden_space {
                    rows.checked_mul(2 * h)?.checked_add(h.checked_mul(h)?)?
                } else {
                    rows.checked_mul(h)?.checked_add(h.checked_mul(d)?)?
                }
                .checked_add(h.checked_mul(d)?)?;
                if len > TABLE_LIMIT {
                    return None;
                }
                let (wc, ws, t) = (
                    self.t(COND_CODE_WEIGHT),
                    self.t(COND_SUM_WEIGHT),
                    self.t(COND_STEP),
                );
                let mut table = vec![0f32; len];
                let (a, rest) = table.split_at_mut(rows * h);
                let k = c.num_codes;
                a.par_chunks_mut(h).enumerate().for_each(|(r, out)| {
                    matvec(wc, &cb[r * e..(r + 1) * e], out);
                    add(out, &t[(r / k) * h..(r / k + 1) * h]);
                });
                let wo = self.t(COND_OUT_WEIGHT);
                let wo_t = if hidden_space {
                    let (b, rest) = rest.split_at_mut(rows * h);
                    b.par_chunks_mut(h).enumerate().for_each(|(r, out)| {
                        matvec(ws, &cb[r * e..(r + 1) * e], out);
                    });
                    let (p, wo_t) = rest.split_at_mut(h * h);
                    for (j, row) in p.chunks_exact_mut(h).enumerate() {
                        for (i, v) in row.iter_mut().enumerate() {
                            *v = (0..d).map(|l| ws[i * d + l] * wo[l * h + j]).sum();
                        }
                    }
                    wo_t
                } else {
                    // W_sᵀ: row l is what the sum's l-th value adds to the hidden layer.
                    let (ws_t, wo_t) = rest.split_at_mut(d * h);
                    for (l, row) in ws_t.chunks_exact_mut(h).enumerate() {
                        for (j, v) in row.iter_mut().enumerate() {
                            *v = ws[j * d + l];
                        }
                    }
                    wo_t
                };
                for (j, row) in wo_t.chunks_exact_mut(d).enumerate() {
                    for (l, v) in row.iter_mut().enumerate() {
                        *v = wo[l * h + j];
                    }
                }
                Some(table)
            }
            // The codebooks are already the table a sum gathers from.
            ComposerKind::Concat | ComposerKind::Split | ComposerKind::Sum => None,
        }
    }

    /// Scratch space one call of [`Composer::decode_with`] needs.
    pub fn scratch_len(&self) -> usize {
        let c = &self.config;
        match c.kind {
            ComposerKind::Linear => c.code_dim,
            ComposerKind::Mlp => c.code_dim + c.hidden,
            ComposerKind::Lstm => 8 * c.hidden + c.code_dim,
            ComposerKind::Conditioned => c.out_dim + 3 * c.hidden,
            ComposerKind::Concat | ComposerKind::Split | ComposerKind::Sum => 0,
        }
    }

    /// Decodes one word's `codes` (D of them, each below K) into `out` (d wide).
    ///
    /// Panics if the lengths are wrong or a code is out of range; readers check codes on load.
    pub fn decode(&self, codes: &[u16], out: &mut [f32]) {
        let mut scratch = vec![0f32; self.scratch_len()];
        self.decode_with(codes, out, &mut scratch);
    }

    /// [`Composer::decode`] with caller-provided scratch of [`Composer::scratch_len`] floats.
    pub fn decode_with(&self, codes: &[u16], out: &mut [f32], scratch: &mut [f32]) {
        let c = &self.config;
        let (dd, k, e, d) = (c.num_codebooks, c.num_codes, c.code_dim, c.out_dim);
        assert_eq!(codes.len(), dd, "expected {dd} codes");
        assert_eq!(out.len(), d, "expected an output of width {d}");
        let cb = self.t(CODEBOOKS);
        let entry = |i: usize, code: u16| {
            let r = i * k + code as usize;
            &cb[r * e..(r + 1) * e]
        };
        match c.kind {
            ComposerKind::Concat => {
                let mut pos = 0;
                for (i, &code) in codes.iter().enumerate() {
                    let take = e.min(d - pos);
                    out[pos..pos + take].copy_from_slice(&entry(i, code)[..take]);
                    pos += take;
                    if pos == d {
                        break;
                    }
                }
            }
            ComposerKind::Split => {
                for (i, &code) in codes.iter().enumerate() {
                    let cols = split_columns(d, dd, i);
                    let width = cols.len();
                    out[cols].copy_from_slice(&entry(i, code)[..width]);
                }
            }
            ComposerKind::Linear | ComposerKind::Mlp => {
                let (sum, rest) = scratch.split_at_mut(e);
                // With the table, linear needs no code vector sum at all: D row adds are the
                // whole decode. mlp still needs the sum for its hidden layer.
                let need_sum = self.table.is_none() || c.kind == ComposerKind::Mlp;
                if need_sum {
                    sum.fill(0.0);
                    for (i, &code) in codes.iter().enumerate() {
                        add(sum, entry(i, code));
                    }
                }
                match &self.table {
                    Some(table) => gather_sum(table, codes, k, out),
                    None => {
                        matvec(self.t(OUT_WEIGHT), sum, out);
                        add(out, self.t(OUT_BIAS));
                    }
                }
                if c.kind == ComposerKind::Mlp {
                    let hidden = &mut rest[..c.hidden];
                    matvec(self.t(HIDDEN_WEIGHT), sum, hidden);
                    for (x, b) in hidden.iter_mut().zip(self.t(HIDDEN_BIAS)) {
                        *x = (*x + b).tanh();
                    }
                    matvec_add(self.t(HIDDEN_OUT_WEIGHT), hidden, out);
                }
            }
            ComposerKind::Lstm => {
                let h = c.hidden;
                let (gates, rest) = scratch.split_at_mut(4 * h);
                let (state, rest) = rest.split_at_mut(h);
                let (cell, rest) = rest.split_at_mut(h);
                let (acc, _) = rest.split_at_mut(h);
                state.fill(0.0);
                cell.fill(0.0);
                acc.fill(0.0);
                let whh = self.t(LSTM_WEIGHT_HH);
                for (i, &code) in codes.iter().enumerate() {
                    match &self.table {
                        Some(table) => {
                            let r = i * k + code as usize;
                            gates.copy_from_slice(&table[r * 4 * h..(r + 1) * 4 * h]);
                        }
                        None => {
                            matvec(self.t(LSTM_WEIGHT_IH), entry(i, code), gates);
                            add(gates, self.t(LSTM_BIAS_IH));
                            add(gates, self.t(LSTM_BIAS_HH));
                        }
                    }
                    matvec_add(whh, state, gates);
                    for j in 0..h {
                        let ig = sigmoid(gates[j]);
                        let fg = sigmoid(gates[h + j]);
                        let gg = gates[2 * h + j].tanh();
                        let og = sigmoid(gates[3 * h + j]);
                        cell[j] = fg * cell[j] + ig * gg;
                        state[j] = og * cell[j].tanh();
                        acc[j] += state[j];
                    }
                }
                matvec(self.t(OUT_WEIGHT), acc, out);
                add(out, self.t(OUT_BIAS));
            }
            ComposerKind::Conditioned => self.decode_conditioned(codes, out, scratch),
            ComposerKind::Sum => gather_sum(cb, codes, k, out),
        }
    }

    /// The conditioned composer: in the hidden space with the table (module docs), else step by
    /// step in d dimensions as defined. Runs from a copy compiled for AVX-512 or AVX2 where the
    /// CPU has them (`vector::wide!`): the same additions in the same order on wider registers,
    /// so the same results.
    fn decode_conditioned(&self, codes: &[u16], out: &mut [f32], scratch: &mut [f32]) {
        let this = self;
        crate::vector::wide!(conditioned_kernel(
            this: &Composer,
            codes: &[u16],
            out: &mut [f32],
            scratch: &mut [f32],
        ))
    }
}

/// The body of [`Composer::decode_conditioned`], inlined into each compiled copy (`FUSED` is
/// unused: no multiply-add is fused, so every copy rounds alike).
#[inline(always)]
fn conditioned_kernel<const FUSED: bool>(
    this: &Composer,
    codes: &[u16],
    out: &mut [f32],
    scratch: &mut [f32],
) {
    let c = &this.config;
    let (dd, k, h, d) = (c.num_codebooks, c.num_codes, c.hidden, c.out_dim);
    let cb = this.t(CODEBOOKS);
    let (z, rest) = scratch.split_at_mut(h);
    let (zsum, rest) = rest.split_at_mut(h);
    match &this.table {
        Some(table) if in_hidden_space(h, d) => {
            let rows = dd * k;
            let (a, rest_t) = table.split_at(rows * h);
            let (b, rest_t) = rest_t.split_at(rows * h);
            let (p_t, wo_t) = rest_t.split_at(h * h);
            let (u, _) = rest.split_at_mut(h);
            u.fill(0.0);
            zsum.fill(0.0);
            for (i, &code) in codes.iter().enumerate() {
                let r = (i * k + code as usize) * h;
                for ((zj, aj), uj) in z.iter_mut().zip(&a[r..r + h]).zip(u.iter()) {
                    *zj = (aj + uj).max(0.0);
                }
                add(zsum, z);
                // u only feeds the next step's z.
                if i + 1 < dd {
                    add(u, &b[r..r + h]);
                    add_active_rows(p_t, z, u);
                }
            }
            gather_sum(cb, codes, k, out);
            add_active_rows(wo_t, zsum, out);
        }
        Some(table) => {
            // Wide networks (h > 3d): in d dimensions, with A for the code's part.
            let (a, rest_t) = table.split_at(dd * k * h);
            let (ws_t, wo_t) = rest_t.split_at(d * h);
            out.fill(0.0);
            for (i, &code) in codes.iter().enumerate() {
                let r = i * k + code as usize;
                z.copy_from_slice(&a[r * h..(r + 1) * h]);
                if i > 0 {
                    // W_s x̂ as d rows of h added to z: long vectors, unlike d-long dots.
                    add_rows(ws_t, out, z);
                }
                for v in z.iter_mut() {
                    *v = v.max(0.0);
                }
                add(out, &cb[r * d..(r + 1) * d]);
                add_active_rows(wo_t, z, out);
            }
        }
        None => {
            let (wc, ws, t, wo) = (
                this.t(COND_CODE_WEIGHT),
                this.t(COND_SUM_WEIGHT),
                this.t(COND_STEP),
                this.t(COND_OUT_WEIGHT),
            );
            let (sum, _) = rest.split_at_mut(d);
            sum.fill(0.0);
            for (i, &code) in codes.iter().enumerate() {
                let r = (i * k + code as usize) * d;
                let e = &cb[r..r + d];
                z.copy_from_slice(&t[i * h..(i + 1) * h]);
                matvec_add(wc, e, z);
                matvec_add(ws, sum, z);
                for v in z.iter_mut() {
                    *v = v.max(0.0);
                }
                add(sum, e);
                matvec_add(wo, z, sum);
            }
            out.copy_from_slice(sum);
        }
    }
}

impl Composer {
    /// Decodes many words: `codes` holds `n * D` codes, `out` gets `n * d` floats. Runs on all cores.
    pub fn decode_batch(&self, codes: &[u16], out: &mut [f32]) {
        let (dd, d) = (self.config.num_codebooks, self.config.out_dim);
        assert_eq!(
            codes.len() / dd * d,
            out.len(),
            "output size disagrees with codes"
        );
        const CHUNK: usize = 1024;
        out.par_chunks_mut(CHUNK * d)
            .zip(codes.par_chunks(CHUNK * dd))
            .for_each(|(o, c)| {
                let mut scratch = vec![0f32; self.scratch_len()];
                for (orow, crow) in o.chunks_exact_mut(d).zip(c.chunks_exact(dd)) {
                    self.decode_with(crow, orow, &mut scratch);
                }
            });
    }
}

/// The output columns that code vector `i` of `groups` fills in the `split` layout over `out_dim`
/// columns: `⌊i·d/D⌋..⌊(i+1)·d/D⌋`. Widths differ by at most one and the groups tile `0..d`.
pub fn split_columns(out_dim: usize, groups: usize, i: usize) -> Range<usize> {
    // In u64 so that d up to 2^32 times D up to 1024 cannot overflow on a 32-bit target.
    let at = |i: usize| (i as u64 * out_dim as u64 / groups as u64) as usize;
    at(i)..at(i + 1)
}

impl ComposerConfig {
    /// For the kinds that assemble the output from slices (`concat`, `split`): for each of the d
    /// output columns, its position in `e_0 ‖ e_1 ‖ … ‖ e_{D-1}` (`D·d'` values). `None` for
    /// the kinds that compute the output with a network. Tensor back ends gather with it.
    pub fn assembled_positions(&self) -> Option<Vec<usize>> {
        let (dd, e, d) = (self.num_codebooks, self.code_dim, self.out_dim);
        match self.kind {
            ComposerKind::Concat => Some((0..d).collect()),
            ComposerKind::Split => Some(
                (0..dd)
                    .flat_map(|i| {
                        let cols = split_columns(d, dd, i);
                        (0..cols.len()).map(move |j| i * e + j)
                    })
                    .collect(),
            ),
            ComposerKind::Linear
            | ComposerKind::Mlp
            | ComposerKind::Lstm
            | ComposerKind::Conditioned
            | ComposerKind::Sum => None,
        }
    }
}

/// `out = Σ_i table[i*k + codes[i]]` over rows of `out.len()` floats.
///
/// The output is summed in blocks held in registers across all D rows, rather than loaded and
/// stored once per row: the table rows are then the only memory traffic. Each output element is
/// still summed in code order, so the result is the same as row-by-row adding.
#[inline(always)]
fn gather_sum(table: &[f32], codes: &[u16], k: usize, out: &mut [f32]) {
    const BLOCK: usize = 16;
    let d = out.len();
    let row = |i: usize, code: u16| (i * k + code as usize) * d;
    let mut start = 0;
    while start + BLOCK <= d {
        let mut acc = [0f32; BLOCK];
        for (i, &code) in codes.iter().enumerate() {
            let r = row(i, code) + start;
            let src: &[f32; BLOCK] = table[r..r + BLOCK]
                .try_into()
                .expect("a slice of BLOCK floats");
            for j in 0..BLOCK {
                acc[j] += src[j];
            }
        }
        out[start..start + BLOCK].copy_from_slice(&acc);
        start += BLOCK;
    }
    if start < d {
        let rest = &mut out[start..];
        rest.fill(0.0);
        for (i, &code) in codes.iter().enumerate() {
            let r = row(i, code) + start;
            add(rest, &table[r..r + (d - start)]);
        }
    }
}

/// `u += Mᵀ z` for `m` of shape `[z.len(), u.len()]`, adding only the rows of units with
/// `z_j > 0`: after a relu about half are zero. `u` is summed in blocks held in registers over
/// all active rows, each element in increasing j, so the result does not depend on the blocking.
#[inline(always)]
fn add_active_rows(m: &[f32], z: &[f32], u: &mut [f32]) {
    add_rows_of::<false>(m, z, u);
}

/// `u += Mᵀ z` for `m` of shape `[z.len(), u.len()]`, every row (as [`add_active_rows`]).
#[inline(always)]
fn add_rows(m: &[f32], z: &[f32], u: &mut [f32]) {
    add_rows_of::<true>(m, z, u);
}

#[inline(always)]
fn add_rows_of<const ALL: bool>(m: &[f32], z: &[f32], u: &mut [f32]) {
    // Indices of active units, a chunk at a time so that they fit on the stack for any width.
    const CHUNK: usize = 256;
    let w = u.len();
    let mut active = [0u16; CHUNK];
    for (c, zc) in z.chunks(CHUNK).enumerate() {
        let mut n = 0;
        for (j, &zj) in zc.iter().enumerate() {
            // Branch-free: written every time, kept only when active.
            active[n] = j as u16;
            n += usize::from(ALL || zj > 0.0);
        }
        let rows = &m[c * CHUNK * w..];
        let mut start = 0;
        // Blocks of 32 sums are eight SSE registers: enough independent additions to keep the
        // adders busy, with registers left over for the rows.
        start = add_rows_blocked::<32>(rows, zc, &active[..n], u, start);
        start = add_rows_blocked::<16>(rows, zc, &active[..n], u, start);
        for &j in &active[..n] {
            let j = usize::from(j);
            add_scaled(&mut u[start..], zc[j], &rows[j * w + start..(j + 1) * w]);
        }
    }
}

/// [`add_active_rows`] for columns `start..` of `u` in whole blocks of `B`; returns where the
/// blocks end.
#[inline(always)]
fn add_rows_blocked<const B: usize>(
    rows: &[f32],
    z: &[f32],
    active: &[u16],
    u: &mut [f32],
    mut start: usize,
) -> usize {
    let w = u.len();
    while start + B <= w {
        let mut acc: [f32; B] = u[start..start + B].try_into().expect("a slice of B floats");
        for &j in active {
            let j = usize::from(j);
            let zj = z[j];
            let r = j * w + start;
            let row: &[f32; B] = rows[r..r + B].try_into().expect("a slice of B floats");
            for t in 0..B {
                acc[t] += zj * row[t];
            }
        }
        u[start..start + B].copy_from_slice(&acc);
        start += B;
    }
    start
}

/// `acc += a x`.
#[inline(always)]
fn add_scaled(acc: &mut [f32], a: f32, x: &[f32]) {
    for (v, y) in acc.iter_mut().zip(x) {
        *v += a * y;
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[inline(always)]
fn add(acc: &mut [f32], x: &[f32]) {
    for (a, b) in acc.iter_mut().zip(x) {
        *a += b;
    }
}

/// `out = W x` for row-major `W` of shape `[out.len(), x.len()]`.
fn matvec(w: &[f32], x: &[f32], out: &mut [f32]) {
    out.fill(0.0);
    matvec_add(w, x, out);
}

/// `out += W x`.
fn matvec_add(w: &[f32], x: &[f32], out: &mut [f32]) {
    for (o, row) in out.iter_mut().zip(w.chunks_exact(x.len())) {
        *o += dot(row, x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensors(list: &[(&str, Vec<usize>, Vec<f32>)]) -> BTreeMap<String, Tensor> {
        list.iter()
            .map(|(n, s, d)| (n.to_string(), Tensor::new(s.clone(), d.clone()).unwrap()))
            .collect()
    }

    fn cfg(kind: ComposerKind, hidden: usize, out_dim: usize) -> ComposerConfig {
        ComposerConfig {
            kind,
            num_codebooks: 2,
            num_codes: 2,
            code_dim: 2,
            hidden,
            out_dim,
        }
    }

    // codebooks[i][k] = [10i + k, -(10i + k)]
    fn codebooks() -> (&'static str, Vec<usize>, Vec<f32>) {
        (
            CODEBOOKS,
            vec![2, 2, 2],
            vec![0., -0., 1., -1., 10., -10., 11., -11.],
        )
    }

    #[test]
    fn linear_by_hand() {
        let t = tensors(&[
            codebooks(),
            (OUT_WEIGHT, vec![1, 2], vec![2.0, 1.0]),
            (OUT_BIAS, vec![1], vec![0.5]),
        ]);
        let c = Composer::new(cfg(ComposerKind::Linear, 0, 1), t).unwrap();
        let mut out = [0f32];
        // codes (1, 0): s = [1 + 10, -1 - 10] = [11, -11]; y = 22 - 11 + 0.5
        c.decode(&[1, 0], &mut out);
        assert_eq!(out, [11.5]);
    }

    #[test]
    fn sum_by_hand_and_only_with_code_vectors_as_wide_as_the_output() {
        let c = Composer::new(cfg(ComposerKind::Sum, 0, 2), tensors(&[codebooks()])).unwrap();
        let mut out = [0f32; 2];
        c.decode(&[1, 0], &mut out);
        assert_eq!(out, [11.0, -11.0]);
        assert_eq!(c.num_params(), 8);
        let err = Composer::new(cfg(ComposerKind::Sum, 0, 3), tensors(&[codebooks()]));
        assert!(
            matches!(&err, Err(ComposerError::Config { reason }) if reason.contains("d' must equal d = 3")),
            "{err:?}"
        );
    }

    /// A linear composer with the identity map and zero bias becomes `sum` and decodes every code
    /// row to the same bits; one value off the identity (or a bias) keeps it linear.
    #[test]
    fn simplified_turns_an_identity_linear_into_sum_with_the_same_decode() {
        let (dd, k, d) = (3, 5, 4);
        let books: Vec<f32> = (0..dd * k * d)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let mut eye = vec![0f32; d * d];
        for i in 0..d {
            eye[i * (d + 1)] = 1.0;
        }
        let linear = |w: Vec<f32>, b: Vec<f32>| {
            let config = ComposerConfig {
                kind: ComposerKind::Linear,
                num_codebooks: dd,
                num_codes: k,
                code_dim: d,
                hidden: 7,
                out_dim: d,
            };
            Composer::new(
                config,
                tensors(&[
                    (CODEBOOKS, vec![dd, k, d], books.clone()),
                    (OUT_WEIGHT, vec![d, d], w),
                    (OUT_BIAS, vec![d], b),
                ]),
            )
            .unwrap()
        };
        let before = linear(eye.clone(), vec![0.0; d]);
        let after = before.clone().simplified();
        assert_eq!(after.config().kind, ComposerKind::Sum);
        assert_eq!(after.config().hidden, 0);
        assert_eq!(
            after.tensors().keys().collect::<Vec<_>>(),
            vec![CODEBOOKS],
            "only the code vectors are kept"
        );
        let codes: Vec<u16> = (0..k.pow(dd as u32))
            .flat_map(|r| (0..dd).map(move |i| (r / k.pow(i as u32) % k) as u16))
            .collect();
        let n = codes.len() / dd;
        let (mut a, mut b) = (vec![0f32; n * d], vec![0f32; n * d]);
        before.decode_batch(&codes, &mut a);
        after.decode_batch(&codes, &mut b);
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));

        let mut off = eye.clone();
        off[1] = 1e-7;
        let biased = |b: f32| linear(eye.clone(), vec![0.0, b, 0.0, 0.0]);
        for kept in [linear(off, vec![0.0; d]), biased(-1e-7)] {
            assert_eq!(kept.simplified().config().kind, ComposerKind::Linear);
        }
    }

    #[test]
    fn mlp_adds_tanh_hidden_layer() {
        let t = tensors(&[
            codebooks(),
            (OUT_WEIGHT, vec![1, 2], vec![0.0, 0.0]),
            (OUT_BIAS, vec![1], vec![1.0]),
            (HIDDEN_WEIGHT, vec![1, 2], vec![0.01, 0.0]),
            (HIDDEN_BIAS, vec![1], vec![0.0]),
            (HIDDEN_OUT_WEIGHT, vec![1, 1], vec![2.0]),
        ]);
        let c = Composer::new(cfg(ComposerKind::Mlp, 1, 1), t).unwrap();
        let mut out = [0f32];
        c.decode(&[1, 1], &mut out); // s = [12, -12]
        assert!((out[0] - (1.0 + 2.0 * (0.12f32).tanh())).abs() < 1e-6);
    }

    #[test]
    fn lstm_one_unit_by_hand() {
        // h = 1; gates depend on the first component of e only.
        let t = tensors(&[
            codebooks(),
            (
                LSTM_WEIGHT_IH,
                vec![4, 2],
                vec![0.1, 0., 0.2, 0., 0.3, 0., 0.4, 0.],
            ),
            (LSTM_WEIGHT_HH, vec![4, 1], vec![0.5, 0.5, 0.5, 0.5]),
            (LSTM_BIAS_IH, vec![4], vec![0.0; 4]),
            (LSTM_BIAS_HH, vec![4], vec![0.0; 4]),
            (OUT_WEIGHT, vec![1, 1], vec![1.0]),
            (OUT_BIAS, vec![1], vec![0.0]),
        ]);
        let c = Composer::new(cfg(ComposerKind::Lstm, 1, 1), t).unwrap();
        let s = |x: f32| 1.0 / (1.0 + (-x).exp());
        let (mut h, mut cell, mut acc) = (0f32, 0f32, 0f32);
        for x in [1.0f32, 10.0] {
            let g = [
                0.1 * x + 0.5 * h,
                0.2 * x + 0.5 * h,
                0.3 * x + 0.5 * h,
                0.4 * x + 0.5 * h,
            ];
            cell = s(g[1]) * cell + s(g[0]) * g[2].tanh();
            h = s(g[3]) * cell.tanh();
            acc += h;
        }
        let mut out = [0f32];
        c.decode(&[1, 0], &mut out);
        assert!((out[0] - acc).abs() < 1e-6, "{} vs {acc}", out[0]);
    }

    #[test]
    fn concat_truncates_to_out_dim() {
        let t = tensors(&[codebooks()]);
        let c = Composer::new(cfg(ComposerKind::Concat, 0, 3), t).unwrap();
        let mut out = [0f32; 3];
        c.decode(&[1, 1], &mut out);
        assert_eq!(out, [1., -1., 11.]);
    }

    #[test]
    fn split_by_hand() {
        // d = 3 over D = 2: group 0 covers column 0, group 1 columns 1..3; d' = 2.
        let t = tensors(&[codebooks()]);
        let c = Composer::new(cfg(ComposerKind::Split, 0, 3), t).unwrap();
        let mut out = [0f32; 3];
        c.decode(&[1, 0], &mut out);
        assert_eq!(out, [1., 10., -10.]);
        assert_eq!(c.config().assembled_positions(), Some(vec![0, 2, 3]));
    }

    #[test]
    fn split_groups_are_balanced_and_tile_the_output() {
        for d in 1..=60 {
            for dd in 1..=d {
                let widths: Vec<usize> = (0..dd).map(|i| split_columns(d, dd, i).len()).collect();
                assert_eq!(widths.iter().sum::<usize>(), d, "d {d} D {dd}");
                let (lo, hi) = (widths.iter().min().unwrap(), widths.iter().max().unwrap());
                assert!(
                    *lo >= 1 && hi - lo <= 1 && *hi == d.div_ceil(dd),
                    "d {d} D {dd}"
                );
                for i in 1..dd {
                    assert_eq!(
                        split_columns(d, dd, i - 1).end,
                        split_columns(d, dd, i).start
                    );
                }
            }
        }
        // The case that motivated split: every one of D = 32 groups holds some of d = 50.
        assert_eq!(split_columns(50, 32, 31), 48..50);
    }

    #[test]
    fn split_needs_d_at_most_out_dim_and_the_ceiling_width() {
        let split = |dd: usize, e: usize, d: usize| {
            let config = ComposerConfig {
                kind: ComposerKind::Split,
                num_codebooks: dd,
                num_codes: 2,
                code_dim: e,
                hidden: 0,
                out_dim: d,
            };
            let t = tensors(&[(CODEBOOKS, vec![dd, 2, e], vec![0.0; dd * 2 * e])]);
            Composer::new(config, t)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        assert_eq!(split(32, 2, 50), Ok(()));
        let err = split(4, 1, 3).unwrap_err();
        assert!(err.contains("split needs D <= d"), "{err}");
        let err = split(32, 3, 50).unwrap_err();
        assert!(err.contains("needs d' = ceil(d / D) = 2, got 3"), "{err}");
        let err = split(32, 1, 50).unwrap_err();
        assert!(err.contains("got 1"), "{err}");
    }

    mod split_matches_reference {
        use super::*;
        use proptest::prelude::*;

        fn random_codebooks(dd: usize, k: usize, e: usize, seed: u32) -> Vec<f32> {
            (0..dd * k * e)
                .map(|j| ((j as u32).wrapping_mul(2_654_435_761) ^ seed) as f32 / 4e9 - 0.5)
                .collect()
        }

        proptest! {
            /// `split` is the obvious slice assembly, and `concat` whenever D divides d.
            #[test]
            fn split_is_slice_assembly(
                d in 1usize..=70,
                groups in 1usize..=70,
                k in 2usize..=5,
                seed in any::<u32>(),
                code_seed in any::<u64>(),
            ) {
                let dd = groups.min(d);
                let e = d.div_ceil(dd);
                let data = random_codebooks(dd, k, e, seed);
                let config = ComposerConfig {
                    kind: ComposerKind::Split,
                    num_codebooks: dd,
                    num_codes: k,
                    code_dim: e,
                    hidden: 0,
                    out_dim: d,
                };
                let t = tensors(&[(CODEBOOKS, vec![dd, k, e], data.clone())]);
                let c = Composer::new(config, t.clone()).unwrap();
                let codes: Vec<u16> = (0..dd)
                    .map(|i| ((code_seed >> (i % 60)) as usize + i) as u16 % k as u16)
                    .collect();
                let mut out = vec![f32::NAN; d];
                c.decode(&codes, &mut out);

                // The reference: group i gets the next floor((i+1)d/D) - floor(id/D) columns,
                // taken from the front of its chosen code vector.
                let mut want = Vec::new();
                for (i, &code) in codes.iter().enumerate() {
                    let width = (i + 1) * d / dd - i * d / dd;
                    let row = (i * k + code as usize) * e;
                    want.extend_from_slice(&data[row..row + width]);
                }
                prop_assert_eq!(&out, &want);

                let positions = config.assembled_positions().unwrap();
                let flat: Vec<f32> = codes
                    .iter()
                    .enumerate()
                    .flat_map(|(i, &code)| {
                        let row = (i * k + code as usize) * e;
                        data[row..row + e].to_vec()
                    })
                    .collect();
                let gathered: Vec<f32> = positions.iter().map(|&p| flat[p]).collect();
                prop_assert_eq!(&gathered, &want);

                if d % dd == 0 {
                    let concat = ComposerConfig { kind: ComposerKind::Concat, ..config };
                    let c = Composer::new(concat, t).unwrap();
                    let mut same = vec![f32::NAN; d];
                    c.decode(&codes, &mut same);
                    prop_assert_eq!(&same, &out);
                    prop_assert_eq!(concat.assembled_positions(), Some(positions));
                }
            }
        }
    }

    #[test]
    fn shape_errors_name_the_tensor() {
        let t = tensors(&[codebooks(), (OUT_WEIGHT, vec![2, 2], vec![0.0; 4])]);
        let err = Composer::new(cfg(ComposerKind::Linear, 0, 1), t).unwrap_err();
        assert!(err.to_string().contains("composer.out.weight"), "{err}");
        let t = tensors(&[codebooks()]);
        let err = Composer::new(cfg(ComposerKind::Linear, 0, 1), t).unwrap_err();
        assert_eq!(
            err,
            ComposerError::Missing {
                name: OUT_WEIGHT.into()
            }
        );
    }

    /// Wide outputs go through the blocked table sum; check it against `W s + b` done by hand.
    #[test]
    fn wide_linear_matches_direct_math() {
        let (dd, k, e, d) = (3, 4, 5, 37);
        let val = |i: usize| ((i * 7919) % 101) as f32 / 50.0 - 1.0;
        let t = tensors(&[
            (
                CODEBOOKS,
                vec![dd, k, e],
                (0..dd * k * e).map(val).collect(),
            ),
            (
                OUT_WEIGHT,
                vec![d, e],
                (0..d * e).map(|i| val(i + 3)).collect(),
            ),
            (OUT_BIAS, vec![d], (0..d).map(|i| val(i + 11)).collect()),
        ]);
        let config = ComposerConfig {
            kind: ComposerKind::Linear,
            num_codebooks: dd,
            num_codes: k,
            code_dim: e,
            hidden: 0,
            out_dim: d,
        };
        let c = Composer::new(config, t.clone()).unwrap();
        assert!(c.table.is_some());
        let codes = [3u16, 0, 2];
        let mut s = vec![0f32; e];
        for (i, &code) in codes.iter().enumerate() {
            let r = i * k + code as usize;
            for (x, v) in s.iter_mut().zip(&t[CODEBOOKS].data[r * e..(r + 1) * e]) {
                *x += v;
            }
        }
        let mut out = vec![0f32; d];
        c.decode(&codes, &mut out);
        for (r, (&got, w)) in out
            .iter()
            .zip(t[OUT_WEIGHT].data.chunks_exact(e))
            .enumerate()
        {
            let y = w.iter().zip(&s).map(|(a, b)| a * b).sum::<f32>() + t[OUT_BIAS].data[r];
            assert!((got - y).abs() < 1e-4, "output {r}: {got} vs {y}");
        }
    }

    #[test]
    fn batch_equals_single() {
        let t = tensors(&[
            codebooks(),
            (OUT_WEIGHT, vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]),
            (OUT_BIAS, vec![2], vec![0.5, -0.5]),
        ]);
        let c = Composer::new(cfg(ComposerKind::Linear, 0, 2), t).unwrap();
        let codes: Vec<u16> = (0..3000).map(|i| (i % 2) as u16).collect();
        let mut batch = vec![0f32; 3000];
        c.decode_batch(&codes, &mut batch);
        for r in 0..1500 {
            let mut one = [0f32; 2];
            c.decode(&codes[2 * r..2 * r + 2], &mut one);
            assert_eq!(&batch[2 * r..2 * r + 2], &one);
        }
    }

    /// A conditioned composer of D = 3, K = 4, d = 5, h = 3 with made-up weights, `W_o` scaled.
    fn conditioned(out_scale: f32) -> Composer {
        conditioned_of((3, 4, 5, 3), 1.0, out_scale)
    }

    /// A conditioned composer of sizes `(D, K, d, h)` with made-up weights: codebooks as made,
    /// `W_c`, `W_s` and `t` times `in_scale`, `W_o` times `out_scale`.
    fn conditioned_of(
        (dd, k, d, h): (usize, usize, usize, usize),
        in_scale: f32,
        out_scale: f32,
    ) -> Composer {
        let val = |i: usize, salt: usize| (((i + salt) * 7919) % 103) as f32 / 51.0 - 1.0;
        let make = |n: usize, salt: usize, scale: f32| -> Vec<f32> {
            (0..n).map(|i| val(i, salt) * scale).collect()
        };
        let t = tensors(&[
            (CODEBOOKS, vec![dd, k, d], make(dd * k * d, 1, 1.0)),
            (COND_CODE_WEIGHT, vec![h, d], make(h * d, 2, in_scale)),
            (COND_SUM_WEIGHT, vec![h, d], make(h * d, 3, in_scale)),
            (COND_STEP, vec![dd, h], make(dd * h, 4, in_scale)),
            (COND_OUT_WEIGHT, vec![d, h], make(d * h, 5, out_scale)),
        ]);
        let config = ComposerConfig {
            kind: ComposerKind::Conditioned,
            num_codebooks: dd,
            num_codes: k,
            code_dim: d,
            hidden: h,
            out_dim: d,
        };
        Composer::new(config, t).unwrap()
    }

    /// The definition, written out: x̂ += e + W_o relu(W_c e + W_s x̂ + t_i), one step at a time.
    fn conditioned_by_hand(c: &Composer, codes: &[u16]) -> Vec<f32> {
        let cfg = c.config();
        let (k, d, h) = (cfg.num_codes, cfg.out_dim, cfg.hidden);
        let t = |name: &str| c.tensors()[name].data.clone();
        let (cb, wc, ws, st, wo) = (
            t(CODEBOOKS),
            t(COND_CODE_WEIGHT),
            t(COND_SUM_WEIGHT),
            t(COND_STEP),
            t(COND_OUT_WEIGHT),
        );
        let mut x = vec![0f32; d];
        for (i, &code) in codes.iter().enumerate() {
            let e = &cb[(i * k + code as usize) * d..][..d];
            let z: Vec<f32> = (0..h)
                .map(|j| {
                    let pre: f32 = st[i * h + j]
                        + (0..d)
                            .map(|l| wc[j * d + l] * e[l] + ws[j * d + l] * x[l])
                            .sum::<f32>();
                    pre.max(0.0)
                })
                .collect();
            for l in 0..d {
                x[l] += e[l] + (0..h).map(|j| wo[l * h + j] * z[j]).sum::<f32>();
            }
        }
        x
    }

    #[test]
    fn conditioned_follows_its_definition_with_and_without_the_table() {
        let c = conditioned(0.7);
        assert!(
            c.table.is_some(),
            "small sizes build the hidden-space table"
        );
        let mut direct = c.clone();
        direct.table = None;
        for codes in [[0u16, 0, 0], [3, 1, 2], [2, 3, 1], [1, 2, 0]] {
            let want = conditioned_by_hand(&c, &codes);
            for (name, composer) in [("table", &c), ("direct", &direct)] {
                let mut out = vec![f32::NAN; 5];
                composer.decode(&codes, &mut out);
                for (got, w) in out.iter().zip(&want) {
                    assert!(
                        (got - w).abs() < 1e-4,
                        "{name} {codes:?}: {out:?} vs {want:?}"
                    );
                }
            }
        }
        // The network does something with these weights: not the additive sum.
        let mut out = vec![0f32; 5];
        c.decode(&[3, 1, 2], &mut out);
        let sum = additive_sum(&c, &[3, 1, 2]);
        assert!(out.iter().zip(&sum).any(|(a, b)| (a - b).abs() > 1e-2));
    }

    fn additive_sum(c: &Composer, codes: &[u16]) -> Vec<f32> {
        let (k, d) = (c.config().num_codes, c.config().out_dim);
        let cb = &c.tensors()[CODEBOOKS].data;
        let mut s = vec![0f32; d];
        for (i, &code) in codes.iter().enumerate() {
            add(&mut s, &cb[(i * k + code as usize) * d..][..d]);
        }
        s
    }

    #[test]
    fn conditioned_with_zero_output_weight_is_the_additive_sum_exactly() {
        let c = conditioned(0.0);
        let mut direct = c.clone();
        direct.table = None;
        for codes in [[0u16, 0, 0], [3, 1, 2], [2, 3, 1]] {
            let want = additive_sum(&c, &codes);
            for composer in [&c, &direct] {
                let mut out = vec![f32::NAN; 5];
                composer.decode(&codes, &mut out);
                assert_eq!(out, want);
            }
        }
    }

    #[test]
    fn add_active_rows_equals_the_dense_product() {
        // Widths that use every block size and the scalar tail; more units than one chunk.
        for (units, width) in [(5, 3), (40, 16), (64, 64), (70, 117), (300, 50), (513, 33)] {
            let m: Vec<f32> = (0..units * width)
                .map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0)
                .collect();
            // About half the units silenced, as after a relu.
            let z: Vec<f32> = (0..units)
                .map(|j| (((j * 31) % 17) as f32 / 8.0 - 1.0).max(0.0))
                .collect();
            let start: Vec<f32> = (0..width).map(|t| t as f32 * 0.5).collect();
            let mut u = start.clone();
            add_active_rows(&m, &z, &mut u);
            for (t, got) in u.iter().enumerate() {
                let want: f64 = f64::from(start[t])
                    + (0..units)
                        .map(|j| f64::from(z[j]) * f64::from(m[j * width + t]))
                        .sum::<f64>();
                assert!(
                    (f64::from(*got) - want).abs() < 1e-3,
                    "{units} x {width}, column {t}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn conditioned_table_equals_the_definition_at_every_hidden_width() {
        // Up to 3·d = 18 in the hidden space, beyond in d dimensions.
        for h in [1, 16, 18, 19, 37, 64, 70, 300] {
            let (dd, k, d) = (4, 3, 6);
            let c = conditioned_of((dd, k, d, h), 0.5, 1.0 / (h as f32).sqrt());
            assert!(c.table.is_some());
            for codes in [[0u16, 0, 0, 0], [2, 1, 0, 2], [1, 2, 2, 1]] {
                let want = conditioned_by_hand(&c, &codes);
                let mut out = vec![f32::NAN; d];
                c.decode(&codes, &mut out);
                for (got, w) in out.iter().zip(&want) {
                    assert!(
                        (got - w).abs() < 1e-4 * (1.0 + w.abs()),
                        "h {h} {codes:?}: {out:?} vs {want:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn conditioned_needs_code_width_equal_to_output_and_a_hidden_layer() {
        let c = conditioned(1.0);
        let t = c.tensors().clone();
        let wide = ComposerConfig {
            code_dim: 6,
            ..*c.config()
        };
        let err = Composer::new(wide, t.clone()).unwrap_err().to_string();
        assert!(err.contains("d' must equal d"), "{err}");
        let no_hidden = ComposerConfig {
            hidden: 0,
            ..*c.config()
        };
        let err = Composer::new(no_hidden, t).unwrap_err().to_string();
        assert!(err.contains("hidden width"), "{err}");
    }
}
