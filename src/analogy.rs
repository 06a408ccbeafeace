//! Word analogies (`a : b :: c : ?`) in the format of word2vec's `questions-words.txt`, answered
//! by 3CosAdd: the answer is the word whose unit vector has the largest dot product with
//! `b̂ − â + ĉ`, the three question words excluded (Mikolov et al., 2013).
//!
//! Questions are resolved to rows once ([`AnalogyTask`]) and then scored on any number of
//! matrices with the same rows, so the decoded and the original vectors answer exactly the same
//! questions from exactly the same candidates.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::neighbours::{TopK, UnitRows};
use crate::vocab::Vocab;

/// A questions file that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum AnalogyError {
    /// The file cannot be read.
    #[error("{path}: cannot read the analogy questions")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A line is neither a `: section` line nor four words.
    #[error("{path}:{line}: expected four words or a `: section` line, found {found:?}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Line number, from 1.
        line: usize,
        /// The line.
        found: String,
    },
}

/// Questions under one `: name` heading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The heading without the colon (empty for questions before any heading).
    pub name: String,
    /// `[a, b, c, d]` per question, lowercased: `a : b :: c : d`.
    pub questions: Vec<[String; 4]>,
}

impl Section {
    /// word2vec's convention: sections named `gram…` test syntax, the others meaning.
    pub fn is_syntactic(&self) -> bool {
        self.name.starts_with("gram")
    }
}

/// Reads a questions file.
pub fn read_questions(path: &Path) -> Result<Vec<Section>, AnalogyError> {
    let text = std::fs::read_to_string(path).map_err(|source| AnalogyError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_questions(&text, path)
}

/// Parses the text of a questions file; `path` names it in errors. Words are case folded,
/// blank lines and `#` comments skipped.
pub fn parse_questions(text: &str, path: &Path) -> Result<Vec<Section>, AnalogyError> {
    let mut sections: Vec<Section> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix(':') {
            sections.push(Section {
                name: name.trim().to_string(),
                questions: Vec::new(),
            });
            continue;
        }
        let words: Vec<String> = line.split_whitespace().map(str::to_lowercase).collect();
        let Ok(q) = <[String; 4]>::try_from(words) else {
            return Err(AnalogyError::Parse {
                path: path.to_owned(),
                line: i + 1,
                found: line.to_string(),
            });
        };
        if sections.is_empty() {
            sections.push(Section {
                name: String::new(),
                questions: Vec::new(),
            });
        }
        if let Some(s) = sections.last_mut() {
            s.questions.push(q);
        }
    }
    Ok(sections)
}

/// Questions resolved to rows, with the rows that may answer.
#[derive(Debug, Clone)]
pub struct AnalogyTask {
    names: Vec<String>,
    syntactic: Vec<bool>,
    totals: Vec<usize>,
    /// `(section, [a, b, c, d] rows)` of every question whose four words are candidates.
    questions: Vec<(usize, [usize; 4])>,
    candidates: usize,
}

/// Accuracy on one section or on a set of sections.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AnalogyScore {
    /// Section name, or `all`, `semantic`, `syntactic`.
    pub name: String,
    /// Questions answered correctly.
    pub correct: usize,
    /// Questions whose four words are all candidates.
    pub answered: usize,
    /// Questions in the file.
    pub total: usize,
}

impl AnalogyScore {
    /// `correct / answered`, or `None` when nothing could be answered.
    pub fn accuracy(&self) -> Option<f64> {
        (self.answered > 0).then(|| self.correct as f64 / self.answered as f64)
    }
}

/// Scores of one matrix: overall, semantic, syntactic, then per section in file order.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AnalogyResult {
    /// All questions.
    pub all: AnalogyScore,
    /// Sections not named `gram…`.
    pub semantic: AnalogyScore,
    /// Sections named `gram…`.
    pub syntactic: AnalogyScore,
    /// Each section.
    pub sections: Vec<AnalogyScore>,
}

