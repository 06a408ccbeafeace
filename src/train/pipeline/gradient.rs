//! The gradient stages: the composer (and encoder) trained with the codes fixed, and the
//! paper's end-to-end recipe; both run the one epoch loop below.

use std::time::Instant;

use tch::nn::{self, OptimizerConfig};
use tch::{Kind, Tensor};

use super::Nets;
use super::reporter::Reporter;
use super::training_set::{Decoder, TrainingSet};
use crate::progress::{Criterion, EpochRecord, Tick};
use crate::train::TrainError;
use crate::train::common::{restore, snapshot, torch_err};
use crate::train::model::{
    ComposerNet, Encoder, mean_entropy, reconstruction_loss, straight_through,
};

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
        let epochs = set.cfg.epochs;
        train_fixed(set, out, "composer", nets, codes, epochs)?;
        let decoder = Decoder::Net(nets.composer.shallow_clone());
        out.finish(set, "composer", t0.elapsed().as_secs_f64(), codes, &decoder)?;
    }
    Ok(())
}

/// `end-to-end`: the paper's recipe; the codes are the trained encoder's argmax.
pub(super) fn stage_end_to_end(
    set: &TrainingSet,
    out: &mut Reporter,
    nets: &Nets,
) -> Result<Tensor, TrainError> {
    let t0 = Instant::now();
    out.begin("end-to-end", 0);
    let enc = nets
        .encoder
        .as_ref()
        .expect("random init builds an encoder");
    train_end_to_end(set, out, &nets.vs, &nets.composer, enc)?;
    let codes = set.encode_all(
        out,
        None,
        enc.memory_per_row(),
        || enc.shallow_clone(),
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

/// Adam over shuffled batches of the training words for up to `epochs` epochs, cosine-decaying
/// the learning rate to a tenth; keeps the weights of the best validation error (starting from
/// the weights given) and stops after `patience` epochs without a better one.
#[allow(clippy::too_many_arguments)]
fn epochs_loop(
    set: &TrainingSet,
    out: &mut Reporter,
    stage: &str,
    vs: &nn::VarStore,
    epochs: usize,
    learning_rate: f64,
    tau: &dyn Fn(usize) -> Option<f64>,
    step: &dyn Fn(&Tensor, usize) -> Tensor,
    validate: &dyn Fn() -> f64,
) -> Result<f64, TrainError> {
    let cfg = set.cfg;
    let mut opt = nn::Adam::default()
        .build(vs, learning_rate)
        .map_err(|e| torch_err(stage, e))?;
    let n_train = set.train_rows.size()[0];
    let bs = cfg.batch_size as i64;
    let steps = (n_train + bs - 1) / bs;
    out.progress
        .stage_start(stage, steps as u64 * epochs as u64);
    let mut best = validate();
    let mut saved = snapshot(vs);
    let mut stale = 0;
    let mut done = 0u64;
    for epoch in 0..epochs {
        if set.out_of_time() {
            out.progress
                .message(&format!("{stage}: time limit reached"));
            break;
        }
        let t0 = Instant::now();
        let phase = epoch as f64 / epochs.max(1) as f64;
        let lr = learning_rate * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * phase).cos()));
        opt.set_lr(lr);
        let order = set
            .train_rows
            .index_select(0, &out.rng.permutation(n_train as usize, set.device));
        let mut loss_sum = Tensor::zeros([], (Kind::Double, set.device));
        let mut last_loss = None;
        for s in 0..steps {
            let rows = order.narrow(0, s * bs, bs.min(n_train - s * bs));
            let loss = step(&rows, epoch);
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
        out.trained_words += n_train as f64;
        out.trained_secs += secs;
        let v = validate();
        let improved = v < best;
        out.progress.epoch(&EpochRecord {
            stage: stage.into(),
            epoch: epoch + 1,
            train_loss: last_loss,
            val_mse: v,
            best: improved,
            judged_by: Criterion::HeldOut,
            tau: tau(epoch),
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
            if stale >= cfg.patience {
                break;
            }
        }
    }
    restore(vs, &saved);
    Ok(best)
}

/// Trains the composer (and, when distilling, the encoder) with every word's codes fixed.
pub(super) fn train_fixed(
    set: &TrainingSet,
    out: &mut Reporter,
    stage: &str,
    nets: &Nets,
    codes: &Tensor,
    epochs: usize,
) -> Result<f64, TrainError> {
    let cfg = set.cfg;
    let k = set.k;
    let (net, encoder) = (&nets.composer, nets.encoder.as_ref());
    let step = |rows: &Tensor, epoch: usize| {
        let xb = set.x.index_select(0, rows);
        let cb = codes.index_select(0, rows).to_kind(Kind::Int64);
        let mut loss = reconstruction_loss(&net.decode(&cb), &xb);
        if let Some(enc) = encoder {
            let logits = enc.logits(&xb);
            let ce = logits.view([-1, k]).cross_entropy_for_logits(&cb.view(-1));
            let r = straight_through(&logits, cfg.tau_at(epoch, epochs));
            let y = net.compose(&net.code_vectors_soft(&r.straight_through));
            loss = loss + ce + reconstruction_loss(&y, &xb) * DISTILL_RECON_WEIGHT;
        }
        loss
    };
    let decoder = Decoder::Net(net.shallow_clone());
    let validate = || set.val_mse(codes, &decoder);
    let tau = |e: usize| encoder.map(|_| cfg.tau_at(e, epochs));
    let lr = cfg.learning_rate * FIXED_CODES_LR_SHARE;
    epochs_loop(
        set, out, stage, &nets.vs, epochs, lr, &tau, &step, &validate,
    )
}

/// The paper's recipe: encoder and composer trained end to end through straight-through codes.
fn train_end_to_end(
    set: &TrainingSet,
    out: &mut Reporter,
    vs: &nn::VarStore,
    net: &ComposerNet,
    encoder: &Encoder,
) -> Result<f64, TrainError> {
    let cfg = set.cfg;
    let epochs = cfg.epochs;
    let step = |rows: &Tensor, epoch: usize| {
        let xb = set.x.index_select(0, rows);
        let r = straight_through(&encoder.logits(&xb), cfg.tau_at(epoch, epochs));
        let y = net.compose(&net.code_vectors_soft(&r.straight_through));
        let mut loss = reconstruction_loss(&y, &xb);
        if cfg.entropy_weight > 0.0 {
            #[allow(clippy::assign_op_pattern)] // out of place, as autograd expects
            {
                loss = loss + mean_entropy(&r.soft) * cfg.entropy_weight;
            }
        }
        loss
    };
    let validate = || {
        tch::no_grad(|| {
            let xv = set.x.index_select(0, &set.val_rows);
            let codes = encoder.logits(&xv).argmax(-1, false);
            let err = (net.decode(&codes) - &xv).square().sum(Kind::Double);
            err.double_value(&[]) / set.val_rows.size()[0].max(1) as f64
        })
    };
    let tau = |e: usize| Some(cfg.tau_at(e, epochs));
    epochs_loop(
        set,
        out,
        "end-to-end",
        vs,
        epochs,
        cfg.learning_rate,
        &tau,
        &step,
        &validate,
    )
}
