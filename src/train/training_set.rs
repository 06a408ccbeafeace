//! The words being compressed, as every method sees them: the matrix as a tensor, the one
//! held-out split, the workers, and the chunked passes over all words (encode, score, error).

use std::time::Instant;

use tch::{Device, Kind, Tensor};

use super::model::ComposerNet;
use super::outcome::torch_err;
use super::parallel::{chunks, par_chunks};
use super::quantize::{additive_decode, chunk_rows};
use super::reporter::Reporter;
use super::{TrainConfig, TrainError, allocator};
use crate::embeddings::Embeddings;
use crate::eval::{self, NeighbourReference, Scores};
use crate::progress::{Criterion, EpochRecord, Tick};

/// Distinguishes the validation split's random stream from the neighbour sample's.
const SPLIT_SALT: u64 = 0x5E_ED0F_5B1D;
/// What a run does after its last round, in scoring passes over every word: the last stage's
/// report, the final measurement, and the storage check (two plain decodes). All 400,000 GloVe
/// words given faiss RQ's seconds ended 2.0-2.7 s past them before this was kept back.
const TAIL_PASSES: f64 = 3.0;
/// At most this many held-out words: enough to compare epochs, cheap to decode.
const MAX_VAL: usize = 10_000;

/// Read-only state shared by all stages.
pub(crate) struct TrainingSet<'a> {
    pub cfg: &'a TrainConfig,
    pub host: &'a [f32],
    /// The matrix `[N, d]` on the training device (on the CPU, a view of `host`).
    pub x: Tensor,
    pub n: i64,
    pub d: i64,
    /// D, positions per word.
    pub num_codebooks: i64,
    /// K, codes per position.
    pub k: i64,
    pub device: Device,
    /// The narrowest integer kind that holds every code (the least-squares rounds hold two sets).
    pub code_kind: Kind,
    pub workers: usize,
    pub train_rows: Tensor,
    pub val_rows: Tensor,
    pub train_mask: Tensor,
    /// `[N]` weight of each word's squared error in the lsq stage's fits and rounds and the
    /// conditioned composer's training (`--word-weight`), averaging 1 over all words; `None`:
    /// all 1.
    pub weights: Option<Tensor>,
    pub start: Instant,
    /// Seconds kept back from `--time-limit` for what every run ends with after its last round:
    /// set from the measured cost of a scoring pass ([`TrainingSet::note_scoring`]).
    tail: std::cell::Cell<f64>,
}

/// A CPU tensor over the embedding matrix without copying it.
///
/// # Safety
/// The tensor aliases `data`: it and every view of it must be dropped before `data` is, and
/// nothing may write through it. [`TrainingSet`] keeps it beside its borrow of `data`, and the
/// stages only read it and never return it or a view of it.
fn borrow_matrix(data: &[f32], n: i64, d: i64) -> Tensor {
    // SAFETY: `data` holds n*d initialised f32s, contiguous; see the contract above.
    unsafe { Tensor::from_blob(data.as_ptr().cast(), &[n, d], &[], Kind::Float, Device::Cpu) }
}

