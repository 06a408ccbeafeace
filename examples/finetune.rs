//! Fine-tunes a compressed table on a small task while it stays compressed.
//!
//! The task: make the cosine of two words' vectors match human similarity judgments
//! (SimLex-999 scores / 10). The codes stay fixed; Adam moves the codebooks and the composer of
//! a [`KdEmbedding`]. A seeded fifth of the pairs is held out, and both losses are printed per
//! epoch. With `--out`, the tuned table is written as a new `.kdz` with the same codes.
//!
//! ```text
//! cargo run --release --no-default-features --example make_kdz -- \
//!     rvq fixtures/glove.6B.50d.head5k.txt /tmp/g5k.kdz -K 16 -D 8
//! cargo run --release --example finetune -- /tmp/g5k.kdz --pairs fixtures/simlex999.txt
//! ```

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use kdcompress::format::Kdz;
use kdcompress::train::embedding_layer::KdEmbedding;
use tch::nn::{Module, OptimizerConfig};
use tch::{Device, Tensor, nn};

#[derive(Parser)]
struct Args {
    /// The compressed table.
    kdz: PathBuf,
    /// Word pairs with scores: `w1 w2 score` per line, `#` comments, scores 0..10.
    #[arg(long, default_value = "fixtures/simlex999.txt")]
    pairs: PathBuf,
    #[arg(long, default_value_t = 20)]
    epochs: usize,
    #[arg(long, default_value_t = 3e-3)]
    lr: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the tuned table here (must not exist).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Pairs of rows with a target cosine.
struct Pairs {
    left: Tensor,
    right: Tensor,
    target: Tensor,
}

impl Pairs {
    fn new(rows: &[(i64, i64, f32)]) -> Self {
        let col = |f: fn(&(i64, i64, f32)) -> i64| {
            Tensor::from_slice(&rows.iter().map(f).collect::<Vec<_>>())
        };
        Pairs {
            left: col(|r| r.0),
            right: col(|r| r.1),
            target: Tensor::from_slice(&rows.iter().map(|r| r.2).collect::<Vec<_>>()),
        }
    }

    fn loss(&self, emb: &KdEmbedding) -> Tensor {
        let a = emb.forward(&self.left);
        let b = emb.forward(&self.right);
        let cos = Tensor::cosine_similarity(&a, &b, 1, 1e-8);
        cos.mse_loss(&self.target, tch::Reduction::Mean)
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(out) = &args.out
        && out.exists()
    {
        bail!("{}: already exists", out.display());
    }
    tch::manual_seed(args.seed as i64);
    let kdz = Kdz::open(&args.kdz)?;
    let text = std::fs::read_to_string(&args.pairs)
        .with_context(|| format!("cannot read {}", args.pairs.display()))?;
    let mut rows = Vec::new();
    let mut missing = 0;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [w1, w2, score] = fields[..] else {
            bail!("{}: expected `w1 w2 score`: {line:?}", args.pairs.display());
        };
        let score: f32 = score
            .parse()
            .with_context(|| format!("{}: bad score in {line:?}", args.pairs.display()))?;
        let lookup = |w: &str| kdz.vocab().row(&w.to_lowercase()).map(|r| r as i64);
        match (lookup(w1), lookup(w2)) {
            (Some(a), Some(b)) => rows.push((a, b, score / 10.0)),
            _ => missing += 1,
        }
    }
    if rows.len() < 10 {
        bail!("only {} pairs have both words in the table", rows.len());
    }
    // A seeded shuffle (Fisher-Yates on SplitMix64) so the held-out fifth is reproducible.
    let mut state = args.seed;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    for i in (1..rows.len()).rev() {
        rows.swap(i, (next() % (i as u64 + 1)) as usize);
    }
    let held = rows.len() / 5;
    let (test, train) = rows.split_at(held);
    println!(
        "{}: {} words; {} pairs in the table ({} skipped), {} to train on, {} held out",
        args.kdz.display(),
        kdz.len(),
        rows.len(),
        missing,
        train.len(),
        test.len()
    );
    let (train, test) = (Pairs::new(train), Pairs::new(test));

    let vs = nn::VarStore::new(Device::Cpu);
    let emb = KdEmbedding::new(&vs.root().sub("embedding"), &kdz);
    let mut opt = nn::Adam::default().build(&vs, args.lr)?;
    let report = |epoch: usize, emb: &KdEmbedding| {
        let _guard = tch::no_grad_guard();
        println!(
            "epoch {epoch:>3}  train loss {:.5}  held-out loss {:.5}",
            train.loss(emb).double_value(&[]),
            test.loss(emb).double_value(&[])
        );
    };
    report(0, &emb);
    for epoch in 1..=args.epochs {
        // Full batch: a few hundred pairs.
        opt.backward_step(&train.loss(&emb));
        if epoch % 5 == 0 || epoch == args.epochs {
            report(epoch, &emb);
        }
    }

    if let Some(out) = &args.out {
        let mut tuned = kdz.to_compressed();
        tuned.composer = emb.to_composer()?;
        tuned.metadata.method = format!("{}+finetune", tuned.metadata.method);
        kdcompress::format::write(out, &tuned)?;
        println!("wrote {}", out.display());
    }
    Ok(())
}
