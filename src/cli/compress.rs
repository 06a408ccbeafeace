//! `kdcompress INPUT -K 32 -D 32 -o out.kdz`: read, train, write.

use std::path::PathBuf;

/// Options of the default command.
#[derive(Debug, clap::Args)]
pub struct CompressArgs {
    /// Word vectors: GloVe text, word2vec text or binary, fastText .vec (optionally .gz or .zst).
    #[arg(required = true)]
    pub input: Option<PathBuf>,
}

/// Compresses `args.input`.
pub fn run(args: CompressArgs) -> anyhow::Result<()> {
    let input = args
        .input
        .expect("clap requires INPUT without a subcommand");
    anyhow::bail!("{}: compression is not built yet", input.display())
}
