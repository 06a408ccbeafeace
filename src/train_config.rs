//! Training options and their validation, done before any data is read or any device touched.
//!
//! Built without LibTorch: the command line parses into these types directly, and a
//! [`ValidConfig`] carries the proof that [`TrainConfig::validate`] passed, so that the trainer
//! need not check again.

use std::fmt;
use std::str::FromStr;

use crate::codes::{MAX_D, MAX_K};
use crate::composer::{ComposerKind, conditioned_decode_macs};
use crate::method::Method;

/// Where the tensors live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub enum DeviceChoice {
    /// CUDA device 0 when LibTorch sees one, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA device N.
    Cuda(usize),
}

/// A `--device` value that is none of `auto`, `cpu`, `cuda`, `cuda:N`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid device {given:?}: expected auto, cpu, cuda or cuda:N")]
pub struct ParseDeviceError {
    /// What was given.
    pub given: String,
}

impl FromStr for DeviceChoice {
    type Err = ParseDeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseDeviceError {
            given: s.to_string(),
        };
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            _ => {
                let n = s.strip_prefix("cuda:").ok_or_else(err)?;
                // Digits only: `usize::from_str` would also take a leading `+`.
                if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(err());
                }
                n.parse().map(DeviceChoice::Cuda).map_err(|_| err())
            }
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// How the codes start (`--init`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    /// Residual k-means tables and beam-search codes (the strong default).
    #[default]
    Rq,
    /// Random weights, codes from the encoder (the paper's recipe).
    Random,
}

/// How much each word's squared error counts when the lsq stage fits its tables and judges its
/// rounds, and in the conditioned composer's loss and rounds (`--word-weight`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum WordWeight {
    /// Every word alike: the tables minimise the mean squared error.
    Uniform,
    /// Each word's squared error divided by its squared length (normalised to average 1; a
    /// vector shorter than a fifth of the root mean square length counts as that long): the
    /// tables fit short vectors' directions as closely as long ones', which is what cosine
    /// neighbours and similarities read.
    #[default]
    Relative,
}

/// How the softmax temperature changes over the epochs (`--tau-schedule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TauSchedule {
    /// Fixed at --tau.
    #[default]
    Constant,
    /// Linear from --tau to --tau-min.
    Linear,
    /// Geometric from --tau to --tau-min.
    Exponential,
}

/// Every training option. Build one, turn it into a [`ValidConfig`] with
/// [`TrainConfig::validated`] (or let `train` do that), then train.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TrainConfig {
    /// How codes are learned. Methods other than `kd` fix their own composer (`dccl`: sum of
    /// code vectors; `dpq-*`: the `split` composer's balanced slices) and ignore `composer`,
    /// `init`, `refine` and the search options.
    pub method: Method,
    /// Weight β of DPQ-VQ's commitment loss.
    pub commitment: f64,
    /// Codes per position (K).
    pub num_codes: usize,
    /// Positions per word (D).
    pub num_codebooks: usize,
    /// How code vectors become a word vector.
    pub composer: ComposerKind,
    /// Width of a code vector (d'); `None`: the input width.
    pub code_dim: Option<usize>,
    /// Hidden width of the mlp and lstm composers and of the encoder.
    pub hidden: usize,
    /// Hidden width of the conditioned composer's step network (shared by the D steps); `None`:
    /// [`TrainConfig::step_hidden_for`].
    pub step_hidden: Option<usize>,
    /// Beam width of the search through the conditioned composer.
    pub step_beam: usize,
    /// Codes per beam entry and step that the search decodes through the conditioned composer,
    /// preselected as the nearest by plain distance to what the entry leaves unexplained.
    pub step_candidates: usize,
    /// Re-encode every training batch through the conditioned composer before its step
    /// (QINCo's training) instead of only between rounds.
    pub step_search_batches: bool,
    /// How codes start.
    pub init: Init,
    /// Alternate table fitting and re-encoding, and re-encode through the trained composer.
    pub refine: bool,
    /// Beam width of the initial encoding; `None`: as wide as [`TrainConfig::auto_beam`] allows.
    pub beam: Option<usize>,
    /// Beam width while the rq tables are learned: table i is k-means of what the `train_beam`
    /// best partial encodings of each sampled word leave unexplained.
    pub train_beam: usize,
    /// Most rounds of least-squares table fitting and re-encoding; `None`:
    /// [`TrainConfig::lsq_rounds_for`] the input's size, D and K.
    pub lsq_rounds: Option<usize>,
    /// Perturbation trials per word when the lsq stage re-encodes (LSQ++'s iterated local
    /// search); 0: ICM alone; `None`: [`TrainConfig::lsq_trials_for`] D.
    pub lsq_trials: Option<usize>,
    /// Beam width of the second search of each lsq round: every word is also encoded by beam
    /// search under the round's tables and keeps the closer codes; 0: local search alone;
    /// `None`: [`LSQ_BEAM`].
    pub lsq_beam: Option<usize>,
    /// Exponent of the decay of the noise on the tables in the annealed lsq rounds (LSQ++'s
    /// stochastic relaxation); 0: plain rounds while the error falls.
    pub lsq_anneal: f64,
    /// Most words the lsq rounds anneal over all their rounds: a larger input gets plain rounds
    /// (with the perturbation trials), since annealing needs every round over every word;
    /// `None`: as many as [`TrainConfig::lsq_anneal_words`] allows at the run's D and K, and a
    /// larger input fewer annealed rounds ([`TrainConfig::lsq_annealed_rounds`]).
    pub lsq_sample: Option<usize>,
    /// How much each word's error counts in the lsq stage's table fits and rounds and in the
    /// conditioned composer's training.
    pub word_weight: WordWeight,
    /// Most rounds of re-encoding through the trained composer; `None`: 2, and for the
    /// conditioned composer [`TrainConfig::step_rounds_for`].
    pub refine_rounds: Option<usize>,
    /// Words per optimiser step.
    pub batch_size: usize,
    /// Adam learning rate.
    pub learning_rate: f64,
    /// Most epochs of gradient training (end-to-end, or composer with fixed codes).
    pub epochs: usize,
    /// Epochs of the conditioned composer's network on the fixed codes; `None`:
    /// [`TrainConfig::step_epochs_for`].
    pub step_epochs: Option<usize>,
    /// Epochs without a better validation error before stopping.
    pub patience: usize,
    /// Softmax temperature of the relaxed codes.
    pub tau: f64,
    /// Temperature schedule.
    pub tau_schedule: TauSchedule,
    /// Final temperature of a decaying schedule.
    pub tau_min: f64,
    /// Weight of the mean entropy of the relaxed codes in the loss.
    pub entropy_weight: f64,
    /// Train an encoder on the fixed codes (cross-entropy to them plus reconstruction through the
    /// straight-through codes) and let it propose codes when re-encoding.
    pub distill: bool,
    /// Share of words held out for validation, when the run holds any out
    /// ([`TrainConfig::holds_out_words`]).
    pub val_fraction: f64,
    /// Seed of every random choice.
    pub seed: u64,
    /// Where to train.
    pub device: DeviceChoice,
    /// Worker threads for the search stages and the measurements; `None`: one per core. On the
    /// CPU LibTorch itself runs single-threaded (its spinning pool wastes shared cores).
    pub threads: Option<usize>,
    /// A budget in seconds, counted from the start the trainer is given
    /// (`Trainer::train_since`): rounds and epochs start only when one as long as the last
    /// ends within it, less the run's closing measurements (makes the result depend on the
    /// machine's speed); `None`: no limit.
    pub time_limit: Option<f64>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            method: Method::Kd,
            commitment: 0.25,
            num_codes: 32,
            num_codebooks: 32,
            composer: ComposerKind::Linear,
            code_dim: None,
            hidden: 300,
            step_hidden: None,
            step_beam: 5,
            step_candidates: 16,
            step_search_batches: false,
            init: Init::Rq,
            refine: true,
            beam: None,
            train_beam: 5,
            lsq_rounds: None,
            lsq_trials: None,
            lsq_beam: None,
            lsq_anneal: 0.5,
            lsq_sample: None,
            word_weight: WordWeight::Relative,
            refine_rounds: None,
            batch_size: 512,
            learning_rate: 1e-3,
            epochs: 20,
            step_epochs: None,
            patience: 3,
            tau: 1.0,
            tau_schedule: TauSchedule::Constant,
            tau_min: 0.1,
            entropy_weight: 0.0,
            distill: false,
            val_fraction: 0.02,
            seed: 42,
            device: DeviceChoice::Auto,
            threads: None,
            time_limit: None,
        }
    }
}

