//! The command line: `kdcompress INPUT -K 32 -D 32 -o out.kdz` compresses; subcommands read a `.kdz`.
//!
//! Raw arguments become a validated configuration in each subcommand's module before any work.

use std::path::Path;

use clap::{Parser, Subcommand};
use kdcompress::format::Kdz;
use kdcompress::inspect;

pub mod codes;
pub mod compress;
pub mod eval;
pub mod export;
pub mod groups;
pub mod info;
pub mod input_args;
pub mod outputs;
pub mod similar;

/// Compress pretrained word vectors into KD codes.
#[derive(Debug, Parser)]
#[command(
    name = "kdcompress",
    version,
    about,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    /// A subcommand; without one, compress INPUT.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Compression options (used when no subcommand is given).
    #[command(flatten)]
    pub compress: compress::CompressArgs,
}

/// Subcommands that work on inputs and `.kdz` files.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show what a .kdz holds: sections, sizes, bits per word, compression ratio, metadata.
    Info(info::InfoArgs),
    /// Show words' codes, the words sharing them and the nearest codes by Hamming distance.
    Codes(codes::CodesArgs),
    /// List the largest groups of words sharing a code or a code prefix; code usage statistics.
    Groups(groups::GroupsArgs),
    /// List a word's nearest neighbours by cosine of the decoded vectors.
    Similar(similar::SimilarArgs),
    /// Write decoded vectors (GloVe text, word2vec binary, .npy) or the model (safetensors).
    Export(export::ExportArgs),
    /// Score the decoded vectors against the originals; optionally an HTML report.
    Eval(eval::EvalArgs),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        None => compress::run(cli.compress),
        Some(Command::Info(args)) => info::run(args),
        Some(Command::Codes(args)) => codes::run(args),
        Some(Command::Groups(args)) => groups::run(args),
        Some(Command::Similar(args)) => similar::run(args),
        Some(Command::Export(args)) => export::run(args),
        Some(Command::Eval(args)) => eval::run(args),
    }
}

/// Opens `file` and finds the row of each of `words`, so that a command fails on an unknown word
/// before it prints anything.
fn open_with_rows(file: &Path, words: &[String]) -> anyhow::Result<(Kdz, Vec<usize>)> {
    let kdz = Kdz::open(file)?;
    let rows = words
        .iter()
        .map(|w| inspect::lookup(kdz.vocab(), w, kdz.path()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((kdz, rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }
}
