//! The trainer (feature `train`, LibTorch through tch, CPU or CUDA): learns codes and a composer
//! for a table of word vectors.
//!
//! The default pipeline (`Init::Rq`, `refine: true`) runs these stages, each measured on every
//! word and reported through [`crate::progress::Progress`]:
//!
//! 1. `rq`: residual k-means tables on a sample, every word encoded by beam search.
//! 2. `lsq`: with codes fixed, all tables refit jointly by least squares; words re-encoded by
//!    iterated conditional modes (ICM); repeated while the error over all words falls.
//! 3. `composer`: the composer (tables as code vectors, identity output map, and for `mlp` a
//!    tanh hidden layer whose output starts at zero) trained by Adam with the codes fixed.
//! 4. `refine`: every word re-encoded through the trained composer (ICM on its additive part,
//!    a word's new codes kept only where they decode closer), then the composer fine-tuned.
//!
//! `Init::Random` with `refine: false` is the paper's recipe: an encoder and the composer trained
//! end to end through the tempering softmax and the straight-through estimator, codes being the
//! encoder's argmax.
//!
//! Every method ([`Method`]) works on the same `training_set` (the words, one held-out split),
//! draws every random number from the run's one [`Rng`], trains by gradient through the one loop
//! of `learner`, and ends in the same report (`outcome`).
//!
//! ```no_run
//! use kdcompress::embeddings::Embeddings;
//! use kdcompress::progress::Silent;
//! use kdcompress::train::{train, TrainConfig};
//! # fn demo(embeddings: &Embeddings) -> Result<(), kdcompress::train::TrainError> {
//! let config = TrainConfig { num_codes: 16, num_codebooks: 8, ..TrainConfig::default() };
//! let trained = train(embeddings, &config, &mut Silent)?;
//! println!("mse {:.3}", trained.report.mse);
//! # Ok(()) }
//! ```
//!
//! The options ([`TrainConfig`] and its parts) live in [`crate::train_config`], which builds
//! without LibTorch; they are re-exported here.

pub mod allocator;
pub mod embedding_layer;
mod learner;
pub mod methods;
pub mod model;
mod outcome;
mod parallel;
mod pipeline;
pub mod quantize;
mod reporter;
mod rng;
mod training_set;

pub use rng::Rng;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use self::methods::{dccl, dpq};
use self::reporter::Reporter;
use self::training_set::TrainingSet;

pub use crate::method::Method;
pub use crate::train_config::{
    ConfigError, DeviceChoice, Init, ParseDeviceError, TauSchedule, TrainConfig, ValidConfig,
    WordWeight,
};

use crate::codes::{Codes, CodesError};
use crate::composer::Composer;
use crate::compressed::{Compressed, Metadata};
use crate::embeddings::Embeddings;
use crate::eval::{CodeUsage, EvalError};
use crate::progress::{Progress, StageReport};
use crate::vocab::Vocab;

