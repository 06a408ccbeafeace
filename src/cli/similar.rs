//! `kdcompress similar FILE.kdz WORD`: nearest neighbours by cosine of the decoded vectors.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use kdcompress::format::Kdz;
use kdcompress::inspect::{self, UnitRows};

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
}

/// Prints the neighbours of each of `args.words`.
pub fn run(args: SimilarArgs) -> anyhow::Result<()> {
    let kdz = Kdz::open(&args.file)?;
    let rows = args
        .words
        .iter()
        .map(|w| inspect::lookup(kdz.vocab(), w, kdz.path()))
        .collect::<Result<Vec<_>, _>>()?;
    let decoded = UnitRows::new(kdz.decode_all(), kdz.dim());
    let k = args.k as usize;
    let mut out = BufWriter::new(io::stdout().lock());
    for (i, (word, &row)) in args.words.iter().zip(&rows).enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        let near = decoded.nearest(decoded.row(row), k, None, &[row]);
        writeln!(out, "{word}: nearest by cosine of the decoded vectors")?;
        for (rank, n) in near.iter().enumerate() {
            let w = kdz.vocab().word(n.row).unwrap_or("");
            writeln!(out, "{:>4}  {w:<20} {:.3}", rank + 1, n.cosine)?;
        }
    }
    out.flush()?;
    Ok(())
}
