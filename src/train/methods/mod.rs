//! Code learners beside the default KD pipeline: DCCL (Shu & Nakayama 2018) and DPQ (Chen, Li &
//! Sun 2020, softmax and vector-quantization variants).
//!
//! Each method is a [`Learner`] of the one training loop and a [`Codec`]: discrete codes for a
//! batch, a decode of codes, and an export to the pure-Rust [`Composer`]. [`train`] runs the loop
//! and ends every method in the same [`Trained`], and thus the same `.kdz`.

pub mod dccl;
pub mod dpq;

use tch::{Device, Kind, Tensor, nn};

use super::learner::{self, Learner, Plan, Schedule};
use super::outcome::{conclude, torch_err};
use super::reporter::Reporter;
use super::training_set::TrainingSet;
use super::{TrainError, Trained};
use crate::composer::Composer;

/// Rows per chunk when encoding every word, bounding peak memory.
const CHUNK: i64 = 8192;

/// A method's discrete side: codes of vectors, vectors of codes, and the pure-Rust decoder.
pub(crate) trait Codec {
    /// Discrete codes `[B, D]` (int64) of a batch `[B, d]`, with no noise.
    fn codes(&self, x: &Tensor) -> Tensor;
    /// Vectors `[B, d]` of codes `[B, D]`.
    fn decode(&self, codes: &Tensor) -> Tensor;
    /// The pure-Rust decoder of the current weights.
    fn export(&self) -> Result<Composer, TrainError>;
}

/// The codes of every row of `x`, a chunk at a time.
fn encode_all(codec: &dyn Codec, x: &Tensor) -> Tensor {
    tch::no_grad(|| {
        let n = x.size()[0];
        let parts: Vec<Tensor> = (0..n)
            .step_by(CHUNK as usize)
            .map(|s| codec.codes(&x.narrow(0, s, CHUNK.min(n - s))))
            .collect();
        Tensor::cat(&parts, 0)
    })
}

/// Mean squared error per held-out word of decoding its codes: a codec's validation error.
pub(crate) fn held_out_mse(codec: &dyn Codec, set: &TrainingSet) -> f64 {
    tch::no_grad(|| {
        let xv = set.x.index_select(0, &set.val_rows);
        let y = codec.decode(&encode_all(codec, &xv));
        let n = xv.size()[0].max(1) as f64;
        (y - &xv).square().sum(Kind::Double).double_value(&[]) / n
    })
}

/// Trains `net` (whose variables live in `vs`) as stage `name` at the constant `--lr`, then
/// encodes every word and measures the pure-Rust decode of the exported composer.
pub(crate) fn train<N: Learner + Codec>(
    set: &TrainingSet,
    mut out: Reporter,
    vs: &nn::VarStore,
    net: &N,
    name: &str,
) -> Result<Trained, TrainError> {
    let cfg = set.cfg;
    *out.stage = name.to_string();
    let plan = Plan {
        stage: name,
        epochs: cfg.epochs,
        learning_rate: cfg.learning_rate,
        schedule: Schedule::Constant,
        min_epochs: 0,
    };
    learner::fit(set, &mut out, vs, net, plan)?;
    *out.stage = "export".into();
    let codes = encode_all(net, &set.x);
    let composer = net.export()?;
    let threads = tch::get_num_threads().max(1) as usize;
    conclude(set, out, composer, codes, threads, Some(name))
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

#[cfg(test)]
pub(crate) mod testing {
    use tch::Tensor;

    use super::Codec;
    use crate::composer::Composer;
    use crate::embeddings::Embeddings;
    use crate::vocab::Vocab;

    /// The exported composer of `codec` and the largest difference between its decode of the
    /// codes of `x` and LibTorch's.
    pub(crate) fn export_gap(codec: &dyn Codec, x: &Tensor) -> (Composer, f32) {
        let codes = codec.codes(x);
        let y = Vec::<f32>::try_from(codec.decode(&codes).contiguous().view(-1)).unwrap();
        let host: Vec<u16> = Vec::<i64>::try_from(codes.view(-1))
            .unwrap()
            .into_iter()
            .map(|c| c as u16)
            .collect();
        let composer = codec.export().unwrap();
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
