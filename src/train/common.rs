//! What the staged KD pipeline and the single-loop methods both do around their training:
//! hold words out, keep the best weights, and bring results back from LibTorch.

use tch::{Device, Kind, Tensor, nn};

use super::TrainError;
use crate::codes::Codes;
use crate::composer::Composer;
use crate::eval::{self, ChunkScorer, NeighbourReference, Scores};

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

/// Codes `[N, D]` of any integer kind, on any device, as a code table of `k` values. Takes the
/// tensor so that it is freed as soon as it is copied, and copies a slice of rows at a time so
/// that the codes never exist whole in a wider type.
pub(super) fn codes_to_host(
    codes: Tensor,
    k: u32,
    num_codebooks: usize,
) -> Result<Codes, TrainError> {
    const ROWS: i64 = 1 << 14;
    let n = codes.size().first().copied().unwrap_or(0);
    let mut out: Vec<u16> = Vec::with_capacity(n as usize * num_codebooks);
    let mut buf: Vec<i32> = Vec::new();
    for start in (0..n).step_by(ROWS as usize) {
        let len = ROWS.min(n - start);
        let part = codes
            .narrow(0, start, len)
            .to_device(Device::Cpu)
            .to_kind(Kind::Int)
            .contiguous()
            .view(-1);
        buf.resize(len as usize * num_codebooks, 0);
        part.f_copy_data(&mut buf, len as usize * num_codebooks)
            .map_err(|e| torch_err("export", e))?;
        // Codes are argmins or argmaxes over K <= 65536 entries, so they fit u16; Codes::new
        // still checks each against K.
        out.extend(buf.iter().map(|&c| c.clamp(0, u16::MAX as i32) as u16));
    }
    drop(codes);
    Ok(Codes::new(k, num_codebooks, out)?)
}

/// Scores what users will decode: the pure-Rust composer on the discrete codes, chunk by chunk
/// on `workers` threads, never holding a decoded matrix.
pub(super) fn final_scores(
    host: &[f32],
    reference: &NeighbourReference,
    composer: &Composer,
    codes: &Codes,
    workers: usize,
) -> Result<Scores, TrainError> {
    const ROWS: usize = 4096;
    let (d, positions) = (composer.config().out_dim, codes.d());
    let all = codes.as_slice();
    let mut queries = vec![0f32; reference.rows().len() * d];
    for (&r, out) in reference.rows().iter().zip(queries.chunks_exact_mut(d)) {
        composer.decode_batch(&all[r * positions..(r + 1) * positions], out);
    }
    let first = reference.scorer(host, &queries)?;
    let n = all.len() / positions.max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let scorers: Vec<Result<ChunkScorer, TrainError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers.max(1))
            .map(|_| {
                let (mut scorer, next) = (first.fork(), &next);
                scope.spawn(move || {
                    let mut buf = vec![0f32; ROWS * d];
                    loop {
                        let start = next.fetch_add(ROWS, std::sync::atomic::Ordering::Relaxed);
                        if start >= n {
                            return Ok(scorer);
                        }
                        let len = ROWS.min(n - start);
                        let out = &mut buf[..len * d];
                        composer
                            .decode_batch(&all[start * positions..(start + len) * positions], out);
                        scorer.add(start, out)?;
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut total = first;
    for scorer in scorers {
        total.merge(scorer?);
    }
    Ok(total.finish())
}
