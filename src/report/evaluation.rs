//! Every score of a `.kdz` against its original vectors, each beside the original vectors' own
//! score on the same words: reconstruction error, neighbour overlap, word similarity, analogies.
//!
//! Words of the table that the original file lacks are left out of every score, on both sides,
//! so the two columns always measure the same words, pairs and questions.

use std::path::{Path, PathBuf};

use crate::analogy::{AnalogyError, AnalogyResult, AnalogyTask, read_questions};
use crate::embeddings::Embeddings;
use crate::eval::{self, EvalError, NeighbourReference};
use crate::format::Kdz;
use crate::inspect::Aligned;
use crate::neighbours::UnitRows;
use crate::progress::Progress;

use super::MetricRow;

/// What to measure besides reconstruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalOptions {
    /// Word similarity files (`w1 w2 score`).
    pub similarity: Vec<PathBuf>,
    /// An analogy questions file (word2vec's `questions-words.txt` format).
    pub analogy: Option<PathBuf>,
    /// Analogy answers are searched among the first this many words (word2vec uses 30,000).
    pub analogy_vocab: usize,
    /// Words sampled for the neighbour overlap.
    pub neighbour_samples: usize,
    /// Seed of the sample.
    pub seed: u64,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            similarity: Vec::new(),
            analogy: None,
            analogy_vocab: 30_000,
            neighbour_samples: eval::NEIGHBOUR_SAMPLES,
            seed: 0,
        }
    }
}

/// Why an evaluation could not run. Messages name the files involved.
#[derive(Debug, thiserror::Error)]
pub enum EvaluationError {
    /// The vectors have another width than the table decodes to.
    #[error("{original}: the vectors have {found} dimensions but {file} decodes to {expected}")]
    Dimension {
        /// The original vectors.
        original: PathBuf,
        /// The `.kdz`.
        file: PathBuf,
        /// Width of the original vectors.
        found: usize,
        /// Width of the decoded vectors.
        expected: usize,
    },
    /// The original has none of the table's words.
    #[error("{original}: none of the {words} words of {file} is in this file")]
    NoCommonWords {
        /// The original vectors.
        original: PathBuf,
        /// The `.kdz`.
        file: PathBuf,
        /// Words in the table.
        words: usize,
    },
    /// A metric failed (a similarity file, or shapes).
    #[error(transparent)]
    Eval(#[from] EvalError),
    /// The analogy file failed.
    #[error(transparent)]
    Analogy(#[from] AnalogyError),
}

/// A score on the decoded vectors and on the original ones.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Pair {
    /// On the decoded vectors.
    pub decoded: Option<f64>,
    /// On the original vectors.
    pub original: Option<f64>,
}

impl Pair {
    fn both(decoded: f64, original: f64) -> Self {
        Pair {
            decoded: Some(decoded),
            original: Some(original),
        }
    }
}

/// Spearman correlation on one similarity file.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SimilarityEval {
    /// The file.
    pub file: PathBuf,
    /// Pairs in the file.
    pub pairs: usize,
    /// Pairs whose two words both sides have.
    pub found: usize,
    /// Spearman's rho of cosine against human scores.
    pub spearman: Pair,
}

/// Analogy accuracy, overall and per section.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AnalogyEval {
    /// The file.
    pub file: PathBuf,
    /// Words searched for answers.
    pub candidates: usize,
    /// Questions in the file.
    pub questions: usize,
    /// Questions whose four words are all candidates (on both sides).
    pub answerable: usize,
    /// Accuracy over the answerable questions.
    pub accuracy: Pair,
    /// Decoded vectors, in detail.
    pub decoded: AnalogyResult,
    /// Original vectors, in detail.
    pub original: AnalogyResult,
}

/// The top-10 neighbour overlap on sampled words.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct NeighbourEval {
    /// Neighbours compared per word.
    pub k: usize,
    /// Words sampled.
    pub samples: usize,
    /// Mean overlap.
    pub overlap: Pair,
}

/// All scores.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Evaluation {
    /// The `.kdz`.
    pub file: PathBuf,
    /// The original vectors.
    pub original: PathBuf,
    /// Words in the table.
    pub words: usize,
    /// Of those, words the original has (every score uses only these).
    pub words_in_original: usize,
    /// Vector width.
    pub dim: usize,
    /// Mean over words of the squared L2 error.
    pub mse: Pair,
    /// `‖X̂ − X‖_F / ‖X‖_F`: the error relative to the size of the vectors.
    pub relative_error: Pair,
    /// Mean cosine between each decoded vector and its original.
    pub mean_cosine: Pair,
    /// Neighbour overlap.
    pub neighbours: NeighbourEval,
    /// One entry per similarity file.
    pub similarity: Vec<SimilarityEval>,
    /// The analogy file's scores, if one was given.
    pub analogy: Option<AnalogyEval>,
}

