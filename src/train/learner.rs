//! The one training loop, over the [`Learner`] trait, that every method's gradient training runs:
//! Adam over shuffled batches of the training words, the best held-out weights kept.

use std::time::Instant;

use tch::nn::{self, OptimizerConfig};
use tch::{Kind, Tensor};

use super::TrainError;
use super::outcome::torch_err;
use super::reporter::Reporter;
use super::rng::Rng;
use super::training_set::TrainingSet;
use crate::progress::{Criterion, EpochRecord, Tick};

/// A batch of training words.
pub(crate) struct Batch<'a> {
    /// Their rows in the input, `[B]` Int64.
    pub rows: &'a Tensor,
    /// Their vectors, `[B, d]`.
    pub x: &'a Tensor,
}

/// What a method trains, as the loop sees it.
pub(crate) trait Learner {
    /// Training loss of `batch` at temperature `tau` (noise and relaxation included).
    fn loss(&self, batch: &Batch, tau: f64, rng: &mut Rng) -> Tensor;
    /// Mean squared error per held-out word of the current weights, which the loop keeps the
    /// best of.
    fn val_mse(&self, set: &TrainingSet) -> f64;
    /// Whether the temperature means anything to this learner (it is logged only then).
    fn uses_tau(&self) -> bool {
        true
    }
    /// Which error [`Learner::val_mse`] measures.
    fn judged_by(&self) -> Criterion {
        Criterion::HeldOut
    }
    /// The held-out words' error, for learners judged over all words (`None` when the run
    /// holds no word out).
    fn held_out_mse(&self, set: &TrainingSet) -> Option<f64> {
        Some(self.val_mse(set))
    }
}

/// How the learning rate moves over the epochs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Schedule {
    /// The given rate throughout.
    Constant,
    /// Cosine from the given rate down to a tenth of it.
    CosineToTenth,
    /// Cosine to a tenth, after a linear ramp from zero over the first epoch's steps (Adam's
    /// first steps move every parameter by about the learning rate, whatever its gradient).
    WarmupCosine,
}

/// How long and how fast one call of [`fit`] trains.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan<'a> {
    /// The stage name in progress reports and errors.
    pub stage: &'a str,
    /// Most epochs; the temperature follows `--tau-schedule` over them.
    pub epochs: usize,
    pub learning_rate: f64,
    pub schedule: Schedule,
    /// Epochs run before `--patience` may stop the training (the best weights are kept
    /// whatever happens after them).
    pub min_epochs: usize,
}

/// Trains the variables of `vs` through `learner` for up to `plan.epochs` epochs; keeps the
/// weights of the best held-out error (starting from the weights given) and stops after
/// `--patience` epochs without a better one. Returns the best held-out error.
pub(crate) fn fit(
    set: &TrainingSet,
    out: &mut Reporter,
    vs: &nn::VarStore,
    learner: &dyn Learner,
    plan: Plan,
) -> Result<f64, TrainError> {
    let cfg = set.cfg;
    let Plan {
        stage,
        epochs,
        learning_rate,
        schedule,
        min_epochs,
    } = plan;
    let mut opt = nn::Adam::default()
        .build(vs, learning_rate)
        .map_err(|e| torch_err(stage, e))?;
    let n_train = set.train_rows.size()[0];
    let bs = cfg.batch_size as i64;
    let steps = (n_train + bs - 1) / bs;
    out.progress
        .stage_start(stage, steps as u64 * epochs as u64);
    let mut best = learner.val_mse(set);
    let mut saved = snapshot(vs);
    let mut stale = 0;
    let mut done = 0u64;
    // An epoch starts only when one as long as the last ends within --time-limit.
    let mut epoch_secs = 0.0;
    for epoch in 0..epochs {
        if set.no_time_for(epoch_secs) {
            out.progress
                .message(&format!("{stage}: time limit reached"));
            break;
        }
        let t0 = Instant::now();
        let lr = match schedule {
            Schedule::Constant => learning_rate,
            Schedule::CosineToTenth | Schedule::WarmupCosine => {
                let phase = epoch as f64 / epochs.max(1) as f64;
                let lr = learning_rate
                    * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * phase).cos()));
                opt.set_lr(lr);
                lr
            }
        };
        let tau = cfg.tau_at(epoch, epochs);
        let order = set
            .train_rows
            .index_select(0, &out.rng.permutation(n_train as usize, set.device));
        let mut loss_sum = Tensor::zeros([], (Kind::Double, set.device));
        let mut last_loss = None;
        for s in 0..steps {
            if schedule == Schedule::WarmupCosine && epoch == 0 {
                opt.set_lr(lr * (s + 1) as f64 / steps as f64);
            }
            let rows = order.narrow(0, s * bs, bs.min(n_train - s * bs));
            let x = set.x.index_select(0, &rows);
            let loss = learner.loss(&Batch { rows: &rows, x: &x }, tau, &mut out.rng);
            opt.backward_step(&loss);
            loss_sum += loss.detach().to_kind(Kind::Double);
            done += 1;
            if s % 50 == 49 || s + 1 == steps {
                let l = loss_sum.double_value(&[]) / (s + 1) as f64;
                last_loss = Some(l);
                let secs = t0.elapsed().as_secs_f64().max(1e-9);
                out.progress.tick(&Tick {
                    done,
                    loss: Some(l),
                    val_mse: Some(best),
                    samples_per_sec: Some(((s + 1) * bs).min(n_train) as f64 / secs),
                });
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        epoch_secs = secs;
        out.trained_words += n_train as f64;
        out.trained_secs += secs;
        let v = learner.val_mse(set);
        let improved = v < best;
        let over_all_words = learner.judged_by().over_all_words();
        out.progress.epoch(&EpochRecord {
            stage: stage.into(),
            epoch: epoch + 1,
            // A learner judged over all words reports that error where search rounds do, and
            // the held-out error beside it (see `Criterion`).
            train_loss: if over_all_words { Some(v) } else { last_loss },
            val_mse: if over_all_words {
                learner.held_out_mse(set)
            } else {
                Some(v)
            },
            best: improved,
            judged_by: learner.judged_by(),
            tau: learner.uses_tau().then_some(tau),
            learning_rate: Some(lr),
            samples_per_sec: n_train as f64 / secs.max(1e-9),
            elapsed_secs: set.elapsed(),
        });
        if improved {
            best = v;
            saved = snapshot(vs);
            stale = 0;
        } else {
            stale += 1;
            if stale >= cfg.patience && epoch + 1 >= min_epochs {
                break;
            }
        }
    }
    restore(vs, &saved);
    Ok(best)
}

/// Copies of the trainable variables of `vs`, to come back to with [`restore`].
fn snapshot(vs: &nn::VarStore) -> Vec<Tensor> {
    tch::no_grad(|| vs.trainable_variables().iter().map(|t| t.copy()).collect())
}

/// Puts back the variables [`snapshot`] saved.
fn restore(vs: &nn::VarStore, saved: &[Tensor]) {
    tch::no_grad(|| {
        for (v, s) in vs.trainable_variables().iter().zip(saved) {
            v.shallow_clone().copy_(s);
        }
    });
}