impl<'a> TrainingSet<'a> {
    /// The words of `emb` on `device`, with the seeded held-out split.
    pub fn new(
        emb: &'a Embeddings,
        cfg: &'a TrainConfig,
        device: Device,
        start: Instant,
    ) -> Result<Self, TrainError> {
        let workers = cfg
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let n = emb.len();
        let d = emb.dim();
        let host = emb.matrix();
        let x_host = borrow_matrix(host, n as i64, d as i64);
        let x = if device == Device::Cpu {
            x_host.shallow_clone()
        } else {
            x_host
                .f_to_device(device)
                .map_err(|e| torch_err("setup", e))?
        };
        let (mut val, is_val) = if cfg.holds_out_words() {
            held_out(n, cfg.val_fraction, cfg.seed ^ SPLIT_SALT)
        } else {
            (Vec::new(), vec![false; n])
        };
        val.sort_unstable();
        let train: Vec<usize> = (0..n).filter(|&r| !is_val[r]).collect();
        let mask: Vec<bool> = is_val.iter().map(|v| !v).collect();
        let k = cfg.num_codes as i64;
        let mut set = TrainingSet {
            cfg,
            host,
            x,
            n: n as i64,
            d: d as i64,
            num_codebooks: cfg.num_codebooks as i64,
            k,
            device,
            code_kind: if k <= 1 << 8 {
                Kind::Uint8
            } else if k <= 1 << 15 {
                Kind::Int16
            } else {
                Kind::Int
            },
            workers,
            train_rows: Tensor::new(),
            val_rows: Tensor::new(),
            train_mask: Tensor::from_slice(&mask).to_device(device),
            weights: None,
            start,
            tail: std::cell::Cell::new(0.0),
        };
        set.weights = cfg.weighs_words().then(|| relative_weights(&set.x));
        set.train_rows = set.rows_tensor(&train);
        set.val_rows = set.rows_tensor(&val);
        drop((train, val, is_val, mask));
        allocator::release_free_memory();
        Ok(set)
    }

    /// Words held out for validation: none when every stage fits every word
    /// ([`TrainConfig::holds_out_words`]).
    pub fn num_val(&self) -> i64 {
        self.val_rows.size()[0]
    }

    pub fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Whether a step of about `secs` seconds begun now would end past `--time-limit`, less the
    /// time kept for the end of the run (with no estimate, `secs` = 0: whether that has passed).
    pub fn no_time_for(&self, secs: f64) -> bool {
        self.budget()
            .is_some_and(|t| self.elapsed() >= t || self.elapsed() + secs > t)
    }

    /// When the budget for rounds and epochs runs out, if there is one.
    pub fn deadline(&self) -> Option<Instant> {
        Some(self.start + std::time::Duration::from_secs_f64(self.budget()?))
    }

    /// How many more steps of about `secs` seconds end within the budget, if there is one.
    pub fn steps_left(&self, secs: f64) -> Option<usize> {
        let t = self.budget()?;
        Some(((t - self.elapsed()).max(0.0) / secs.max(1e-9)).floor() as usize)
    }

    /// Records that a scoring pass over every word (decode, error, neighbours) took `secs`: a
    /// run ends with [`TAIL_PASSES`] such passes' worth of work (the last stage's report, the
    /// final measurement, the storage check), which `--time-limit` keeps back.
    pub fn note_scoring(&self, secs: f64) {
        self.tail.set(self.tail.get().max(TAIL_PASSES * secs));
    }

    /// Seconds from the start for rounds and epochs: `--time-limit` less the end of the run.
    fn budget(&self) -> Option<f64> {
        Some((self.cfg.time_limit? - self.tail.get()).max(0.0))
    }

    fn rows_tensor(&self, rows: &[usize]) -> Tensor {
        let v: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
        Tensor::from_slice(&v).to_device(self.device)
    }

    /// The record of round `round` of `stage`, a round judged by the error over all words (`all`)
    /// with the held-out error (`val_mse`) beside it, begun at `started`.
    pub fn round_record(
        &self,
        stage: &str,
        round: usize,
        all: f64,
        val_mse: Option<f64>,
        improved: bool,
        started: Instant,
    ) -> EpochRecord {
        EpochRecord {
            stage: stage.into(),
            epoch: round,
            train_loss: Some(all),
            val_mse,
            best: improved,
            judged_by: self.all_words_criterion(),
            tau: None,
            learning_rate: None,
            samples_per_sec: self.n as f64 / started.elapsed().as_secs_f64().max(1e-9),
            elapsed_secs: self.elapsed(),
        }
    }

