//! Writes `.kdz` files without the trainer, for tests and demos.
//!
//! `make_kdz random KIND OUT` writes random codes and weights of any composer kind (what the
//! Python layer's tests compare against; `conditioned` needs `--code-dim` equal to `--out-dim`,
//! and its `W_o` is random like the rest, so the step network changes every vector);
//! `make_kdz rvq VECTORS.txt OUT` fits real codes by residual k-means: codebook i is k-means
//! over what codebooks 0..i left unexplained, and the `sum` composer adds the chosen
//! centroids. That is a KD code with an additive composer, learned in seconds, so `groups`,
//! `codes` and `similar` have something meaningful to show before a trained file exists.
//!
//! ```text
//! cargo run --release --no-default-features --example make_kdz -- random lstm /tmp/r.kdz
//! cargo run --release --no-default-features --example make_kdz -- rvq fixtures/glove.6B.50d.head5k.txt /tmp/g.kdz -K 16 -D 8
//! ```

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use kdcompress::codes::Codes;
use kdcompress::composer::{
    CODEBOOKS, Composer, ComposerConfig, ComposerKind, Tensor, split_columns,
};
use kdcompress::compressed::{Compressed, Metadata, Source};
use kdcompress::vocab::Vocab;
use rayon::prelude::*;

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Random codes and weights.
    Random {
        kind: ComposerKind,
        out: PathBuf,
        #[arg(long, default_value_t = 300)]
        n: usize,
        #[arg(short = 'K', default_value_t = 16)]
        k: usize,
        #[arg(short = 'D', default_value_t = 6)]
        d: usize,
        #[arg(long, default_value_t = 8)]
        code_dim: usize,
        #[arg(long, default_value_t = 12)]
        hidden: usize,
        #[arg(long, default_value_t = 20)]
        out_dim: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Residual k-means codes for GloVe text vectors.
    Rvq {
        vectors: PathBuf,
        out: PathBuf,
        #[arg(short = 'K', default_value_t = 16)]
        k: usize,
        #[arg(short = 'D', default_value_t = 8)]
        d: usize,
        /// Lloyd iterations per codebook.
        #[arg(long, default_value_t = 15)]
        iters: usize,
        /// Read only this many words.
        #[arg(long)]
        max_words: Option<usize>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

/// SplitMix64: seeded and good enough to pick initial centroids and random weights.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// Uniform in [-0.5, 0.5).
    fn float(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }
}

fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Mode::Random {
            kind,
            out,
            n,
            k,
            d,
            code_dim,
            hidden,
            out_dim,
            seed,
        } => {
            let config = ComposerConfig {
                kind,
                num_codebooks: d,
                num_codes: k,
                code_dim,
                hidden,
                out_dim,
            };
            let c = random(config, n, seed)?;
            kdcompress::format::write(&out, &c)?;
            println!("wrote {} ({} words, {kind:?})", out.display(), n);
        }
        Mode::Rvq {
            vectors,
            out,
            k,
            d,
            iters,
            max_words,
            seed,
        } => {
            let (words, dim, matrix) = read_glove(&vectors, max_words)?;
            let c = rvq(&vectors, words, dim, &matrix, k, d, iters, seed)?;
            kdcompress::format::write(&out, &c)?;
            let mse = mse(&c, &matrix);
            println!(
                "wrote {} ({} words, K = {k}, D = {d}, mean squared error per value {mse:.4})",
                out.display(),
                c.vocab.len()
            );
        }
    }
    Ok(())
}

fn metadata(method: &str, seed: u64, source: Source) -> Metadata {
    Metadata {
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        method: method.to_string(),
        source,
        training: serde_json::json!({ "example": "make_kdz" }),
        seed,
        device: "cpu".to_string(),
        metrics: BTreeMap::new(),
        train_seconds: 0.0,
    }
}

fn random(config: ComposerConfig, n: usize, seed: u64) -> anyhow::Result<Compressed> {
    let mut rng = Rng(seed);
    let mut tensors = Composer::expected_shapes(&config)
        .into_iter()
        .map(|(name, shape)| {
            let len = shape.iter().product();
            let data = (0..len).map(|_| rng.float()).collect();
            let t = Tensor::new(shape, data).context("tensor shape")?;
            Ok((name.to_string(), t))
        })
        .collect::<anyhow::Result<BTreeMap<String, Tensor>>>()?;
    if config.kind == ComposerKind::Split {
        // A split writer stores zeros past each group's width.
        if let Some(cb) = tensors.get_mut(CODEBOOKS) {
            let (e, k) = (config.code_dim, config.num_codes);
            for (r, row) in cb.data.chunks_exact_mut(e).enumerate() {
                let width = split_columns(config.out_dim, config.num_codebooks, r / k).len();
                row[width.min(e)..].fill(0.0);
            }
        }
    }
    let codes = (0..n * config.num_codebooks)
        .map(|_| rng.below(config.num_codes) as u16)
        .collect();
    Ok(Compressed {
        vocab: Vocab::new((0..n).map(|i| format!("w{i}")))
            .map_err(|e| anyhow::anyhow!("duplicate word at row {}", e.second))?,
        codes: Codes::new(config.num_codes as u32, config.num_codebooks, codes)?,
        composer: Composer::new(config, tensors)?,
        metadata: metadata("random", seed, Source::default()),
        norms: None,
    })
}

