//! `kdcompress similar FILE.kdz WORD`: nearest neighbours by cosine of the decoded vectors, and
//! with `--original` those of the source vectors beside them.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use anyhow::bail;
use kdcompress::input;
use kdcompress::inspect::Aligned;
use kdcompress::neighbours::{Neighbour, UnitRows};

use super::input_args::InputArgs;

/// Options of `similar`.
#[derive(Debug, clap::Args)]
pub struct SimilarArgs {
    /// A .kdz file.
    pub file: PathBuf,
    /// Words whose neighbours to list.
    #[arg(required = true)]
    pub words: Vec<String>,
    /// Neighbours per word.
    #[arg(short, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub k: u32,
    /// The source vectors (GloVe, word2vec, fastText): list their neighbours too, among the
    /// words of the .kdz.
    #[arg(long, value_name = "FILE")]
    pub original: Option<PathBuf>,
    /// How to read --original.
    #[command(flatten, next_help_heading = "Reading --original")]
    pub read: InputArgs,
}

/// Prints the neighbours of each of `args.words`.
pub fn run(args: SimilarArgs) -> anyhow::Result<()> {
    let (kdz, rows) = super::open_with_rows(&args.file, &args.words)?;
    let original = match &args.original {
        Some(path) => {
            let loaded = input::read(path, &args.read.to_options())?;
            let dim = loaded.embeddings.dim();
            if dim != kdz.dim() {
                bail!(
                    "{}: the vectors have {dim} dimensions but {} decodes to {}",
                    path.display(),
                    kdz.path().display(),
                    kdz.dim()
                );
            }
            let aligned = Aligned::new(kdz.vocab(), &loaded.embeddings);
            if aligned.found == 0 {
                bail!(
                    "{}: none of the {} words of {} is in this file",
                    path.display(),
                    kdz.len(),
                    kdz.path().display()
                );
            }
            Some((path, aligned.present, UnitRows::new(aligned.matrix, dim)))
        }
        None => None,
    };
    let decoded = UnitRows::new(kdz.decode_all(), kdz.dim());
    let k = args.k as usize;
    let word = |n: &Neighbour| kdz.vocab().word(n.row).unwrap_or("");
    let mut out = BufWriter::new(io::stdout().lock());
    for (i, (w, &row)) in args.words.iter().zip(&rows).enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        let near = decoded.nearest(decoded.row(row), k, None, &[row]);
        let Some((path, present, unit)) = &original else {
            writeln!(out, "{w}: nearest by cosine of the decoded vectors")?;
            for (rank, n) in near.iter().enumerate() {
                writeln!(out, "{:>4}  {:<20} {:.3}", rank + 1, word(n), n.cosine)?;
            }
            continue;
        };
        let theirs = if present[row] {
            unit.nearest(unit.row(row), k, None, &[row])
        } else {
            Vec::new()
        };
        let name = |p: &std::path::Path| {
            p.file_name()
                .map_or_else(|| p.display().to_string(), |f| f.to_string_lossy().into())
        };
        writeln!(
            out,
            "{w}: nearest by cosine among the {} words of {}",
            kdz.len(),
            name(kdz.path())
        )?;
        let decoded_head = format!("decoded ({})", name(kdz.path()));
        writeln!(out, "      {decoded_head:<26}  original ({})", name(path))?;
        if !present[row] {
            writeln!(out, "      (the original has no vector for {w:?})")?;
        }
        for rank in 0..near.len().max(theirs.len()) {
            let cell = |n: Option<&Neighbour>| {
                n.map_or_else(String::new, |n| format!("{:<20} {:.3}", word(n), n.cosine))
            };
            let line = format!(
                "{:>4}  {:<26}  {}",
                rank + 1,
                cell(near.get(rank)),
                cell(theirs.get(rank))
            );
            writeln!(out, "{}", line.trim_end())?;
        }
    }
    out.flush()?;
    Ok(())
}
