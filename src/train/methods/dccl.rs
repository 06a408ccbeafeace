//! DCCL (Shu & Nakayama, ICLR 2018): an encoder `h = tanh(W x + b)`, per-codebook weights
//! `α = softplus(W' h + b')`, codes sampled by Gumbel-softmax over `log α` while training and
//! taken as `argmax α` afterwards; the decoder is the plain sum of the chosen code vectors.
//!
//! The decoder is exported as the `sum` composer (d' = d), so that reading a DCCL file needs
//! nothing beyond the shared composer.

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use super::{Codec, held_out_mse, to_host};
use crate::composer::{self, Composer, ComposerConfig, ComposerKind};
use crate::train::learner::{Batch, Learner};
use crate::train::model::seeded_linear;
use crate::train::reporter::Reporter;
use crate::train::training_set::TrainingSet;
use crate::train::{Rng, TrainError, Trained};

/// Keeps `log α` finite where softplus underflows to zero.
const MIN_ALPHA: f64 = 1e-12;

/// The encoder and codebooks of DCCL.
#[derive(Debug)]
pub struct Dccl {
    hidden: nn::Linear,
    logits: nn::Linear,
    /// `[M, K, d]`.
    pub codebooks: Tensor,
    m: i64,
    k: i64,
    d: i64,
}

impl Dccl {
    /// Creates `encoder.hidden`, `encoder.logits` and `codebooks` under `p`; code vectors start
    /// with spread `scale / sqrt(M)` so that a sum of M of them spreads like the data.
    /// Every initial value is drawn from `rng`.
    pub fn new(
        p: &nn::Path,
        d: usize,
        hidden: usize,
        m: usize,
        k: usize,
        scale: f64,
        rng: &mut Rng,
    ) -> Self {
        let e = p / "encoder";
        let hidden_layer = seeded_linear(&(&e / "hidden"), d, hidden, rng);
        let logits = seeded_linear(&(&e / "logits"), hidden, m * k, rng);
        let (d, m, k) = (d as i64, m as i64, k as i64);
        let codebooks = p.var(composer::CODEBOOKS, &[m, k, d], nn::Init::Const(0.0));
        rng.fill_normal(&codebooks, scale / (m as f64).sqrt());
        Dccl {
            hidden: hidden_layer,
            logits,
            codebooks,
            m,
            k,
            d,
        }
    }

    /// `log α`, `[B, M, K]`.
    pub fn log_alpha(&self, x: &Tensor) -> Tensor {
        let h = self.hidden.forward(x).tanh();
        self.logits
            .forward(&h)
            .softplus()
            .clamp_min(MIN_ALPHA)
            .log()
            .view([-1, self.m, self.k])
    }

    /// A Gumbel-softmax sample `softmax((log α + G) / τ)`, `[B, M, K]`: training only.
    pub fn sample(&self, x: &Tensor, tau: f64, rng: &mut Rng) -> Tensor {
        let la = self.log_alpha(x);
        // G = -log(-log U); U kept off 0 and 1 so that neither log meets zero.
        let u = rng.uniform_like(&la, 1e-10, 1.0 - 1e-7);
        let g = -(-u.log()).log();
        ((la + g) / tau).softmax(-1, Kind::Float)
    }

    /// Sum of code vectors weighted by (relaxed) codes `[B, M, K]`: `[B, d]`.
    pub fn decode_soft(&self, codes: &Tensor) -> Tensor {
        codes
            .view([-1, self.m * self.k])
            .matmul(&self.codebooks.view([self.m * self.k, self.d]))
    }
}

impl Learner for Dccl {
    fn loss(&self, batch: &Batch, tau: f64, rng: &mut Rng) -> Tensor {
        let x = batch.x;
        let y = self.decode_soft(&self.sample(x, tau, rng));
        // The paper's ½‖ŷ − x‖², averaged over the batch.
        (y - x)
            .square()
            .sum_dim_intlist(1, false, None::<Kind>)
            .mean(None::<Kind>)
            * 0.5
    }

    fn val_mse(&self, set: &TrainingSet) -> f64 {
        held_out_mse(self, set)
    }
}

impl Codec for Dccl {
    fn codes(&self, x: &Tensor) -> Tensor {
        self.log_alpha(x).argmax(-1, false)
    }

    fn decode(&self, codes: &Tensor) -> Tensor {
        let offsets = Tensor::arange_start_step(
            0,
            self.m * self.k,
            self.k,
            (Kind::Int64, self.codebooks.device()),
        );
        let idx = codes.to_kind(Kind::Int64) + offsets;
        let flat = self.codebooks.view([self.m * self.k, self.d]);
        Tensor::embedding(&flat, &idx, -1, false, false).sum_dim_intlist(1, false, None::<Kind>)
    }