/// Only the rows the original has, in the table's order.
fn present_rows(matrix: &[f32], dim: usize, present: &[bool]) -> Vec<f32> {
    matrix
        .chunks_exact(dim)
        .zip(present)
        .filter(|(_, p)| **p)
        .flat_map(|(row, _)| row.iter().copied())
        .collect()
}

/// `‖decoded − original‖_F / ‖original‖_F`, 0 when the original is all zeros and so is the error.
pub fn relative_error(original: &[f32], decoded: &[f32]) -> f64 {
    let (mut err, mut norm) = (0f64, 0f64);
    for (a, b) in original.iter().zip(decoded) {
        err += f64::from(a - b).powi(2);
        norm += f64::from(*a).powi(2);
    }
    if norm > 0.0 {
        (err / norm).sqrt()
    } else if err == 0.0 {
        0.0
    } else {
        f64::INFINITY
    }
}

impl Evaluation {
    /// Scores `kdz` against `original` (read from `original_path`, which names it in results),
    /// telling `progress` as each of the slower stages starts.
    pub fn compute(
        kdz: &Kdz,
        original: &Embeddings,
        original_path: &Path,
        opts: &EvalOptions,
        progress: &mut dyn Progress,
    ) -> Result<Self, EvaluationError> {
        let dim = kdz.dim();
        if original.dim() != dim {
            return Err(EvaluationError::Dimension {
                original: original_path.to_owned(),
                file: kdz.path().to_owned(),
                found: original.dim(),
                expected: dim,
            });
        }
        let aligned = Aligned::new(kdz.vocab(), original);
        if aligned.found == 0 {
            return Err(EvaluationError::NoCommonWords {
                original: original_path.to_owned(),
                file: kdz.path().to_owned(),
                words: kdz.len(),
            });
        }
        // Read the task files first: a typo in a path should not cost a full decode.
        let similarity_files = opts
            .similarity
            .iter()
            .map(|p| Ok((p, eval::read_similarity(p)?)))
            .collect::<Result<Vec<_>, EvalError>>()?;
        let questions = match &opts.analogy {
            Some(p) => Some((p, read_questions(p)?)),
            None => None,
        };

        progress.stage_start("decode", kdz.len() as u64);
        let decoded = kdz.decode_all();
        let present = &aligned.present;
        let dec = present_rows(&decoded, dim, present);
        let orig = present_rows(&aligned.matrix, dim, present);

        let mse = eval::mse(&orig, &dec, dim)?;
        let mean_cosine = eval::mean_cosine(&orig, &dec, dim)?;
        progress.stage_start("neighbours", opts.neighbour_samples as u64);
        let reference = NeighbourReference::new(
            &orig,
            dim,
            opts.neighbour_samples,
            eval::NEIGHBOURS,
            opts.seed,
        )?;
        let overlap = reference.overlap(&dec)?;

        // Similarity pairs are looked up in the table's vocabulary on both sides.
        let row_of = |w: &str| kdz.vocab().row(w).filter(|&r| present[r]);
        let decoded_vector = |w: &str| row_of(w).map(|r| &decoded[r * dim..(r + 1) * dim]);
        let original_vector = |w: &str| row_of(w).map(|r| &aligned.matrix[r * dim..(r + 1) * dim]);
        let similarity = similarity_files
            .into_iter()
            .map(|(path, pairs)| {
                let d = eval::similarity_spearman(&pairs, decoded_vector);
                let o = eval::similarity_spearman(&pairs, original_vector);
                SimilarityEval {
                    file: path.clone(),
                    pairs: d.total,
                    found: d.found,
                    spearman: Pair {
                        decoded: d.spearman,
                        original: o.spearman,
                    },
                }
            })
            .collect();

        let analogy = questions.map(|(path, sections)| {
            progress.stage_start(
                "analogy",
                sections.iter().map(|s| s.questions.len() as u64).sum(),
            );
            let task = AnalogyTask::new(&sections, kdz.vocab(), opts.analogy_vocab, |r| present[r]);
            let d = task.score(&UnitRows::new(decoded.clone(), dim));
            let o = task.score(&UnitRows::new(aligned.matrix.clone(), dim));
            AnalogyEval {
                file: path.clone(),
                candidates: task.candidates(),
                questions: d.all.total,
                answerable: task.answerable(),
                accuracy: Pair {
                    decoded: d.all.accuracy(),
                    original: o.all.accuracy(),
                },
                decoded: d,
                original: o,
            }
        });

        Ok(Evaluation {
            file: kdz.path().to_owned(),
            original: original_path.to_owned(),
            words: kdz.len(),
            words_in_original: aligned.found,
            dim,
            mse: Pair::both(mse, 0.0),
            relative_error: Pair::both(relative_error(&orig, &dec), 0.0),
            mean_cosine: Pair::both(mean_cosine, 1.0),
            neighbours: NeighbourEval {
                k: eval::NEIGHBOURS,
                samples: reference.rows().len(),
                overlap: Pair::both(overlap, 1.0),
            },
            similarity,
            analogy,
        })
    }

