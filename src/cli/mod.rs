//! The command line: `kdcompress INPUT -K 32 -D 32 -o out.kdz` compresses; subcommands read a `.kdz`.
//!
//! Raw arguments become a validated configuration in each subcommand's module before any work.

use clap::{Parser, Subcommand};

pub mod compress;
pub mod info;

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
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        None => compress::run(cli.compress),
        Some(Command::Info(args)) => info::run(args),
    }
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
