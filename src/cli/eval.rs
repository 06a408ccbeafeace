//! `kdcompress eval FILE.kdz --original VECTORS`: how well the decoded vectors stand in for the
//! originals, each score beside the originals' own; `--report` adds an HTML page with charts.

use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context;
use kdcompress::code_stats::CodeStats;
use kdcompress::export::atomic_write;
use kdcompress::format::Kdz;
use kdcompress::input;
use kdcompress::inspect;
use kdcompress::progress::Progress;
use kdcompress::report::evaluation::{EvalOptions, Evaluation};
use kdcompress::report::{self, Page, TrainingLog};

use super::input_args::InputArgs;

/// Options of `eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// A .kdz file.
    pub file: PathBuf,
    /// The vectors it was made from (GloVe, word2vec, fastText).
    #[arg(long, value_name = "FILE")]
    pub original: PathBuf,
    /// Word similarity files: `word1 word2 score` per line, tab or space separated, `#` comments.
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub similarity: Vec<PathBuf>,
    /// Analogy questions in word2vec's questions-words format (`: section` lines, then
    /// `a b c d`), answered by 3CosAdd.
    #[arg(long, value_name = "FILE")]
    pub analogy: Option<PathBuf>,
    /// Answer analogies among the first N words (the most frequent, in frequency-sorted files).
    #[arg(long, value_name = "N", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub analogy_vocab: u64,
    /// Words sampled for the top-10 neighbour overlap.
    #[arg(long, value_name = "N", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub samples: u64,
    /// Seed of that sample.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print the scores as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write a self-contained HTML report (scores, training curve, code usage).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// The trainer's per-epoch log (JSON lines, its --log-file) for the report's training curve;
    /// without it, a log kept in the .kdz metadata is used if there is one.
    #[arg(long, value_name = "FILE", requires = "report")]
    pub log: Option<PathBuf>,
    #[arg(long, requires = "report", help = super::outputs::FORCE_HELP)]
    pub force: bool,
    /// How to read --original.
    #[command(flatten, next_help_heading = "Reading --original")]
    pub read: InputArgs,
}

/// Largest groups listed in the report.
const REPORT_GROUPS: usize = 10;

/// Evaluates `args.file`.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let inputs: Vec<Option<&std::path::Path>> = [Some(&args.file), Some(&args.original)]
        .into_iter()
        .chain(args.similarity.iter().map(Some))
        .chain([args.analogy.as_ref(), args.log.as_ref()])
        .map(|p| p.map(|p| p.as_path()))
        .collect();
    super::outputs::check(&[args.report.as_deref()], &inputs, args.force)?;
    // Cheap inputs first: a bad log or path should fail before minutes of scoring.
    let log = match &args.log {
        Some(path) => Some(TrainingLog::read(path)?),
        None => None,
    };
    let kdz = Kdz::open(&args.file)?;
    let loaded = input::read(&args.original, &args.read.to_options())?;
    let opts = EvalOptions {
        similarity: args.similarity.clone(),
        analogy: args.analogy.clone(),
        analogy_vocab: usize::try_from(args.analogy_vocab).unwrap_or(usize::MAX),
        neighbour_samples: usize::try_from(args.samples).unwrap_or(usize::MAX),
        seed: args.seed,
    };
    let mut progress = Stages {
        show: io::stderr().is_terminal(),
    };
    let evaluation = Evaluation::compute(
        &kdz,
        &loaded.embeddings,
        &args.original,
        &opts,
        &mut progress,
    )?;

    let mut out = BufWriter::new(io::stdout().lock());
    if args.json {
        serde_json::to_writer_pretty(&mut out, &evaluation).context("cannot format the scores")?;
        writeln!(out)?;
    } else {
        print_text(&evaluation, &mut out)?;
    }
    out.flush()?;

    if let Some(path) = &args.report {
        let codes = kdz.codes();
        let stats = CodeStats::new(&codes);
        let mut groups = inspect::groups(&codes, codes.d());
        groups.retain(|g| g.rows.len() > 1);
        groups.truncate(REPORT_GROUPS);
        let from_metadata;
        let log = match (&log, &args.log) {
            (Some(log), Some(p)) => Some((log, p.display().to_string())),
            _ => {
                from_metadata = TrainingLog::from_metadata(kdz.metadata());
                from_metadata
                    .as_ref()
                    .map(|l| (l, "the .kdz metadata".to_string()))
            }
        };
        let rows = evaluation.rows();
        let html = report::render_html(&Page {
            kdz: &kdz,
            stats: &stats,
            groups: &groups,
            metrics: &rows,
            log: log.as_ref().map(|(l, from)| (*l, from.as_str())),
        });
        atomic_write(path, args.force, |w| w.write_all(html.as_bytes()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Names each stage on a terminal, so a minute of scoring 400,000 words is not silent.
struct Stages {
    show: bool,
}

impl Progress for Stages {
    fn stage_start(&mut self, stage: &str, total: u64) {
        if self.show {
            eprintln!("eval: {stage} ({total})");
        }
    }
}

fn print_text(e: &Evaluation, out: &mut impl Write) -> io::Result<()> {
    writeln!(
        out,
        "{} against {}: {} of {} words found, d = {}",
        e.file.display(),
        e.original.display(),
        e.words_in_original,
        e.words,
        e.dim
    )?;
    writeln!(out, "{:<34} {:>10} {:>10}", "", "decoded", "original")?;
    let cell = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.4}"));
    for r in e.rows() {
        let line = format!(
            "{:<34} {:>10} {:>10}  {}",
            r.name,
            cell(r.decoded),
            cell(r.original),
            r.note
        );
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}
