//! Decode speed of a `.kdz`: a synthetic N = 400,000, d = 50, K = 32, D = 32 table with random
//! codes and weights, written to a temporary file and opened from its memory map, for each
//! composer kind. Prints `decode_all` throughput in words/s and the latency of one random
//! word's `embedding()` in µs.
//!
//! `cargo bench --no-default-features --bench decode`

#[path = "../tests/format_support/mod.rs"]
mod format_support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use format_support::{Rng, Shape, random};
use kdcompress::composer::ComposerKind;
use kdcompress::format::{self, Kdz};

const N: usize = 400_000;
const DIM: usize = 50;
const K: u32 = 32;
const D: usize = 32;
const LOOKUPS: usize = 200_000;

/// Best of `runs` timings: the figure least disturbed by other work on a shared machine.
fn best<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn main() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    println!(
        "synthetic table: N = {N}, d = {DIM}, K = {K}, D = {D}; {} rayon threads",
        rayon::current_num_threads()
    );
    for kind in [
        ComposerKind::Linear,
        ComposerKind::Mlp,
        ComposerKind::Lstm,
        ComposerKind::Concat,
    ] {
        // Concat splits d across the D code vectors (product quantization); the others map a
        // d-wide code vector sum through the composer.
        let code_dim = if kind == ComposerKind::Concat { 2 } else { DIM };
        let shape = Shape {
            kind,
            n: N,
            k: K,
            d_codebooks: D,
            code_dim,
            hidden: 32,
            out_dim: DIM,
            norms: false,
        };
        let c = random(42, shape);
        let path = dir.path().join(format!("{}.kdz", kind.name()));
        let t = Instant::now();
        format::write(&path, &c).expect("write the table");
        let write = t.elapsed();
        drop(c);
        let t = Instant::now();
        let kdz = Kdz::open(&path).expect("open the table");
        let open = t.elapsed();

        let runs = if kind == ComposerKind::Lstm { 1 } else { 3 };
        let mut out = vec![0f32; N * DIM];
        let all = best(runs, || kdz.decode_into(&mut out).expect("buffer fits"));
        let words_per_s = N as f64 / all.as_secs_f64();

        let mut rng = Rng(7);
        let words: Vec<&str> = (0..LOOKUPS)
            .map(|_| kdz.vocab().word(rng.below(N as u64) as usize).unwrap_or(""))
            .collect();
        let lookups = if kind == ComposerKind::Lstm {
            LOOKUPS / 20
        } else {
            LOOKUPS
        };
        let one = best(3, || {
            for w in &words[..lookups] {
                black_box(kdz.embedding(black_box(w)));
            }
        });
        let us = one.as_secs_f64() * 1e6 / lookups as f64;

        println!(
            "{:<7} d'={code_dim:<3} h={:<3} file {:>10} bytes  write {:>7.2} s  open {:>7.1} ms  \
             decode_all {:>12.0} words/s ({:>7.1} ms)  embedding() {:>6.2} µs/word",
            kind.name(),
            shape.hidden,
            kdz.file_len(),
            write.as_secs_f64(),
            open.as_secs_f64() * 1e3,
            words_per_s,
            all.as_secs_f64() * 1e3,
            us,
        );
    }
}
