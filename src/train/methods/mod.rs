//! Code learners beside the default KD pipeline: DCCL (Shu & Nakayama 2018) and DPQ (Chen, Li &
//! Sun 2020, softmax and vector-quantization variants).
//!
//! Each method is a [`Learner`]: a training loss on a batch, discrete codes for a batch, a decode
//! of codes, and an export to the pure-Rust [`Composer`]. [`fit`] owns the shared loop (seeded
//! split, Adam over shuffled batches, best-validation weights, measurement) so that every method
//! ends in the same [`Trained`] and thus the same `.kdz`.

pub mod dccl;
pub mod dpq;

use std::time::Instant;

use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

pub use crate::method::Method;

use super::common::{codes_to_host, final_scores, held_out, restore, snapshot, torch_err};
use super::{Rng, TrainConfig, TrainError, TrainReport, Trained, device_name};
use crate::composer::Composer;
use crate::embeddings::Embeddings;
use crate::eval::{self, NEIGHBOUR_SAMPLES, NEIGHBOURS, NeighbourReference, Scores};
use crate::progress::{Criterion, EpochRecord, Progress, StageReport, Tick};

/// Separates the validation split's random stream from the neighbour sample's.
const SPLIT_SALT: u64 = 0x0D1F_F5EED;
/// Rows per chunk when encoding or decoding every word, bounding peak memory.
const CHUNK: i64 = 8192;

/// A method's networks, as the shared loop sees them.
pub(crate) trait Learner {
    /// Training loss of a batch `[B, d]` at temperature `tau`, noise and relaxation included.
    fn loss(&self, x: &Tensor, tau: f64, rng: &mut Rng) -> Tensor;
    /// Discrete codes `[B, D]` (int64) of a batch, with no noise.
    fn codes(&self, x: &Tensor) -> Tensor;
    /// Vectors `[B, d]` of codes `[B, D]`.
    fn decode(&self, codes: &Tensor) -> Tensor;
    /// The pure-Rust decoder of the current weights.
    fn export(&self) -> Result<Composer, TrainError>;
}

/// The word vectors as a tensor on `device`, and the seeded train/validation split.
pub(crate) struct Split {
    pub x: Tensor,
    pub train: Tensor,
    pub val: Tensor,
}

impl Split {
    pub(crate) fn new(emb: &Embeddings, cfg: &TrainConfig, device: Device) -> Split {
        let n = emb.len();
        let d = emb.dim();
        let x = Tensor::from_slice(emb.matrix())
            .view([n as i64, d as i64])
            .to_device(device);
        let (val, is_val) = held_out(n, cfg.val_fraction, cfg.seed ^ SPLIT_SALT);
        let train: Vec<i64> = (0..n).filter(|&r| !is_val[r]).map(|r| r as i64).collect();
        let val: Vec<i64> = val.into_iter().map(|r| r as i64).collect();
        Split {
            x,
            train: Tensor::from_slice(&train).to_device(device),
            val: Tensor::from_slice(&val).to_device(device),
        }
    }
}

fn encode_all(learner: &dyn Learner, x: &Tensor) -> Tensor {
    tch::no_grad(|| {
        let n = x.size()[0];
        let parts: Vec<Tensor> = (0..n)
            .step_by(CHUNK as usize)
            .map(|s| learner.codes(&x.narrow(0, s, CHUNK.min(n - s))))
            .collect();
        Tensor::cat(&parts, 0)
    })
}

fn val_mse(learner: &dyn Learner, x: &Tensor, rows: &Tensor) -> f64 {
    tch::no_grad(|| {
        let xv = x.index_select(0, rows);
        let y = learner.decode(&encode_all(learner, &xv));
        let n = xv.size()[0].max(1) as f64;
        (y - &xv).square().sum(Kind::Double).double_value(&[]) / n
    })
}

