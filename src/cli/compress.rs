//! `kdcompress INPUT -K 32 -D 32 -o out.kdz`: read, train, write.
//!
//! Every option becomes a validated [`TrainConfig`] and the output's directory is checked for
//! writing before the input is read or any device touched.
//!
//! Without the `train` feature only the arguments remain (so that `--help` is the same) and
//! compressing fails with a clear error; the training-only helpers are then unused.
#![cfg_attr(not(feature = "train"), allow(dead_code, unused_imports))]

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use kdcompress::composer::ComposerKind;
use kdcompress::format::TensorDtype;
use kdcompress::precision::{MAX_F16_MSE_INCREASE, Precision, StorageChoice};
use kdcompress::progress::{Criterion, EpochRecord, Progress, StageReport, Tick};
use kdcompress::report::size_against;
#[cfg(feature = "train")]
use kdcompress::train;
use kdcompress::train_config::{Init, TauSchedule, WordWeight};
#[cfg(feature = "train")]
use kdcompress::train_config::{TrainConfig, ValidConfig};

/// The composers the trainer learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ComposerArg {
    /// Sum of code vectors, then a linear map.
    Linear,
    /// Linear plus a tanh hidden layer added as a residual.
    Mlp,
    /// An LSTM over the code vectors.
    Lstm,
    /// Code vectors added in order, each corrected by a small network shared by the steps that
    /// sees the sum so far; codes searched through it (--step-hidden, --step-beam,
    /// --step-candidates).
    Conditioned,
}

impl From<ComposerArg> for ComposerKind {
    fn from(c: ComposerArg) -> Self {
        match c {
            ComposerArg::Linear => ComposerKind::Linear,
            ComposerArg::Mlp => ComposerKind::Mlp,
            ComposerArg::Lstm => ComposerKind::Lstm,
            ComposerArg::Conditioned => ComposerKind::Conditioned,
        }
    }
}

