//! Reading the full GloVe 6B 50d text: our reader against a plain single-threaded baseline, with
//! the reader's peak memory next to the size of what it returns.
//!
//! `cargo bench --no-default-features --bench parse`; the file is `$KDC_DATA_DIR/glove.6B.50d.txt`
//! (default `data/`, made by `make data`).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kdcompress::input::{ReadOptions, read};

const OUR_RUNS: usize = 5;
const BASELINE_RUNS: usize = 2;

fn main() {
    let dir = std::env::var_os("KDC_DATA_DIR").map_or_else(|| PathBuf::from("data"), PathBuf::from);
    let path = dir.join("glove.6B.50d.txt");
    if !path.is_file() {
        println!(
            "parse: skipped, {} not found (set KDC_DATA_DIR or run `make data`)",
            path.display()
        );
        return;
    }
    let size = std::fs::metadata(&path).expect("stat data file").len();
    let mb = size as f64 / 1e6;

    // Memory first, while nothing else has run in this process: the high-water mark then
    // belongs to our reader alone.
    let rss_before = proc_status_kib("VmRSS");
    let start = Instant::now();
    let loaded = read(&path, &ReadOptions::default()).expect("our reader failed");
    let first = start.elapsed();
    let peak = proc_status_kib("VmHWM");
    let rss_after = proc_status_kib("VmRSS");

    let e = &loaded.embeddings;
    let matrix_bytes = size_of_val(e.matrix());
    // The vocabulary's own payload: the words end to end, one end offset per word, and one `u32`
    // row per index entry. Allocator and hash-table slack are left out, which makes the ratio
    // below a little pessimistic.
    let word_bytes: usize = e.vocab().text().len();
    let vocab_bytes = word_bytes + e.len() * (size_of::<usize>() + size_of::<u32>());
    let payload = (matrix_bytes + vocab_bytes) as f64;

    let mut ours = vec![first];
    let cpu = cpu_seconds();
    for _ in 1..OUR_RUNS {
        let t = Instant::now();
        let again = read(&path, &ReadOptions::default()).expect("our reader failed");
        ours.push(t.elapsed());
        assert_eq!(again.embeddings.len(), e.len());
    }
    let ours_cpu = cpu_seconds()
        .zip(cpu)
        .map(|(b, a)| (b - a) / (OUR_RUNS - 1) as f64);

    let mut base = Vec::new();
    let cpu = cpu_seconds();
    for _ in 0..BASELINE_RUNS {
        let t = Instant::now();
        let (words, matrix) = baseline(&path);
        base.push(t.elapsed());
        assert_eq!(words.len(), e.len(), "baseline disagrees on the row count");
        assert!(matrix == e.matrix(), "baseline disagrees on the values");
    }

    let base_cpu = cpu_seconds()
        .zip(cpu)
        .map(|(b, a)| (b - a) / BASELINE_RUNS as f64);

    let best = |runs: &[Duration]| runs.iter().min().copied().unwrap_or_default();
    let rate = |d: Duration| mb / d.as_secs_f64();
    let (ours_best, base_best) = (best(&ours), best(&base));
    let threads = rayon::current_num_threads();
    println!(
        "parse: {} ({mb:.1} MB, {} words x {} dims)",
        path.display(),
        e.len(),
        e.dim()
    );
    println!(
        "  ours:     {:7.1} MB/s  best of {OUR_RUNS} ({:.3} s; first run {:.3} s), {threads} threads",
        rate(ours_best),
        ours_best.as_secs_f64(),
        first.as_secs_f64()
    );
    println!(
        "  baseline: {:7.1} MB/s  best of {BASELINE_RUNS} ({:.3} s), 1 thread, lines + str::parse::<f32>",
        rate(base_best),
        base_best.as_secs_f64()
    );
    println!(
        "  speed-up: {:.2}x",
        base_best.as_secs_f64() / ours_best.as_secs_f64()
    );
    if let (Some(ours_cpu), Some(base_cpu)) = (ours_cpu, base_cpu) {
        println!(
            "  cpu time: ours {ours_cpu:.3} s, baseline {base_cpu:.3} s per read (mean; other load on the machine inflates wall times, not these)"
        );
    }
    match (rss_before, peak, rss_after) {
        (Some(before), Some(peak), Some(after)) => {
            let grow = |kib: u64| (kib.saturating_sub(before) * 1024) as f64;
            println!(
                "  memory:   peak {:.1} MB over the {:.1} MB before reading = {:.2}x (matrix {:.1} MB + vocabulary {:.1} MB); held after reading {:.1} MB = {:.2}x",
                grow(peak) / 1e6,
                (before * 1024) as f64 / 1e6,
                grow(peak) / payload,
                matrix_bytes as f64 / 1e6,
                vocab_bytes as f64 / 1e6,
                grow(after) / 1e6,
                grow(after) / payload,
            );
        }
        _ => println!("  memory:   /proc/self/status not available"),
    }

    // The same vectors as word2vec binary, when `make data` wrote them too.
    let bin = dir.join("glove.6B.50d.w2v.bin");
    if let Ok(meta) = std::fs::metadata(&bin) {
        let runs: Vec<Duration> = (0..3)
            .map(|_| {
                let t = Instant::now();
                let l = read(&bin, &ReadOptions::default()).expect("reading the binary failed");
                assert!(
                    l.embeddings == loaded.embeddings,
                    "binary and text disagree"
                );
                t.elapsed()
            })
            .collect();
        let b = best(&runs);
        println!(
            "  binary:   {:7.1} MB/s  best of 3 ({:.3} s) on {} ({:.1} MB), same vectors",
            meta.len() as f64 / 1e6 / b.as_secs_f64(),
            b.as_secs_f64(),
            bin.display(),
            meta.len() as f64 / 1e6
        );
    }
}

/// User plus system CPU time of the whole process so far, in seconds.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let mut fields = stat.rsplit_once(") ")?.1.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    // Linux reports these in USER_HZ, which is 100 on every architecture we build for.
    Some((utime + stime) / 100.0)
}

/// A `kB` line of `/proc/self/status`, e.g. `VmHWM` (peak resident set).
fn proc_status_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// What a straightforward reader does: one line at a time, `str::parse` per value.
fn baseline(path: &Path) -> (Vec<String>, Vec<f32>) {
    let reader = BufReader::new(File::open(path).expect("open data file"));
    let mut words = Vec::new();
    let mut matrix = Vec::new();
    for line in reader.lines() {
        let line = line.expect("read line");
        let mut fields = line.split_whitespace();
        let Some(word) = fields.next() else { continue };
        words.push(word.to_string());
        for field in fields {
            matrix.push(field.parse::<f32>().expect("number"));
        }
    }
    (words, matrix)
}
