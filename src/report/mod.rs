//! A self-contained HTML report on a `.kdz`: evaluation scores beside the original vectors',
//! the training curve, how words spread over codes, and how each code position is used.
//!
//! The page is one file with inline CSS and inline SVG: no scripts, fonts or images to fetch,
//! so it opens anywhere, offline, and can be attached to an issue as is.

pub mod evaluation;
pub mod svg;

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use crate::code_stats::{CodeStats, size_buckets};
use crate::composer::ComposerKind;
use crate::compressed::Metadata;
use crate::format::Kdz;
use crate::inspect::{Group, code_string};
use svg::{Bar, Segment, Series, escape};

/// A training log that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The file cannot be read.
    #[error("{path}: cannot read the training log")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A line is not a JSON object.
    #[error("{path}:{line}: not a JSON object: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Line number, from 1.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// One line of a training log: its stage, if named, and every numeric field.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    /// The `stage` field.
    pub stage: Option<String>,
    /// Numeric fields by name.
    pub values: BTreeMap<String, f64>,
}

/// Per-epoch records, as the trainer's `--log-file` writes them (one JSON object per line).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TrainingLog {
    /// Records in file order.
    pub records: Vec<LogRecord>,
}

/// Fields that count or time epochs rather than measure quality; never plotted as curves.
const BOOKKEEPING: &[&str] = &[
    "epoch",
    "round",
    "step",
    "best",
    "elapsed_secs",
    "samples_per_sec",
    "learning_rate",
    "lr",
    "tau",
];
/// The curves worth plotting, when the log has them.
const PREFERRED: &[&str] = &["train_loss", "val_mse", "loss", "mse", "val_loss"];

impl TrainingLog {
    /// Reads a JSON-lines log.
    pub fn read(path: &Path) -> Result<Self, ReportError> {
        let text = std::fs::read_to_string(path).map_err(|source| ReportError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses a JSON-lines log; `path` names it in errors. Blank lines are skipped; fields
    /// that are not numbers (or `null`) are ignored, so any trainer's records can be plotted.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ReportError> {
        let mut records = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let value: serde_json::Value =
                serde_json::from_str(line).map_err(|e| ReportError::Parse {
                    path: path.to_owned(),
                    line: i + 1,
                    reason: e.to_string(),
                })?;
            let Some(object) = value.as_object() else {
                return Err(ReportError::Parse {
                    path: path.to_owned(),
                    line: i + 1,
                    reason: "a line must hold one object".to_string(),
                });
            };
            records.push(record(object));
        }
        Ok(TrainingLog { records })
    }

    /// A log kept in the metadata's training options: the first array of objects with an
    /// `epoch` field, searched breadth-first, e.g. `{"log": [{"epoch": 1, "val_mse": ...}]}`.
    pub fn from_metadata(metadata: &Metadata) -> Option<Self> {
        let mut queue = std::collections::VecDeque::from([&metadata.training]);
        while let Some(v) = queue.pop_front() {
            match v {
                serde_json::Value::Array(items)
                    if !items.is_empty()
                        && items
                            .iter()
                            .all(|x| x.as_object().is_some_and(|o| o.contains_key("epoch"))) =>
                {
                    let records = items.iter().filter_map(|x| x.as_object()).map(record);
                    return Some(TrainingLog {
                        records: records.collect(),
                    });
                }
                serde_json::Value::Array(items) => queue.extend(items),
                serde_json::Value::Object(o) => queue.extend(o.values()),
                _ => {}
            }
        }
        None
    }

