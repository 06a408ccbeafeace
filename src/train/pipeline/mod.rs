//! The default method (`kd`): its stages in order, each measured on every word.
//!
//! [`run`] reads as the stage order; each stage lives in its own file: [`tables`] (`rq`, `lsq`),
//! [`gradient`] (`composer`, `end-to-end`), [`refine`]. [`training_set`] holds the words and the
//! chunked passes over them, [`reporter`] what the stages report into.

mod gradient;
mod refine;
mod reporter;
mod tables;
mod training_set;

use std::time::Instant;

use tch::{Device, Tensor, nn};

use self::reporter::Reporter;
use self::training_set::TrainingSet;
use super::common::{codes_to_host, final_scores};
use super::model::{ComposerNet, Encoder};
use super::rng::Rng;
use super::{Init, TrainConfig, TrainError, TrainReport, Trained, device_name};
use crate::composer::{ComposerConfig, ComposerKind};
use crate::embeddings::Embeddings;
use crate::eval;
use crate::progress::Progress;

/// A round must lower the error over all words by this share to earn another.
const MIN_GAIN: f64 = 1e-3;

/// Trains KD codes: `rq`, then `lsq`, then the composer on the fixed codes, then `refine`
/// (or, with `Init::Random`, the paper's end-to-end recipe), as the options allow.
pub(super) fn run(
    emb: &Embeddings,
    cfg: &TrainConfig,
    device: Device,
    progress: &mut (dyn Progress + Send),
    stage: &mut String,
) -> Result<Trained, TrainError> {
    let set = TrainingSet::new(emb, cfg, device, Instant::now())?;
    let mut out = Reporter::new(progress, stage, &set)?;
    let nets = Nets::new(&set, &mut out.rng);
    let codes = match cfg.init {
        Init::Rq => {
            let (mut tables, mut codes) = tables::stage_rq(&set, &mut out)?;
            if cfg.refine && cfg.lsq_rounds > 0 {
                (tables, codes) = tables::stage_lsq(&set, &mut out, tables, codes)?;
            }
            tables::init_from_tables(&nets.composer, &tables, &mut out.rng);
            gradient::stage_composer(&set, &mut out, &nets, &codes)?;
            codes
        }
        Init::Random => gradient::stage_end_to_end(&set, &mut out, &nets)?,
    };
    let codes = if nets.refine_applies(cfg) {
        refine::stage_refine(&set, &mut out, &nets, codes)?
    } else {
        codes
    };
    conclude(&set, out, &nets.composer, codes)
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
            hidden: cfg.hidden,
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
        let linear_is_optimal = cfg.init == Init::Rq
            && cfg.refine
            && cfg.lsq_rounds > 0
            && cfg.composer == ComposerKind::Linear
            && encoder.is_none();
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
            && cfg.refine_rounds > 0
            && !self.linear_is_optimal
            && (self.composer.mapped_tables().is_some() || self.encoder.is_some())
    }
}

/// Exports the composer and codes, and measures what users will decode.
fn conclude(
    set: &TrainingSet,
    out: Reporter,
    net: &ComposerNet,
    codes: Tensor,
) -> Result<Trained, TrainError> {
    let cfg = set.cfg;
    *out.stage = "export".into();
    let composer = net.export()?;
    let codes = codes_to_host(codes, cfg.num_codes as u32, cfg.num_codebooks)?;
    let scores = final_scores(set.host, &out.reference, &composer, &codes, set.workers)?;
    let report = TrainReport {
        device: device_name(set.device),
        threads: set.workers,
        stages: out.stages,
        mse: scores.mse,
        mean_cosine: scores.mean_cosine,
        neighbour_overlap: scores.neighbour_overlap,
        code_usage: eval::code_usage(&codes),
        samples_per_sec: if out.trained_secs > 0.0 {
            out.trained_words / out.trained_secs
        } else {
            0.0
        },
        seconds: set.elapsed(),
    };
    Ok(Trained {
        codes,
        composer,
        report,
    })
}
