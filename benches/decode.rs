//! Decode speed of a `.kdz`: a synthetic N = 400,000, d = 50, K = 32, D = 32 table with random
//! codes and weights, written to a temporary file and opened from its memory map, for each
//! composer kind. Prints `decode_all` throughput in words/s and the latency of one random
//! word's `embedding()` in µs.
//!
//! `cargo bench --no-default-features --bench decode`; set `DECODE_BENCH_KINDS=linear,mlp` to run
//! only some kinds (lstm alone takes minutes on two busy cores).

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

/// CPU time this process has used (all threads, user + system), from `/proc/self/stat`; `None`
/// off Linux. Wall time on a machine shared with other builds counts their time too; CPU time
/// shows what the decoder itself costs.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name start at field 3 (state); utime and stime are
    // fields 14 and 15, in clock ticks of 1/100 s on Linux.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Best wall time of `runs`, and the CPU time of all of them divided by `runs`.
fn best<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, Option<f64>) {
    let cpu = cpu_seconds();
    let wall = (0..runs)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed()
        })
        .min()
        .unwrap_or_default();
    let cpu = cpu_seconds().zip(cpu).map(|(b, a)| (b - a) / runs as f64);
    (wall, cpu)
}

fn main() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    println!(
        "synthetic table: N = {N}, d = {DIM}, K = {K}, D = {D}; {} rayon threads",
        rayon::current_num_threads()
    );
    let only = std::env::var("DECODE_BENCH_KINDS").ok();
    for kind in ComposerKind::ALL {
        if only
            .as_deref()
            .is_some_and(|list| !list.split(',').any(|k| k.trim() == kind.name()))
        {
            continue;
        }
        // Concat and split divide d among the D code vectors (product quantization, split with
        // balanced widths); the others map a d-wide code vector sum through the composer.
        let code_dim = if kind.is_assembled() {
            DIM.div_ceil(D)
        } else {
            DIM
        };
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
        let (all, all_cpu) = best(runs, || kdz.decode_into(&mut out).expect("buffer fits"));
        let words_per_s = N as f64 / all.as_secs_f64();
        let words_per_cpu_s = all_cpu.map_or(f64::NAN, |c| N as f64 / c);

        let mut rng = Rng::new(7);
        let words: Vec<&str> = (0..LOOKUPS)
            .map(|_| kdz.vocab().word(rng.below(N as u64) as usize).unwrap_or(""))
            .collect();
        let lookups = if kind == ComposerKind::Lstm {
            LOOKUPS / 20
        } else {
            LOOKUPS
        };
        let (one, one_cpu) = best(3, || {
            for w in &words[..lookups] {
                black_box(kdz.embedding(black_box(w)));
            }
        });
        let us = one.as_secs_f64() * 1e6 / lookups as f64;
        let us_cpu = one_cpu.map_or(f64::NAN, |c| c * 1e6 / lookups as f64);

        println!(
            "{:<7} d'={code_dim} h={}: file {} bytes, write {:.2} s, open {:.1} ms",
            kind.name(),
            shape.hidden,
            kdz.file_len(),
            write.as_secs_f64(),
            open.as_secs_f64() * 1e3,
        );
        println!(
            "        decode_all  {words_per_s:>10.0} words/s wall ({:.1} ms)   \
             {words_per_cpu_s:>10.0} words per CPU-second",
            all.as_secs_f64() * 1e3,
        );
        println!(
            "        embedding() {us:>10.2} µs/word wall             {us_cpu:>10.2} µs/word CPU time"
        );
    }
}