    /// Curves over the record index, and the stretch of each stage.
    pub fn curves(&self) -> (Vec<Series>, Vec<Segment>) {
        let mut names: Vec<&str> = PREFERRED
            .iter()
            .copied()
            .filter(|n| self.records.iter().any(|r| r.values.contains_key(*n)))
            .collect();
        if names.is_empty() {
            let mut all: Vec<&str> = self
                .records
                .iter()
                .flat_map(|r| r.values.keys().map(String::as_str))
                .filter(|k| !BOOKKEEPING.contains(k))
                .collect();
            all.sort_unstable();
            all.dedup();
            names = all;
        }
        let series = names
            .iter()
            .map(|&name| Series {
                name: name.to_string(),
                points: self
                    .records
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        (
                            i as f64 + 1.0,
                            r.values.get(name).copied().unwrap_or(f64::NAN),
                        )
                    })
                    .collect(),
            })
            .collect();
        let mut segments: Vec<Segment> = Vec::new();
        for (i, r) in self.records.iter().enumerate() {
            let Some(stage) = &r.stage else { continue };
            let x = i as f64 + 1.0;
            match segments.last_mut() {
                Some(s) if &s.name == stage => s.end = x,
                _ => segments.push(Segment {
                    name: stage.clone(),
                    start: x,
                    end: x,
                }),
            }
        }
        (series, segments)
    }
}

fn record(object: &serde_json::Map<String, serde_json::Value>) -> LogRecord {
    LogRecord {
        stage: object
            .get("stage")
            .and_then(|s| s.as_str())
            .map(str::to_string),
        values: object
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
            .collect(),
    }
}

/// One row of the scores table: the decoded vectors' value beside the original's.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    /// What is measured.
    pub name: String,
    /// On the decoded vectors.
    pub decoded: Option<f64>,
    /// On the original vectors.
    pub original: Option<f64>,
    /// Coverage or method, shown small.
    pub note: String,
}

/// Everything the page shows.
#[derive(Debug, Clone, Copy)]
pub struct Page<'a> {
    /// The file reported on.
    pub kdz: &'a Kdz,
    /// Its code usage.
    pub stats: &'a CodeStats,
    /// The largest groups of words sharing a full code.
    pub groups: &'a [Group],
    /// Scores, if evaluated.
    pub metrics: &'a [MetricRow],
    /// The training curve, and where it came from.
    pub log: Option<(&'a TrainingLog, &'a str)>,
}

const STYLE: &str = "body{font-family:sans-serif;max-width:860px;margin:2em auto;padding:0 1em;color:#222}\
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}\
table{border-collapse:collapse;margin:0.5em 0}td,th{padding:3px 10px;text-align:left;border-bottom:1px solid #eee}\
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}small,.note{color:#666}\
svg{width:100%;height:auto;border:1px solid #eee}code{background:#f5f5f5;padding:0 3px}";

/// How `size` compares with `reference` (named `what`), for a reader: "8.0× smaller than what",
/// "1.4× larger than what" or "the same size as what" (to one decimal). A bare ratio reads
/// wrong when the file is the larger: a few thousand words' artifact, vocabulary and tables
/// included, can outweigh their f32 matrix.
pub fn size_against(size: u64, reference: u64, what: &str) -> String {
    let (size, reference) = (size.max(1) as f64, reference.max(1) as f64);
    let (smaller, larger) = (reference / size, size / reference);
    if smaller < 1.05 && larger < 1.05 {
        format!("the same size as {what}")
    } else if smaller > 1.0 {
        format!("{smaller:.1}× smaller than {what}")
    } else {
        format!("{larger:.1}× larger than {what}")
    }
}

fn fmt_value(v: Option<f64>) -> String {
    match v {
        None => "–".to_string(),
        Some(v) if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e5) => format!("{v:.3e}"),
        Some(v) => format!("{v:.4}"),
    }
}

