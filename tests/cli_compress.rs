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
        .stdout(predicate::str::contains("× smaller than the f32 matrix"))
        .stdout(predicate::str::contains("code usage"))
        .stdout(predicate::str::contains("device        cpu"))
        .stderr(predicate::str::contains("after rq"))
        .stderr(predicate::str::contains("after lsq"))
        // Every stage of the default run is judged over all words, so it fits every word.
        .stderr(predicate::str::contains("every word fitted, none held out"));
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
    let mut storage = Vec::new();
    for l in lines.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        if v["record"] == "storage" {
            storage.push(v);
            continue;
        }
        assert!(v["stage"].as_str().is_some(), "{l}");
        if v["record"] == "stage_end" {
            assert!(v["neighbour_overlap"].as_f64().is_some(), "{l}");
            stage_ends.push(v);
        } else {
            // No word is held out, so no held-out error is logged.
            assert!(v["val_mse"].is_null(), "{l}");
            assert!(v["train_loss"].as_f64().is_some(), "{l}");
        }
    }
    assert!(lines.lines().count() > stage_ends.len(), "{lines}");
    // The last line: how the tables were stored, as the file says.
    assert_eq!(storage.len(), 1, "{lines}");
    let last: serde_json::Value = serde_json::from_str(lines.lines().last().unwrap()).unwrap();
    assert_eq!(last["record"], "storage", "{lines}");
    let dtype = storage[0]["dtype"].as_str().unwrap();
    assert!(
        kdz.tensor_dtypes().values().all(|d| d.name() == dtype),
        "{lines}"
    );
    assert_eq!(kdz.metadata().training["storage"]["dtype"], dtype);
    // Beside the options as given (defaults unset), the values the run used for them: 2^30
    // words × D × max(K, 256) annealed at most, 100 rounds on so few words (the most), 8
    // perturbation trials at D = 8, a beam of 16.
    let training = &kdz.metadata().training;
    assert!(training["lsq_sample"].is_null(), "{training}");
    let settled = &training["settled"];
    assert_eq!(settled["lsq_sample"], (1u64 << 30) / (8 * 256), "{settled}");
    assert_eq!(settled["lsq_rounds"], 100, "{settled}");
    assert_eq!(settled["lsq_trials"], 8, "{settled}");
    assert_eq!(settled["lsq_beam"], 16, "{settled}");
    assert_eq!(settled["threads"], 2, "{settled}");
    assert_eq!(
        storage[0]["bytes_".to_string() + dtype],
        std::fs::metadata(&out).unwrap().len()
    );
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

/// A small copy of the fixture in `dir`, the file a user would not want to lose.
fn user_vectors(dir: &TempDir) -> (PathBuf, String) {
    let text: String = std::fs::read_to_string(fixture())
        .unwrap()
        .lines()
        .take(200)
        .map(|l| format!("{l}\n"))
        .collect();
    let path = dir.path().join("vectors.txt");
    std::fs::write(&path, &text).unwrap();
    (path, text)
}

#[test]
fn compressing_a_file_onto_itself_is_refused_before_reading() {
    let dir = TempDir::new().unwrap();
    let (input, text) = user_vectors(&dir);
    let link = dir.path().join("link.txt");
    std::os::unix::fs::symlink(&input, &link).unwrap();
    // Output = input; input through a link and output the file; output a link to the input.
    for (inp, out) in [(&input, &input), (&link, &input), (&input, &link)] {
        for force in [false, true] {
            let mut cmd = kdcompress(&dir);
            cmd.arg(inp).args(["-K", "4", "-D", "4", "-o"]).arg(out);
            if force {
                cmd.arg("--force");
            }
            cmd.assert()
                .failure()
                .stderr(predicate::str::contains("is the input file"))
                .stderr(predicate::str::contains("reading").not());
            assert_eq!(std::fs::read_to_string(&input).unwrap(), text);
            assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
        }
    }
    // The log file may not be the input either.
    kdcompress(&dir)
        .arg(&input)
        .args(["-K", "4", "-D", "4", "-o", "new.kdz", "--log-file"])
        .arg(&input)
        .arg("--force")
        .assert()
        .failure()
        .stderr(predicate::str::contains("is the input file"));
    assert_eq!(std::fs::read_to_string(&input).unwrap(), text);
    assert!(!dir.path().join("new.kdz").exists());
}

#[test]
fn an_existing_output_is_replaced_only_with_force() {
    let dir = TempDir::new().unwrap();
    let (input, _) = user_vectors(&dir);
    let out = dir.path().join("out.kdz");
    let log = dir.path().join("log.jsonl");
    std::fs::write(&out, b"an hour of training").unwrap();
    std::fs::write(&log, b"old log").unwrap();
    let run = |extra: &[&str]| {
        let mut cmd = kdcompress(&dir);
        cmd.arg(&input)
            .args(["-K", "4", "-D", "4", "--threads", "2", "-o"])
            .arg(&out)
            .args(extra);
        cmd.assert()
    };
    // Refused before any training: nothing read, the old file untouched.
    run(&[])
        .failure()
        .stderr(predicate::str::contains(
            "out.kdz: the file already exists; pass --force",
        ))
        .stderr(predicate::str::contains("after rq").not());
    assert_eq!(std::fs::read(&out).unwrap(), b"an hour of training");
    // The log file follows the same rule.
    std::fs::remove_file(&out).unwrap();
    run(&["--log-file", "log.jsonl"])
        .failure()
        .stderr(predicate::str::contains(
            "log.jsonl: the file already exists",
        ));
    assert!(!out.exists());
    std::fs::write(&out, b"an hour of training").unwrap();
    run(&["--force", "--log-file", "log.jsonl"]).success();
    assert!(kdcompress::format::Kdz::open(&out).is_ok());
    assert_ne!(std::fs::read(&log).unwrap(), b"old log");
}