/// Trains `learner` (whose variables live in `vs`) with Adam on shuffled batches, keeps the
/// weights of the best validation error, then encodes every word and measures the pure-Rust
/// decode of the exported composer.
#[allow(clippy::too_many_arguments)]
pub(crate) fn fit(
    emb: &Embeddings,
    cfg: &TrainConfig,
    device: Device,
    split: &Split,
    vs: &nn::VarStore,
    learner: &dyn Learner,
    rng: &mut Rng,
    name: &str,
    progress: &mut (dyn Progress + Send),
    stage: &mut String,
) -> Result<Trained, TrainError> {
    let start = Instant::now();
    let d = emb.dim();
    let host = emb.matrix();
    *stage = name.to_string();
    let n_train = split.train.size()[0];
    let batch = (cfg.batch_size as i64).min(n_train).max(1);
    let steps_per_epoch = (n_train + batch - 1) / batch;
    progress.stage_start(name, cfg.epochs as u64 * steps_per_epoch as u64);
    let mut opt = nn::Adam::default()
        .build(vs, cfg.learning_rate)
        .map_err(|e| torch_err(name, e))?;
    let mut best = val_mse(learner, &split.x, &split.val);
    let mut best_weights = snapshot(vs);
    let mut since_best = 0;
    let mut words = 0f64;
    let mut train_secs = 0f64;
    let mut done = 0u64;
    for epoch in 0..cfg.epochs {
        if cfg
            .time_limit
            .is_some_and(|t| start.elapsed().as_secs_f64() >= t)
        {
            break;
        }
        let tau = cfg.tau_at(epoch, cfg.epochs);
        let t0 = Instant::now();
        let order = split
            .train
            .index_select(0, &rng.permutation(n_train as usize, device));
        let mut total = 0f64;
        for s in (0..n_train).step_by(batch as usize) {
            let rows = order.narrow(0, s, batch.min(n_train - s));
            let xb = split.x.index_select(0, &rows);
            let loss = learner.loss(&xb, tau, rng);
            opt.backward_step(&loss);
            let l = loss.double_value(&[]);
            total += l;
            done += 1;
            progress.tick(&Tick {
                done,
                loss: Some(l),
                ..Tick::default()
            });
        }
        let secs = t0.elapsed().as_secs_f64();
        words += n_train as f64;
        train_secs += secs;
        let v = val_mse(learner, &split.x, &split.val);
        let better = v < best;
        if better {
            best = v;
            best_weights = snapshot(vs);
            since_best = 0;
        } else {
            since_best += 1;
        }
        progress.epoch(&EpochRecord {
            stage: name.to_string(),
            epoch: epoch + 1,
            train_loss: Some(total / steps_per_epoch as f64),
            val_mse: v,
            best: better,
            judged_by: Criterion::HeldOut,
            tau: Some(tau),
            learning_rate: Some(cfg.learning_rate),
            samples_per_sec: n_train as f64 / secs.max(1e-9),
            elapsed_secs: start.elapsed().as_secs_f64(),
        });
        if since_best >= cfg.patience {
            break;
        }
    }
    restore(vs, &best_weights);

    *stage = "export".into();
    let codes = encode_all(learner, &split.x);
    let composer = learner.export()?;
    let codes = codes_to_host(codes, cfg.num_codes as u32, cfg.num_codebooks)?;
    let reference = NeighbourReference::new(host, d, NEIGHBOUR_SAMPLES, NEIGHBOURS, cfg.seed)?;
    let workers = tch::get_num_threads().max(1) as usize;
    let Scores {
        mse,
        mean_cosine,
        neighbour_overlap,
    } = final_scores(host, &reference, &composer, &codes, workers)?;
    let stage_report = StageReport {
        stage: name.to_string(),
        mse,
        mean_cosine,
        neighbour_overlap,
        seconds: start.elapsed().as_secs_f64(),
    };
    progress.stage_end(&stage_report);
    let report = TrainReport {
        device: device_name(device),
        threads: tch::get_num_threads().max(1) as usize,
        stages: vec![stage_report],
        mse,
        mean_cosine,
        neighbour_overlap,
        code_usage: eval::code_usage(&codes),
        samples_per_sec: if train_secs > 0.0 {
            words / train_secs
        } else {
            0.0
        },
        seconds: start.elapsed().as_secs_f64(),
    };
    Ok(Trained {
        codes,
        composer,
        report,
    })
}

/// Copies a trained tensor out of LibTorch as a pure-Rust tensor.
pub(crate) fn to_host(name: &str, t: &Tensor) -> Result<crate::composer::Tensor, TrainError> {
    let t = t
        .detach()
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous();
    let shape: Vec<usize> = t.size().iter().map(|&s| s as usize).collect();
    let data = Vec::<f32>::try_from(t.view(-1)).map_err(|e| torch_err("export", e))?;
    crate::composer::Tensor::new(shape, data).ok_or_else(|| TrainError::Torch {
        stage: "export".into(),
        message: format!("tensor {name} disagrees with its shape"),
    })
}

/// Runs `method` on `emb`; `kd` is the staged pipeline of [`super::pipeline`].
pub(crate) fn run(
    method: Method,
    emb: &Embeddings,
    cfg: &TrainConfig,
    device: Device,
    progress: &mut (dyn Progress + Send),
    stage: &mut String,
) -> Result<Trained, TrainError> {
    match method {
        Method::Dccl => dccl::train(emb, cfg, device, progress, stage),
        Method::DpqSx => dpq::train(emb, cfg, dpq::Variant::Softmax, device, progress, stage),
        Method::DpqVq => dpq::train(emb, cfg, dpq::Variant::Vq, device, progress, stage),
        Method::Kd => super::pipeline::run(emb, cfg, device, progress, stage),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use tch::Tensor;

    use super::Learner;
    use crate::composer::Composer;
    use crate::embeddings::Embeddings;
    use crate::vocab::Vocab;

    /// The exported composer of `learner` and the largest difference between its decode of the
    /// codes of `x` and LibTorch's.
    pub(crate) fn export_gap(learner: &dyn Learner, x: &Tensor) -> (Composer, f32) {
        let codes = learner.codes(x);
        let y = Vec::<f32>::try_from(learner.decode(&codes).contiguous().view(-1)).unwrap();
        let host: Vec<u16> = Vec::<i64>::try_from(codes.view(-1))
            .unwrap()
            .into_iter()
            .map(|c| c as u16)
            .collect();
        let composer = learner.export().unwrap();
        let mut out = vec![0f32; y.len()];
        composer.decode_batch(&host, &mut out);
        let worst = y
            .iter()
            .zip(&out)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        (composer, worst)
    }

    /// The first `rows` rows of the real GloVe 6B 50d fixture.
    pub(crate) fn glove(rows: usize) -> Embeddings {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/glove.6B.50d.head5k.txt"
        );
        let text = std::fs::read_to_string(path).expect("fixture is readable");
        let mut words = Vec::new();
        let mut data = Vec::new();
        for line in text.lines().take(rows) {
            let mut parts = line.split(' ');
            words.push(parts.next().expect("a word").to_string());
            data.extend(parts.map(|v| v.parse::<f32>().expect("a float")));
        }
        let dim = data.len() / words.len();
        Embeddings::new(Vocab::new(words).expect("unique words"), dim, data)
    }
}