/// An option out of range, or options that do not go together.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A number outside its allowed range.
    #[error("{option} must be {allowed}, got {value}")]
    OutOfRange {
        /// The option, as spelled on the command line.
        option: &'static str,
        /// What is allowed.
        allowed: &'static str,
        /// What was given.
        value: String,
    },
    /// Options that contradict each other.
    #[error("{reason}")]
    Conflict {
        /// What contradicts what.
        reason: String,
    },
    /// Tensors would be too large to allocate.
    #[error("the model would be too large: {what}")]
    TooLarge {
        /// Which size.
        what: String,
    },
}

fn range<T: PartialOrd + fmt::Display>(
    option: &'static str,
    allowed: &'static str,
    value: T,
    ok: bool,
) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange {
            option,
            allowed,
            value: value.to_string(),
        })
    }
}

/// Optimiser steps the conditioned composer's network takes on the fixed codes by default (at
/// least [`STEP_EPOCHS_LEAST`] epochs). GloVe's 20k head at K=256 D=8 (lsq 1.3892,
/// `--refine-rounds 0`, h = 256, `--lr 3e-3`): 60 epochs (2,340 steps) 1.2727, 150 epochs
/// 1.2537; h = 64 at 1e-3: 20 epochs 1.3768, 60 1.3667. All 400,000 GloVe words (h = 208): 4
/// epochs (3,128 steps) 2.5756 -> 2.5366, each still gaining 0.4%.
pub const STEP_UPDATES: usize = 3000;
/// Fewest epochs of the conditioned composer's network on the fixed codes by default. On large
/// inputs, where [`STEP_UPDATES`] steps are a few epochs, the gain comes as the learning rate
/// cools, so more epochs buy little for their time: all 400,000 GloVe words at K=256 D=20
/// (`--composer conditioned --threads 2`, defaults otherwise), 20 epochs (12 s each): network
/// 0.2195 -> 0.2152, after the two search rounds 0.2137 / nn@10 0.7840, the stage 599 s of the
/// run's 1151; 8 epochs: 0.2153, then 0.2141 / 0.7838, 386 s of about 930.
pub const STEP_EPOCHS_LEAST: usize = 8;
/// Most weight of the conditioned composer's network, as a share of its codes and tables.
pub const STEP_WEIGHT_SHARE: f64 = 0.2;
/// Most multiply-adds a word's conditioned decode may cost by default: about 10 µs a word on
/// one core here, so 200,000 words a second on two.
pub const STEP_DECODE_MACS: usize = 1 << 17;

/// Rounds of re-encoding through the trained composer unless `--refine-rounds` says.
pub const REFINE_ROUNDS: usize = 2;
/// Most multiply-adds of the output layer that one round of the search through the conditioned
/// composer may cost for [`REFINE_ROUNDS`] rounds by default (words × D × beam × candidates ×
/// h × d); a larger input gets one round. All 400,000 GloVe words at K=256 D=20 (h = 112,
/// 3.6·10¹²: `--composer conditioned --threads 2`, quiet, on a machine where faiss RQ beam 5
/// took 90 s for them): rq 65 s, lsq 720 s, the network on the fixed codes 0.1799 -> 0.1770
/// (weighted error) in about 110 s, then round 1 (a search of 235 s) 0.1767 and round 2 (a
/// fine-tune and a search of 290 s) 0.1763, 1478 s in all. The second round buys 0.2% for a
/// fifth of the run. Under it: the mpnet table at D=20 (3.0·10¹²) and all 400,000 GloVe words
/// at D=8 (2.7·10¹²).
pub const STEP_SEARCH_WORK: usize = 3 << 40;

/// Most words × D × K one annealed lsq round may cover by default: a round searches each word's
/// D positions among K codes, by the beam and by ICM (all 400,000 GloVe words at K=256 D=8,
/// 0.76·2^30: 9 s a round on the 2 cores here, so the 25 rounds take under 4 minutes). Above it
/// the rounds are plain, ending once they gain little. Annealing all 400,000 GloVe words at
/// K=256 D=8: lsq 2.5775 / nn@10 0.3120 (4 plain rounds, 37 s) -> 2.4952 / 0.3260 (25 rounds,
/// 225 s); 12 annealed rounds 2.5335.
pub const ANNEAL_WORK: usize = 1 << 30;
/// Fewer codes per table than this do not earn a larger annealing allowance: their rounds are
/// cheaper, but on large inputs the annealing gains little there. All 400,000 GloVe words at
/// K=32 D=12: 25 annealed rounds (5 s each) reach 3.2660 / nn@10 0.2478, two plain rounds
/// 3.2703 / 0.2577 (the rq stage: 3.4239).
pub const ANNEAL_LEAST_CODES: usize = 256;