    fn export(&self) -> Result<Composer, TrainError> {
        let (m, k, d) = (self.m as usize, self.k as usize, self.d as usize);
        let config = ComposerConfig {
            kind: ComposerKind::Sum,
            num_codebooks: m,
            num_codes: k,
            code_dim: d,
            hidden: 0,
            out_dim: d,
        };
        let tensors = [(
            composer::CODEBOOKS.to_string(),
            to_host(composer::CODEBOOKS, &self.codebooks)?,
        )]
        .into_iter()
        .collect();
        Ok(Composer::new(config, tensors).map_err(crate::train::model::ExportError::from)?)
    }
}

/// Root-mean-square of the data's components: the spread the decoded sums should have.
fn data_scale(x: &Tensor) -> f64 {
    let s = tch::no_grad(|| x.square().mean(Kind::Double).sqrt().double_value(&[]));
    if s.is_finite() && s > 0.0 { s } else { 1.0 }
}

/// Trains DCCL with M = `num_codebooks`, K = `num_codes`, hidden width `hidden`.
pub(crate) fn train(set: &TrainingSet, mut out: Reporter) -> Result<Trained, TrainError> {
    let cfg = set.cfg;
    let vs = nn::VarStore::new(set.device);
    let net = Dccl::new(
        &vs.root(),
        set.d as usize,
        cfg.hidden,
        cfg.num_codebooks,
        cfg.num_codes,
        data_scale(&set.x),
        &mut out.rng,
    );
    super::train(set, out, &vs, &net, "dccl")
}

#[cfg(test)]
mod tests {
    use tch::Device;

    use super::super::testing::{export_gap, glove};
    use super::*;
    use crate::progress::Silent;
    use crate::train::TrainConfig;

    fn config(m: usize, k: usize) -> TrainConfig {
        TrainConfig {
            method: crate::train::Method::Dccl,
            num_codebooks: m,
            num_codes: k,
            hidden: m * k / 2,
            learning_rate: 3e-3,
            batch_size: 128,
            epochs: 30,
            patience: 5,
            val_fraction: 0.1,
            device: crate::train::DeviceChoice::Cpu,
            seed: 7,
            ..TrainConfig::default()
        }
    }

    #[test]
    fn dccl_learns_codes_on_glove() {
        let emb = glove(2000);
        let trained = crate::train::train(&emb, &config(16, 16), &mut Silent).unwrap();
        let r = &trained.report;
        eprintln!("dccl 16x16: mse {} cos {}", r.mse, r.mean_cosine);
        assert!(r.mse < THRESHOLD_MSE, "mse {}", r.mse);
        assert_eq!(trained.codes.d(), 16);
        assert_eq!(trained.composer.config().kind, ComposerKind::Sum);
    }

    /// Measured 6.40 (mean cosine 0.905) on this slice with seed 7; an encoder that does not
    /// learn leaves most words on few code rows and stays far above.
    const THRESHOLD_MSE: f64 = 8.0;

    #[test]
    fn gumbel_noise_only_in_training() {
        let mut rng = Rng::new(3);
        let emb = glove(300);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = Dccl::new(&vs.root(), emb.dim(), 32, 8, 8, 0.4, &mut rng);
        let x = Tensor::from_slice(emb.matrix()).view([300, 50]);
        let a = net.codes(&x);
        let b = net.codes(&x);
        assert!(a.equal(&b));
        assert!(a.equal(&net.log_alpha(&x).argmax(-1, false)));
        let s1 = net.sample(&x, 1.0, &mut rng).argmax(-1, false);
        let s2 = net.sample(&x, 1.0, &mut rng).argmax(-1, false);
        assert!(!s1.equal(&s2), "two training samples drew the same codes");
        assert!(!s1.equal(&a), "training samples carry no noise");
    }

    #[test]
    fn exported_decoder_matches_tch() {
        let mut rng = Rng::new(5);
        let emb = glove(200);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = Dccl::new(&vs.root(), emb.dim(), 16, 4, 8, 0.4, &mut rng);
        let x = Tensor::from_slice(emb.matrix()).view([200, 50]);
        let (_, worst) = export_gap(&net, &x);
        assert!(worst < 1e-5, "worst {worst}");
        // The relaxed decode of a one-hot equals the integer decode.
        let codes = net.codes(&x);
        let one_hot = codes.one_hot(8).to_kind(Kind::Float);
        assert!(
            net.decode_soft(&one_hot)
                .allclose(&net.decode(&codes), 1e-5, 1e-5, false)
        );
    }
}