    /// Runs `f(state, x rows, their current codes)` over chunks of rows on the workers and
    /// gathers the new codes. `per_row` is the encoder's scratch memory per row (floats);
    /// `state` makes one worker's handles (called here, once per worker).
    ///
    /// Each worker writes its chunks' codes straight into one preallocated tensor: per-chunk
    /// results kept until the end would sit between the chunks' freed temporaries in the
    /// allocator's arenas and keep them from shrinking.
    pub fn encode_all<S: Send>(
        &self,
        out: &mut Reporter,
        codes: Option<&Tensor>,
        per_row: i64,
        state: impl Fn() -> S,
        f: impl Fn(&mut S, &Tensor, Option<&Tensor>) -> Tensor + Sync,
    ) -> Tensor {
        let parts = chunks(self.n, chunk_rows(per_row));
        let all = Tensor::zeros([self.n, self.num_codebooks], (self.code_kind, self.device));
        let states: Vec<_> = (0..self.workers.min(parts.len()))
            .map(|_| {
                (
                    self.x.shallow_clone(),
                    codes.map(Tensor::shallow_clone),
                    all.shallow_clone(),
                    state(),
                )
            })
            .collect();
        let t0 = Instant::now();
        let mut done = 0;
        par_chunks(
            states,
            &parts,
            |(x, c, dst, st), s, len| {
                let cc = c.as_ref().map(|c| c.narrow(0, s, len));
                let new = f(st, &x.narrow(0, s, len), cc.as_ref());
                // Chunks are disjoint rows, so the workers never write the same memory.
                let mut rows = dst.narrow(0, s, len);
                rows.copy_(&new);
            },
            |len| {
                done += len;
                out.progress.tick(&Tick {
                    done: done as u64,
                    samples_per_sec: Some(done as f64 / t0.elapsed().as_secs_f64().max(1e-9)),
                    ..Tick::default()
                });
            },
        );
        all
    }

    /// Decodes rows `rows` (host indices) to a host matrix.
    fn decode_rows(&self, codes: &Tensor, rows: &[usize], decoder: &Decoder) -> Vec<f32> {
        tch::no_grad(|| {
            let y = decoder
                .decode(&codes.index_select(0, &self.rows_tensor(rows)))
                .to_device(Device::Cpu)
                .to_kind(Kind::Float)
                .contiguous();
            Vec::<f32>::try_from(y.view(-1)).unwrap_or_default()
        })
    }

    /// Scores every word's decoded vector against the original on the workers, chunk by chunk,
    /// so that no decoded copy of the matrix is ever held.
    pub fn score(
        &self,
        codes: &Tensor,
        decoder: &Decoder,
        reference: &NeighbourReference,
    ) -> Result<Scores, TrainError> {
        let d = self.d as usize;
        let queries = self.decode_rows(codes, reference.rows(), decoder);
        let first = reference.scorer(self.host, &queries)?;
        let parts = chunks(self.n, chunk_rows(decoder.memory_per_row()));
        let states: Vec<_> = (0..self.workers.min(parts.len()).max(1))
            .map(|_| {
                (
                    codes.shallow_clone(),
                    decoder.fork(),
                    first.fork(),
                    Vec::new(),
                )
            })
            .collect();
        let (states, results) = par_chunks(
            states,
            &parts,
            |(c, dec, scorer, buf), s, len| {
                let y = dec
                    .decode(&c.narrow(0, s, len))
                    .to_device(Device::Cpu)
                    .to_kind(Kind::Float)
                    .contiguous();
                buf.resize(len as usize * d, 0f32);
                y.copy_data(buf, len as usize * d);
                scorer.add(s as usize, buf)
            },
            |_| {},
        );
        results.into_iter().collect::<Result<(), _>>()?;
        let mut total = first;
        for (_, _, scorer, _) in states {
            total.merge(scorer);
        }
        Ok(total.finish())
    }