/// Fewest annealed rounds an input over [`TrainConfig::lsq_anneal_words`] may get (see
/// [`TrainConfig::lsq_annealed_rounds`]): the fewest measured to beat the plain rounds (all
/// 400,000 GloVe words at K=256 D=20); fewer are untried, so such inputs keep plain rounds.
pub const ANNEAL_LEAST_ROUNDS: usize = 12;

/// Fewest lsq rounds at K of at least [`ANNEAL_LEAST_CODES`], unless `--lsq-rounds` says.
pub const LSQ_ROUNDS: usize = 25;
/// Most lsq rounds by default: small inputs, whose rounds are cheap, anneal for longer (see
/// [`TrainConfig::lsq_rounds_for`]).
pub const LSQ_MOST_ROUNDS: usize = 100;
/// Work, words × D × max(K, 256), that all the default lsq rounds together may cover: a quarter
/// of [`LSQ_ROUNDS`] rounds at [`ANNEAL_WORK`], so inputs near the annealing's limit keep their
/// 25 rounds (all 400,000 GloVe words at K=256 D=8: a third of it per round).
pub const LSQ_ROUNDS_WORK: usize = LSQ_ROUNDS * (ANNEAL_WORK / 4);

/// Width of the lsq rounds' beam search, unless `--lsq-beam` says.
pub const LSQ_BEAM: usize = 16;

/// Multiply-adds the automatic beam width may spend on the initial encoding.
const BEAM_BUDGET: f64 = 8.0e11;

/// Most floats any one parameter tensor may hold (4 GiB of f32).
const MAX_TENSOR_FLOATS: usize = 1 << 30;

/// A [`TrainConfig`] whose options passed [`TrainConfig::validate`]; only
/// [`TrainConfig::validated`] makes one, so whoever holds it need not check again.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(transparent)]
pub struct ValidConfig(TrainConfig);

impl std::ops::Deref for ValidConfig {
    type Target = TrainConfig;

    fn deref(&self) -> &TrainConfig {
        &self.0
    }
}

impl TrainConfig {
    /// Validates the options and keeps the proof.
    pub fn validated(self) -> Result<ValidConfig, ConfigError> {
        self.validate()?;
        Ok(ValidConfig(self))
    }

