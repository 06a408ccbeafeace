//! The networks, built on `&nn::Path` under the tensor names of [`crate::composer`]: the composer
//! f (code vectors to word vector) and the encoder g (word vector to code logits).
//!
//! [`ComposerNet`] computes exactly what [`crate::composer::Composer`] computes; the trainer
//! exports its variables into that pure-Rust decoder, and a test holds the two to 1e-5.

use std::collections::BTreeMap;

use tch::nn::{self, Init};
use tch::{Kind, Tensor};

use super::rng::Rng;
use crate::composer::{self, ComposerConfig, ComposerKind};

/// The composer's variables.
#[derive(Debug)]
pub struct ComposerNet {
    config: ComposerConfig,
    /// `[D, K, d']`.
    pub codebooks: Tensor,
    /// The output map of linear, mlp and lstm; concat and split place the code vectors straight
    /// into the output and conditioned adds them, so they have none.
    pub out: Option<OutMap>,
    hidden: Option<Hidden>,
    lstm: Option<Lstm>,
    /// The conditioned composer's shared step network.
    pub cond: Option<Conditioning>,
    /// concat and split: `[d]`, where each output column sits among the `D·d'` chosen values.
    positions: Option<Tensor>,
}

/// The composer's output map `y = W v + b`.
#[derive(Debug)]
pub struct OutMap {
    /// `[d, d']` (linear, mlp) or `[d, h]` (lstm).
    pub weight: Tensor,
    /// `[d]`.
    pub bias: Tensor,
}

#[derive(Debug)]
struct Hidden {
    weight: Tensor,
    bias: Tensor,
    out_weight: Tensor,
}

/// The conditioned composer's network (see [`crate::composer`]): step i adds
/// `e_i + W_o relu(W_c e_i + W_s x̂ + t_i)` to the reconstruction `x̂`.
#[derive(Debug)]
pub struct Conditioning {
    /// `W_c` `[h, d]`.
    pub code_weight: Tensor,
    /// `W_s` `[h, d]`.
    pub sum_weight: Tensor,
    /// `t` `[D, h]`.
    pub step: Tensor,
    /// `W_o` `[d, h]`, zero at the start so that training starts at the additive decode.
    pub out_weight: Tensor,
}

impl Conditioning {
    fn shallow_clone(&self) -> Self {
        Conditioning {
            code_weight: self.code_weight.shallow_clone(),
            sum_weight: self.sum_weight.shallow_clone(),
            step: self.step.shallow_clone(),
            out_weight: self.out_weight.shallow_clone(),
        }
    }

    /// The hidden pre-activation of step `i` contributed by code vectors `e` `[.., d]`:
    /// `W_c e + t_i`.
    pub fn code_part(&self, e: &Tensor, i: i64) -> Tensor {
        e.matmul(&self.code_weight.tr()) + self.step.get(i)
    }

    /// What step `i` adds to the reconstruction `sum` (`[.., d]`) given `code_part` (from
    /// [`Conditioning::code_part`]) and the code vectors `e`: `e + W_o relu(code_part + W_s sum)`.
    pub fn step_delta(&self, code_part: &Tensor, sum: &Tensor, e: &Tensor) -> Tensor {
        let z = (code_part + sum.matmul(&self.sum_weight.tr())).relu();
        e + z.matmul(&self.out_weight.tr())
    }
}

#[derive(Debug)]
struct Lstm {
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor,
    bias_hh: Tensor,
}

/// A linear layer `fan_in -> out` whose weight and bias are uniform in ±1/sqrt(fan-in), drawn
/// from `rng` (tch's own initialisers would draw from LibTorch's process-global generator).
pub(crate) fn seeded_linear(p: &nn::Path, fan_in: usize, out: usize, rng: &mut Rng) -> nn::Linear {
    let zero = nn::LinearConfig {
        ws_init: Init::Const(0.0),
        bs_init: Some(Init::Const(0.0)),
        bias: true,
    };
    let l = nn::linear(p, fan_in as i64, out as i64, zero);
    rng.fill_uniform(&l.ws, bound(fan_in));
    if let Some(b) = &l.bs {
        rng.fill_uniform(b, bound(fan_in));
    }
    l
}