impl AnalogyTask {
    /// Resolves `sections` against `vocab`. Candidates (possible answers and question words)
    /// are the first `limit` rows for which `usable(row)` holds; in a frequency-sorted
    /// vocabulary those are the common words, as in word2vec's `compute-accuracy` (30,000).
    pub fn new(
        sections: &[Section],
        vocab: &Vocab,
        limit: usize,
        usable: impl Fn(usize) -> bool,
    ) -> Self {
        let candidates = limit.min(vocab.len());
        let row = |w: &str| vocab.row(w).filter(|&r| r < candidates && usable(r));
        let mut questions = Vec::new();
        for (s, section) in sections.iter().enumerate() {
            for q in &section.questions {
                if let (Some(a), Some(b), Some(c), Some(d)) =
                    (row(&q[0]), row(&q[1]), row(&q[2]), row(&q[3]))
                {
                    questions.push((s, [a, b, c, d]));
                }
            }
        }
        AnalogyTask {
            names: sections.iter().map(|s| s.name.clone()).collect(),
            syntactic: sections.iter().map(Section::is_syntactic).collect(),
            totals: sections.iter().map(|s| s.questions.len()).collect(),
            questions,
            candidates,
        }
    }

    /// Questions with all four words among the candidates.
    pub fn answerable(&self) -> usize {
        self.questions.len()
    }

    /// Number of candidate rows searched (some may be unusable).
    pub fn candidates(&self) -> usize {
        self.candidates
    }

    /// Answers every question with 3CosAdd on `unit` (rows in the vocabulary's order) and
    /// scores them. All-zero rows are never an answer; of equal scores the lower row (the more
    /// frequent word) is.
    pub fn score(&self, unit: &UnitRows) -> AnalogyResult {
        let dim = unit.dim();
        // Questions per block: each candidate row is loaded once per block, not per question.
        const BLOCK: usize = 32;
        let right: Vec<bool> = self
            .questions
            .par_chunks(BLOCK)
            .flat_map_iter(|block| {
                let targets: Vec<f32> = block
                    .iter()
                    .flat_map(|(_, [a, b, c, _])| {
                        let (a, b, c) = (unit.row(*a), unit.row(*b), unit.row(*c));
                        (0..dim).map(move |j| b[j] - a[j] + c[j])
                    })
                    .collect();
                let mut best = vec![TopK::new(1); block.len()];
                let asked = |i: usize, row: usize| block[i].1[..3].contains(&row);
                unit.offer_to(self.candidates, &targets, asked, &mut best);
                block
                    .iter()
                    .zip(best)
                    .map(|((_, q), top)| top.sorted().first().is_some_and(|n| n.row == q[3]))
                    .collect::<Vec<_>>()
            })
            .collect();
        let n = self.names.len();
        let mut correct = vec![0usize; n];
        let mut answered = vec![0usize; n];
        for ((s, _), ok) in self.questions.iter().zip(&right) {
            answered[*s] += 1;
            correct[*s] += usize::from(*ok);
        }
        let sections: Vec<AnalogyScore> = (0..n)
            .map(|s| AnalogyScore {
                name: self.names[s].clone(),
                correct: correct[s],
                answered: answered[s],
                total: self.totals[s],
            })
            .collect();
        let sum = |name: &str, keep: &dyn Fn(usize) -> bool| {
            let mut score = AnalogyScore {
                name: name.to_string(),
                correct: 0,
                answered: 0,
                total: 0,
            };
            for (_, sec) in sections.iter().enumerate().filter(|(s, _)| keep(*s)) {
                score.correct += sec.correct;
                score.answered += sec.answered;
                score.total += sec.total;
            }
            score
        };
        AnalogyResult {
            all: sum("all", &|_| true),
            semantic: sum("semantic", &|s| !self.syntactic[s]),
            syntactic: sum("syntactic", &|s| self.syntactic[s]),
            sections,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(words: &[&str]) -> Vocab {
        Vocab::new(words).unwrap()
    }

    #[test]
    fn parses_sections_and_folds_case() {
        let text = "# comment\n: capital-common-countries\nAthens Greece Baghdad Iraq\n\n: gram1-adjective-to-adverb\namazing amazingly apparent apparently\n";
        let s = parse_questions(text, Path::new("q.txt")).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].name, "capital-common-countries");
        assert_eq!(
            s[0].questions,
            vec![["athens", "greece", "baghdad", "iraq"].map(String::from)]
        );
        assert!(!s[0].is_syntactic());
        assert!(s[1].is_syntactic());
    }