/// A plain GloVe text reader: the example must not depend on the input module's options.
fn read_glove(
    path: &Path,
    max_words: Option<usize>,
) -> anyhow::Result<(Vec<String>, usize, Vec<f32>)> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut words = Vec::new();
    let mut matrix = Vec::new();
    let mut dim = 0;
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        if max_words.is_some_and(|m| words.len() >= m) {
            break;
        }
        let line = line.with_context(|| format!("{}: line {}", path.display(), i + 1))?;
        let mut parts = line.split(' ');
        let word = parts.next().unwrap_or_default().to_string();
        let before = matrix.len();
        for p in parts {
            matrix.push(
                p.parse::<f32>()
                    .with_context(|| format!("{}: line {}: {p:?}", path.display(), i + 1))?,
            );
        }
        let width = matrix.len() - before;
        if dim == 0 {
            dim = width;
        } else if width != dim {
            bail!(
                "{}: line {} has {width} values, expected {dim}",
                path.display(),
                i + 1
            );
        }
        words.push(word);
    }
    if words.is_empty() || dim == 0 {
        bail!("{}: no vectors", path.display());
    }
    Ok((words, dim, matrix))
}

fn sq_dist(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

#[allow(clippy::too_many_arguments)]
fn rvq(
    path: &Path,
    words: Vec<String>,
    dim: usize,
    matrix: &[f32],
    k: usize,
    d: usize,
    iters: usize,
    seed: u64,
) -> anyhow::Result<Compressed> {
    let n = words.len();
    if k < 2 || k > n {
        bail!("K must be in 2..={n}");
    }
    let mut rng = Rng(seed);
    let mut residual = matrix.to_vec();
    let mut codes = vec![0u16; n * d];
    let mut codebooks = Vec::with_capacity(d * k * dim);
    for stage in 0..d {
        let mut centroids: Vec<f32> = Vec::with_capacity(k * dim);
        for _ in 0..k {
            let r = rng.below(n);
            centroids.extend_from_slice(&residual[r * dim..(r + 1) * dim]);
        }
        let mut assign = vec![0usize; n];
        for _ in 0..iters {
            assign
                .par_iter_mut()
                .zip(residual.par_chunks(dim))
                .for_each(|(a, v)| {
                    *a = (0..k)
                        .min_by(|&i, &j| {
                            sq_dist(v, &centroids[i * dim..(i + 1) * dim])
                                .total_cmp(&sq_dist(v, &centroids[j * dim..(j + 1) * dim]))
                        })
                        .unwrap_or(0);
                });
            let mut sums = vec![0f32; k * dim];
            let mut counts = vec![0usize; k];
            for (row, &a) in assign.iter().enumerate() {
                counts[a] += 1;
                for (s, x) in sums[a * dim..(a + 1) * dim]
                    .iter_mut()
                    .zip(&residual[row * dim..(row + 1) * dim])
                {
                    *s += x;
                }
            }
            for c in 0..k {
                if counts[c] > 0 {
                    for j in 0..dim {
                        centroids[c * dim + j] = sums[c * dim + j] / counts[c] as f32;
                    }
                } else {
                    // An empty cluster restarts on a random point rather than wasting a code.
                    let r = rng.below(n);
                    centroids[c * dim..(c + 1) * dim]
                        .copy_from_slice(&residual[r * dim..(r + 1) * dim]);
                }
            }
        }
        for (row, &a) in assign.iter().enumerate() {
            codes[row * d + stage] = a as u16;
            for j in 0..dim {
                residual[row * dim + j] -= centroids[a * dim + j];
            }
        }
        codebooks.extend_from_slice(&centroids);
    }
    // Residual k-means tables are decoded by their plain sum: the `sum` kind, tables only.
    let config = ComposerConfig {
        kind: ComposerKind::Sum,
        num_codebooks: d,
        num_codes: k,
        code_dim: dim,
        hidden: 0,
        out_dim: dim,
    };
    let mut tensors = BTreeMap::new();
    tensors.insert(
        CODEBOOKS.to_string(),
        Tensor::new(vec![d, k, dim], codebooks).context("codebooks shape")?,
    );
    let file_name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Compressed {
        vocab: Vocab::new(words).map_err(|e| {
            anyhow::anyhow!(
                "{}: rows {} and {} hold the same word",
                path.display(),
                e.first,
                e.second
            )
        })?,
        codes: Codes::new(k as u32, d, codes)?,
        composer: Composer::new(config, tensors)?,
        metadata: metadata(
            "residual-kmeans",
            seed,
            Source {
                file_name,
                format: "glove".to_string(),
                ..Source::default()
            },
        ),
        norms: None,
    })
}

fn mse(c: &Compressed, matrix: &[f32]) -> f64 {
    let decoded = c.decode_all();
    decoded
        .iter()
        .zip(matrix)
        .map(|(a, b)| f64::from(a - b).powi(2))
        .sum::<f64>()
        / matrix.len() as f64
}