/// Why training failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// An option is invalid.
    #[error("invalid training options")]
    Config(#[from] ConfigError),
    /// CUDA was asked for but LibTorch sees no CUDA device.
    #[error("--device {requested}: LibTorch sees no CUDA device (is this a CPU-only LibTorch?)")]
    NoCuda {
        /// The device asked for.
        requested: String,
    },
    /// The CUDA index is beyond the devices present.
    #[error("--device cuda:{index}: only {count} CUDA device(s) present")]
    NoSuchCuda {
        /// Index asked for.
        index: usize,
        /// Devices present.
        count: usize,
    },
    /// Too few words to hold some out and train on the rest.
    #[error("{words} word(s) is too few to train on: need at least {needed}")]
    TooFewWords {
        /// Words given.
        words: usize,
        /// Words needed.
        needed: usize,
    },
    /// An input vector holds NaN or infinity.
    #[error("the vector of row {row} holds a value that is not finite")]
    NotFinite {
        /// The row, from 0.
        row: usize,
    },
    /// The method cannot work on vectors of this shape.
    #[error("--method {method}: {reason}")]
    Method {
        /// The method.
        method: &'static str,
        /// Why not.
        reason: String,
    },
    /// LibTorch failed (out of memory, a CUDA error, ...).
    #[error("LibTorch failed during {stage}: {message}")]
    Torch {
        /// Stage that was running.
        stage: String,
        /// LibTorch's message.
        message: String,
    },
    /// The trained weights did not form a valid composer.
    #[error("cannot export the trained composer")]
    Export(#[from] model::ExportError),
    /// The codes did not form a valid code table.
    #[error("trained codes are invalid")]
    Codes(#[from] CodesError),
    /// Measuring failed.
    #[error("cannot measure the result")]
    Eval(#[from] EvalError),
}

/// What training produced, and how well it does.
#[derive(Debug, Clone)]
pub struct Trained {
    /// The codes of every word, in input row order.
    pub codes: Codes,
    /// The composer that decodes them.
    pub composer: Composer,
    /// Measurements.
    pub report: TrainReport,
}

/// Measurements of a finished training.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TrainReport {
    /// Device that trained, e.g. `cpu` or `cuda:0`.
    pub device: String,
    /// LibTorch intra-op threads.
    pub threads: usize,
    /// Quality after each stage.
    pub stages: Vec<StageReport>,
    /// Final mean squared error per word, decoding the discrete codes with the pure-Rust
    /// [`Composer`].
    pub mse: f64,
    /// Final mean cosine between decoded and original vectors.
    pub mean_cosine: f64,
    /// Final top-10 neighbour overlap of sampled words.
    pub neighbour_overlap: f64,
    /// How words spread over code rows.
    pub code_usage: CodeUsage,
    /// Words per second over the gradient-training epochs (0 if none ran).
    pub samples_per_sec: f64,
    /// Wall time of training, seconds.
    pub seconds: f64,
    /// The values the run used for options whose defaults depend on the input (given or
    /// defaulted), by option name without the dashes: e.g. `lsq_sample`, the most words the lsq
    /// rounds anneal at this run's D and K. Recorded in the `.kdz` metadata (`training.settled`)
    /// beside the options as given.
    pub settled: std::collections::BTreeMap<String, serde_json::Value>,
}

impl TrainReport {
    /// The final metrics by name, as stored in [`Metadata::metrics`].
    pub fn metrics(&self) -> std::collections::BTreeMap<String, f64> {
        [
            ("mse", self.mse),
            ("mean_cosine", self.mean_cosine),
            ("neighbour_overlap@10", self.neighbour_overlap),
            ("distinct_code_rows", self.code_usage.distinct_rows as f64),
            ("largest_code_group", self.code_usage.largest_group as f64),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

impl Trained {
    /// Joins the vocabulary the vectors came with and fills in `metadata`'s training fields
    /// (device, seconds, metrics); the caller provides source and options.
    pub fn into_compressed(self, vocab: Vocab, mut metadata: Metadata) -> Compressed {
        metadata.device = self.report.device.clone();
        metadata.train_seconds = self.report.seconds;
        metadata.metrics = self.report.metrics();
        Compressed {
            vocab,
            codes: self.codes,
            composer: self.composer,
            metadata,
            norms: None,
        }
    }
}

/// Resolves `choice` to a LibTorch device: `auto` is CUDA 0 when available. Touches CUDA, so
/// call it after validating the options.
pub fn resolve_device(choice: DeviceChoice) -> Result<tch::Device, TrainError> {
    match choice {
        DeviceChoice::Cpu => Ok(tch::Device::Cpu),
        DeviceChoice::Auto => Ok(tch::Device::cuda_if_available()),
        DeviceChoice::Cuda(index) => {
            if !tch::Cuda::is_available() {
                return Err(TrainError::NoCuda {
                    requested: choice.to_string(),
                });
            }
            let count = tch::Cuda::device_count().max(0) as usize;
            if index >= count {
                return Err(TrainError::NoSuchCuda { index, count });
            }
            Ok(tch::Device::Cuda(index))
        }
    }
}

/// Display name of a device: `cpu`, `cuda:N`.
pub fn device_name(device: tch::Device) -> String {
    match device {
        tch::Device::Cuda(n) => format!("cuda:{n}"),
        tch::Device::Mps => "mps".into(),
        tch::Device::Vulkan => "vulkan".into(),
        _ => "cpu".into(),
    }
}

/// Validated options and the device they resolved to: what a training needs before it sees
/// data.
#[derive(Debug)]
pub struct Trainer {
    config: ValidConfig,
    device: tch::Device,
}

impl Trainer {
    /// Resolves the device of `config` (touching CUDA).
    pub fn new(config: ValidConfig) -> Result<Self, TrainError> {
        let device = resolve_device(config.device)?;
        Ok(Trainer { config, device })
    }

    /// The options.
    pub fn config(&self) -> &ValidConfig {
        &self.config
    }

    /// The device that will train.
    pub fn device(&self) -> tch::Device {
        self.device
    }

    /// Display name of the device: `cpu`, `cuda:N`.
    pub fn device_name(&self) -> String {
        device_name(self.device)
    }

    /// Trains codes and a composer for `embeddings`; same seed, device and thread count give the
    /// same codes (without a time limit).
    pub fn train(
        &self,
        embeddings: &Embeddings,
        progress: &mut (dyn Progress + Send),
    ) -> Result<Trained, TrainError> {
        self.train_since(embeddings, progress, Instant::now())
    }

    /// [`Trainer::train`], with `--time-limit` counted from `started` (a command passes its own
    /// start, so that reading the input is inside the budget).
    pub fn train_since(
        &self,
        embeddings: &Embeddings,
        progress: &mut (dyn Progress + Send),
        started: Instant,
    ) -> Result<Trained, TrainError> {
        let config = &self.config;
        let n = embeddings.len();
        if n < 2 {
            return Err(TrainError::TooFewWords {
                words: n,
                needed: 2,
            });
        }
        if let Some(i) = embeddings.matrix().iter().position(|v| !v.is_finite()) {
            return Err(TrainError::NotFinite {
                row: i / embeddings.dim().max(1),
            });
        }
        // Whatever reading the input freed (its per-word strings, its buffers) goes back now
        // rather than sitting under the whole run.
        allocator::release_free_memory();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.threads.unwrap_or(0))
            .build()
            .map_err(|e| TrainError::Torch {
                stage: "setup".into(),
                message: format!("cannot start worker threads: {e}"),
            })?;
        let mut stage = String::from("setup");
        let start = started;
        // tch turns LibTorch exceptions (out of memory, CUDA failures) into panics; catch them
        // here so that a caller gets an error naming the stage instead of an abort.
        let result = pool.install(|| {
            catch_unwind(AssertUnwindSafe(|| {
                let set = TrainingSet::new(embeddings, config, self.device, start)?;
                let out = Reporter::new(progress, &mut stage, &set)?;
                match config.method {
                    Method::Kd => pipeline::run(&set, out),
                    Method::Dccl => dccl::train(&set, out),
                    Method::DpqSx => dpq::train(&set, out, dpq::Variant::Softmax),
                    Method::DpqVq => dpq::train(&set, out, dpq::Variant::Vq),
                }
            }))
        });
        match result {
            Ok(r) => r,
            Err(payload) => {
                let message = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown failure".into());
                Err(TrainError::Torch { stage, message })
            }
        }
    }
}

/// Trains codes and a composer for `embeddings`: validates `config` (refusing invalid options
/// before touching any device), resolves its device, then [`Trainer::train`].
pub fn train(
    embeddings: &Embeddings,
    config: &TrainConfig,
    progress: &mut (dyn Progress + Send),
) -> Result<Trained, TrainError> {
    Trainer::new(config.clone().validated()?)?.train(embeddings, progress)
}