/// Options of the default command.
#[derive(Debug, clap::Args)]
pub struct CompressArgs {
    /// Word vectors: GloVe text, word2vec text or binary, fastText .vec (optionally .gz or .zst).
    #[arg(required = true)]
    pub input: Option<PathBuf>,
    /// Output .kdz file.
    #[arg(short = 'o', long = "output", required = true, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Codes per position (K); each code takes ceil(log2 K) bits.
    #[arg(short = 'K', long = "codes", default_value_t = 32)]
    pub num_codes: usize,
    /// Code positions per word (D).
    #[arg(short = 'D', long = "codebooks", default_value_t = 32)]
    pub num_codebooks: usize,
    /// How to read the input (format, --max-words, duplicates, UTF-8).
    #[command(flatten)]
    pub input_args: super::input_args::InputArgs,
    /// How code vectors become a word vector.
    #[arg(long, value_enum, default_value_t = ComposerArg::Linear)]
    pub composer: ComposerArg,
    /// Width of a code vector (d'); default: the input's width.
    #[arg(long, value_name = "N")]
    pub code_dim: Option<usize>,
    /// Hidden width of the mlp and lstm composers and of the encoder.
    #[arg(long, default_value_t = 300, value_name = "N")]
    pub hidden: usize,
    /// Conditioned composer: hidden width of the step network (its parameters are paid for in
    /// the file: about 3·d·N + D·N floats). Default: the widest (multiple of 16) whose weights
    /// are at most a fifth of the codes and tables and whose decode stays near 10 µs a word.
    #[arg(long, value_name = "N")]
    pub step_hidden: Option<usize>,
    /// Conditioned composer: beam width of the search through it.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub step_beam: usize,
    /// Conditioned composer: codes per beam entry and step decoded through the network,
    /// preselected by plain distance.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub step_candidates: usize,
    /// Conditioned composer: re-encode every training batch through the network before its
    /// step (QINCo's training; much slower), not only every word between rounds.
    #[arg(long)]
    pub step_search_batches: bool,
    /// How codes start: residual quantization, or random weights (the paper's recipe).
    #[arg(long, value_enum, default_value_t = Init::Rq)]
    pub init: Init,
    /// Skip least-squares table fitting and re-encoding (with --init random: the plain paper
    /// recipe).
    #[arg(long)]
    pub no_refine: bool,
    /// Beam width of the initial encoding; default: the widest (8 to 64) that the input's size
    /// allows in a few minutes. Wider is slower and better.
    #[arg(long, value_name = "N")]
    pub beam: Option<usize>,
    /// Beam width while the rq tables are learned: table i is k-means of what the N best partial
    /// encodings of each sampled word leave unexplained (faiss's residual quantizer trains with
    /// 5). Wider keeps more of the neighbourhoods on high-dimensional tables, and costs k-means N
    /// times the points.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub train_beam: usize,
    /// Most rounds of least-squares fitting and re-encoding [default: as many as keep words × D ×
    /// max(K, 256) × rounds within 25·2^28, from 25 (faiss's LocalSearchQuantizer trains for 25;
    /// 50 below K = 256, whose rounds cost less) to 100: small inputs anneal longer, and lower]
    #[arg(long, value_name = "N")]
    pub lsq_rounds: Option<usize>,
    /// Perturbation trials per word in each lsq re-encoding (the iterated local search of LSQ++,
    /// faiss's LocalSearchQuantizer): two random positions change (one below D = 8), ICM runs
    /// again, and a word keeps the best codes found. 0: ICM alone; default: 0.6·D, at least 8 and
    /// at most 12.
    #[arg(long, value_name = "N")]
    pub lsq_trials: Option<usize>,
    /// Each lsq round also encodes every word by beam search of this width under the round's
    /// tables, and a word keeps whichever codes decode closer. The first round runs it beside
    /// the perturbation trials; where it then finds closer codes for at least 2% of the words it
    /// goes on in their place (on GloVe-like tables of few dimensions per code: lower errors),
    /// elsewhere the rounds go on with the trials alone. In plain rounds (above --lsq-sample
    /// words) the beam stops once a round with it gains less than 0.5%, and the trials go on
    /// alone while they gain 0.1%. 0: never; default: 16.
    #[arg(long, value_name = "N")]
    pub lsq_beam: Option<usize>,
    /// The lsq rounds anneal (LSQ++'s stochastic relaxation): each round searches codes under
    /// tables perturbed by noise of the rq stage's error spread / D (above 50 dimensions louder,
    /// by (d / 50)^0.2, at most twice), scaled by (1 - round / rounds)^P, the best kept; the
    /// rounds run to --lsq-rounds unless, from the tenth, five rounds together gain less than
    /// 0.1% (see --lsq-sample). 0: plain rounds while the error falls.
    #[arg(long, default_value_t = 0.5, value_name = "P")]
    pub lsq_anneal: f64,
    /// Most words the lsq rounds anneal over all their rounds: annealing needs every round over
    /// every word (tables annealed on a sample fit the sample, not the rest), so its cost grows
    /// with words × D × K. Given, a larger input gets plain rounds (with the trials) while the
    /// error falls. Default: as many as keep words × D × max(K, 256) within 2^30 (524,288 words
    /// at D = 8, 209,715 at D = 20, 131,072 at D = 32; all 400,000 GloVe words at K=256 D=8: 25
    /// rounds of 9 s on 2 cores), and at K ≥ 256 a larger input anneals over as many rounds as
    /// cost the same, if at least 12 (400,000 words at D = 20: 13), else gets plain rounds (as
    /// it does before --composer conditioned, whose stages need the time).
    #[arg(long, value_name = "N")]
    pub lsq_sample: Option<usize>,
    /// How much each word's squared error counts when the lsq stage fits its tables and judges
    /// its rounds, and in the conditioned composer's loss and rounds. relative: divided by the
    /// word's squared length (normalised to average 1),
    /// so short vectors' directions are fit as closely as long ones' — what cosine neighbours
    /// and similarities read — at some mean squared error (all 400,000 GloVe words at K=256:
    /// D=32 MSE 0.0275 -> 0.0301, nn@10 0.9210 -> 0.9255; D=20 0.2195 -> 0.2289, nn@10 0.7817
    /// -> 0.7893); on vectors of about equal length (the mpnet table) the two nearly agree.
    /// uniform: the mean squared error alone.
    #[arg(long, value_enum, default_value_t = WordWeight::Relative, value_name = "HOW")]
    pub word_weight: WordWeight,
    /// Most rounds of re-encoding through the trained composer [default: 2; the conditioned
    /// composer: 1 where one round's search would cost more than about 3.3·10¹² multiply-adds,
    /// as on all 400,000 GloVe words at -K 256 -D 20].
    #[arg(long, value_name = "N")]
    pub refine_rounds: Option<usize>,
    /// Words per optimiser step.
    #[arg(long, default_value_t = 512, value_name = "N")]
    pub batch_size: usize,
    /// Adam learning rate.
    #[arg(long = "lr", default_value_t = 1e-3, value_name = "RATE")]
    pub learning_rate: f64,
    /// Most epochs of gradient training [default: 20; the conditioned composer's network: enough
    /// for about 3,000 steps, within 8..=100].
    #[arg(long, value_name = "N")]
    pub epochs: Option<usize>,
    /// Epochs without a better held-out error before stopping.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub patience: usize,
    /// Softmax temperature of the relaxed codes.
    #[arg(long, default_value_t = 1.0)]
    pub tau: f64,
    /// How the temperature changes over the epochs.
    #[arg(long, value_enum, default_value_t = TauSchedule::Constant)]
    pub tau_schedule: TauSchedule,
    /// Final temperature of a decaying schedule.
    #[arg(long, default_value_t = 0.1)]
    pub tau_min: f64,
    /// Weight of the relaxed codes' entropy in the loss.
    #[arg(long, default_value_t = 0.0, value_name = "W")]
    pub entropy_weight: f64,
    /// Also train an encoder on the codes and let it propose codes when re-encoding.
    #[arg(long)]
    pub distill: bool,
    /// Share of words held out to judge gradient training by (the mlp and lstm composers,
    /// --distill, --init random, dccl, dpq); runs whose every stage is judged over all words
    /// (the default, --composer conditioned) fit every word and hold none out.
    #[arg(long, default_value_t = 0.02, value_name = "FRACTION")]
    pub val_fraction: f64,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// auto (CUDA when LibTorch sees one), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Threads for LibTorch and the measurements; default: all cores.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// A budget in seconds for the whole command, reading included: a round or epoch starts
    /// only when one as long as the last still ends within it, searches past it keep their
    /// codes, the annealed lsq rounds cool by the last round that fits, and the run's closing
    /// measurements are kept back from it (the rq stage and the first lsq refit always run;
    /// results then depend on speed).
    #[arg(long, value_name = "SECONDS")]
    pub time_limit: Option<f64>,
    /// JSON lines to this file: one per epoch or round, and one per finished stage (marked
    /// `"record": "stage_end"`, with its error, cosine, neighbour overlap and seconds).
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Print nothing but errors.
    #[arg(short, long)]
    pub quiet: bool,
    #[arg(long, help = super::outputs::FORCE_HELP)]
    pub force: bool,
    /// How to store the codebooks and composer weights: auto (f16 when that raises the error
    /// over all words by at most 0.1%, else f32), f32 (readable by every .kdz 1.x reader) or f16
    /// (format 1.2; f32 with a warning if a weight lies beyond the f16 range).
    #[arg(long, value_enum, default_value_t = Precision::Auto)]
    pub precision: Precision,
    /// How codes are learned: kd (the staged KD pipeline), dccl (Shu & Nakayama 2018),
    /// dpq-sx or dpq-vq (Chen, Li & Sun 2020); recorded in the file's metadata.
    #[arg(long, value_enum, default_value_t = kdcompress::method::Method::Kd)]
    pub method: kdcompress::method::Method,
    /// Weight of DPQ-VQ's commitment loss.
    #[arg(long, default_value_t = 0.25, value_name = "BETA")]
    pub commitment: f64,
}