    /// Mean squared error per held-out word, `None` when no word is held out.
    pub fn val_mse(&self, codes: &Tensor, decoder: &Decoder) -> Option<f64> {
        (self.num_val() > 0).then(|| self.mse_of(codes, Some(&self.val_rows), decoder))
    }

    /// What [`TrainingSet::fit_error`] is: the plain or the weighted error over all words.
    pub fn all_words_criterion(&self) -> Criterion {
        Criterion::all_words(self.weights.is_some())
    }

    /// Mean squared error per word over `rows` (all words if `None`).
    pub fn mse_of(&self, codes: &Tensor, rows: Option<&Tensor>, decoder: &Decoder) -> f64 {
        self.error_of(codes, rows, None, decoder)
    }

    /// The error the lsq stage and the conditioned composer lower: each word's squared error
    /// times its weight
    /// ([`TrainingSet::weights`]), averaged over all words; the mean squared error when
    /// unweighted.
    pub fn fit_error(&self, codes: &Tensor, decoder: &Decoder) -> f64 {
        self.error_of(codes, None, self.weights.as_ref(), decoder)
    }

    /// Mean squared error per word over `rows` (all words if `None`), each word's times its
    /// weight in `weights` (`[N]`) when given.
    fn error_of(
        &self,
        codes: &Tensor,
        rows: Option<&Tensor>,
        weights: Option<&Tensor>,
        decoder: &Decoder,
    ) -> f64 {
        let count = rows.map_or(self.n, |r| r.size()[0]);
        let parts = chunks(count, chunk_rows(decoder.memory_per_row()));
        let states: Vec<_> = (0..self.workers.min(parts.len()))
            .map(|_| {
                (
                    self.x.shallow_clone(),
                    codes.shallow_clone(),
                    rows.map(Tensor::shallow_clone),
                    weights.map(Tensor::shallow_clone),
                    decoder.fork(),
                )
            })
            .collect();
        let (_, sums) = par_chunks(
            states,
            &parts,
            |(x, c, r, w, dec), s, len| {
                let (c, x, w) = match r {
                    Some(r) => {
                        let r = r.narrow(0, s, len);
                        let w = w.as_ref().map(|w| w.index_select(0, &r));
                        (c.index_select(0, &r), x.index_select(0, &r), w)
                    }
                    None => (
                        c.narrow(0, s, len),
                        x.narrow(0, s, len),
                        w.as_ref().map(|w| w.narrow(0, s, len)),
                    ),
                };
                let sq = (dec.decode(&c) - x).square();
                match w {
                    Some(w) => sq.sum_dim_intlist(1, false, Kind::Double) * w.to_kind(Kind::Double),
                    None => sq,
                }
                .sum(Kind::Double)
                .double_value(&[])
            },
            |_| {},
        );
        sums.iter().sum::<f64>() / count.max(1) as f64
    }
}

/// Least length of a vector, against the root mean square length, that `--word-weight
/// relative` divides by: a near-zero vector would otherwise outweigh thousands of others (all
/// 400,000 GloVe words: the shortest is 0.010 of the root mean square length, the 1% quantile
/// 0.66, and 24 words are under 0.2; the mpnet table's shortest is 0.35).
const RELATIVE_LEAST_LENGTH: f64 = 0.2;

/// `[N]` weights `1 / max(|x|², (0.2 · rms length)²)`, scaled to average 1.
fn relative_weights(x: &Tensor) -> Tensor {
    tch::no_grad(|| {
        let sq = x.square().sum_dim_intlist(1, false, Kind::Double);
        let floor =
            sq.mean(Kind::Double).double_value(&[]) * RELATIVE_LEAST_LENGTH * RELATIVE_LEAST_LENGTH;
        let w = sq.clamp_min(floor.max(f64::MIN_POSITIVE)).reciprocal();
        let mean = w.mean(Kind::Double);
        (w / mean).to_kind(Kind::Float)
    })
}

