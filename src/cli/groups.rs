//! `kdcompress groups FILE.kdz`: the largest sets of words sharing a code (or its first J
//! positions), and with `--stats` how evenly the codes are used.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use kdcompress::code_stats::{self, CodeStats};
use kdcompress::format::Kdz;
use kdcompress::inspect::{self, code_string};

/// Options of `groups`.
#[derive(Debug, clap::Args)]
pub struct GroupsArgs {
    /// A .kdz file.
    pub file: PathBuf,
    /// Group by the first J code positions instead of the whole code.
    #[arg(long, value_name = "J", value_parser = clap::value_parser!(u32).range(1..))]
    pub prefix: Option<u32>,
    /// How many groups to list.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// Words listed per group at most.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_words: u32,
    /// Also print code usage: distinct codes, group sizes, entropy per code position.
    #[arg(long)]
    pub stats: bool,
}

/// Prints the groups of `args.file`.
pub fn run(args: GroupsArgs) -> anyhow::Result<()> {
    let kdz = Kdz::open(&args.file)?;
    let codes = kdz.codes();
    let d = codes.d();
    let prefix = args.prefix.map_or(d, |j| (j as usize).min(d));
    let mut out = BufWriter::new(io::stdout().lock());
    if args.stats {
        print_stats(&CodeStats::new(&codes), &mut out)?;
        writeln!(out)?;
    }
    let groups = inspect::groups(&codes, prefix);
    let what = if prefix == d {
        format!("the whole code (D = {d})")
    } else {
        format!("the first {prefix} of {d} code positions")
    };
    writeln!(
        out,
        "{} words in {} groups by {what}; the {} largest:",
        codes.len(),
        groups.len(),
        args.top.min(groups.len())
    )?;
    let width = groups
        .iter()
        .take(args.top)
        .map(|g| code_string(&g.key).len())
        .max()
        .unwrap_or(0);
    for g in groups.iter().take(args.top) {
        let shown: Vec<&str> = g
            .rows
            .iter()
            .take(args.max_words as usize)
            .filter_map(|&r| kdz.vocab().word(r))
            .collect();
        let more = g.rows.len() - shown.len();
        let tail = if more > 0 {
            format!(" (+{more} more)")
        } else {
            String::new()
        };
        writeln!(
            out,
            "{:>7}  {:<width$}  {}{tail}",
            g.rows.len(),
            code_string(&g.key),
            shown.join(" ")
        )?;
    }
    out.flush()?;
    Ok(())
}

fn print_stats(s: &CodeStats, out: &mut impl Write) -> io::Result<()> {
    let share = |x: usize| 100.0 * x as f64 / s.words.max(1) as f64;
    writeln!(out, "code usage")?;
    writeln!(
        out,
        "  {} words, {} distinct codes; {} words ({:.1}%) have a code of their own; the largest group has {} words",
        s.words,
        s.distinct_codes,
        s.unique_words(),
        share(s.unique_words()),
        s.largest_group()
    )?;
    writeln!(out, "  words per code    codes    words")?;
    for (lo, hi, codes, words) in code_stats::size_buckets(&s.group_sizes) {
        let range = if lo == hi {
            lo.to_string()
        } else {
            format!("{lo}-{hi}")
        };
        writeln!(
            out,
            "  {range:>14} {codes:>8} {words:>8} ({:.1}%)",
            share(words)
        )?;
    }
    writeln!(
        out,
        "  position  values used (of {})  entropy (of {:.2} bits)",
        s.k,
        s.max_entropy_bits()
    )?;
    for (i, dim) in s.dims.iter().enumerate() {
        writeln!(
            out,
            "  {i:>8}  {:>19}  {:>7.2}",
            dim.distinct, dim.entropy_bits
        )?;
    }
    Ok(())
}