/// The options as a validated training configuration: the one place they are checked.
#[cfg(feature = "train")]
fn config(args: &CompressArgs) -> anyhow::Result<ValidConfig> {
    let device = args.device.parse().with_context(|| "invalid --device")?;
    let config = TrainConfig {
        method: args.method,
        commitment: args.commitment,
        num_codes: args.num_codes,
        num_codebooks: args.num_codebooks,
        composer: args.composer.into(),
        code_dim: args.code_dim,
        hidden: args.hidden,
        step_hidden: args.step_hidden,
        step_beam: args.step_beam,
        step_candidates: args.step_candidates,
        step_search_batches: args.step_search_batches,
        init: args.init,
        refine: !args.no_refine,
        beam: args.beam,
        train_beam: args.train_beam,
        lsq_rounds: args.lsq_rounds,
        lsq_trials: args.lsq_trials,
        lsq_beam: args.lsq_beam,
        lsq_anneal: args.lsq_anneal,
        lsq_sample: args.lsq_sample,
        word_weight: args.word_weight,
        refine_rounds: args.refine_rounds,
        batch_size: args.batch_size,
        learning_rate: args.learning_rate,
        epochs: args.epochs.unwrap_or(TrainConfig::default().epochs),
        step_epochs: args.epochs,
        patience: args.patience,
        tau: args.tau,
        tau_schedule: args.tau_schedule,
        tau_min: args.tau_min,
        entropy_weight: args.entropy_weight,
        distill: args.distill,
        val_fraction: args.val_fraction,
        seed: args.seed,
        device,
        threads: args.threads,
        time_limit: args.time_limit,
    };
    Ok(config.validated()?)
}

