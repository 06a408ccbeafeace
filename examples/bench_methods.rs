//! Method × bits table on the head of a GloVe text file: MSE, mean cosine, top-10 neighbour
//! overlap and train time, all measured on the pure-Rust decode of the exported composer.
//!
//! `cargo run --release --example bench_methods -- GLOVE.txt [ROWS] [METHODS]`; K = 16, so
//! D = bits / 4 (64, 128, 160 bits: D = 16, 32, 40).

use std::io::BufRead;

use kdcompress::embeddings::Embeddings;
use kdcompress::method::Method;
use kdcompress::progress::Silent;
use kdcompress::train::{DeviceChoice, TrainConfig, train};
use kdcompress::vocab::Vocab;

fn read_head(path: &str, rows: usize) -> anyhow::Result<Embeddings> {
    let file = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("cannot open embeddings file {path}: {e}"))?;
    let mut words = Vec::new();
    let mut data = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().take(rows).enumerate() {
        let line = line?;
        let mut parts = line.split(' ');
        words.push(parts.next().unwrap_or_default().to_string());
        for v in parts {
            data.push(
                v.parse::<f32>()
                    .map_err(|e| anyhow::anyhow!("{path}: line {}: {e}", i + 1))?,
            );
        }
    }
    anyhow::ensure!(!words.is_empty(), "{path}: no rows");
    let dim = data.len() / words.len();
    anyhow::ensure!(dim * words.len() == data.len(), "{path}: ragged rows");
    let vocab = Vocab::new(words).map_err(|e| anyhow::anyhow!("{path}: {e:?}"))?;
    Ok(Embeddings::new(vocab, dim, data))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .ok_or_else(|| anyhow::anyhow!("usage: bench_methods GLOVE.txt [ROWS] [METHODS]"))?;
    let rows = args
        .get(2)
        .map(|r| r.parse())
        .transpose()?
        .unwrap_or(20_000);
    let methods: Vec<Method> = match args.get(3) {
        Some(list) => list
            .split(',')
            .map(|m| <Method as clap::ValueEnum>::from_str(m, false).map_err(anyhow::Error::msg))
            .collect::<Result<_, _>>()?,
        None => vec![Method::Dccl, Method::DpqSx, Method::DpqVq, Method::Kd],
    };
    let emb = read_head(path, rows)?;
    println!("| method | bits | D x K | MSE | mean cos | nn@10 | train s |");
    println!("|---|---|---|---|---|---|---|");
    for method in methods {
        for bits in [64usize, 128, 160] {
            let k = 16;
            let dd = bits / 4;
            let cfg = TrainConfig {
                method,
                num_codebooks: dd,
                num_codes: k,
                hidden: if method == Method::Dccl {
                    dd * k / 2
                } else {
                    300
                },
                learning_rate: if method == Method::Kd { 1e-3 } else { 3e-3 },
                batch_size: 256,
                epochs: 30,
                patience: 4,
                device: DeviceChoice::Cpu,
                seed: 1,
                time_limit: Some(90.0),
                ..TrainConfig::default()
            };
            let t = train(&emb, &cfg, &mut Silent)?;
            let r = &t.report;
            println!(
                "| {method} | {bits} | {dd}x{k} | {:.3} | {:.3} | {:.3} | {:.1} |",
                r.mse, r.mean_cosine, r.neighbour_overlap, r.seconds
            );
        }
    }
    Ok(())
}