/// concat and split: where each output column sits among the `D·d'` chosen values.
fn positions(config: &ComposerConfig, device: tch::Device) -> Option<Tensor> {
    config.assembled_positions().map(|p| {
        let p: Vec<i64> = p.into_iter().map(|x| x as i64).collect();
        Tensor::from_slice(&p).to_device(device)
    })
}

/// PyTorch's default bound for a layer's weights and biases: 1/sqrt(fan-in).
fn bound(fan_in: usize) -> f64 {
    1.0 / (fan_in.max(1) as f64).sqrt()
}

impl ComposerNet {
    /// Creates the variables under `p` with a fresh random initialisation from `rng`: code
    /// vectors normal, layers uniform in ±1/sqrt(fan-in) as PyTorch does, and the mlp's hidden
    /// output at zero so that it starts as the linear composer.
    pub fn new(p: &nn::Path, config: ComposerConfig, rng: &mut Rng) -> Self {
        let ComposerConfig {
            kind,
            num_codebooks,
            num_codes: k,
            code_dim: e,
            hidden: h,
            out_dim: d,
        } = config;
        let i = |v: usize| v as i64;
        // Sums of D code vectors of this spread have unit variance per component.
        let spread = 1.0 / (num_codebooks as f64).sqrt();
        let zero = Init::Const(0.0);
        let codebooks = p.var(composer::CODEBOOKS, &[i(num_codebooks), i(k), i(e)], zero);
        rng.fill_normal(&codebooks, spread);
        let c = p / "composer";
        let out = kind.has_out_map().then(|| {
            let out_in = if kind == ComposerKind::Lstm { h } else { e };
            let out = &c / "out";
            let weight = out.var("weight", &[i(d), i(out_in)], zero);
            rng.fill_uniform(&weight, bound(out_in));
            OutMap {
                weight,
                bias: out.zeros("bias", &[i(d)]),
            }
        });
        let hidden = (kind == ComposerKind::Mlp).then(|| {
            let weight = (&c / "hidden").var("weight", &[i(h), i(e)], zero);
            rng.fill_uniform(&weight, bound(e));
            Hidden {
                weight,
                bias: (&c / "hidden").zeros("bias", &[i(h)]),
                out_weight: (&c / "hidden_out").zeros("weight", &[i(d), i(h)]),
            }
        });
        let lstm = (kind == ComposerKind::Lstm).then(|| {
            let l = &c / "lstm";
            let mut var = |name: &str, dims: &[i64]| {
                let t = l.var(name, dims, zero);
                rng.fill_uniform(&t, bound(h));
                t
            };
            Lstm {
                weight_ih: var("weight_ih", &[i(4 * h), i(e)]),
                weight_hh: var("weight_hh", &[i(4 * h), i(h)]),
                bias_ih: var("bias_ih", &[i(4 * h)]),
                bias_hh: var("bias_hh", &[i(4 * h)]),
            }
        });
        let cond = (kind == ComposerKind::Conditioned).then(|| {
            let cp = &c / "cond";
            let mut var = |path: &nn::Path, name: &str, dims: &[i64], fan_in: usize| {
                let t = path.var(name, dims, zero);
                rng.fill_uniform(&t, bound(fan_in));
                t
            };
            Conditioning {
                code_weight: var(&(&cp / "code"), "weight", &[i(h), i(e)], e),
                sum_weight: var(&(&cp / "sum"), "weight", &[i(h), i(d)], d),
                step: var(&cp, "step", &[i(num_codebooks), i(h)], e),
                out_weight: (&cp / "out").zeros("weight", &[i(d), i(h)]),
            }
        });
        ComposerNet {
            config,
            codebooks,
            out,
            hidden,
            lstm,
            cond,
            positions: positions(&config, p.device()),
        }
    }

