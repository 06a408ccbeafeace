//! Where a run reports: the caller's progress, the name of the running stage (for errors), the
//! per-stage measurements, and the run's one seeded generator.

use tch::Tensor;

use super::rng::Rng;
use super::training_set::{Decoder, TrainingSet};
use super::{TrainError, allocator, device_name};
use crate::eval::{NEIGHBOUR_SAMPLES, NEIGHBOURS, NeighbourReference};
use crate::progress::{Progress, StageReport};

/// What the stages report into.
pub(crate) struct Reporter<'a> {
    pub progress: &'a mut (dyn Progress + Send),
    pub stage: &'a mut String,
    pub reference: NeighbourReference,
    pub stages: Vec<StageReport>,
    /// Words seen and seconds spent in gradient epochs, for the report's speed.
    pub trained_words: f64,
    pub trained_secs: f64,
    pub rng: Rng,
    /// The values the stages used for input-dependent options ([`super::TrainReport::settled`]).
    pub settled: std::collections::BTreeMap<String, serde_json::Value>,
}

impl<'a> Reporter<'a> {
    /// Announces the run and draws the words whose neighbours are compared after each stage.
    pub fn new(
        progress: &'a mut (dyn Progress + Send),
        stage: &'a mut String,
        set: &TrainingSet,
    ) -> Result<Self, TrainError> {
        let cfg = set.cfg;
        *stage = "reference neighbours".into();
        progress.message(&format!(
            "{} words of {} dims on {} ({} worker threads); {}",
            set.n,
            set.d,
            device_name(set.device),
            set.workers,
            match set.num_val() {
                0 => "every word fitted, none held out (every stage is judged over all words)"
                    .to_string(),
                v => format!("{v} held out for validation"),
            }
        ));
        let reference = NeighbourReference::new(
            set.host,
            set.d as usize,
            NEIGHBOUR_SAMPLES,
            NEIGHBOURS,
            cfg.seed,
        )?;
        Ok(Reporter {
            progress,
            stage,
            reference,
            stages: Vec::new(),
            trained_words: 0.0,
            trained_secs: 0.0,
            rng: Rng::new(cfg.seed),
            settled: Default::default(),
        })
    }

    /// Starts (or restarts the progress of) stage `name`.
    pub fn begin(&mut self, name: &str, total: u64) {
        *self.stage = name.to_string();
        self.progress.stage_start(name, total);
    }

    /// Records the value the run used for `option` (its name without the dashes, `_` for `-`).
    pub fn settle(&mut self, option: &str, value: impl Into<serde_json::Value>) {
        self.settled.insert(option.to_string(), value.into());
    }

    /// Measures `codes` through `decoder` on every word and reports stage `name` as done.
    pub fn finish(
        &mut self,
        set: &TrainingSet,
        name: &str,
        seconds: f64,
        codes: &Tensor,
        decoder: &Decoder,
    ) -> Result<(), TrainError> {
        allocator::release_free_memory();
        let t0 = std::time::Instant::now();
        let scores = set.score(codes, decoder, &self.reference)?;
        set.note_scoring(t0.elapsed().as_secs_f64());
        let report = StageReport {
            stage: name.to_string(),
            mse: scores.mse,
            mean_cosine: scores.mean_cosine,
            neighbour_overlap: scores.neighbour_overlap,
            seconds,
        };
        self.progress.stage_end(&report);
        self.stages.push(report);
        Ok(())
    }
}
