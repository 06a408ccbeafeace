//! How every method ends: the codes brought back from LibTorch, what users will decode measured,
//! and the one [`TrainReport`].

use tch::{Device, Kind, Tensor};

use super::reporter::Reporter;
use super::training_set::TrainingSet;
use super::{TrainError, TrainReport, Trained, device_name};
use crate::codes::Codes;
use crate::composer::Composer;
use crate::eval::{self, ChunkScorer, NeighbourReference, Scores};
use crate::progress::StageReport;

/// A LibTorch failure during `stage`.
pub(crate) fn torch_err(stage: &str, e: impl std::fmt::Display) -> TrainError {
    TrainError::Torch {
        stage: stage.to_string(),
        message: e.to_string(),
    }
}

/// Codes `[N, D]` of any integer kind, on any device, as a code table of `k` values. Takes the
/// tensor so that it is freed as soon as it is copied, and copies a slice of rows at a time so
/// that the codes never exist whole in a wider type.
fn codes_to_host(codes: Tensor, k: u32, num_codebooks: usize) -> Result<Codes, TrainError> {
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
fn final_scores(
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

/// The result of a run: `codes` `[N, D]` and `composer` measured with the pure-Rust decoder on
/// `threads` threads. `final_stage` names a stage whose measurement is this final one (methods
/// without stages of their own); the staged pipeline has already reported its stages.
pub(crate) fn conclude(
    set: &TrainingSet,
    mut out: Reporter,
    composer: Composer,
    codes: Tensor,
    threads: usize,
    final_stage: Option<&str>,
) -> Result<Trained, TrainError> {
    let cfg = set.cfg;
    *out.stage = "export".into();
    // An identity output map decodes as the plain sum: stored without it.
    let composer = composer.simplified();
    let codes = codes_to_host(codes, cfg.num_codes as u32, cfg.num_codebooks)?;
    let scores = final_scores(set.host, &out.reference, &composer, &codes, threads)?;
    if let Some(stage) = final_stage {
        let report = StageReport {
            stage: stage.to_string(),
            mse: scores.mse,
            mean_cosine: scores.mean_cosine,
            neighbour_overlap: scores.neighbour_overlap,
            seconds: set.elapsed(),
        };
        out.progress.stage_end(&report);
        out.stages.push(report);
    }
    // The threads the report states, also among the settled values the .kdz keeps.
    out.settle("threads", threads);
    let report = TrainReport {
        device: device_name(set.device),
        threads,
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
        settled: out.settled,
    };
    Ok(Trained {
        codes,
        composer,
        report,
    })
}
