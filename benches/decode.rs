//! Decode speed of a `.kdz`: a synthetic N = 400,000, d = 50, K = 32, D = 32 table with random
//! codes and weights, written to a temporary file and opened from its memory map, for each
//! composer kind; then `conditioned` at the sizes it is trained at (K = 256; d = 50: D = 20 with
//! h = 64 and 32, the default widths D = 8 with h = 208 and D = 20 with h = 112, and D = 20 with
//! h = 512; d = 768: D = 8 with h = 128, D = 32 with h = 64). Prints the throughput of decoding
//! every word in words/s, through the reader (`decode_all`) and through `Composer::decode_batch`
//! (what export and the trainer call), and the latency of one random word's `embedding()` in µs.
//!
//! `cargo bench --no-default-features --bench decode`; set `DECODE_BENCH_KINDS=linear,mlp` to run
//! only some kinds (lstm alone takes minutes on two busy cores).

#[path = "../tests/format_support/mod.rs"]
mod format_support;

use std::hint::black_box;
use std::path::Path;
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

/// One synthetic table: its sizes, and how many decodes and lookups to time.
struct Case {
    shape: Shape,
    runs: usize,
    lookups: usize,
}

fn main() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    println!(
        "synthetic tables; {} rayon threads",
        rayon::current_num_threads()
    );
    let only = std::env::var("DECODE_BENCH_KINDS").ok();
    let wanted = |kind: ComposerKind| {
        only.as_deref()
            .is_none_or(|list| list.split(',').any(|k| k.trim() == kind.name()))
    };
    println!("every kind at N = {N}, d = {DIM}, K = {K}, D = {D}, h = 32:");
    for kind in ComposerKind::ALL.into_iter().filter(|&k| wanted(k)) {
        // Concat and split divide d among the D code vectors (product quantization, split with
        // balanced widths); the others map a d-wide code vector sum through the composer.
        let code_dim = if kind.is_assembled() {
            DIM.div_ceil(D)
        } else {
            DIM
        };
        let slow = kind == ComposerKind::Lstm;
        run(
            dir.path(),
            Case {
                shape: Shape {
                    kind,
                    n: N,
                    k: K,
                    d_codebooks: D,
                    code_dim,
                    hidden: 32,
                    out_dim: DIM,
                    norms: false,
                },
                runs: if slow { 1 } else { 3 },
                lookups: if slow { LOOKUPS / 20 } else { LOOKUPS },
            },
        );
    }
    if wanted(ComposerKind::Conditioned) {
        // The sizes the conditioned composer is trained at: GloVe's d = 50 at 160 bits, and a
        // 768-d sentence-encoder table at 256 bits (fewer words: its output alone is 3 KiB each).
        println!("conditioned at the sizes it is trained at:");
        for (n, d, dd, h) in [
            (N, DIM, 20, 64),
            (N, DIM, 20, 32),
            (N, DIM, 8, 208),
            (N, DIM, 20, 112),
            (N, DIM, 20, 512),
            (50_000, 768, 8, 128),
            (50_000, 768, 32, 64),
        ] {
            run(
                dir.path(),
                Case {
                    shape: Shape {
                        kind: ComposerKind::Conditioned,
                        n,
                        k: 256,
                        d_codebooks: dd,
                        code_dim: d,
                        hidden: h,
                        out_dim: d,
                        norms: false,
                    },
                    runs: 3,
                    lookups: LOOKUPS / 4,
                },
            );
        }
    }
}

/// Writes the table, opens it from its memory map, and prints the speed of decoding every word
/// (through the reader, and through `Composer::decode_batch` as export and the trainer do) and
/// of looking up one word.
fn run(dir: &Path, case: Case) {
    let shape = case.shape;
    let (n, d) = (shape.n, shape.out_dim);
    let c = random(42, shape);
    let codes = c.codes.as_slice().to_vec();
    let path = dir.join(format!("{}-{d}-{}.kdz", shape.kind.name(), shape.hidden));
    let t = Instant::now();
    format::write(&path, &c).expect("write the table");
    let write = t.elapsed();
    drop(c);
    let t = Instant::now();
    let kdz = Kdz::open(&path).expect("open the table");
    let open = t.elapsed();

    let mut out = vec![0f32; n * d];
    let (all, all_cpu) = best(case.runs, || {
        kdz.decode_into(&mut out).expect("buffer fits")
    });
    let (batch, batch_cpu) = best(case.runs, || kdz.composer().decode_batch(&codes, &mut out));
    drop(out);

    let mut rng = Rng::new(7);
    let words: Vec<&str> = (0..case.lookups)
        .map(|_| kdz.vocab().word(rng.below(n as u64) as usize).unwrap_or(""))
        .collect();
    let (one, one_cpu) = best(3, || {
        for w in &words {
            black_box(kdz.embedding(black_box(w)));
        }
    });
    let us = one.as_secs_f64() * 1e6 / case.lookups as f64;
    let us_cpu = one_cpu.map_or(f64::NAN, |c| c * 1e6 / case.lookups as f64);

    println!(
        "{:<11} N={n} d={d} K={} D={} d'={} h={}: file {} bytes, write {:.2} s, open {:.1} ms",
        shape.kind.name(),
        shape.k,
        shape.d_codebooks,
        shape.code_dim,
        shape.hidden,
        kdz.file_len(),
        write.as_secs_f64(),
        open.as_secs_f64() * 1e3,
    );
    for (name, wall, cpu) in [
        ("decode_all  ", all, all_cpu),
        ("decode_batch", batch, batch_cpu),
    ] {
        let words_per_s = n as f64 / wall.as_secs_f64();
        let words_per_cpu_s = cpu.map_or(f64::NAN, |c| n as f64 / c);
        println!(
            "        {name} {words_per_s:>10.0} words/s wall ({:.1} ms)   \
             {words_per_cpu_s:>10.0} words per CPU-second",
            wall.as_secs_f64() * 1e3,
        );
    }
    println!(
        "        embedding()  {us:>10.2} µs/word wall             {us_cpu:>10.2} µs/word CPU time"
    );
}