/// Whether `deadline` (from [`TrainingSet::deadline`]) has passed: what a search's chunks ask
/// before their work, on any thread.
pub(crate) fn passed(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|t| Instant::now() >= t)
}

/// The rows held out for validation, in the order drawn, and a mask marking them:
/// `val_fraction` of the `n` words drawn with `seed`, at least one, at most [`MAX_VAL`], and
/// always leaving one to train on.
fn held_out(n: usize, val_fraction: f64, seed: u64) -> (Vec<usize>, Vec<bool>) {
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

/// What turns codes into vectors at some stage: the additive tables, or the composer.
pub(crate) enum Decoder {
    Additive(Tensor),
    Net(ComposerNet),
}

impl Decoder {
    pub fn fork(&self) -> Self {
        match self {
            Decoder::Additive(t) => Decoder::Additive(t.shallow_clone()),
            Decoder::Net(n) => Decoder::Net(n.shallow_clone()),
        }
    }

    pub fn decode(&self, codes: &Tensor) -> Tensor {
        match self {
            Decoder::Additive(t) => additive_decode(t, codes),
            Decoder::Net(n) => n.decode(codes),
        }
    }

    /// Floats of scratch per decoded row, to size chunks.
    pub fn memory_per_row(&self) -> i64 {
        match self {
            // The running sum, one gathered entry and the difference to the original.
            Decoder::Additive(t) => t.size()[2] * 4,
            Decoder::Net(n) => n.memory_per_row(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::composer::ComposerKind;
    use crate::train::WordWeight;
    use crate::train::methods::testing::glove;

    fn config(composer: ComposerKind, time_limit: Option<f64>) -> TrainConfig {
        TrainConfig {
            composer,
            time_limit,
            device: crate::train::DeviceChoice::Cpu,
            ..TrainConfig::default()
        }
    }

    #[test]
    fn runs_judged_over_all_words_fit_every_word() {
        let emb = glove(500);
        let now = Instant::now();
        for composer in [ComposerKind::Linear, ComposerKind::Conditioned] {
            let cfg = config(composer, None);
            let set = TrainingSet::new(&emb, &cfg, Device::Cpu, now).unwrap();
            assert_eq!(set.num_val(), 0, "{composer:?}");
            assert_eq!(set.train_rows.size(), [500], "{composer:?}");
            assert_eq!(set.train_mask.sum(Kind::Int64).int64_value(&[]), 500);
            let codes = Tensor::zeros([500, 8], (Kind::Int64, Device::Cpu));
            let tables = Tensor::ones([8, 16, 50], (Kind::Float, Device::Cpu));
            assert_eq!(set.val_mse(&codes, &Decoder::Additive(tables)), None);
        }
        let cfg = config(ComposerKind::Mlp, None);
        let set = TrainingSet::new(&emb, &cfg, Device::Cpu, now).unwrap();
        assert_eq!(set.num_val(), 10, "2% of 500 words held out");
        assert_eq!(set.train_rows.size(), [490]);
        let codes = Tensor::zeros([500, 8], (Kind::Int64, Device::Cpu));
        let tables = Tensor::zeros([8, 16, 50], (Kind::Float, Device::Cpu));
        let held_out = set.val_mse(&codes, &Decoder::Additive(tables)).unwrap();
        assert!(held_out > 0.0, "{held_out}");
    }

    #[test]
    fn a_step_starts_only_when_it_ends_within_the_time_limit() {
        let emb = glove(50);
        // Ten seconds spent of a twelve-second budget.
        let start = Instant::now() - Duration::from_secs(10);
        let cfg = config(ComposerKind::Linear, Some(12.0));
        let set = TrainingSet::new(&emb, &cfg, Device::Cpu, start).unwrap();
        assert!(!set.no_time_for(0.0));
        assert!(!set.no_time_for(1.5));
        assert!(set.no_time_for(2.5));
        assert_eq!(set.steps_left(0.6), Some(3));
        assert_eq!(set.steps_left(5.0), Some(0));
        let deadline = set.deadline().unwrap();
        assert!(deadline > start + Duration::from_millis(11_900));
        assert!(deadline <= start + Duration::from_secs(12));
        // A scoring pass of 0.4 s keeps 1.2 s back for the end of the run.
        set.note_scoring(0.4);
        assert!(
            set.no_time_for(1.0),
            "1.0 s would end inside the kept-back 1.2 s"
        );
        assert!(!set.no_time_for(0.5));
        assert_eq!(set.steps_left(0.25), Some(3));
        set.note_scoring(0.1);
        assert!(set.no_time_for(1.0), "the longest pass seen is kept");
        let spent =
            TrainingSet::new(&emb, &cfg, Device::Cpu, start - Duration::from_secs(3)).unwrap();
        assert!(
            spent.no_time_for(0.0),
            "past the limit, not even a free step starts"
        );
        let unlimited = config(ComposerKind::Linear, None);
        let set = TrainingSet::new(&emb, &unlimited, Device::Cpu, start).unwrap();
        assert!(!set.no_time_for(1e9));
        assert_eq!(set.steps_left(1.0), None);
    }

    #[test]
    fn relative_weights_average_one_and_bound_the_shortest_vectors() {
        // Lengths 1, 2, 4 and 0.01 (squared 1, 4, 16, 1e-4); the mean square, 5.25, puts the
        // floor at 0.04 · 5.25 = 0.21.
        let x = Tensor::from_slice(&[1f32, 0.0, 0.0, 2.0, 4.0, 0.0, 0.0, 0.01]).view([4, 2]);
        let w = Vec::<f32>::try_from(relative_weights(&x)).unwrap();
        let raw = [1.0, 0.25, 0.0625, 1.0 / 0.21];
        let mean = raw.iter().sum::<f64>() / 4.0;
        for (got, want) in w.iter().zip(raw) {
            assert!((f64::from(*got) - want / mean).abs() < 1e-5, "{w:?}");
        }
        let emb = glove(200);
        let now = Instant::now();
        let codes = Tensor::zeros([200, 8], (Kind::Int64, Device::Cpu));
        let tables = Tensor::zeros([8, 16, 50], (Kind::Float, Device::Cpu));
        let decoder = Decoder::Additive(tables);
        let uniform = TrainConfig {
            word_weight: WordWeight::Uniform,
            ..config(ComposerKind::Linear, None)
        };
        let set = TrainingSet::new(&emb, &uniform, Device::Cpu, now).unwrap();
        assert!(set.weights.is_none());
        // Nor are they made where nothing reads them: no lsq stage, no conditioned composer.
        let unread = TrainConfig {
            refine: false,
            ..config(ComposerKind::Linear, None)
        };
        assert!(!unread.weighs_words());
        let unweighted = TrainingSet::new(&emb, &unread, Device::Cpu, now).unwrap();
        assert!(unweighted.weights.is_none());
        let mse = set.mse_of(&codes, None, &decoder);
        assert_eq!(set.fit_error(&codes, &decoder), mse);
        // Decoding every word as zero, each word's error is its squared length, weighted.
        let relative = config(ComposerKind::Linear, None);
        let set = TrainingSet::new(&emb, &relative, Device::Cpu, now).unwrap();
        let w = set.weights.as_ref().unwrap();
        assert!((w.mean(Kind::Double).double_value(&[]) - 1.0).abs() < 1e-6);
        let lengths = set.x.square().sum_dim_intlist(1, false, Kind::Double);
        let expected = (lengths * w.to_kind(Kind::Double)).mean(Kind::Double);
        let got = set.fit_error(&codes, &decoder);
        assert!(
            (got - expected.double_value(&[])).abs() < 1e-9 * got,
            "{got}"
        );
        assert!(
            (got - mse).abs() > 1e-3 * mse,
            "the weights changed nothing"
        );
    }
}
