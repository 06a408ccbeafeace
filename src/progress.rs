//! How long-running library work reports progress without knowing who listens.
//!
//! The trainer calls a [`Progress`]; the command line turns the calls into an indicatif bar or
//! plain lines, tests pass [`Silent`]. Every method has an empty default, so a listener only
//! implements what it shows.

/// One step of work inside a stage: an optimiser step, a search pass, an encoding chunk.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Tick {
    /// Units of work done so far in this stage (out of [`Progress::stage_start`]'s `total`).
    pub done: u64,
    /// Latest training loss, if the stage has one.
    pub loss: Option<f64>,
    /// Latest validation error (mean squared error per word), if known.
    pub val_mse: Option<f64>,
    /// Words processed per second in this stage.
    pub samples_per_sec: Option<f64>,
}

/// The end of one epoch (or round) of a stage, as written to `--log-file`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EpochRecord {
    /// Stage name, e.g. `composer`.
    pub stage: String,
    /// Epoch or round number within the stage, from 1.
    pub epoch: usize,
    /// Mean training loss over the epoch; for search rounds, the error over all words.
    pub train_loss: Option<f64>,
    /// Mean squared error per word on the held-out words; `None` (null) when the run holds no
    /// word out, every stage being judged by the error over all words.
    pub val_mse: Option<f64>,
    /// Whether this round is the best so far by [`EpochRecord::judged_by`] (its result is kept).
    pub best: bool,
    /// Which error picks the best round.
    pub judged_by: Criterion,
    /// Temperature in use, for stages that relax codes.
    pub tau: Option<f64>,
    /// Learning rate in use.
    pub learning_rate: Option<f64>,
    /// Words per second over the epoch.
    pub samples_per_sec: f64,
    /// Seconds since the run started (for the command line, since the command began).
    pub elapsed_secs: f64,
}

/// The error by which a stage keeps its best round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Criterion {
    /// The held-out words' error ([`EpochRecord::val_mse`]): gradient training.
    HeldOut,
    /// The error over all words ([`EpochRecord::train_loss`]): search rounds, which re-encode
    /// every word, so that the words being compressed are what counts.
    AllWords,
    /// The error over all words with each word's squared error weighted as `--word-weight
    /// relative` says (by its inverse squared length): the lsq stage's rounds and the
    /// conditioned composer's, when the run weighs words.
    AllWordsWeighted,
}

impl Criterion {
    /// The error over all words, weighted by `--word-weight` when `weighted`.
    pub fn all_words(weighted: bool) -> Self {
        if weighted {
            Criterion::AllWordsWeighted
        } else {
            Criterion::AllWords
        }
    }

    /// The error over all words, plain or weighted.
    pub fn over_all_words(self) -> bool {
        !matches!(self, Criterion::HeldOut)
    }
}

/// Quality after a stage, measured on every word with that stage's codes.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StageReport {
    /// Stage name.
    pub stage: String,
    /// Mean over words of the squared L2 error.
    pub mse: f64,
    /// Mean cosine between decoded and original vectors.
    pub mean_cosine: f64,
    /// Top-10 cosine-neighbour overlap of sampled words (see [`crate::eval`]).
    pub neighbour_overlap: f64,
    /// Seconds the stage took (not counting this measurement).
    pub seconds: f64,
}

/// Receives progress from long-running library calls.
pub trait Progress {
    /// A stage begins; `total` units of work are expected (0 if unknown).
    fn stage_start(&mut self, _stage: &str, _total: u64) {}
    /// Work advanced inside the current stage.
    fn tick(&mut self, _tick: &Tick) {}
    /// An epoch or round ended.
    fn epoch(&mut self, _record: &EpochRecord) {}
    /// A stage ended and was measured.
    fn stage_end(&mut self, _report: &StageReport) {}
    /// A one-line note worth showing (a choice made, a fallback taken).
    fn message(&mut self, _text: &str) {}
}

/// Ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Progress for Silent {}

/// Keeps every record and report; handy in tests and for callers that print at the end.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    /// Stages started, in order.
    pub stages: Vec<String>,
    /// Epoch records, in order.
    pub epochs: Vec<EpochRecord>,
    /// Stage reports, in order.
    pub reports: Vec<StageReport>,
    /// Messages, in order.
    pub messages: Vec<String>,
}

impl Progress for Recorder {
    fn stage_start(&mut self, stage: &str, _total: u64) {
        self.stages.push(stage.to_string());
    }
    fn epoch(&mut self, record: &EpochRecord) {
        self.epochs.push(record.clone());
    }
    fn stage_end(&mut self, report: &StageReport) {
        self.reports.push(report.clone());
    }
    fn message(&mut self, text: &str) {
        self.messages.push(text.to_string());
    }
}
