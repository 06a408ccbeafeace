//! The gradient stages: the composer (and encoder) trained with the codes fixed, and the
//! paper's end-to-end recipe; both are [`Learner`]s of the one training loop.

use std::time::Instant;

use tch::{Kind, Tensor};

use super::Nets;
use crate::progress::Criterion;
use crate::train::TrainError;
use crate::train::learner::{self, Batch, Learner, Plan, Schedule};
use crate::train::model::{
    ComposerNet, Encoder, mean_entropy, reconstruction_loss, straight_through,
};
use crate::train::reporter::Reporter;
use crate::train::rng::Rng;
use crate::train::training_set::{Decoder, TrainingSet};

/// Learning rate of training with fixed codes, as a share of `--lr`: the codes and tables
/// already fit well, and a full-size Adam step would first undo that.
const FIXED_CODES_LR_SHARE: f64 = 0.1;
/// Weight of the reconstruction through the encoder's straight-through codes when distilling.
const DISTILL_RECON_WEIGHT: f64 = 0.1;

/// `composer`: trains the composer (and the encoder, when distilling) on the fixed `codes`,
/// unless least squares already left the best linear composer.
pub(super) fn stage_composer(
    set: &TrainingSet,
    out: &mut Reporter,
    nets: &Nets,
    codes: &Tensor,
) -> Result<(), TrainError> {
    if nets.linear_is_optimal {
        out.progress.message(
            "composer: the least-squares tables are already the best linear composer for \
             these codes; no gradient training needed",
        );
    } else if set.cfg.epochs > 0 {
        let t0 = Instant::now();
        out.begin("composer", 0);
        train_fixed(set, out, "composer", nets, codes, set.cfg.epochs)?;
        let decoder = Decoder::Net(nets.composer.shallow_clone());
        out.finish(set, "composer", t0.elapsed().as_secs_f64(), codes, &decoder)?;
    }
    Ok(())
}

/// `end-to-end`: the paper's recipe, encoder and composer trained through straight-through
/// codes; the codes are then the encoder's argmax.
pub(super) fn stage_end_to_end(
    set: &TrainingSet,
    out: &mut Reporter,
    nets: &Nets,
) -> Result<Tensor, TrainError> {
    let t0 = Instant::now();
    out.begin("end-to-end", 0);
    let encoder = nets
        .encoder
        .as_ref()
        .expect("random init builds an encoder");
    let learner = EndToEnd {
        net: &nets.composer,
        encoder,
        entropy_weight: set.cfg.entropy_weight,
    };
    let plan = Plan {
        stage: "end-to-end",
        epochs: set.cfg.epochs,
        learning_rate: set.cfg.learning_rate,
        schedule: Schedule::CosineToTenth,
        min_epochs: 0,
    };
    learner::fit(set, out, &nets.vs, &learner, plan)?;
    let codes = set.encode_all(
        out,
        None,
        encoder.memory_per_row(),
        || encoder.shallow_clone(),
        |e, xc, _| e.logits(xc).argmax(-1, false),
    );
    let decoder = Decoder::Net(nets.composer.shallow_clone());
    out.finish(
        set,
        "end-to-end",
        t0.elapsed().as_secs_f64(),
        &codes,
        &decoder,
    )?;
    Ok(codes)
}

/// The mean over `batch` of each row's squared error of `y`, times the row's weight in `weights`
/// (`[N]`, by input row) when given: [`reconstruction_loss`] when not.
pub(super) fn weighted_loss(y: &Tensor, batch: &Batch, weights: Option<&Tensor>) -> Tensor {
    match weights {
        Some(w) => ((y - batch.x)
            .square()
            .sum_dim_intlist(1, false, None::<Kind>)
            * w.index_select(0, batch.rows))
        .mean(None::<Kind>),
        None => reconstruction_loss(y, batch.x),
    }
}

/// Trains the composer (and, when distilling, the encoder) for up to `epochs` epochs with every
/// word's codes fixed.
pub(super) fn train_fixed(
    set: &TrainingSet,
    out: &mut Reporter,
    stage: &str,
    nets: &Nets,
    codes: &Tensor,
    epochs: usize,
) -> Result<f64, TrainError> {
    let plan = Plan {
        stage,
        epochs,
        learning_rate: set.cfg.learning_rate * FIXED_CODES_LR_SHARE,
        schedule: Schedule::CosineToTenth,
        min_epochs: 0,
    };
    train_codes_fixed(set, out, nets, codes, plan, false)
}

/// [`train_fixed`] with its plan given; when `judge_all_words`, trained on and judged by the
/// lsq stage's error over all words ([`TrainingSet::fit_error`], each word's weighted as
/// `--word-weight` says), else trained on the squared error and judged over the held-out words.
pub(super) fn train_codes_fixed(
    set: &TrainingSet,
    out: &mut Reporter,
    nets: &Nets,
    codes: &Tensor,
    plan: Plan,
    judge_all_words: bool,
) -> Result<f64, TrainError> {
    let learner = FixedCodes {
        net: &nets.composer,
        encoder: nets.encoder.as_ref(),
        codes,
        k: set.k,
        judge_all_words,
        weights: judge_all_words
            .then(|| set.weights.as_ref().map(Tensor::shallow_clone))
            .flatten(),
    };
    learner::fit(set, out, &nets.vs, &learner, plan)
}