#[test]
fn help_states_the_overwrite_rule() {
    let dir = TempDir::new().unwrap();
    for args in [&["--help"][..], &["export", "--help"], &["eval", "--help"]] {
        kdcompress(&dir)
            .args(args)
            .assert()
            .success()
            .stdout(predicate::str::contains(
                "Replace output files that already exist (an input is never replaced)",
            ));
    }
}

#[test]
fn the_lsq_best_mark_names_the_error_that_earned_it() {
    let dir = TempDir::new().unwrap();
    let (input, _) = user_vectors(&dir);
    // By default the rounds are judged by the weighted error; with uniform weights by the mse.
    for (weight, error, gained, no_gain) in [
        (
            "relative",
            "weighted error ",
            "(best weighted error)",
            "(no weighted gain)",
        ),
        (
            "uniform",
            "mse ",
            "(best all-words mse)",
            "(no all-words gain)",
        ),
    ] {
        let assert = kdcompress(&dir)
            .arg(&input)
            .args(["-K", "8", "-D", "4", "--threads", "2", "-o"])
            .arg(format!("{weight}.kdz"))
            .args(["--word-weight", weight])
            .assert()
            .success();
        let stderr = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
        let rounds: Vec<&str> = stderr
            .lines()
            .filter(|l| l.trim_start().starts_with("lsq "))
            .collect();
        assert!(!rounds.is_empty(), "{stderr}");
        let mut best = f64::INFINITY;
        for line in rounds {
            let all: f64 = line
                .split(error)
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("no all-words {error}in {line:?}"));
            // Never a bare "(best)": the mark says by which error.
            assert!(!line.ends_with("(best)"), "{line}");
            if line.ends_with(gained) {
                assert!(all <= best, "{line}: above {best}");
                best = all;
            } else {
                assert!(line.ends_with(no_gain), "{line}");
                assert!(all >= best, "{line}");
            }
        }
    }
}

/// `--precision f32` writes the tables as every 1.x reader reads them (format 1.1); `f16` writes
/// the same training's weights rounded to f16 (format 1.2), and both runs say what f16 costs.
#[test]
fn precision_chooses_how_the_tables_are_stored() {
    use kdcompress::composer::ComposerKind;
    use kdcompress::format::{Kdz, TensorDtype};
    let dir = TempDir::new().unwrap();
    let run = |precision: &str| {
        let out = dir.path().join(format!("{precision}.kdz"));
        let assert = kdcompress(&dir)
            .arg(fixture())
            .args([
                "-K",
                "16",
                "-D",
                "8",
                "--max-words",
                "1000",
                "--threads",
                "2",
                "--precision",
                precision,
                "-o",
            ])
            .arg(&out)
            .assert()
            .success();
        let stdout = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
        let line = stdout
            .lines()
            .find(|l| l.starts_with("storage       "))
            .unwrap_or_else(|| panic!("no storage line in {stdout}"))
            .to_string();
        (Kdz::open(&out).unwrap(), line)
    };
    let (f32_file, f32_line) = run("f32");
    // Least-squares tables decode through the `sum` composer (format 1.3) whatever the dtype.
    assert_eq!(f32_file.version(), (1, 3), "{f32_line}");
    assert_eq!(f32_file.composer().config().kind, ComposerKind::Sum);
    assert!(
        f32_file
            .tensor_dtypes()
            .values()
            .all(|&d| d == TensorDtype::F32)
    );
    assert!(
        f32_line
            .starts_with("storage       f32 tables and composer (as asked): f16 would give mse "),
        "{f32_line}"
    );
    let (f16_file, f16_line) = run("f16");
    assert_eq!(f16_file.version(), (1, 3), "{f16_line}");
    assert!(
        f16_line.starts_with("storage       f16 tables and composer (as asked): mse "),
        "{f16_line}"
    );
    // One seed, one training: the same codes, and the f32 weights rounded.
    assert_eq!(f16_file.codes(), f32_file.codes());
    for (name, t) in f32_file.composer().tensors() {
        let half = &f16_file.composer().tensors()[name];
        let rounded: Vec<f32> = t.data.iter().map(|&v| TensorDtype::F16.round(v)).collect();
        assert_eq!(half.data, rounded, "{name}");
    }
    assert!(f16_file.file_len() < f32_file.file_len());
    // Both runs state the same cost, and both file sizes.
    let cost = |line: &str| {
        let from = line.find("mse ").unwrap();
        line[from..from + line[from..].find(')').unwrap()].to_string()
    };
    assert_eq!(cost(&f32_line), cost(&f16_line));
    for line in [&f32_line, &f16_line] {
        assert!(
            line.contains(" KiB -> ") && line.contains(" bits per word)"),
            "{line}"
        );
        assert!(!line.contains('?') && !line.contains("NaN"), "{line}");
    }
    let storage = &f16_file.metadata().training["storage"];
    assert_eq!(storage["precision"], "f16");
    assert_eq!(storage["dtype"], "f16");
    let (mse32, mse16) = (
        storage["mse_f32"].as_f64().unwrap(),
        storage["mse_f16"].as_f64().unwrap(),
    );
    assert!((mse16 / mse32 - 1.0).abs() < 1e-3, "{storage}");
    assert_eq!(f32_file.metadata().training["storage"]["mse_f16"], mse16);
}