/// Renders the page.
pub fn render_html(page: &Page) -> String {
    let kdz = page.kdz;
    let c = kdz.composer().config();
    let name = kdz.path().file_name().map_or_else(
        || kdz.path().display().to_string(),
        |f| f.to_string_lossy().into(),
    );
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>kdcompress report: {}</title><style>{STYLE}</style></head><body>",
        escape(&name)
    );
    let _ = write!(
        h,
        "<h1>kdcompress report: <code>{}</code></h1>",
        escape(&name)
    );
    let source = (kdz.len() as u64).saturating_mul(c.out_dim as u64 * 4);
    let bits = c.num_codebooks as u64 * u64::from(kdz.model().bits_per_code());
    let m = kdz.metadata();
    let facts: Vec<(&str, String)> = vec![
        ("words (N)", kdz.len().to_string()),
        ("dimension (d)", c.out_dim.to_string()),
        (
            "codes",
            format!(
                "D = {} positions of K = {} values, {bits} bits per word",
                c.num_codebooks, c.num_codes
            ),
        ),
        (
            "composer",
            format!(
                "{} (d′ = {}{}), {} parameters",
                c.kind.name(),
                c.code_dim,
                match c.kind {
                    ComposerKind::Mlp | ComposerKind::Lstm | ComposerKind::Conditioned =>
                        format!(", h = {}", c.hidden),
                    ComposerKind::Linear
                    | ComposerKind::Concat
                    | ComposerKind::Split
                    | ComposerKind::Sum => String::new(),
                },
                kdz.composer().num_params()
            ),
        ),
        (
            "file size",
            format!(
                "{} bytes, {}",
                kdz.file_len(),
                size_against(kdz.file_len(), source, "the f32 matrix")
            ),
        ),
        ("method", m.method.clone()),
        ("source", m.source.file_name.clone()),
    ];
    h.push_str("<table>");
    for (k, v) in facts {
        let _ = write!(h, "<tr><th>{k}</th><td>{}</td></tr>", escape(&v));
    }
    h.push_str("</table>");

    if !page.metrics.is_empty() {
        h.push_str("<h2>Scores</h2><table><tr><th>metric</th><th class=\"num\">decoded</th><th class=\"num\">original</th><th></th></tr>");
        for r in page.metrics {
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"note\">{}</td></tr>",
                escape(&r.name),
                fmt_value(r.decoded),
                fmt_value(r.original),
                escape(&r.note)
            );
        }
        h.push_str("</table>");
    }

    h.push_str("<h2>Training curve</h2>");
    match page.log {
        Some((log, from)) if !log.records.is_empty() => {
            let (series, segments) = log.curves();
            let positive = series
                .iter()
                .flat_map(|s| &s.points)
                .filter(|p| p.1.is_finite())
                .all(|p| p.1 > 0.0);
            let _ = write!(
                h,
                "<p class=\"note\">{} records from {}{}.</p>",
                log.records.len(),
                escape(from),
                if positive { "; log scale" } else { "" }
            );
            h.push_str(&svg::line_chart(
                "Training curve",
                "epoch (all stages, in order)",
                "value",
                &series,
                &segments,
                positive,
            ));
        }
        _ => h.push_str("<p class=\"note\">No training log: pass <code>--log FILE</code> (the trainer's <code>--log-file</code>).</p>"),
    }

    let s = page.stats;
    let share = |x: usize| 100.0 * x as f64 / s.words.max(1) as f64;
    let _ = write!(
        h,
        "<h2>Words per code</h2><p>{} words use {} distinct codes; {} words ({:.1}%) have a code of their own, the largest group has {} words.</p>",
        s.words,
        s.distinct_codes,
        s.unique_words(),
        share(s.unique_words()),
        s.largest_group()
    );
    let bars: Vec<Bar> = size_buckets(&s.group_sizes)
        .into_iter()
        .map(|(lo, hi, codes, words)| Bar {
            label: if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}–{hi}")
            },
            value: share(words),
            note: format!(
                "{codes} code{}, {:.1}%",
                if codes == 1 { "" } else { "s" },
                share(words)
            ),
        })
        .collect();
    h.push_str(&svg::bar_chart(
        "Share of words by the size of their code group",
        "words sharing one code",
        "% of words",
        &bars,
        None,
    ));
    if !page.groups.is_empty() {
        h.push_str("<p>Largest groups:</p><table><tr><th class=\"num\">words</th><th>code</th><th>some of them</th></tr>");
        for g in page.groups {
            let words: Vec<&str> = g
                .rows
                .iter()
                .take(12)
                .filter_map(|&r| kdz.vocab().word(r))
                .collect();
            let _ = write!(
                h,
                "<tr><td class=\"num\">{}</td><td><code>{}</code></td><td>{}</td></tr>",
                g.rows.len(),
                code_string(&g.key),
                escape(&words.join(" "))
            );
        }
        h.push_str("</table>");
    }

    let max = s.max_entropy_bits();
    let _ = write!(
        h,
        "<h2>Code usage per position</h2><p>Entropy of the values each position takes, out of log₂ K = {max:.2} bits; the number on a bar is how many of the {} values occur there.</p>",
        s.k
    );
    let bars: Vec<Bar> = s
        .dims
        .iter()
        .enumerate()
        .map(|(i, d)| Bar {
            label: i.to_string(),
            value: d.entropy_bits,
            note: if s.dims.len() <= 40 {
                d.distinct.to_string()
            } else {
                String::new()
            },
        })
        .collect();
    h.push_str(&svg::bar_chart(
        "Entropy per code position",
        "code position",
        "entropy (bits)",
        &bars,
        Some((max, &format!("log₂ K = {max:.2}"))),
    ));
    h.push_str("<p class=\"note\">Written by kdcompress ");
    h.push_str(env!("CARGO_PKG_VERSION"));
    h.push_str(".</p></body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_in_the_direction_they_go() {
        let m = "the matrix";
        assert_eq!(size_against(100, 800, m), "8.0× smaller than the matrix");
        // A file larger than its reference is never "0.7× smaller".
        assert_eq!(size_against(1400, 1000, m), "1.4× larger than the matrix");
        assert_eq!(size_against(1000, 1020, m), "the same size as the matrix");
        assert_eq!(size_against(1000, 1060, m), "1.1× smaller than the matrix");
        assert_eq!(size_against(0, 0, m), "the same size as the matrix");
    }

    #[test]
    fn parses_trainer_records() {
        let text = r#"{"stage":"composer","epoch":1,"train_loss":0.5,"val_mse":0.4,"best":true,"tau":null,"learning_rate":0.001,"samples_per_sec":1000.0,"elapsed_secs":1.5}

{"stage":"composer","epoch":2,"train_loss":0.3,"val_mse":0.35,"best":true,"tau":null,"learning_rate":0.001,"samples_per_sec":1000.0,"elapsed_secs":3.0}
{"stage":"search","epoch":1,"train_loss":null,"val_mse":0.3,"best":true}
"#;
        let log = TrainingLog::parse(text, Path::new("log.jsonl")).unwrap();
        assert_eq!(log.records.len(), 3);
        assert_eq!(log.records[0].stage.as_deref(), Some("composer"));
        assert_eq!(log.records[0].values["val_mse"], 0.4);
        assert!(!log.records[0].values.contains_key("tau"));
        let (series, segments) = log.curves();
        let names: Vec<&str> = series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["train_loss", "val_mse"]);
        assert_eq!(series[1].points, vec![(1.0, 0.4), (2.0, 0.35), (3.0, 0.3)]);
        assert!(series[0].points[2].1.is_nan());
        assert_eq!(
            segments,
            vec![
                Segment {
                    name: "composer".into(),
                    start: 1.0,
                    end: 2.0
                },
                Segment {
                    name: "search".into(),
                    start: 3.0,
                    end: 3.0
                }
            ]
        );
    }

    #[test]
    fn unknown_fields_are_plotted_when_no_known_curve_exists() {
        let log = TrainingLog::parse(
            "{\"epoch\":1,\"recall\":0.5,\"lr\":0.1}\n{\"epoch\":2,\"recall\":0.7}\n",
            Path::new("l"),
        )
        .unwrap();
        let (series, segments) = log.curves();
        assert_eq!(series.len(), 1);
        assert_eq!(series[0].name, "recall");
        assert!(segments.is_empty());
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let err = TrainingLog::parse("{\"epoch\":1}\n[1,2]\n", Path::new("log.jsonl")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "log.jsonl:2: not a JSON object: a line must hold one object"
        );
        let err = TrainingLog::parse("{\"epoch\":1}\n{oops\n", Path::new("log.jsonl")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("log.jsonl:2: not a JSON object: "),
            "{err}"
        );
        let err = TrainingLog::read(Path::new("/nonexistent/log.jsonl")).unwrap_err();
        assert!(matches!(err, ReportError::Read { .. }));
    }

    #[test]
    fn finds_a_log_inside_the_metadata() {
        let mut m = Metadata::default();
        assert_eq!(TrainingLog::from_metadata(&m), None);
        m.training = serde_json::json!({
            "lr": 0.001,
            "stages": ["composer"],
            "history": {"log": [{"epoch": 1, "val_mse": 0.5}, {"epoch": 2, "val_mse": 0.25}]}
        });
        let log = TrainingLog::from_metadata(&m).unwrap();
        assert_eq!(log.records.len(), 2);
        assert_eq!(log.records[1].values["val_mse"], 0.25);
    }

    /// A table of 6 words, K = 4, D = 2; two words share a code, one word needs escaping.
    pub(super) fn small_kdz() -> Kdz {
        use crate::codes::Codes;
        use crate::composer::{Composer, ComposerConfig, ComposerKind, Tensor};
        use crate::compressed::Compressed;
        use crate::vocab::Vocab;
        let config = ComposerConfig {
            kind: ComposerKind::Concat,
            num_codebooks: 2,
            num_codes: 4,
            code_dim: 1,
            hidden: 0,
            out_dim: 2,
        };
        let cb = Tensor::new(vec![2, 4, 1], (0..8).map(|i| i as f32).collect()).unwrap();
        let c = Compressed {
            vocab: Vocab::new(
                ["a", "b", "<script>", "d", "e", "f"]
                    .map(String::from)
                    .to_vec(),
            )
            .unwrap(),
            codes: Codes::new(4, 2, vec![0, 1, 0, 1, 2, 3, 3, 3, 1, 0, 2, 2]).unwrap(),
            composer: Composer::new(config, BTreeMap::from([("codebooks".into(), cb)])).unwrap(),
            metadata: Metadata::default(),
            norms: None,
        };
        Kdz::from_bytes("small.kdz", crate::format::to_bytes(&c).unwrap()).unwrap()
    }

    #[test]
    fn page_has_every_section_and_escapes_words() {
        let kdz = small_kdz();
        let codes = kdz.codes();
        let stats = CodeStats::new(&codes);
        let groups = crate::inspect::groups(&codes, 2);
        let log = TrainingLog::parse(
            "{\"stage\":\"s\",\"epoch\":1,\"val_mse\":0.5}\n{\"stage\":\"s\",\"epoch\":2,\"val_mse\":0.2}\n",
            Path::new("log"),
        )
        .unwrap();
        let metrics = vec![MetricRow {
            name: "mean cosine".into(),
            decoded: Some(0.9),
            original: Some(1.0),
            note: "all words".into(),
        }];
        let html = render_html(&Page {
            kdz: &kdz,
            stats: &stats,
            groups: &groups[..1],
            metrics: &metrics,
            log: Some((&log, "train.jsonl")),
        });
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.ends_with("</html>\n"));
        for part in [
            "<h2>Scores</h2>",
            "<td>mean cosine</td><td class=\"num\">0.9000</td><td class=\"num\">1.0000</td>",
            "2 records from train.jsonl; log scale",
            "6 words use 5 distinct codes; 4 words (66.7%) have a code of their own",
            "<code>0-1</code></td><td>a b</td>",
            "Entropy per code position",
            "log₂ K = 2.00",
        ] {
            assert!(html.contains(part), "missing {part:?}");
        }
        assert!(!html.contains("<script>"), "words must be escaped");
        assert!(
            !html.contains("http://") || !html.contains("src="),
            "nothing to fetch"
        );
        assert_eq!(html.matches("<svg").count(), 3);
        // Without a log or scores the page says so and leaves the table out.
        let html = render_html(&Page {
            kdz: &kdz,
            stats: &stats,
            groups: &[],
            metrics: &[],
            log: None,
        });
        assert!(html.contains("No training log"));
        assert!(!html.contains("<h2>Scores</h2>"));
        assert_eq!(html.matches("<svg").count(), 2);
    }

    #[test]
    fn values_format_compactly() {
        assert_eq!(fmt_value(None), "–");
        assert_eq!(fmt_value(Some(0.0)), "0.0000");
        assert_eq!(fmt_value(Some(0.91234)), "0.9123");
        assert_eq!(fmt_value(Some(0.00012)), "1.200e-4");
    }
}