/// The composer learning to decode fixed codes; with an encoder, the encoder learning to
/// predict them (cross-entropy) and to reconstruct through its own straight-through codes.
struct FixedCodes<'a> {
    net: &'a ComposerNet,
    encoder: Option<&'a Encoder>,
    /// Every word's codes, `[N, D]`.
    codes: &'a Tensor,
    k: i64,
    /// Judge epochs by the error over all words (every word is compressed) instead of the
    /// held-out words.
    judge_all_words: bool,
    /// `[N]` weight of each word's squared error in the loss; `None`: all 1.
    weights: Option<Tensor>,
}

impl Learner for FixedCodes<'_> {
    fn loss(&self, batch: &Batch, tau: f64, _rng: &mut Rng) -> Tensor {
        let (net, xb) = (self.net, batch.x);
        let cb = self.codes.index_select(0, batch.rows).to_kind(Kind::Int64);
        let mut loss = weighted_loss(&net.decode(&cb), batch, self.weights.as_ref());
        if let Some(enc) = self.encoder {
            let logits = enc.logits(xb);
            let ce = logits
                .view([-1, self.k])
                .cross_entropy_for_logits(&cb.view(-1));
            let r = straight_through(&logits, tau);
            let y = net.compose(&net.code_vectors_soft(&r.straight_through));
            loss = loss + ce + reconstruction_loss(&y, xb) * DISTILL_RECON_WEIGHT;
        }
        loss
    }

    fn val_mse(&self, set: &TrainingSet) -> f64 {
        let decoder = Decoder::Net(self.net.shallow_clone());
        if self.judge_all_words {
            set.fit_error(self.codes, &decoder)
        } else {
            set.val_mse(self.codes, &decoder)
                .unwrap_or_else(|| set.mse_of(self.codes, None, &decoder))
        }
    }

    fn uses_tau(&self) -> bool {
        self.encoder.is_some()
    }

    fn held_out_mse(&self, set: &TrainingSet) -> Option<f64> {
        set.val_mse(self.codes, &Decoder::Net(self.net.shallow_clone()))
    }

    fn judged_by(&self) -> Criterion {
        if self.judge_all_words {
            Criterion::all_words(self.weights.is_some())
        } else {
            Criterion::HeldOut
        }
    }
}

/// The paper's encoder and composer, trained end to end.
struct EndToEnd<'a> {
    net: &'a ComposerNet,
    encoder: &'a Encoder,
    entropy_weight: f64,
}

impl Learner for EndToEnd<'_> {
    fn loss(&self, batch: &Batch, tau: f64, _rng: &mut Rng) -> Tensor {
        let r = straight_through(&self.encoder.logits(batch.x), tau);
        let y = self
            .net
            .compose(&self.net.code_vectors_soft(&r.straight_through));
        let mut loss = reconstruction_loss(&y, batch.x);
        if self.entropy_weight > 0.0 {
            #[allow(clippy::assign_op_pattern)] // out of place, as autograd expects
            {
                loss = loss + mean_entropy(&r.soft) * self.entropy_weight;
            }
        }
        loss
    }

    fn val_mse(&self, set: &TrainingSet) -> f64 {
        tch::no_grad(|| {
            let xv = set.x.index_select(0, &set.val_rows);
            let codes = self.encoder.logits(&xv).argmax(-1, false);
            let err = (self.net.decode(&codes) - &xv).square().sum(Kind::Double);
            err.double_value(&[]) / set.val_rows.size()[0].max(1) as f64
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_weighted_loss_weighs_each_row_by_its_input_row() {
        // Rows 2 and 0 of a four-word input; squared errors 1 and 4.
        let rows = Tensor::from_slice(&[2i64, 0]);
        let x = Tensor::from_slice(&[1f32, 0.0, 0.0, 2.0]).view([2, 2]);
        let y = Tensor::zeros([2, 2], (Kind::Float, tch::Device::Cpu));
        let batch = Batch { rows: &rows, x: &x };
        let plain = weighted_loss(&y, &batch, None).double_value(&[]);
        assert!((plain - 2.5).abs() < 1e-6, "{plain}");
        // Weights by input row: row 2 weighs 3, row 0 weighs 2, so (3 · 1 + 2 · 4) / 2.
        let w = Tensor::from_slice(&[2f32, 9.0, 3.0, 9.0]);
        let weighted = weighted_loss(&y, &batch, Some(&w)).double_value(&[]);
        assert!((weighted - 5.5).abs() < 1e-6, "{weighted}");
    }
}