/// Fails unless a file can be created next to `output` (and `output` is not a directory), so
/// that a long training never ends in an unwritable path.
fn check_writable(output: &Path) -> anyhow::Result<()> {
    if output.is_dir() {
        bail!("output {} is a directory", output.display());
    }
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        bail!(
            "cannot write {}: directory {} does not exist",
            output.display(),
            dir.display()
        );
    }
    tempfile::Builder::new()
        .prefix(".kdcompress-check")
        .tempfile_in(dir)
        .with_context(|| {
            format!(
                "cannot write {}: directory {} is not writable",
                output.display(),
                dir.display()
            )
        })?;
    Ok(())
}

/// Compresses `args.input`.
pub fn run(args: CompressArgs) -> anyhow::Result<()> {
    #[cfg(feature = "train")]
    {
        run_training(args)
    }
    #[cfg(not(feature = "train"))]
    {
        let _ = args;
        bail!(
            "this kdcompress was built without the `train` feature (LibTorch): it cannot compress"
        )
    }
}

#[cfg(feature = "train")]
fn run_training(args: CompressArgs) -> anyhow::Result<()> {
    let wall = Instant::now();
    // Before reading a byte: what the process holds with LibTorch loaded.
    let at_start = memory_status("VmRSS:");
    let config = config(&args)?;
    let input = args.input.clone().context("an INPUT file is required")?;
    let output = args.output.clone().context("-o FILE is required")?;
    check_writable(&output)?;
    super::outputs::check(
        &[Some(&output), args.log_file.as_deref()],
        &[Some(&input)],
        args.force,
    )?;
    let log = match &args.log_file {
        Some(p) => {
            Some(BufWriter::new(File::create(p).with_context(|| {
                format!("cannot create log file {}", p.display())
            })?))
        }
        None => None,
    };
    let trainer = train::Trainer::new(config)?;
    let config = trainer.config();
    let mut progress = CliProgress::new(args.quiet, log);
    progress.note(&format!("reading {}", input.display()));
    let loaded = kdcompress::input::read(&input, &args.input_args.to_options())?;
    let (embeddings, source) = (loaded.embeddings, loaded.source);
    let (n, d) = (embeddings.len(), embeddings.dim());
    progress.note(&format!(
        "{n} words × {d} dims; training K={} D={} on {}",
        config.num_codes,
        config.num_codebooks,
        trainer.device_name()
    ));
    // The process's allocator policy is the binary's to set; the library only offers it.
    train::allocator::limit_heap_growth();
    // --time-limit counts from the command's start: reading the input is part of the budget.
    let trained = trainer
        .train_since(&embeddings, &mut progress, wall)
        .with_context(|| format!("training on {} failed", input.display()))?;
    let storage = kdcompress::precision::choose(
        args.precision,
        &trained.composer,
        &trained.codes,
        embeddings.matrix(),
    )
    .context("cannot measure what storing the tables as f16 costs")?;
    if storage.precision == Precision::F16 && storage.dtype == TensorDtype::F32 {
        eprintln!(
            "warning: --precision f16: a weight lies beyond the f16 range (±65504) and would be \
             stored as an infinity; the tables and composer are stored as f32"
        );
    }
    let report = trained.report.clone();
    let mut training = serde_json::to_value(config)?;
    training["storage"] = storage_json(&storage)?;
    training["settled"] = serde_json::to_value(&report.settled)?;
    let metadata = kdcompress::compressed::Metadata {
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        method: config.method.name().into(),
        source: source.clone(),
        training,
        seed: config.seed,
        ..Default::default()
    };
    let (vocab, _, _) = embeddings.into_parts();
    let compressed = trained.into_compressed(vocab, metadata);
    let bits = compressed.bits_per_word();
    let written = if args.force {
        kdcompress::format::write_as(&output, &compressed, storage.dtype)
    } else {
        kdcompress::format::write_new_as(&output, &compressed, storage.dtype)
    };
    written.with_context(|| format!("cannot write {}", output.display()))?;
    let artifact = std::fs::metadata(&output)
        .with_context(|| format!("cannot stat {}", output.display()))?
        .len();
    // What the other choice would have written; none where f16 cannot hold the weights.
    let other = match storage.dtype {
        TensorDtype::F32 => TensorDtype::F16,
        TensorDtype::F16 => TensorDtype::F32,
    };
    let other_len = kdcompress::format::file_len_as(&compressed, other).ok();
    let (f32_len, f16_len) = match storage.dtype {
        TensorDtype::F32 => (Some(artifact), other_len),
        TensorDtype::F16 => (other_len, Some(artifact)),
    };
    let mut record = storage_json(&storage)?;
    record["record"] = "storage".into();
    record["bytes_f32"] = f32_len.into();
    record["bytes_f16"] = f16_len.into();
    progress.log_line(Ok(record));
    progress.finish()?;
    if args.quiet {
        return Ok(());
    }
    let matrix = (n * d * 4) as u64;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "input         {} ({}, {n} words × {d} dims, f32 matrix {})",
        input.display(),
        bytes(source.file_size),
        bytes(matrix)
    )?;
    writeln!(
        out,
        "output        {} ({})",
        output.display(),
        bytes(artifact)
    )?;
    writeln!(
        out,
        "size          {}, {}",
        size_against(artifact, matrix, "the f32 matrix"),
        size_against(artifact, source.file_size, "the input file")
    )?;
    writeln!(
        out,
        "bits per word {bits} in codes (K={} D={}); {:.1} with the composer and vocabulary amortised",
        config.num_codes,
        config.num_codebooks,
        artifact as f64 * 8.0 / n as f64
    )?;
    writeln!(
        out,
        "storage       {}",
        storage_line(&storage, f32_len, f16_len, n)
    )?;
    writeln!(
        out,
        "device        {} ({} threads)",
        report.device, report.threads
    )?;
    let speed = if report.samples_per_sec > 0.0 {
        format!("{:.0} words/s in gradient epochs", report.samples_per_sec)
    } else {
        "no gradient epochs".to_string()
    };
    writeln!(
        out,
        "wall time     {:.1} s ({:.1} s training, {speed})",
        wall.elapsed().as_secs_f64(),
        report.seconds,
    )?;
    if let (Some(peak), Some(start)) = (memory_status("VmHWM:"), at_start) {
        writeln!(
            out,
            "peak memory   {} resident, {} of it before reading the input (LibTorch loaded); \
             {} for the work, {:.1}× the f32 matrix",
            bytes(peak),
            bytes(start),
            bytes(peak.saturating_sub(start)),
            peak.saturating_sub(start) as f64 / matrix as f64
        )?;
    }
    writeln!(
        out,
        "quality       mse {:.4}  mean cosine {:.4}  top-10 neighbour overlap {:.4} (all {n} words, discrete codes)",
        report.mse, report.mean_cosine, report.neighbour_overlap
    )?;
    writeln!(
        out,
        "code usage    {} distinct code rows for {n} words; largest group sharing one code: {}",
        report.code_usage.distinct_rows, report.code_usage.largest_group
    )?;
    writeln!(
        out,
        "stages        {:<11}{:>9}{:>9}{:>9}{:>9}",
        "", "mse", "cosine", "nn@10", "secs"
    )?;
    for s in &report.stages {
        writeln!(
            out,
            "              {:<11}{:>9.4}{:>9.4}{:>9.4}{:>9.1}",
            s.stage, s.mse, s.mean_cosine, s.neighbour_overlap, s.seconds
        )?;
    }
    Ok(())
}

