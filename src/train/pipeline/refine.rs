//! `refine`: every word re-encoded through the trained composer, then the composer fine-tuned.

use std::time::Instant;

use tch::{Kind, Tensor};

use super::gradient::train_fixed;
use super::tables::ICM_SWEEPS;
use super::{MIN_GAIN, Nets, changed_rows};
use crate::train::TrainError;
use crate::train::model::{ComposerNet, Encoder};
use crate::train::quantize::lsq;
use crate::train::reporter::Reporter;
use crate::train::training_set::{Decoder, TrainingSet};

/// Squared error of each row.
fn row_errors(y: &Tensor, x: &Tensor) -> Tensor {
    (y - x).square().sum_dim_intlist(1, false, None::<Kind>)
}

/// Floats of scratch per row of [`reencode`]: three decodes and ICM's K distances.
fn memory_per_row(net: &ComposerNet, k: i64) -> i64 {
    net.memory_per_row() * 3 + k * 4
}

/// New codes for rows `xc` (current codes `cc`) through the composer: ICM on the composer's
/// additive part with the rest held at its current value, and the encoder's argmax; each row
/// keeps whichever codes decode closest, its current ones included.
fn reencode(
    net: &ComposerNet,
    mapped: Option<&Tensor>,
    encoder: Option<&Encoder>,
    xc: &Tensor,
    cc: &Tensor,
) -> Tensor {
    let cc = cc.to_kind(Kind::Int64);
    let mut best_codes = cc.shallow_clone();
    let mut best_err = row_errors(&net.decode(&cc), xc);
    let mut consider = |cand: Tensor| {
        let err = row_errors(&net.decode(&cand), xc);
        let better = err.lt_tensor(&best_err);
        best_codes = cand.where_self(&better.unsqueeze(1), &best_codes);
        best_err = err.minimum(&best_err);
    };
    if let Some(m) = mapped {
        let s = net
            .code_vectors(&cc)
            .sum_dim_intlist(1, false, None::<Kind>);
        if let Some(offset) = net.offset_of_sum(&s) {
            consider(lsq::icm(&(xc - offset), &cc, m, ICM_SWEEPS));
        }
    }
    if let Some(enc) = encoder {
        consider(enc.logits(xc).argmax(-1, false));
    }
    best_codes
}

/// Re-encodes every word through the trained composer, keeping new codes only where they decode
/// closer, then fine-tunes the composer; repeats while the error over all words falls.
pub(super) fn stage_refine(
    set: &TrainingSet,
    out: &mut Reporter,
    nets: &Nets,
    mut codes: Tensor,
) -> Result<Tensor, TrainError> {
    let cfg = set.cfg;
    let (net, encoder) = (&nets.composer, nets.encoder.as_ref());
    let t0 = Instant::now();
    out.begin("refine", set.n as u64);
    let decoder = Decoder::Net(net.shallow_clone());
    let mut best = set.mse_of(&codes, None, &decoder);
    let fine_tune = (cfg.epochs / 4).max(1);
    // A round starts only when one as long as the last ends within --time-limit.
    let mut round_secs = 0.0;
    for round in 1..=cfg.refine_rounds_or_default() {
        if set.no_time_for(round_secs) {
            out.progress.message("refine: time limit reached");
            break;
        }
        let r0 = Instant::now();
        out.begin("refine", set.n as u64);
        let mapped = tch::no_grad(|| net.mapped_tables());
        let new_codes = set.encode_all(
            out,
            Some(&codes),
            memory_per_row(net, set.k),
            || {
                (
                    net.shallow_clone(),
                    mapped.as_ref().map(Tensor::shallow_clone),
                    encoder.map(Encoder::shallow_clone),
                )
            },
            |(n, m, e), xc, cc| {
                let cc = cc.expect("refine re-encodes current codes");
                reencode(n, m.as_ref(), e.as_ref(), xc, cc)
            },
        );
        let changed = changed_rows(&new_codes, &codes);
        codes = new_codes;
        let after = set.mse_of(&codes, None, &decoder);
        out.progress.message(&format!(
            "refine round {round}: {changed} words took new codes; error over all words {after:.4}"
        ));
        if cfg.epochs > 0 {
            train_fixed(set, out, "fine-tune", nets, &codes, fine_tune)?;
        }
        let all = set.mse_of(&codes, None, &decoder);
        let improved = all < best;
        let val_mse = set.val_mse(&codes, &decoder);
        out.progress
            .epoch(&set.round_record("refine", round, all, val_mse, improved, r0));
        round_secs = r0.elapsed().as_secs_f64();
        let gain = (best - all) / best.max(f64::MIN_POSITIVE);
        best = best.min(all);
        if gain < MIN_GAIN {
            break;
        }
    }
    out.finish(set, "refine", t0.elapsed().as_secs_f64(), &codes, &decoder)?;
    Ok(codes)
}