    /// Creates the variables under `p` as copies of `composer`'s tensors, under the same names
    /// (`composer.out.weight` becomes `p / "composer" / "out"`'s `weight`).
    pub fn from_composer(p: &nn::Path, composer: &composer::Composer) -> Self {
        let config = *composer.config();
        let var = |name: &str| {
            let t = &composer.tensors()[name];
            let shape: Vec<i64> = t.shape.iter().map(|&s| s as i64).collect();
            let init = Tensor::from_slice(&t.data).reshape(&shape);
            let (dirs, leaf) = name.rsplit_once('.').unwrap_or(("", name));
            let path = dirs
                .split('.')
                .filter(|s| !s.is_empty())
                .fold(p.clone(), |path, s| path.sub(s));
            path.var_copy(leaf, &init)
        };
        let kind = config.kind;
        ComposerNet {
            config,
            codebooks: var(composer::CODEBOOKS),
            out: kind.has_out_map().then(|| OutMap {
                weight: var(composer::OUT_WEIGHT),
                bias: var(composer::OUT_BIAS),
            }),
            hidden: (kind == ComposerKind::Mlp).then(|| Hidden {
                weight: var(composer::HIDDEN_WEIGHT),
                bias: var(composer::HIDDEN_BIAS),
                out_weight: var(composer::HIDDEN_OUT_WEIGHT),
            }),
            lstm: (kind == ComposerKind::Lstm).then(|| Lstm {
                weight_ih: var(composer::LSTM_WEIGHT_IH),
                weight_hh: var(composer::LSTM_WEIGHT_HH),
                bias_ih: var(composer::LSTM_BIAS_IH),
                bias_hh: var(composer::LSTM_BIAS_HH),
            }),
            cond: (kind == ComposerKind::Conditioned).then(|| Conditioning {
                code_weight: var(composer::COND_CODE_WEIGHT),
                sum_weight: var(composer::COND_SUM_WEIGHT),
                step: var(composer::COND_STEP),
                out_weight: var(composer::COND_OUT_WEIGHT),
            }),
            positions: positions(&config, p.device()),
        }
    }

    /// Another handle on the same variables, for a worker thread (tensors are `Send`, not
    /// `Sync`, so each thread needs its own handles).
    pub fn shallow_clone(&self) -> Self {
        ComposerNet {
            config: self.config,
            codebooks: self.codebooks.shallow_clone(),
            out: self.out.as_ref().map(|o| OutMap {
                weight: o.weight.shallow_clone(),
                bias: o.bias.shallow_clone(),
            }),
            hidden: self.hidden.as_ref().map(|h| Hidden {
                weight: h.weight.shallow_clone(),
                bias: h.bias.shallow_clone(),
                out_weight: h.out_weight.shallow_clone(),
            }),
            lstm: self.lstm.as_ref().map(|l| Lstm {
                weight_ih: l.weight_ih.shallow_clone(),
                weight_hh: l.weight_hh.shallow_clone(),
                bias_ih: l.bias_ih.shallow_clone(),
                bias_hh: l.bias_hh.shallow_clone(),
            }),
            cond: self.cond.as_ref().map(Conditioning::shallow_clone),
            positions: self.positions.as_ref().map(Tensor::shallow_clone),
        }
    }

    /// The sizes.
    pub fn config(&self) -> &ComposerConfig {
        &self.config
    }

    fn offsets(&self) -> Tensor {
        let (dd, k) = (self.config.num_codebooks, self.config.num_codes);
        Tensor::arange_start_step(
            0,
            (dd * k) as i64,
            k as i64,
            (Kind::Int64, self.codebooks.device()),
        )
    }

    /// Code vectors of integer codes `[B, D]` (any integer kind): `[B, D, d']`.
    pub fn code_vectors(&self, codes: &Tensor) -> Tensor {
        let e = self.config.code_dim as i64;
        let flat = self.codebooks.view([-1, e]);
        let idx = codes.to_kind(Kind::Int64) + self.offsets();
        Tensor::embedding(&flat, &idx, -1, false, false)
    }