    /// Checks every option; cheap, reads no data, touches no device.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let k = self.num_codes;
        let d = self.num_codebooks;
        range("-K", "in 2..=65536", k, (2..=MAX_K as usize).contains(&k))?;
        range("-D", "in 1..=1024", d, (1..=MAX_D).contains(&d))?;
        if self.method == Method::Kd && self.composer.is_assembled() {
            return Err(ConfigError::Conflict {
                reason: format!(
                    "the trainer learns linear, mlp, lstm and conditioned composers, not {} \
                     (split is what --method dpq-sx and dpq-vq learn)",
                    self.composer.name()
                ),
            });
        }
        if self.method != Method::Kd && self.code_dim.is_some() {
            return Err(ConfigError::Conflict {
                reason: format!(
                    "--method {} fixes the code vector width (dccl: d, dpq: ceil(d / D)): \
                     --code-dim does not apply",
                    self.method
                ),
            });
        }
        let beta = self.commitment;
        range(
            "--commitment",
            "a finite number in [0, 1000]",
            beta,
            beta.is_finite() && (0.0..=1000.0).contains(&beta),
        )?;
        if self.method != Method::Kd && self.epochs == 0 {
            return Err(ConfigError::Conflict {
                reason: format!(
                    "--method {} learns its codes by training: --epochs must be at least 1",
                    self.method
                ),
            });
        }
        if let Some(e) = self.code_dim {
            range("--code-dim", "in 1..=65536", e, (1..=65_536).contains(&e))?;
        }
        range(
            "--hidden",
            "in 1..=65536",
            self.hidden,
            (1..=65_536).contains(&self.hidden),
        )?;
        if let Some(b) = self.beam {
            range("--beam", "in 1..=1024", b, (1..=1024).contains(&b))?;
        }
        range(
            "--train-beam",
            "in 1..=64",
            self.train_beam,
            (1..=64).contains(&self.train_beam),
        )?;
        if let Some(h) = self.step_hidden {
            range(
                "--step-hidden",
                "in 1..=65536",
                h,
                (1..=65_536).contains(&h),
            )?;
        }
        if let Some(e) = self.step_epochs {
            range("--epochs", "at most 100000", e, e <= 100_000)?;
        }
        range(
            "--step-beam",
            "in 1..=1024",
            self.step_beam,
            (1..=1024).contains(&self.step_beam),
        )?;
        range(
            "--step-candidates",
            "in 1..=65536",
            self.step_candidates,
            (1..=65_536).contains(&self.step_candidates),
        )?;
        if self.method == Method::Kd && self.composer == ComposerKind::Conditioned {
            let conflict = if self.init == Init::Random {
                Some("--init random: the conditioned composer starts from the additive tables")
            } else if self.code_dim.is_some() {
                Some("--code-dim: the conditioned composer adds code vectors in the input's width")
            } else if self.distill {
                Some("--distill: codes are found by searching through the composer itself")
            } else {
                None
            };
            if let Some(what) = conflict {
                return Err(ConfigError::Conflict {
                    reason: format!("--composer conditioned does not take {what}"),
                });
            }
        }
        range(
            "--lsq-rounds",
            "at most 1000",
            self.lsq_rounds.unwrap_or(0),
            self.lsq_rounds.is_none_or(|r| r <= 1000),
        )?;
        range(
            "--lsq-trials",
            "at most 1000",
            self.lsq_trials.unwrap_or(0),
            self.lsq_trials.is_none_or(|t| t <= 1000),
        )?;
        range(
            "--lsq-beam",
            "at most 256",
            self.lsq_beam.unwrap_or(0),
            self.lsq_beam.is_none_or(|b| b <= 256),
        )?;
        range(
            "--lsq-sample",
            "at least 1",
            self.lsq_sample.unwrap_or(1),
            self.lsq_sample.is_none_or(|n| n >= 1),
        )?;
        range(
            "--lsq-anneal",
            "in 0..=100",
            self.lsq_anneal,
            (0.0..=100.0).contains(&self.lsq_anneal),
        )?;
        range(
            "--refine-rounds",
            "at most 1000",
            self.refine_rounds.unwrap_or(0),
            self.refine_rounds.is_none_or(|r| r <= 1000),
        )?;
        range(
            "--batch-size",
            "in 1..=1048576",
            self.batch_size,
            (1..=1 << 20).contains(&self.batch_size),
        )?;
        let lr = self.learning_rate;
        range(
            "--lr",
            "a finite number in (0, 10]",
            lr,
            lr.is_finite() && lr > 0.0 && lr <= 10.0,
        )?;
        range(
            "--epochs",
            "at most 100000",
            self.epochs,
            self.epochs <= 100_000,
        )?;
        if self.init == Init::Random && self.epochs == 0 {
            return Err(ConfigError::Conflict {
                reason: "--init random learns its codes by training: --epochs must be at least 1"
                    .into(),
            });
        }
        range(
            "--patience",
            "at least 1",
            self.patience,
            self.patience >= 1,
        )?;
        let tau = self.tau;
        range(
            "--tau",
            "a finite number in (0, 1000]",
            tau,
            tau.is_finite() && tau > 0.0 && tau <= 1000.0,
        )?;
        let tmin = self.tau_min;
        range(
            "--tau-min",
            "a finite positive number",
            tmin,
            tmin.is_finite() && tmin > 0.0,
        )?;
        if self.tau_schedule != TauSchedule::Constant && tmin > tau {
            return Err(ConfigError::Conflict {
                reason: format!("--tau-min {tmin} is above --tau {tau}: a schedule only decays"),
            });
        }
        let ew = self.entropy_weight;
        range(
            "--entropy-weight",
            "a finite number in [0, 1000]",
            ew,
            ew.is_finite() && (0.0..=1000.0).contains(&ew),
        )?;
        let vf = self.val_fraction;
        range(
            "--val-fraction",
            "in (0, 0.5]",
            vf,
            vf.is_finite() && vf > 0.0 && vf <= 0.5,
        )?;
        if let Some(t) = self.threads {
            range("--threads", "in 1..=1024", t, (1..=1024).contains(&t))?;
        }
        if let Some(t) = self.time_limit {
            range(
                "--time-limit",
                "a positive number of seconds",
                t,
                t.is_finite() && t > 0.0,
            )?;
        }
        if let DeviceChoice::Cuda(n) = self.device {
            range("--device cuda:N", "at most 1023", n, n < 1024)?;
        }
        let code_dim = self.code_dim.unwrap_or(1);
        let sizes = [
            ("codebooks D*K*d'", [d, k, code_dim]),
            ("encoder output hidden*D*K", [self.hidden, d, k]),
            (
                "lstm weights 4*hidden*hidden",
                [4, self.hidden, self.hidden],
            ),
            ("batch logits batch*D*K", [self.batch_size, d, k]),
        ];
        for (what, dims) in sizes {
            let n = dims.iter().try_fold(1usize, |a, &b| a.checked_mul(b));
            if n.is_none_or(|n| n > MAX_TENSOR_FLOATS) {
                return Err(ConfigError::TooLarge {
                    what: format!(
                        "{what} = {} floats (at most {MAX_TENSOR_FLOATS})",
                        dims.iter()
                            .map(|v| v.to_string())
                            .collect::<Vec<_>>()
                            .join("*")
                    ),
                });
            }
        }
        Ok(())
    }

    /// The beam width to use for `n` words of width `dim`: the one given, else the widest power
    /// of two from 8 to 64 whose search stays within a fixed amount of arithmetic. Wider beams
    /// find better codes at a cost linear in the width (docs/benchmarks.md); the budget keeps the
    /// full 400k GloVe at K=32 D=32 to a few minutes on two cores. Depends only on sizes, never on
    /// the clock, so results stay reproducible.
    pub fn auto_beam(&self, n: usize, dim: usize) -> usize {
        if let Some(b) = self.beam {
            return b;
        }
        let (k, d) = (self.num_codes as f64, self.num_codebooks as f64);
        let per_width = n.max(1) as f64 * d * (k * dim as f64 + 4.0 * (k + dim as f64));
        let fit = BEAM_BUDGET / per_width;
        let mut b = 8;
        while b < 64 && (2 * b) as f64 <= fit {
            b *= 2;
        }
        b
    }

    /// Perturbation trials per word of the lsq search at D positions: `--lsq-trials`, or
    /// ⌈0.6·D⌉ within 8..=12. Each trial changes two positions (one below D = 8); at larger D a
    /// trial covers less of the word, so more are run. Measured on the first 20,000 GloVe words,
    /// `--seed 1` (lsq stage: mse, seconds): D=20 four positions and 8 trials 0.0771 in 32.4 s,
    /// two and 8 0.0775 in 21.1 s, two and 12 0.0770 in 25.1 s; D=32 0.005297 in 40.3 s,
    /// 0.005326 in 24.9 s, 0.005304 in 27.1 s; D=8 (two positions) 8 trials 1.4662 in 5.6 s, 12
    /// trials 1.4569 in 7.0 s. mpnet's first 8,000 words at D=20: four and 8 0.83657 in 12.8 s,
    /// two and 12 0.83682 in 11.9 s.
    pub fn lsq_trials_for(&self, num_codebooks: usize) -> usize {
        self.lsq_trials
            .unwrap_or_else(|| (num_codebooks * 3).div_ceil(5).clamp(8, 12))
    }

    /// Epochs of the conditioned composer's network on the fixed codes of `n_train` words:
    /// `step_epochs`, or enough for about [`STEP_UPDATES`] optimiser steps, within
    /// [`STEP_EPOCHS_LEAST`]..=100 (GloVe's 20k head: 79 epochs; all 400,000 words: 8).
    pub fn step_epochs_for(&self, n_train: usize) -> usize {
        self.step_epochs.unwrap_or_else(|| {
            (STEP_UPDATES * self.batch_size)
                .div_ceil(n_train.max(1))
                .clamp(STEP_EPOCHS_LEAST, 100)
        })
    }

    /// Hidden width of the conditioned composer's step network for `n` words of `d` dimensions:
    /// `step_hidden`, or the widest multiple of 16 (at least 16, at most 1024) whose weights, in
    /// f16, are at most [`STEP_WEIGHT_SHARE`] of the codes and f16 tables they work with (so the
    /// file grows by at most that share), and whose decode costs at most [`STEP_DECODE_MACS`]
    /// multiply-adds a word (see [`conditioned_decode_macs`]).
    pub fn step_hidden_for(&self, n: usize, d: usize) -> usize {
        if let Some(h) = self.step_hidden {
            return h;
        }
        let (k, dd) = (self.num_codes, self.num_codebooks);
        let bits = crate::codes::bits_per_code(k as u32) as usize;
        let code_bytes = (n * dd * bits) as f64 / 8.0;
        let table_bytes = (2 * dd * k * d) as f64;
        let per_unit = (2 * (3 * d + dd)) as f64;
        let size_cap = STEP_WEIGHT_SHARE * (code_bytes + table_bytes) / per_unit;
        let mut h = 16;
        while h + 16 <= 1024
            && (h + 16) as f64 <= size_cap
            && conditioned_decode_macs(h + 16, d, dd) <= STEP_DECODE_MACS
        {
            h += 16;
        }
        h
    }

    /// Whether least squares leaves the best linear composer for its codes, so that nothing is
    /// trained after it: the kd pipeline from the rq tables with its lsq rounds, a linear
    /// composer and no encoder.
    pub fn lsq_ends_linear(&self) -> bool {
        self.method == Method::Kd
            && self.init == Init::Rq
            && self.runs_lsq()
            && self.composer == ComposerKind::Linear
            && !self.distill
    }

    /// Whether the run weighs words' errors (`--word-weight relative`): only the kd pipeline
    /// from the rq tables does, in its lsq stage and its conditioned composer.
    pub fn weighs_words(&self) -> bool {
        self.word_weight == WordWeight::Relative
            && self.method == Method::Kd
            && self.init == Init::Rq
            && (self.runs_lsq() || self.composer == ComposerKind::Conditioned)
    }

    /// Whether `val_fraction` of the words are held out of the fits to judge gradient training
    /// by (the mlp composer, the paper's recipe, distilling, dpq, dccl). The stages of the
    /// default pipeline and of the conditioned composer are judged by the error over all words,
    /// the words being compressed, so they fit every word and hold none out: on GloVe's 20k
    /// head at K=256 D=8 (`--seed 1`), holding out 2% left 1.3892 where 0.1% left 1.3826.
    pub fn holds_out_words(&self) -> bool {
        let all_words = self.method == Method::Kd
            && self.init == Init::Rq
            && !self.distill
            && (self.composer == ComposerKind::Conditioned || self.lsq_ends_linear());
        !all_words
    }

    /// Most words the lsq rounds anneal at D = `num_codebooks`, K = `num_codes`: `--lsq-sample`,
    /// or as many as keep one round's work, words × D × max(K, 256), within [`ANNEAL_WORK`]
    /// (524,288 words at D = 8, 209,715 at D = 20, 131,072 at D = 32; at K=1024 a quarter).
    pub fn lsq_anneal_words(&self, num_codebooks: usize, num_codes: usize) -> usize {
        self.lsq_sample.unwrap_or_else(|| {
            ANNEAL_WORK / (num_codebooks.max(1) * num_codes.max(ANNEAL_LEAST_CODES))
        })
    }

    /// Annealed lsq rounds for `n` words at D = `num_codebooks`, K = `num_codes`, or `None` for
    /// plain rounds (`--lsq-anneal 0`, or a single round). Within
    /// [`TrainConfig::lsq_anneal_words`], all of [`TrainConfig::lsq_rounds_for`]. Above it, by
    /// default and at K of at least [`ANNEAL_LEAST_CODES`], as many as cover the work of those
    /// rounds over that many words, when that is at least [`ANNEAL_LEAST_ROUNDS`] (all 400,000
    /// GloVe words at K=256 D=20: 13; at D=32: 8, so plain). All 400,000 GloVe words at K=256
    /// D=20 (`--threads 2`, beside other runs; weighted error over all words, MSE / nn@10 on the
    /// bench's sample): 15 plain rounds until they gained little 0.17994, 0.2289 / 0.7893; 12
    /// annealed rounds (`--lsq-sample 1000000 --lsq-rounds 12`) 0.17661, 0.2251 / 0.7914, in
    /// 1439 s of lsq against the plain rounds' 1643 s (both beside two other runs); 25 annealed
    /// rounds 0.17154, 0.2171 / 0.7913, in about twice the plain rounds' time. Quiet, the
    /// default's 13 rounds: 0.17604, 0.2242 / 0.7892, 697 s of lsq against the plain rounds'
    /// 424 s (an annealed round keeps the beam search the plain rounds drop). At K=32 the
    /// annealing of large inputs gains little (see [`ANNEAL_LEAST_CODES`]). Before the
    /// conditioned composer, plain rounds: its own stages need the time (the same input with
    /// `--composer conditioned` and the 13 annealed rounds took 1330 s, over issue 14's 20
    /// minutes, and ended at 0.2180 / 0.7889, under the additive nn@10; with plain rounds 851 s,
    /// 0.2220 / 0.7897).
    pub fn lsq_annealed_rounds(
        &self,
        n: usize,
        num_codebooks: usize,
        num_codes: usize,
    ) -> Option<usize> {
        let rounds = self.lsq_rounds_for(n, num_codebooks, num_codes);
        if self.lsq_anneal <= 0.0 || rounds <= 1 {
            return None;
        }
        let most = self.lsq_anneal_words(num_codebooks, num_codes);
        if n <= most {
            return Some(rounds);
        }
        let given = self.lsq_sample.is_some() || self.lsq_rounds.is_some();
        if given || num_codes < ANNEAL_LEAST_CODES || self.composer == ComposerKind::Conditioned {
            return None;
        }
        let fit = rounds.saturating_mul(most) / n.max(1);
        (fit >= ANNEAL_LEAST_ROUNDS).then_some(fit)
    }

    /// Whether the rq start goes on to the lsq stage: refinement on and rounds not set to 0.
    pub fn runs_lsq(&self) -> bool {
        self.refine && self.lsq_rounds != Some(0)
    }

    /// Most lsq rounds for `n` words at D = `num_codebooks`, K = `num_codes`: `--lsq-rounds`, or
    /// as many as keep words × D × max(K, 256) × rounds within [`LSQ_ROUNDS_WORK`], at most
    /// [`LSQ_MOST_ROUNDS`] and at least [`LSQ_ROUNDS`] (faiss's LocalSearchQuantizer trains for
    /// 25), twice that below [`ANNEAL_LEAST_CODES`] codes, whose rounds cost a fraction as much
    /// and whose annealing starts louder against the rq codes. Annealing cools more slowly over
    /// more rounds and ends lower: the error falls about evenly while the noise cools, most in
    /// the last rounds. GloVe's 20k head at K=256 D=8: 25 rounds 1.3860 / nn@10 0.6668, 50
    /// 1.3484 / 0.6638, 100 1.3184 / 0.6743 (ended at the 83rd); the mpnet table at K=256 D=8:
    /// 25 rounds 3.2603 / 0.3911, 50 3.2254 / 0.3974, 100 3.1903 / 0.4131; at K=32 D=12: 25
    /// rounds 4.0917 / 0.2948 (the lsq stage 40 s on 2 cores), 50 4.0603 / 0.3117, 100 4.0335 /
    /// 0.3187 (50 and 100 rounds: `--threads 1`, nn@10 on the CLI's sample; 25 rounds: the
    /// earlier default's runs on 2 threads, the first two on the bench's sample).
    pub fn lsq_rounds_for(&self, n: usize, num_codebooks: usize, num_codes: usize) -> usize {
        self.lsq_rounds.unwrap_or_else(|| {
            let least = if num_codes >= ANNEAL_LEAST_CODES {
                LSQ_ROUNDS
            } else {
                2 * LSQ_ROUNDS
            };
            let round = n
                .max(1)
                .saturating_mul(num_codebooks.max(1))
                .saturating_mul(num_codes.max(ANNEAL_LEAST_CODES));
            (LSQ_ROUNDS_WORK / round).clamp(least, LSQ_MOST_ROUNDS)
        })
    }

    /// Most rounds of re-encoding through the trained composer: `--refine-rounds`, or
    /// [`REFINE_ROUNDS`].
    pub fn refine_rounds_or_default(&self) -> usize {
        self.refine_rounds.unwrap_or(REFINE_ROUNDS)
    }

    /// Rounds of the search through the conditioned composer (hidden width `h`) over `n` words
    /// of `d` dimensions: `--refine-rounds`, or [`REFINE_ROUNDS`] while one round's output-layer
    /// work (the candidates are at most K) is at most [`STEP_SEARCH_WORK`], else 1.
    pub fn step_rounds_for(&self, n: usize, d: usize, h: usize) -> usize {
        self.refine_rounds.unwrap_or_else(|| {
            let work = [
                self.num_codebooks,
                self.step_beam,
                self.step_candidates.min(self.num_codes),
                h,
                d,
            ]
            .iter()
            .fold(n, |w, &f| w.saturating_mul(f));
            if work > STEP_SEARCH_WORK {
                1
            } else {
                REFINE_ROUNDS
            }
        })
    }

    /// Beam width of the lsq rounds' second search: `--lsq-beam`, or [`LSQ_BEAM`].
    pub fn lsq_beam_width(&self) -> usize {
        self.lsq_beam.unwrap_or(LSQ_BEAM)
    }

    /// The temperature for `epoch` (from 0) out of `epochs`.
    pub fn tau_at(&self, epoch: usize, epochs: usize) -> f64 {
        let steps = epochs.saturating_sub(1).max(1) as f64;
        let t = (epoch as f64 / steps).min(1.0);
        match self.tau_schedule {
            TauSchedule::Constant => self.tau,
            TauSchedule::Linear => self.tau + (self.tau_min - self.tau) * t,
            TauSchedule::Exponential => self.tau * (self.tau_min / self.tau).powf(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        TrainConfig::default().validate().unwrap();
    }

    #[test]
    fn device_parses_and_prints() {
        for s in ["auto", "cpu", "cuda:0", "cuda:3"] {
            assert_eq!(s.parse::<DeviceChoice>().unwrap().to_string(), s);
        }
        assert_eq!("cuda".parse(), Ok(DeviceChoice::Cuda(0)));
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:+1", "CPU", "cuda:-1"] {
            assert!(bad.parse::<DeviceChoice>().is_err(), "{bad}");
        }
    }

    #[test]
    fn each_bad_option_names_itself() {
        type Break = Box<dyn Fn(&mut TrainConfig)>;
        let cases: Vec<(&str, Break)> = vec![
            ("-K", Box::new(|c| c.num_codes = 1)),
            ("-K", Box::new(|c| c.num_codes = 70_000)),
            ("-D", Box::new(|c| c.num_codebooks = 0)),
            ("--code-dim", Box::new(|c| c.code_dim = Some(0))),
            ("--hidden", Box::new(|c| c.hidden = 0)),
            ("--beam", Box::new(|c| c.beam = Some(0))),
            ("--train-beam", Box::new(|c| c.train_beam = 0)),
            ("--train-beam", Box::new(|c| c.train_beam = 65)),
            ("--lsq-trials", Box::new(|c| c.lsq_trials = Some(1001))),
            ("--lsq-anneal", Box::new(|c| c.lsq_anneal = -1.0)),
            ("--lsq-beam", Box::new(|c| c.lsq_beam = Some(257))),
            ("--lsq-sample", Box::new(|c| c.lsq_sample = Some(0))),
            ("--lsq-anneal", Box::new(|c| c.lsq_anneal = f64::NAN)),
            ("--batch-size", Box::new(|c| c.batch_size = 0)),
            ("--lr", Box::new(|c| c.learning_rate = f64::NAN)),
            ("--lr", Box::new(|c| c.learning_rate = -1.0)),
            ("--patience", Box::new(|c| c.patience = 0)),
            ("--tau", Box::new(|c| c.tau = 0.0)),
            ("--tau-min", Box::new(|c| c.tau_min = f64::INFINITY)),
            ("--entropy-weight", Box::new(|c| c.entropy_weight = -0.1)),
            ("--val-fraction", Box::new(|c| c.val_fraction = 0.0)),
            ("--val-fraction", Box::new(|c| c.val_fraction = 0.9)),
            ("--threads", Box::new(|c| c.threads = Some(0))),
            ("--time-limit", Box::new(|c| c.time_limit = Some(-5.0))),
            (
                "--epochs",
                Box::new(|c| {
                    c.init = Init::Random;
                    c.epochs = 0;
                }),
            ),
            (
                "--tau-min",
                Box::new(|c| {
                    c.tau_schedule = TauSchedule::Linear;
                    c.tau_min = 2.0;
                }),
            ),
            ("concat", Box::new(|c| c.composer = ComposerKind::Concat)),
            ("not split", Box::new(|c| c.composer = ComposerKind::Split)),
            ("--commitment", Box::new(|c| c.commitment = f64::NAN)),
            ("--commitment", Box::new(|c| c.commitment = -1.0)),
            (
                "--code-dim does not apply",
                Box::new(|c| {
                    c.method = Method::DpqSx;
                    c.code_dim = Some(8);
                }),
            ),
            (
                "--method dccl learns its codes by training",
                Box::new(|c| {
                    c.method = Method::Dccl;
                    c.epochs = 0;
                }),
            ),
            (
                "too large",
                Box::new(|c| {
                    c.num_codes = 65_536;
                    c.num_codebooks = 1024;
                }),
            ),
        ];
        for (name, edit) in cases {
            let mut c = TrainConfig::default();
            edit(&mut c);
            let err = c.validate().expect_err(name).to_string();
            assert!(err.contains(name), "{name}: {err}");
        }
    }

    #[test]
    fn auto_beam_shrinks_with_size_and_respects_a_given_width() {
        let c = TrainConfig::default();
        assert_eq!(c.auto_beam(5_000, 50), 64);
        assert_eq!(c.auto_beam(400_000, 50), 32);
        let small = TrainConfig {
            num_codes: 16,
            num_codebooks: 16,
            ..TrainConfig::default()
        };
        assert_eq!(small.auto_beam(400_000, 50), 64);
        assert_eq!(c.auto_beam(10_000_000, 300), 8);
        let given = TrainConfig {
            beam: Some(3),
            ..TrainConfig::default()
        };
        assert_eq!(given.auto_beam(5, 5), 3);
    }

    /// The default configuration at K = `k`, D = `dd`.
    fn shaped(k: usize, dd: usize) -> TrainConfig {
        TrainConfig {
            num_codes: k,
            num_codebooks: dd,
            ..TrainConfig::default()
        }
    }

    #[test]
    fn step_network_width_is_paid_for_and_decodes_fast_unless_given() {
        // GloVe at 64 and 160 bits: the decode budget binds (the weight share would allow 224 on
        // the 20k head at 64 bits); mpnet's 21.7k words at 64 bits: the weight share (143).
        assert_eq!(shaped(256, 8).step_hidden_for(20_000, 50), 208);
        assert_eq!(shaped(256, 20).step_hidden_for(20_000, 50), 112);
        assert_eq!(shaped(256, 8).step_hidden_for(21_700, 768), 128);
        assert_eq!(shaped(256, 8).step_hidden_for(400_000, 50), 208);
        // Tiny tables still get a network.
        assert_eq!(shaped(4, 2).step_hidden_for(10, 3), 16);
        for (k, dd) in [
            (16, 4),
            (32, 32),
            (256, 8),
            (256, 20),
            (256, 32),
            (1024, 64),
        ] {
            for (n, d) in [(2_000, 50), (20_000, 50), (400_000, 300), (21_700, 768)] {
                let c = shaped(k, dd);
                let h = c.step_hidden_for(n, d);
                assert!(h.is_multiple_of(16) && (16..=1024).contains(&h), "{h}");
                if h > 16 {
                    assert!(
                        conditioned_decode_macs(h, d, dd) <= STEP_DECODE_MACS,
                        "{k} {dd} {n} {d}"
                    );
                    let bits = (k as f64).log2().ceil();
                    let paid = n as f64 * dd as f64 * bits / 8.0 + (2 * dd * k * d) as f64;
                    let weights = (2 * h * (3 * d + dd)) as f64;
                    assert!(weights <= STEP_WEIGHT_SHARE * paid, "{k} {dd} {n} {d}: {h}");
                }
            }
        }
        let given = TrainConfig {
            step_hidden: Some(7),
            ..shaped(256, 8)
        };
        assert_eq!(given.step_hidden_for(20_000, 50), 7);
    }

    #[test]
    fn step_epochs_take_about_the_same_steps_at_every_size_unless_given() {
        let c = TrainConfig::default();
        assert_eq!(c.step_epochs_for(19_600), 79);
        assert_eq!(c.step_epochs_for(392_000), 8);
        assert_eq!(c.step_epochs_for(76_800), 20);
        assert_eq!(c.step_epochs_for(1_800), 100);
        let given = TrainConfig {
            step_epochs: Some(0),
            ..c
        };
        assert_eq!(given.step_epochs_for(19_600), 0);
    }

    #[test]
    fn large_inputs_get_one_search_round_through_the_conditioned_composer_unless_given() {
        let c = shaped(256, 20);
        // All 400,000 GloVe words at D=20 (h = 112): one round; the mpnet table at D=20 and
        // all 400,000 GloVe words at D=8 (h = 208) keep two, as does the 20k head.
        assert_eq!(c.step_rounds_for(400_000, 50, 112), 1);
        assert_eq!(c.step_rounds_for(21_745, 768, 112), REFINE_ROUNDS);
        assert_eq!(c.step_rounds_for(20_000, 50, 112), REFINE_ROUNDS);
        assert_eq!(
            shaped(256, 8).step_rounds_for(400_000, 50, 208),
            REFINE_ROUNDS
        );
        // The work saturates rather than wrapping on absurd sizes.
        assert_eq!(c.step_rounds_for(usize::MAX, 1024, 1024), 1);
        // A wider search costs more: the beam counts.
        let wide = TrainConfig {
            step_beam: 32,
            ..shaped(256, 20)
        };
        assert_eq!(wide.step_rounds_for(20_000, 768, 112), 1);
        // Candidates beyond K are not searched, so they do not count.
        let few_codes = TrainConfig {
            step_candidates: 65_536,
            ..shaped(16, 20)
        };
        assert_eq!(few_codes.step_rounds_for(20_000, 50, 112), REFINE_ROUNDS);
        for given in [0, 2, 5] {
            let c = TrainConfig {
                refine_rounds: Some(given),
                ..shaped(256, 20)
            };
            assert_eq!(c.step_rounds_for(400_000, 50, 112), given);
            assert_eq!(c.refine_rounds_or_default(), given);
        }
        assert_eq!(
            TrainConfig::default().refine_rounds_or_default(),
            REFINE_ROUNDS
        );
    }

    #[test]
    fn lsq_rounds_grow_on_small_inputs_and_double_below_256_codes_unless_given() {
        let auto = TrainConfig::default();
        // All 400,000 GloVe words keep faiss's 25 rounds at K = 256; small tables get the most.
        assert_eq!(auto.lsq_rounds_for(400_000, 8, 256), LSQ_ROUNDS);
        assert_eq!(auto.lsq_rounds_for(400_000, 20, 1024), LSQ_ROUNDS);
        assert_eq!(auto.lsq_rounds_for(21_745, 8, 256), LSQ_MOST_ROUNDS);
        assert_eq!(auto.lsq_rounds_for(20_000, 20, 256), 65);
        assert_eq!(auto.lsq_rounds_for(20_000, 32, 256), 40);
        // Below K = 256 at least twice as many.
        assert_eq!(auto.lsq_rounds_for(400_000, 12, 32), 2 * LSQ_ROUNDS);
        assert_eq!(auto.lsq_rounds_for(20_000, 32, 32), 2 * LSQ_ROUNDS);
        assert_eq!(auto.lsq_rounds_for(21_745, 12, 255), LSQ_MOST_ROUNDS);
        for n in [1, 100, 5_000, 50_000, 400_000, 4_000_000, usize::MAX] {
            for (d, k) in [(8, 256), (32, 32), (64, 4096)] {
                let r = auto.lsq_rounds_for(n, d, k);
                assert!(
                    (LSQ_ROUNDS..=LSQ_MOST_ROUNDS).contains(&r),
                    "{n} {d} {k}: {r}"
                );
            }
        }
        let given = TrainConfig {
            lsq_rounds: Some(7),
            ..TrainConfig::default()
        };
        assert_eq!(
            (
                given.lsq_rounds_for(20_000, 8, 32),
                given.lsq_rounds_for(10, 8, 256)
            ),
            (7, 7)
        );
    }

    #[test]
    fn annealed_lsq_covers_the_words_whose_rounds_stay_affordable_unless_given() {
        let c = TrainConfig::default();
        // All 400,000 GloVe words anneal at K=256 D=8 (64 bits); at 160 or 256 bits, at K=32
        // D=12 or at K=1024 D=6 they get plain rounds; a table of 20k words anneals at K=256 and
        // every D up to 128.
        assert!(c.lsq_anneal_words(8, 256) >= 400_000);
        for (d, k) in [(20, 256), (32, 256), (12, 32), (32, 32), (6, 1024)] {
            assert!(c.lsq_anneal_words(d, k) < 400_000, "D = {d}, K = {k}");
        }
        assert_eq!(c.lsq_anneal_words(8, 32), c.lsq_anneal_words(8, 256));
        for d in 1..=128 {
            for k in [2, 32, 256, 512] {
                let words = c.lsq_anneal_words(d, k);
                assert!(
                    words >= 16_384 && words * d * k.max(256) <= ANNEAL_WORK,
                    "D = {d}, K = {k}"
                );
            }
        }
        let given = TrainConfig {
            lsq_sample: Some(2_000),
            ..c
        };
        assert_eq!(given.lsq_anneal_words(8, 256), 2_000);
        assert_eq!(given.lsq_anneal_words(64, 32), 2_000);
    }

    #[test]
    fn inputs_over_the_annealing_allowance_anneal_fewer_rounds_of_the_same_work() {
        let c = TrainConfig::default();
        // Within the allowance: all the rounds. 400,000 words at K=256 D=20: 25 rounds over
        // 209,715 words' worth, 13 over all; at D=32 only 8 would fit: plain rounds; at K=32
        // (D=12) the annealing of large inputs gains little: plain.
        assert_eq!(c.lsq_annealed_rounds(400_000, 8, 256), Some(LSQ_ROUNDS));
        assert_eq!(c.lsq_annealed_rounds(20_000, 20, 256), Some(65));
        assert_eq!(c.lsq_annealed_rounds(400_000, 20, 256), Some(13));
        assert_eq!(c.lsq_annealed_rounds(400_000, 32, 256), None);
        assert_eq!(c.lsq_annealed_rounds(400_000, 12, 32), None);
        // The conditioned composer's run keeps plain rounds above the allowance (its time).
        let conditioned = TrainConfig {
            composer: ComposerKind::Conditioned,
            ..c.clone()
        };
        assert_eq!(conditioned.lsq_annealed_rounds(400_000, 20, 256), None);
        assert_eq!(conditioned.lsq_annealed_rounds(20_000, 20, 256), Some(65));
        for n in [1, 1_000, 100_000, 300_000, 1_000_000, 10_000_000] {
            for d in [4, 8, 16, 20, 32, 64] {
                if let Some(r) = c.lsq_annealed_rounds(n, d, 256) {
                    let work = c.lsq_anneal_words(d, 256) * c.lsq_rounds_for(n, d, 256);
                    // Above the allowance, at least the fewest rounds and no more work.
                    let over = n > c.lsq_anneal_words(d, 256);
                    assert!(
                        !over || (r >= ANNEAL_LEAST_ROUNDS && r * n <= work),
                        "{n} {d}"
                    );
                }
            }
        }
        // What the user sets is kept: no annealing, or plain rounds above their sample.
        let off = TrainConfig {
            lsq_anneal: 0.0,
            ..c.clone()
        };
        assert_eq!(off.lsq_annealed_rounds(20_000, 8, 256), None);
        let rounds = TrainConfig {
            lsq_rounds: Some(12),
            ..c.clone()
        };
        assert_eq!(rounds.lsq_annealed_rounds(20_000, 8, 256), Some(12));
        assert_eq!(rounds.lsq_annealed_rounds(400_000, 20, 256), None);
        let sample = TrainConfig {
            lsq_sample: Some(1_000_000),
            ..c
        };
        assert_eq!(
            sample.lsq_annealed_rounds(400_000, 20, 256),
            Some(LSQ_ROUNDS)
        );
    }

    #[test]
    fn only_runs_with_gradient_training_hold_words_out() {
        let c = TrainConfig::default();
        assert!(c.lsq_ends_linear() && !c.holds_out_words());
        let conditioned = TrainConfig {
            composer: ComposerKind::Conditioned,
            ..c.clone()
        };
        assert!(!conditioned.holds_out_words());
        type Change = Box<dyn Fn(&mut TrainConfig)>;
        let judged_held_out: Vec<(&str, Change)> = vec![
            ("mlp composer", Box::new(|c| c.composer = ComposerKind::Mlp)),
            ("no lsq rounds", Box::new(|c| c.lsq_rounds = Some(0))),
            ("no refinement", Box::new(|c| c.refine = false)),
            ("distilling", Box::new(|c| c.distill = true)),
            ("the paper's recipe", Box::new(|c| c.init = Init::Random)),
            ("dpq", Box::new(|c| c.method = Method::DpqSx)),
            ("dccl", Box::new(|c| c.method = Method::Dccl)),
        ];
        for (what, change) in judged_held_out {
            let mut cfg = c.clone();
            change(&mut cfg);
            assert!(cfg.holds_out_words(), "{what}");
        }
    }

    #[test]
    fn lsq_trials_grow_with_the_positions_unless_given() {
        let c = TrainConfig::default();
        let trials: Vec<usize> = [1, 8, 14, 16, 20, 32, 64]
            .iter()
            .map(|&d| c.lsq_trials_for(d))
            .collect();
        assert_eq!(trials, [8, 8, 9, 10, 12, 12, 12]);
        let given = TrainConfig {
            lsq_trials: Some(0),
            ..TrainConfig::default()
        };
        assert_eq!(given.lsq_trials_for(32), 0);
    }

    #[test]
    fn tau_schedules_end_at_tau_min() {
        let mut c = TrainConfig {
            tau: 1.0,
            tau_min: 0.1,
            ..TrainConfig::default()
        };
        assert_eq!(c.tau_at(5, 10), 1.0);
        c.tau_schedule = TauSchedule::Linear;
        assert!((c.tau_at(9, 10) - 0.1).abs() < 1e-12);
        assert!((c.tau_at(0, 10) - 1.0).abs() < 1e-12);
        c.tau_schedule = TauSchedule::Exponential;
        assert!((c.tau_at(9, 10) - 0.1).abs() < 1e-12);
        assert!(c.tau_at(4, 10) < 1.0 && c.tau_at(4, 10) > 0.1);
    }
}
