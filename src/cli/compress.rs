//! `kdcompress INPUT -K 32 -D 32 -o out.kdz`: read, train, write.

use std::path::PathBuf;

/// Options of the default command.
#[derive(Debug, clap::Args)]
pub struct CompressArgs {
    /// Word vectors: GloVe text, word2vec text or binary, fastText .vec (optionally .gz or .zst).
    #[arg(required = true)]
    pub input: Option<PathBuf>,
    /// How codes are learned: kd (the staged KD pipeline), dccl (Shu & Nakayama 2018),
    /// dpq-sx or dpq-vq (Chen, Li & Sun 2020); recorded in the file's metadata.
    #[arg(long, value_enum, default_value_t = kdcompress::method::Method::Kd)]
    pub method: kdcompress::method::Method,
}

/// Compresses `args.input`.
pub fn run(args: CompressArgs) -> anyhow::Result<()> {
    let input = args
        .input
        .expect("clap requires INPUT without a subcommand");
    anyhow::bail!(
        "{}: compression (--method {}) is not built yet",
        input.display(),
        args.method
    )
}