    /// Code vectors of (relaxed or one-hot) code distributions `[B, D, K]`: `[B, D, d']`.
    pub fn code_vectors_soft(&self, codes: &Tensor) -> Tensor {
        codes.transpose(0, 1).bmm(&self.codebooks).transpose(0, 1)
    }

    /// The word vectors `[B, d]` for code vectors `[B, D, d']`.
    pub fn compose(&self, vectors: &Tensor) -> Tensor {
        if let Some(positions) = &self.positions {
            // A gather rather than a narrow so that split's padding values never reach the
            // output (and get no gradient, so they stay zero through fine-tuning).
            let (dd, e) = (self.config.num_codebooks, self.config.code_dim);
            return vectors
                .reshape([-1, (dd * e) as i64])
                .index_select(1, positions);
        }
        if let Some(cond) = &self.cond {
            let mut sum = vectors.select(1, 0).zeros_like();
            for i in 0..self.config.num_codebooks as i64 {
                let e = vectors.select(1, i);
                let delta = cond.step_delta(&cond.code_part(&e, i), &sum, &e);
                // Out of place: autograd holds the previous sum.
                #[allow(clippy::assign_op_pattern)]
                {
                    sum = sum + delta;
                }
            }
            return sum;
        }
        match &self.lstm {
            Some(l) => {
                let h = self.config.hidden as i64;
                let b = vectors.size()[0];
                let input = vectors.linear(&l.weight_ih, Some(&l.bias_ih));
                let opts = (vectors.kind(), vectors.device());
                let mut state = Tensor::zeros([b, h], opts);
                let mut cell = Tensor::zeros([b, h], opts);
                let mut acc = Tensor::zeros([b, h], opts);
                for t in 0..self.config.num_codebooks as i64 {
                    let gates = input.select(1, t) + state.linear(&l.weight_hh, Some(&l.bias_hh));
                    let g = gates.chunk(4, 1);
                    cell = g[1].sigmoid() * &cell + g[0].sigmoid() * g[2].tanh();
                    state = g[3].sigmoid() * cell.tanh();
                    // Out of place: autograd may hold the previous sum.
                    #[allow(clippy::assign_op_pattern)]
                    {
                        acc = acc + &state;
                    }
                }
                let out = self.out.as_ref().expect("the lstm has an output map");
                acc.linear(&out.weight, Some(&out.bias))
            }
            None => {
                let s = vectors.sum_dim_intlist(1, false, None::<Kind>);
                self.compose_sum(&s)
            }
        }
    }

    /// Linear, mlp and sum: the word vectors `[B, d]` for summed code vectors `s` `[B, d']`.
    pub fn compose_sum(&self, s: &Tensor) -> Tensor {
        let Some(out) = self.out.as_ref() else {
            // Only `sum` reaches here without an output map: the sum is the vector.
            return s.shallow_clone();
        };
        let y = s.linear(&out.weight, Some(&out.bias));
        match &self.hidden {
            Some(hd) => {
                y + s
                    .linear(&hd.weight, Some(&hd.bias))
                    .tanh()
                    .linear::<Tensor>(&hd.out_weight, None)
            }
            None => y,
        }
    }

    /// Everything but the additive part `W_out s`: `b_out` plus the mlp's hidden term, `[B, d]`
    /// (zero for sum). `None` for the lstm, which has no additive part, and for concat and split.
    pub fn offset_of_sum(&self, s: &Tensor) -> Option<Tensor> {
        if self.lstm.is_some() || self.cond.is_some() || self.positions.is_some() {
            return None;
        }
        if self.config.kind == ComposerKind::Sum {
            return Some(s.zeros_like());
        }
        let b = self
            .out
            .as_ref()?
            .bias
            .unsqueeze(0)
            .expand([s.size()[0], -1], false);
        Some(match &self.hidden {
            Some(hd) => {
                b + s
                    .linear(&hd.weight, Some(&hd.bias))
                    .tanh()
                    .linear::<Tensor>(&hd.out_weight, None)
            }
            None => b.copy(),
        })
    }