/// The storage decision as recorded in the metadata (`training.storage`) and the log.
fn storage_json(s: &StorageChoice) -> anyhow::Result<serde_json::Value> {
    let mut v = serde_json::to_value(s)?;
    v["relative_increase"] = s.relative_increase().into();
    v["max_relative_increase"] = MAX_F16_MSE_INCREASE.into();
    Ok(v)
}

/// What was stored and what f16 costs, in one line: `f16 tables and composer (auto): mse
/// 0.103900 -> 0.103901 (+0.0010%), file 1.9 MiB -> 1.3 MiB (300.1 -> 210.2 bits per word)`,
/// f32 first, `n` words.
fn storage_line(s: &StorageChoice, f32_len: Option<u64>, f16_len: Option<u64>, n: usize) -> String {
    let how = match s.precision {
        Precision::Auto => "auto",
        Precision::F32 | Precision::F16 => "as asked",
    };
    let head = format!("{} tables and composer ({how})", s.dtype);
    let size = |len: Option<u64>| len.map_or_else(|| "?".to_string(), bytes);
    let per_word = |len: Option<u64>| {
        len.filter(|_| n > 0).map_or_else(
            || "?".to_string(),
            |b| format!("{:.1}", b as f64 * 8.0 / n as f64),
        )
    };
    let files = format!(
        "file {} -> {} ({} -> {} bits per word)",
        size(f32_len),
        size(f16_len),
        per_word(f32_len),
        per_word(f16_len)
    );
    let (Some(f16), Some(change)) = (s.mse_f16, s.relative_increase()) else {
        return match s.mse_f16 {
            None => format!(
                "{head}: f16 cannot hold the weights (one lies beyond ±65504); file {}",
                size(f32_len)
            ),
            // An error of zero (or not finite) has no relative change to show.
            Some(f16) => format!("{head}: mse {} -> {} with f16; {files}", s.mse_f32, f16),
        };
    };
    let percent = 100.0 * change;
    // Rounding often costs less than a ten-thousandth of a percent; say how much less.
    let percent = if percent != 0.0 && percent.abs() < 1e-3 {
        format!("{percent:+.1e}%")
    } else {
        format!("{percent:+.4}%")
    };
    let mse = format!(
        "mse {} -> {} ({percent})",
        significant(s.mse_f32),
        significant(f16)
    );
    match s.dtype {
        TensorDtype::F16 => format!("{head}: {mse}, {files}"),
        TensorDtype::F32 if s.precision == Precision::Auto => format!(
            "{head}: f16 would cost {mse}, above the {}% allowed; {files}",
            100.0 * MAX_F16_MSE_INCREASE
        ),
        TensorDtype::F32 => format!("{head}: f16 would give {mse}, {files}"),
    }
}

