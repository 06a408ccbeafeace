//! The default method (`kd`): its stages in order, each measured on every word.
//!
//! [`run`] reads as the stage order; each stage lives in its own file: [`tables`] (`rq`, `lsq`),
//! [`gradient`] (`composer`, `end-to-end`), [`refine`], [`conditioned`].

pub(crate) mod conditioned;
mod gradient;
mod refine;
mod tables;

use tch::{Device, nn};

use super::model::{ComposerNet, Encoder};
use super::outcome::conclude;
use super::reporter::Reporter;
use super::rng::Rng;
use super::training_set::TrainingSet;
use super::{Init, TrainConfig, TrainError, Trained};
use crate::composer::{ComposerConfig, ComposerKind};

/// Mixed into the seed for the networks' own generator.
const NETS_SALT: u64 = 0x6e65_7473_5f69_6e69;

/// A round must lower the error over all words by this share to earn another.
const MIN_GAIN: f64 = 1e-3;

/// Trains KD codes: `rq`, then `lsq`, then the composer on the fixed codes, then `refine`
/// (or, with `Init::Random`, the paper's end-to-end recipe), as the options allow.
pub(super) fn run(set: &TrainingSet, mut out: Reporter) -> Result<Trained, TrainError> {
    let cfg = set.cfg;
    if set.device == Device::Cpu {
        // Parallelism comes from row chunks on plain threads (see `parallel`); LibTorch's own
        // spinning pool would only compete with them.
        crate::train::parallel::set_torch_threads(1);
    }
    // The networks' initial weights come from their own stream, so that the stages before them
    // draw the same numbers whatever the composer: `--composer conditioned` starts from exactly
    // the additive run's lsq tables and codes.
    let nets = Nets::new(set, &mut Rng::new(cfg.seed ^ NETS_SALT));
    let codes = match cfg.init {
        Init::Rq => {
            let (mut tables, mut codes) = tables::stage_rq(set, &mut out)?;
            if cfg.runs_lsq() {
                (tables, codes) = tables::stage_lsq(set, &mut out, tables, codes)?;
            }
            tables::init_from_tables(&nets.composer, &tables, &mut out.rng);
            if cfg.composer == ComposerKind::Conditioned {
                conditioned::stage_conditioned(set, &mut out, &nets, codes)?
            } else {
                gradient::stage_composer(set, &mut out, &nets, &codes)?;
                codes
            }
        }
        Init::Random => gradient::stage_end_to_end(set, &mut out, &nets)?,
    };
    let codes = if nets.refine_applies(cfg) {
        refine::stage_refine(set, &mut out, &nets, codes)?
    } else {
        codes
    };
    *out.stage = "export".into();
    let composer = nets.composer.export()?;
    conclude(set, out, composer, codes, set.workers, None)
}

/// How many rows of `new` differ from `old` (codes `[N, D]`) in at least one position.
fn changed_rows(new: &tch::Tensor, old: &tch::Tensor) -> i64 {
    tch::no_grad(|| {
        new.ne_tensor(old)
            .any_dim(1, false)
            .sum(tch::Kind::Int64)
            .int64_value(&[])
    })
}

/// The networks of a run, their variables in one store.
struct Nets {
    vs: nn::VarStore,
    composer: ComposerNet,
    /// The paper's encoder g: with `Init::Random`, or to distil.
    encoder: Option<Encoder>,
    /// After least squares and ICM a linear composer has nothing left to learn with those codes,
    /// and re-encoding through it is the ICM that already converged.
    linear_is_optimal: bool,
}

impl Nets {
    fn new(set: &TrainingSet, rng: &mut Rng) -> Self {
        let cfg = set.cfg;
        let d = set.d as usize;
        let composer_cfg = ComposerConfig {
            kind: cfg.composer,
            num_codebooks: cfg.num_codebooks,
            num_codes: cfg.num_codes,
            code_dim: cfg.code_dim.unwrap_or(d),
            hidden: if cfg.composer == ComposerKind::Conditioned {
                cfg.step_hidden_for(set.n as usize, d)
            } else {
                cfg.hidden
            },
            out_dim: d,
        };
        let vs = nn::VarStore::new(set.device);
        let composer = ComposerNet::new(&vs.root(), composer_cfg, rng);
        let encoder = (cfg.init == Init::Random || cfg.distill).then(|| {
            Encoder::new(
                &vs.root(),
                d,
                cfg.hidden,
                cfg.num_codebooks,
                cfg.num_codes,
                rng,
            )
        });
        let linear_is_optimal = cfg.lsq_ends_linear() && encoder.is_none();
        Nets {
            vs,
            composer,
            encoder,
            linear_is_optimal,
        }
    }

    /// Whether `refine` can propose codes: through the composer's additive part, or the encoder.
    fn refine_applies(&self, cfg: &TrainConfig) -> bool {
        cfg.refine
            && cfg.refine_rounds_or_default() > 0
            && cfg.composer != ComposerKind::Conditioned
            && !self.linear_is_optimal
            && (self.composer.mapped_tables().is_some() || self.encoder.is_some())
    }
}