    /// Linear and mlp: each code vector mapped by `W_out`, `[D, K, d]` (sum: the code vectors);
    /// a word's additive part is the sum of its D rows.
    pub fn mapped_tables(&self) -> Option<Tensor> {
        if self.lstm.is_some() || self.cond.is_some() || self.positions.is_some() {
            return None;
        }
        if self.config.kind == ComposerKind::Sum {
            return Some(self.codebooks.copy());
        }
        Some(self.codebooks.matmul(&self.out.as_ref()?.weight.tr()))
    }

    /// Word vectors `[B, d]` of integer codes `[B, D]`.
    pub fn decode(&self, codes: &Tensor) -> Tensor {
        self.compose(&self.code_vectors(codes))
    }

    /// Floats of scratch per row of [`ComposerNet::decode`], to size chunks: the code vectors
    /// and their sum, the hidden layer's temporaries, the output and its difference to the
    /// original.
    pub fn memory_per_row(&self) -> i64 {
        let c = &self.config;
        (c.num_codebooks * c.code_dim * 2 + c.hidden * 6 + c.out_dim * 2) as i64
    }

    /// Every variable under its contract name, for [`crate::composer::Composer::new`].
    pub fn named(&self) -> Vec<(&'static str, &Tensor)> {
        let mut v = vec![(composer::CODEBOOKS, &self.codebooks)];
        if let Some(o) = &self.out {
            v.push((composer::OUT_WEIGHT, &o.weight));
            v.push((composer::OUT_BIAS, &o.bias));
        }
        if let Some(h) = &self.hidden {
            v.push((composer::HIDDEN_WEIGHT, &h.weight));
            v.push((composer::HIDDEN_BIAS, &h.bias));
            v.push((composer::HIDDEN_OUT_WEIGHT, &h.out_weight));
        }
        if let Some(l) = &self.lstm {
            v.push((composer::LSTM_WEIGHT_IH, &l.weight_ih));
            v.push((composer::LSTM_WEIGHT_HH, &l.weight_hh));
            v.push((composer::LSTM_BIAS_IH, &l.bias_ih));
            v.push((composer::LSTM_BIAS_HH, &l.bias_hh));
        }
        if let Some(c) = &self.cond {
            v.push((composer::COND_CODE_WEIGHT, &c.code_weight));
            v.push((composer::COND_SUM_WEIGHT, &c.sum_weight));
            v.push((composer::COND_STEP, &c.step));
            v.push((composer::COND_OUT_WEIGHT, &c.out_weight));
        }
        v
    }

    /// Copies the variables out into the pure-Rust decoder.
    pub fn export(&self) -> Result<composer::Composer, ExportError> {
        let mut tensors = BTreeMap::new();
        for (name, t) in self.named() {
            let t = t
                .detach()
                .to_device(tch::Device::Cpu)
                .to_kind(Kind::Float)
                .contiguous();
            let shape: Vec<usize> = t.size().iter().map(|&s| s as usize).collect();
            let data = Vec::<f32>::try_from(t.view(-1)).map_err(|source| ExportError::Torch {
                name: name.to_string(),
                source,
            })?;
            let tensor = composer::Tensor::new(shape, data).ok_or_else(|| ExportError::Torch {
                name: name.to_string(),
                source: tch::TchError::Shape("tensor data disagrees with its shape".into()),
            })?;
            tensors.insert(name.to_string(), tensor);
        }
        Ok(composer::Composer::new(self.config, tensors)?)
    }
}

/// The trained weights could not become a [`composer::Composer`].
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// LibTorch failed to hand over a tensor.
    #[error("cannot copy composer tensor {name} out of LibTorch")]
    Torch {
        /// The tensor.
        name: String,
        /// Why.
        #[source]
        source: tch::TchError,
    },
    /// The shapes do not fit the configuration (a bug, reported rather than panicking).
    #[error(transparent)]
    Composer(#[from] composer::ComposerError),
}

