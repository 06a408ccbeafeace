//! What the staged KD pipeline and the single-loop methods both do around their training:
//! hold words out, keep the best weights, and bring results back from LibTorch.

use tch::{Device, Kind, Tensor, nn};

use super::TrainError;
use crate::codes::Codes;
use crate::eval;

/// At most this many held-out words: enough to compare epochs, cheap to decode.
const MAX_VAL: usize = 10_000;

/// A LibTorch failure during `stage`.
pub(super) fn torch_err(stage: &str, e: impl std::fmt::Display) -> TrainError {
    TrainError::Torch {
        stage: stage.to_string(),
        message: e.to_string(),
    }
}

/// The rows held out for validation, in the order drawn, and a mask marking them:
/// `val_fraction` of the `n` words drawn with `seed`, at least one, at most [`MAX_VAL`], and
/// always leaving one to train on.
pub(super) fn held_out(n: usize, val_fraction: f64, seed: u64) -> (Vec<usize>, Vec<bool>) {
    let n_val = ((n as f64 * val_fraction).round() as usize)
        .clamp(1, n.saturating_sub(1).max(1))
        .min(MAX_VAL);
    let val = eval::sample_rows(n, n_val, seed);
    let mut is_val = vec![false; n];
    for &r in &val {
        is_val[r] = true;
    }
    (val, is_val)
}

/// Copies of the trainable variables of `vs`, to come back to with [`restore`].
pub(super) fn snapshot(vs: &nn::VarStore) -> Vec<Tensor> {
    tch::no_grad(|| vs.trainable_variables().iter().map(|t| t.copy()).collect())
}

/// Puts back the variables [`snapshot`] saved.
pub(super) fn restore(vs: &nn::VarStore, saved: &[Tensor]) {
    tch::no_grad(|| {
        for (v, s) in vs.trainable_variables().iter().zip(saved) {
            v.shallow_clone().copy_(s);
        }
    });
}

/// Codes `[N, D]` of any integer kind, on any device, as a code table of `k` values.
pub(super) fn codes_to_host(codes: &Tensor, k: u32, dd: usize) -> Result<Codes, TrainError> {
    let c = codes
        .to_device(Device::Cpu)
        .to_kind(Kind::Int)
        .contiguous()
        .view(-1);
    let v = Vec::<i32>::try_from(&c).map_err(|e| torch_err("export", e))?;
    // Codes are argmins or argmaxes over K <= 65536 entries, so they fit u16; Codes::new still
    // checks each against K.
    let v: Vec<u16> = v
        .into_iter()
        .map(|c| c.clamp(0, u16::MAX as i32) as u16)
        .collect();
    Ok(Codes::new(k, dd, v)?)
}