    #[test]
    fn questions_before_a_heading_form_an_unnamed_section() {
        let s = parse_questions("a b c d\n", Path::new("q.txt")).unwrap();
        assert_eq!(s[0].name, "");
        assert_eq!(s[0].questions.len(), 1);
    }

    #[test]
    fn bad_line_names_file_and_line() {
        let err = parse_questions(": s\na b c d\na b c\n", Path::new("q.txt")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "q.txt:3: expected four words or a `: section` line, found \"a b c\""
        );
        let err = read_questions(Path::new("/nonexistent/q.txt")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/nonexistent/q.txt: cannot read"),
            "{err}"
        );
    }

    /// man : king :: woman : queen and friends, worked out by hand in three dimensions.
    #[test]
    fn three_cos_add_scores_sections() {
        let v = vocab(&["man", "king", "woman", "queen", "apple", "zero"]);
        let rows = vec![
            1.0, 0.0, 0.0, // man
            1.0, 1.0, 0.0, // king
            0.0, 0.0, 1.0, // woman
            0.0, 1.0, 1.0, // queen
            0.0, 1.0, 0.1, // apple
            0.0, 0.0, 0.0, // zero: never an answer
        ];
        let unit = UnitRows::new(rows, 3);
        let sections = parse_questions(
            ": family\nman king woman queen\nking man queen woman\nman king woman apple\n: gram-x\nman woman king zero\n",
            Path::new("q"),
        )
        .unwrap();
        let task = AnalogyTask::new(&sections, &v, 100, |_| true);
        assert_eq!(task.answerable(), 4);
        let r = task.score(&unit);
        assert_eq!(r.sections[0].correct, 2);
        assert_eq!(r.sections[0].answered, 3);
        assert_eq!(r.semantic.correct, 2);
        assert_eq!(r.syntactic.correct, 0);
        assert_eq!(r.syntactic.answered, 1);
        assert_eq!(r.all.answered, 4);
        assert_eq!(r.all.accuracy(), Some(0.5));
    }

    /// With `a` and `b` equal the target is `c` itself; only excluding it lets `d` win.
    #[test]
    fn question_words_are_never_the_answer() {
        let v = vocab(&["a", "b", "c", "d", "e"]);
        let unit = UnitRows::new(vec![1., 0., 1., 0., 0., 1., 0.1, 1., 1., 1.], 2);
        let sections = parse_questions(
            "a b c d
",
            Path::new("q"),
        )
        .unwrap();
        let r = AnalogyTask::new(&sections, &v, 10, |_| true).score(&unit);
        assert_eq!(r.all.correct, 1);
    }

    #[test]
    fn limit_and_usable_restrict_candidates() {
        let v = vocab(&["a", "b", "c", "d", "e"]);
        let sections = parse_questions(": s\na b c d\na b c e\nA B C D\n", Path::new("q")).unwrap();
        // e is beyond the limit: one question cannot be answered.
        let task = AnalogyTask::new(&sections, &v, 4, |_| true);
        assert_eq!(task.answerable(), 2);
        // d unusable (say, missing from the original vectors).
        let task = AnalogyTask::new(&sections, &v, 5, |r| r != 3);
        assert_eq!(task.answerable(), 1);
        let r = task.score(&UnitRows::new(vec![1.0; 5], 1));
        assert_eq!(r.all.total, 3);
        assert_eq!(r.sections[0].answered, 1);
    }

    #[test]
    fn ties_go_to_the_lower_row() {
        let v = vocab(&["a", "b", "c", "x", "y"]);
        let unit = UnitRows::new(vec![1., 0., 0., 1., 0., 1., 1., 1., 1., 1.], 2);
        // x and y have the same vector; the lower row, x, is the answer.
        let sections = parse_questions("a b c x\n", Path::new("q")).unwrap();
        let r = AnalogyTask::new(&sections, &v, 10, |_| true).score(&unit);
        assert_eq!(r.all.correct, 1);
    }
}