/// The encoder g: a tanh hidden layer, then D groups of K logits.
#[derive(Debug)]
pub struct Encoder {
    hidden: nn::Linear,
    logits: nn::Linear,
    num_codebooks: i64,
    num_codes: i64,
}

impl Encoder {
    /// Creates `encoder.hidden` and `encoder.logits` under `p`, uniform in ±1/sqrt(fan-in)
    /// from `rng`.
    pub fn new(
        p: &nn::Path,
        in_dim: usize,
        hidden: usize,
        num_codebooks: usize,
        num_codes: usize,
        rng: &mut Rng,
    ) -> Self {
        let e = p / "encoder";
        let mut layer =
            |name: &str, fan_in: usize, out: usize| seeded_linear(&(&e / name), fan_in, out, rng);
        Encoder {
            hidden: layer("hidden", in_dim, hidden),
            logits: layer("logits", hidden, num_codebooks * num_codes),
            num_codebooks: num_codebooks as i64,
            num_codes: num_codes as i64,
        }
    }

    /// Another handle on the same variables, for a worker thread.
    pub fn shallow_clone(&self) -> Self {
        let copy = |l: &nn::Linear| nn::Linear {
            ws: l.ws.shallow_clone(),
            bs: l.bs.as_ref().map(Tensor::shallow_clone),
        };
        Encoder {
            hidden: copy(&self.hidden),
            logits: copy(&self.logits),
            num_codebooks: self.num_codebooks,
            num_codes: self.num_codes,
        }
    }

    /// Floats of scratch per row of [`Encoder::logits`] and their argmax, to size chunks.
    pub fn memory_per_row(&self) -> i64 {
        self.num_codebooks * self.num_codes * 2 + self.hidden.ws.size()[0]
    }

    /// Logits `[B, D, K]` of word vectors `[B, d]`.
    pub fn logits(&self, x: &Tensor) -> Tensor {
        use tch::nn::Module;
        self.logits.forward(&self.hidden.forward(x).tanh()).view([
            -1,
            self.num_codebooks,
            self.num_codes,
        ])
    }
}

/// Tempered codes with a straight-through gradient.
#[derive(Debug)]
pub struct Relaxed {
    /// Exactly one-hot in the forward pass; in the backward pass, the gradient of `soft`.
    pub straight_through: Tensor,
    /// `softmax(logits / tau)`, `[B, D, K]`.
    pub soft: Tensor,
    /// The argmax codes, `[B, D]`.
    pub codes: Tensor,
}

/// The tempering softmax with the straight-through estimator (Chen, Min & Sun 2018, section 3).
///
/// `hard + (soft - soft.detach())` is `hard` exactly, because `soft - soft` is exactly zero in
/// floating point, while its gradient is that of `soft`.
pub fn straight_through(logits: &Tensor, tau: f64) -> Relaxed {
    let k = logits.size().last().copied().unwrap_or(1);
    let soft = (logits / tau).softmax(-1, Kind::Float);
    let codes = logits.argmax(-1, false);
    let hard = codes.one_hot(k).to_kind(Kind::Float);
    let straight_through = hard + (&soft - soft.detach());
    Relaxed {
        straight_through,
        soft,
        codes,
    }
}

/// Mean entropy (nats) of relaxed code distributions `[B, D, K]`.
pub fn mean_entropy(soft: &Tensor) -> Tensor {
    -(soft * soft.clamp_min(1e-12).log())
        .sum_dim_intlist(-1, false, None::<Kind>)
        .mean(None::<Kind>)
}

/// Mean over words of the squared L2 error.
pub fn reconstruction_loss(y: &Tensor, x: &Tensor) -> Tensor {
    (y - x)
        .square()
        .sum_dim_intlist(1, false, None::<Kind>)
        .mean(None::<Kind>)
}
