//! `kdcompress codes FILE.kdz WORD...`: each word's code, the words sharing it, and the nearest
//! codes by Hamming distance with their words (the paper's Table 6, for any word).

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use kdcompress::inspect::{self, code_string};

/// Options of `codes`.
#[derive(Debug, clap::Args)]
pub struct CodesArgs {
    /// A .kdz file.
    pub file: PathBuf,
    /// Words to look up.
    #[arg(required = true)]
    pub words: Vec<String>,
    /// How many of the nearest other codes to show.
    #[arg(long, default_value_t = 5)]
    pub near: usize,
    /// Words listed per code at most.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_words: u32,
}

/// Prints the codes of `args.words`; every word is checked before anything is printed.
pub fn run(args: CodesArgs) -> anyhow::Result<()> {
    let (kdz, rows) = super::open_with_rows(&args.file, &args.words)?;
    let codes = kdz.codes();
    let mut out = BufWriter::new(io::stdout().lock());
    let max_words = args.max_words as usize;
    let words = |rows: &[usize], skip: Option<usize>| {
        let shown: Vec<&str> = rows
            .iter()
            .filter(|&&r| Some(r) != skip)
            .take(max_words)
            .filter_map(|&r| kdz.vocab().word(r))
            .collect();
        let total = rows.len() - usize::from(skip.is_some_and(|s| rows.contains(&s)));
        let more = total.saturating_sub(shown.len());
        let mut s = shown.join(" ");
        if more > 0 {
            s.push_str(&format!(" (+{more} more)"));
        }
        s
    };
    for (i, (word, &row)) in args.words.iter().zip(&rows).enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        let code = codes.row(row);
        writeln!(out, "{word}  {}", code_string(code))?;
        let same: Vec<usize> = (0..codes.len()).filter(|&r| codes.row(r) == code).collect();
        if same.len() > 1 {
            writeln!(
                out,
                "  same code ({} other words): {}",
                same.len() - 1,
                words(&same, Some(row))
            )?;
        } else {
            writeln!(out, "  same code: no other word")?;
        }
        let near = inspect::nearest_codes(&codes, code, args.near);
        if !near.is_empty() {
            writeln!(out, "  nearest codes (Hamming distance, code, words):")?;
        }
        for n in near {
            writeln!(
                out,
                "  {:>3}  {}  {}",
                n.distance,
                code_string(&n.code),
                words(&n.rows, None)
            )?;
        }
    }
    out.flush()?;
    Ok(())
}
