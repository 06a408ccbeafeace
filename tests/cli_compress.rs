//! The default command, `kdcompress INPUT -K 32 -D 32 -o out.kdz`, end to end and with every
//! kind of bad option. Everything is written into temporary directories.
#![cfg(feature = "train")]

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;
use tempfile::TempDir;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/glove.6B.50d.head5k.txt")
}

fn kdcompress(dir: &TempDir) -> Command {
    let mut cmd = Command::cargo_bin("kdcompress").unwrap();
    cmd.current_dir(dir.path());
    cmd
}

#[test]
fn compresses_the_fixture_with_defaults_and_reports() {
    let dir = TempDir::new().unwrap();
    let out = dir.path().join("out.kdz");
    let log = dir.path().join("epochs.jsonl");
    let assert = kdcompress(&dir)
        .arg(fixture())
        .args([
            "-K",
            "16",
            "-D",
            "8",
            "--max-words",
            "1500",
            "--threads",
            "2",
            "-o",
        ])
        .arg(&out)
        .arg("--log-file")
        .arg(&log)
        .assert()
        .success()
        .stdout(predicate::str::contains("bits per word 32"))
        .stdout(predicate::str::contains("ratio"))
        .stdout(predicate::str::contains("code usage"))
        .stdout(predicate::str::contains("device        cpu"))
        .stderr(predicate::str::contains("after rq"))
        .stderr(predicate::str::contains("after lsq"));
    let stdout = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
    let mse: f64 = stdout
        .split("mse ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .expect("the summary states the mse");
    assert!(mse > 0.0 && mse < 5.0, "{mse}");
    // The artifact reads back with the right shape.
    let kdz = kdcompress::format::Kdz::open(&out).unwrap();
    assert_eq!(kdz.model().n, 1500);
    // One JSON object per round or epoch, and one per finished stage, the last with the
    // summary's error.
    let lines = std::fs::read_to_string(&log).unwrap();
    let mut stage_ends = Vec::new();
    for l in lines.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert!(v["stage"].as_str().is_some(), "{l}");
        if v["record"] == "stage_end" {
            assert!(v["neighbour_overlap"].as_f64().is_some(), "{l}");
            stage_ends.push(v);
        } else {
            assert!(v["val_mse"].as_f64().is_some(), "{l}");
        }
    }
    assert!(lines.lines().count() > stage_ends.len(), "{lines}");
    let names: Vec<_> = stage_ends
        .iter()
        .map(|v| v["stage"].as_str().unwrap())
        .collect();
    assert_eq!(names[..2], ["rq", "lsq"], "{lines}");
    let last = stage_ends.last().unwrap()["mse"].as_f64().unwrap();
    assert!((last - mse).abs() < 1e-3, "{last} vs {mse}");
}

#[test]
fn quiet_prints_nothing() {
    let dir = TempDir::new().unwrap();
    kdcompress(&dir)
        .arg(fixture())
        .args([
            "-K",
            "4",
            "-D",
            "2",
            "--max-words",
            "200",
            "-q",
            "-o",
            "q.kdz",
        ])
        .assert()
        .success()
        .stdout("")
        .stderr("");
    assert!(dir.path().join("q.kdz").is_file());
}

/// Each bad option fails before any reading or training, naming what is wrong.
#[test]
fn every_invalid_option_is_a_clear_error() {
    let dir = TempDir::new().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["-K", "1"], "-K must be in 2..=65536, got 1"),
        (&["-K", "70000"], "-K must be"),
        (&["-K", "x"], "invalid value 'x'"),
        (&["-D", "0"], "-D must be in 1..=1024"),
        (&["-D", "2000"], "-D must be"),
        (&["--composer", "concat"], "invalid value 'concat'"),
        (&["--composer", "split"], "invalid value 'split'"),
        (&["--composer", "gru"], "invalid value 'gru'"),
        (&["--batch-size", "0"], "--batch-size must be"),
        (&["--lr", "0"], "--lr must be"),
        (&["--lr", "nan"], "--lr must be"),
        (&["--lr=-1"], "--lr must be"),
        (&["--epochs=-3"], "invalid value '-3'"),
        (&["--hidden", "0"], "--hidden must be"),
        (&["--code-dim", "0"], "--code-dim must be"),
        (&["--tau", "0"], "--tau must be"),
        (&["--tau", "inf"], "--tau must be"),
        (&["--tau-schedule", "cosine"], "invalid value 'cosine'"),
        (
            &[
                "--tau-schedule",
                "linear",
                "--tau",
                "0.5",
                "--tau-min",
                "0.9",
            ],
            "--tau-min 0.9 is above --tau 0.5",
        ),
        (&["--entropy-weight=-1"], "--entropy-weight must be"),
        (&["--val-fraction", "0"], "--val-fraction must be"),
        (&["--val-fraction", "0.7"], "--val-fraction must be"),
        (&["--patience", "0"], "--patience must be"),
        (&["--beam", "0"], "--beam must be"),
        (&["--threads", "0"], "--threads must be"),
        (&["--time-limit", "0"], "--time-limit must be"),
        (&["--device", "gpu"], "invalid device \"gpu\""),
        (&["--device", "cuda:x"], "invalid device"),
        (&["--init", "zeros"], "invalid value 'zeros'"),
        (
            &["--init", "random", "--epochs", "0"],
            "--epochs must be at least 1",
        ),
        (&["-K", "65536", "-D", "1024"], "too large"),
    ];
    for (args, expected) in cases {
        kdcompress(&dir)
            .arg(fixture())
            .args(*args)
            .args(["-o", "never.kdz"])
            .assert()
            .failure()
            .stderr(predicate::str::contains(*expected));
    }
    assert!(!dir.path().join("never.kdz").exists());
}

#[test]
fn output_and_input_problems_are_found_before_training() {
    let dir = TempDir::new().unwrap();
    // Missing directory.
    kdcompress(&dir)
        .arg(fixture())
        .args(["-o", "no/such/dir/out.kdz"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("does not exist"));
    // Output is a directory.
    kdcompress(&dir)
        .arg(fixture())
        .arg("-o")
        .arg(dir.path())
        .assert()
        .failure()
        .stderr(predicate::str::contains("is a directory"));
    // Input is missing: named in the error.
    kdcompress(&dir)
        .args(["missing.txt", "-o", "out.kdz"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("missing.txt"));
    // Log file in a missing directory.
    kdcompress(&dir)
        .arg(fixture())
        .args(["-o", "out.kdz", "--log-file", "nope/log.jsonl"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("log file"));
    // CUDA asked for on a machine without it.
    if !tch::Cuda::is_available() {
        kdcompress(&dir)
            .arg(fixture())
            .args(["-o", "out.kdz", "--device", "cuda:0"])
            .assert()
            .failure()
            .stderr(predicate::str::contains("no CUDA device"));
    }
    // Output and input are required.
    kdcompress(&dir)
        .arg(fixture())
        .assert()
        .failure()
        .stderr(predicate::str::contains("--output"));
    assert!(!dir.path().join("out.kdz").exists());
}

/// /proc refuses new files even to root, so this holds whoever runs the tests.
#[cfg(target_os = "linux")]
#[test]
fn unwritable_output_directory_is_refused_up_front() {
    let dir = TempDir::new().unwrap();
    kdcompress(&dir)
        .arg(fixture())
        .args(["-o", "/proc/out.kdz"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("directory /proc is not writable"));
}