/// `v` with six significant digits, enough to show an f16 rounding cost of 0.001%.
fn significant(v: f64) -> String {
    let digits = if v == 0.0 || !v.is_finite() {
        0
    } else {
        (5 - v.abs().log10().floor() as i32).max(0) as usize
    };
    format!("{v:.digits$}")
}

/// A memory figure of this process in bytes (`VmRSS:` resident now, `VmHWM:` peak resident),
/// where the system reports it.
fn memory_status(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn bytes(b: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Turns training progress into an indicatif bar on a terminal, plain lines otherwise, nothing
/// with `-q`; writes epoch records to the log file either way.
struct CliProgress {
    quiet: bool,
    bar: Option<indicatif::ProgressBar>,
    tty: bool,
    stage: String,
    last_line: Instant,
    log: Option<BufWriter<File>>,
    log_error: Option<std::io::Error>,
}

impl CliProgress {
    /// Appends one JSON line to the log file, if any, and flushes it: a record is written once
    /// an epoch, round or stage, so a reader following the log (or one left by a killed run)
    /// sees every record so far. The first failure is kept for `finish`.
    fn log_line(&mut self, value: serde_json::Result<serde_json::Value>) {
        if let Some(log) = &mut self.log
            && self.log_error.is_none()
        {
            let line = value.map_err(std::io::Error::other);
            if let Err(e) = line.and_then(|l| writeln!(log, "{l}").and_then(|()| log.flush())) {
                self.log_error = Some(e);
            }
        }
    }

    fn new(quiet: bool, log: Option<BufWriter<File>>) -> Self {
        CliProgress {
            quiet,
            bar: None,
            tty: std::io::stderr().is_terminal(),
            stage: String::new(),
            last_line: Instant::now(),
            log,
            log_error: None,
        }
    }

    fn note(&mut self, text: &str) {
        if self.quiet {
            return;
        }
        match &self.bar {
            Some(b) => b.println(text),
            None => eprintln!("{text}"),
        }
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        if let Some(e) = self.log_error.take() {
            return Err(e).context("cannot write the log file");
        }
        if let Some(l) = &mut self.log {
            l.flush().context("cannot write the log file")?;
        }
        Ok(())
    }
}

/// One line per epoch or round; the best mark names the error that earned it, so that a round
/// kept for its all-words error is not read as a held-out gain.
fn epoch_line(r: &EpochRecord) -> String {
    let head = format!("{} {:>3}: ", r.stage, r.epoch);
    let speed = format!("{:.0} words/s", r.samples_per_sec);
    match r.judged_by {
        Criterion::HeldOut => {
            let loss = r
                .train_loss
                .map(|l| format!("loss {l:.4}  "))
                .unwrap_or_default();
            let best = if r.best { "  (best)" } else { "" };
            format!("{head}{loss}{}{speed}{best}", val_part(r))
        }
        Criterion::AllWords | Criterion::AllWordsWeighted => {
            let (error, gained, no_gain) = if r.judged_by == Criterion::AllWords {
                ("mse", "best all-words mse", "no all-words gain")
            } else {
                ("weighted error", "best weighted error", "no weighted gain")
            };
            let all = r
                .train_loss
                .map(|l| format!("{error} {l:.4} (all words)  "))
                .unwrap_or_default();
            let best = if r.best { gained } else { no_gain };
            format!("{head}{all}{}{speed}  ({best})", val_part(r))
        }
    }
}

/// The held-out error of an epoch line, when the run holds words out.
fn val_part(r: &EpochRecord) -> String {
    r.val_mse
        .map(|v| format!("val mse {v:.4}  "))
        .unwrap_or_default()
}

impl Progress for CliProgress {
    fn stage_start(&mut self, stage: &str, total: u64) {
        self.stage = stage.to_string();
        if self.quiet || !self.tty {
            return;
        }
        let bar = self.bar.get_or_insert_with(|| {
            let b = indicatif::ProgressBar::new(0);
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        let style = indicatif::ProgressStyle::with_template(
            "{prefix:>11} [{elapsed_precise}] {wide_bar} {pos}/{len} ({eta}) {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(stage.to_string());
        bar.set_length(total);
        bar.set_position(0);
        bar.set_message("");
    }

    fn tick(&mut self, t: &Tick) {
        if self.quiet {
            return;
        }
        let mut msg = Vec::new();
        if let Some(l) = t.loss {
            msg.push(format!("loss {l:.4}"));
        }
        if let Some(v) = t.val_mse {
            msg.push(format!("val {v:.4}"));
        }
        if let Some(s) = t.samples_per_sec {
            msg.push(format!("{s:.0} words/s"));
        }
        let msg = msg.join("  ");
        match &self.bar {
            Some(b) => {
                b.set_position(t.done);
                b.set_message(msg);
            }
            None if self.last_line.elapsed() >= Duration::from_secs(10) => {
                self.last_line = Instant::now();
                eprintln!("{}: {} done  {msg}", self.stage, t.done);
            }
            None => {}
        }
    }

    fn epoch(&mut self, r: &EpochRecord) {
        self.log_line(serde_json::to_value(r));
        self.note(&epoch_line(r));
    }

    fn stage_end(&mut self, s: &StageReport) {
        // Marked apart from the epoch records, which have no "record" field.
        self.log_line(serde_json::to_value(s).map(|mut v| {
            v["record"] = "stage_end".into();
            v
        }));
        self.note(&format!(
            "after {:<10} mse {:.4}  mean cosine {:.4}  nn@10 {:.4}  ({:.1} s)",
            s.stage, s.mse, s.mean_cosine, s.neighbour_overlap, s.seconds
        ));
    }

    fn message(&mut self, text: &str) {
        self.note(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choice(precision: Precision, dtype: TensorDtype, mse_f16: Option<f64>) -> StorageChoice {
        StorageChoice {
            precision,
            dtype,
            mse_f32: 0.1039,
            mse_f16,
        }
    }

    #[test]
    fn storage_line_says_what_was_stored_and_what_f16_costs() {
        let (f32_len, f16_len) = (Some(2_000_000), Some(1_300_000));
        let line = storage_line(
            &choice(Precision::Auto, TensorDtype::F16, Some(0.10391)),
            f32_len,
            f16_len,
            5000,
        );
        assert_eq!(
            line,
            "f16 tables and composer (auto): mse 0.103900 -> 0.103910 (+0.0096%), \
             file 1.9 MiB -> 1.2 MiB (3200.0 -> 2080.0 bits per word)"
        );
        let line = storage_line(
            &choice(Precision::Auto, TensorDtype::F32, Some(0.105)),
            f32_len,
            f16_len,
            5000,
        );
        assert!(
            line.starts_with(
                "f32 tables and composer (auto): f16 would cost mse 0.103900 -> 0.105000 \
                 (+1.0587%), above the 0.1% allowed; file 1.9 MiB -> 1.2 MiB"
            ),
            "{line}"
        );
        let line = storage_line(
            &choice(
                Precision::F32,
                TensorDtype::F32,
                Some(0.1039 * (1.0 + 3e-8)),
            ),
            f32_len,
            f16_len,
            5000,
        );
        assert!(
            line.starts_with(
                "f32 tables and composer (as asked): f16 would give mse 0.103900 -> 0.103900 \
                 (+3.0e-6%), file"
            ),
            "{line}"
        );
        let line = storage_line(
            &choice(Precision::Auto, TensorDtype::F32, None),
            f32_len,
            None,
            5000,
        );
        assert_eq!(
            line,
            "f32 tables and composer (auto): f16 cannot hold the weights (one lies beyond \
             ±65504); file 1.9 MiB"
        );
    }

    #[test]
    fn significant_keeps_six_digits() {
        assert_eq!(significant(0.1039), "0.103900");
        assert_eq!(significant(3.497163), "3.49716");
        assert_eq!(significant(0.00900257), "0.00900257");
        assert_eq!(significant(123456.7), "123457");
        assert_eq!(significant(0.0), "0");
    }

    /// A long run's log is read while it runs (or after it was killed): every record must be in
    /// the file as soon as it is logged, not only when the run finishes.
    #[test]
    fn every_log_record_is_in_the_file_before_the_run_finishes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.log");
        let log = BufWriter::new(File::create(&path).unwrap());
        let mut progress = CliProgress::new(true, Some(log));
        for epoch in 1..=3 {
            progress.log_line(Ok(serde_json::json!({"epoch": epoch, "stage": "lsq"})));
            let text = std::fs::read_to_string(&path).unwrap();
            assert_eq!(text.lines().count(), epoch, "{text:?}");
            assert!(
                text.ends_with(&format!("\"epoch\":{epoch},\"stage\":\"lsq\"}}\n")),
                "{text:?}"
            );
        }
        progress.finish().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 3);
    }
}
