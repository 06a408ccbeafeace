//! `kdcompress export FILE.kdz -o OUT`: decoded vectors as GloVe text, word2vec binary or
//! `.npy`, or the compressed model as safetensors.

use std::path::PathBuf;

use anyhow::bail;
use kdcompress::export::{self, ExportFormat, ExportOptions};
use kdcompress::format::Kdz;

/// Options of `export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// A .kdz file.
    pub file: PathBuf,
    /// Where to write.
    #[arg(short, long)]
    pub output: PathBuf,
    /// What to write; by default from the extension: .txt glove, .bin word2vec, .npy,
    /// .safetensors.
    #[arg(long, value_enum)]
    pub format: Option<ExportFormat>,
    /// Also write the vocabulary, one word per line in row order (the row labels of .npy).
    #[arg(long, value_name = "FILE")]
    pub words: Option<PathBuf>,
    #[arg(long, help = super::outputs::FORCE_HELP)]
    pub force: bool,
}

/// A validated export request.
struct Plan {
    opts: ExportOptions,
    output: PathBuf,
    words: Option<PathBuf>,
}

impl Plan {
    fn new(args: &ExportArgs) -> anyhow::Result<Self> {
        let format = match args
            .format
            .or_else(|| ExportFormat::from_path(&args.output))
        {
            Some(f) => f,
            None => bail!(
                "{}: cannot tell the format from the extension; use .txt, .bin, .npy or \
                 .safetensors, or pass --format glove|word2vec|npy|safetensors",
                args.output.display()
            ),
        };
        // Checked up front so that nothing is decoded, and no file of the pair written, in vain.
        super::outputs::check(
            &[Some(&args.output), args.words.as_deref()],
            &[Some(&args.file)],
            args.force,
        )?;
        Ok(Plan {
            opts: ExportOptions {
                format,
                overwrite: args.force,
            },
            output: args.output.clone(),
            words: args.words.clone(),
        })
    }
}

/// Exports `args.file`.
pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    let plan = Plan::new(&args)?;
    let kdz = Kdz::open(&args.file)?;
    export::export(&kdz, &plan.output, &plan.opts)?;
    eprintln!(
        "wrote {} ({}, {} words x {})",
        plan.output.display(),
        plan.opts.format,
        kdz.len(),
        kdz.dim()
    );
    if let Some(words) = &plan.words {
        export::write_words(&kdz, words, plan.opts.overwrite)?;
        eprintln!("wrote {} ({} words)", words.display(), kdz.len());
    }
    Ok(())
}