    /// The scores as table rows, for text and HTML.
    pub fn rows(&self) -> Vec<MetricRow> {
        let name = |p: &Path| {
            p.file_name()
                .map_or_else(|| p.display().to_string(), |f| f.to_string_lossy().into())
        };
        let row = |n: String, p: Pair, note: String| MetricRow {
            name: n,
            decoded: p.decoded,
            original: p.original,
            note,
        };
        let mut rows = vec![
            row("MSE per word".into(), self.mse, String::new()),
            row(
                "relative error".into(),
                self.relative_error,
                "‖X̂−X‖/‖X‖".into(),
            ),
            row("mean cosine".into(), self.mean_cosine, String::new()),
            row(
                format!("top-{} neighbour overlap", self.neighbours.k),
                self.neighbours.overlap,
                format!("{} sampled words", self.neighbours.samples),
            ),
        ];
        for s in &self.similarity {
            rows.push(row(
                format!("Spearman {}", name(&s.file)),
                s.spearman,
                format!("{} of {} pairs", s.found, s.pairs),
            ));
        }
        if let Some(a) = &self.analogy {
            rows.push(row(
                format!("analogy {}", name(&a.file)),
                a.accuracy,
                format!(
                    "3CosAdd; {} of {} questions, answers among {} words",
                    a.answerable, a.questions, a.candidates
                ),
            ));
            for (d, o) in [
                (&a.decoded.semantic, &a.original.semantic),
                (&a.decoded.syntactic, &a.original.syntactic),
            ] {
                if d.total > 0 {
                    rows.push(row(
                        format!("  {}", d.name),
                        Pair {
                            decoded: d.accuracy(),
                            original: o.accuracy(),
                        },
                        format!("{} of {} questions", d.answered, d.total),
                    ));
                }
            }
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_error_is_frobenius_ratio() {
        assert_eq!(relative_error(&[3.0, 4.0], &[3.0, 4.0]), 0.0);
        assert!((relative_error(&[3.0, 4.0], &[0.0, 4.0]) - 0.6).abs() < 1e-12);
        assert_eq!(relative_error(&[0.0], &[0.0]), 0.0);
        assert_eq!(relative_error(&[0.0], &[1.0]), f64::INFINITY);
    }

    /// The decoded table against itself with one word missing and one word extra: every score
    /// is perfect, and counts only the shared words.
    #[test]
    fn compute_on_shared_words_only() {
        use crate::progress::Recorder;
        use crate::vocab::Vocab;
        let kdz = super::super::tests::small_kdz();
        let decoded = kdz.decode_all();
        let mut words: Vec<String> = kdz.vocab().words().map(String::from).collect();
        let mut matrix = decoded.clone();
        // Drop "b" (row 1), add "zzz".
        words.remove(1);
        matrix.drain(2..4);
        words.push("zzz".into());
        matrix.extend([7.0, 7.0]);
        let original = Embeddings::new(Vocab::new(words).unwrap(), 2, matrix);
        let questions = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(questions.path(), ": s\na d e f\na b e f\n").unwrap();
        let opts = EvalOptions {
            analogy: Some(questions.path().to_owned()),
            ..EvalOptions::default()
        };
        let mut rec = Recorder::default();
        let e =
            Evaluation::compute(&kdz, &original, Path::new("orig.txt"), &opts, &mut rec).unwrap();
        assert_eq!(rec.stages, ["decode", "neighbours", "analogy"]);
        assert_eq!((e.words, e.words_in_original), (6, 5));
        assert_eq!(e.mse, Pair::both(0.0, 0.0));
        assert_eq!(e.neighbours.samples, 5);
        let a = e.analogy.unwrap();
        // The question with "b" cannot be asked of the original, so of neither.
        assert_eq!((a.questions, a.answerable), (2, 1));
        assert_eq!(a.accuracy.decoded, a.accuracy.original);
        let err = Evaluation::compute(
            &kdz,
            &Embeddings::new(Vocab::new(["q"]).unwrap(), 2, vec![1.0, 0.0]),
            Path::new("o.txt"),
            &EvalOptions::default(),
            &mut rec,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "o.txt: none of the 6 words of small.kdz is in this file"
        );
    }

    #[test]
    fn present_rows_keeps_table_order() {
        let m = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(
            present_rows(&m, 2, &[true, false, true]),
            vec![1.0, 2.0, 5.0, 6.0]
        );
    }
}
