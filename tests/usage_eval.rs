//! `kdcompress eval` on hand-built files: scores worked out by hand, JSON, the HTML report and
//! every error.

mod usage_support;

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;
use usage_support::{WORDS, fails_with, kdc, stdout, vector, with_major, words_kdz, write_text};

/// GloVe text with each word's decoded vector plus `shift(row)`.
fn write_original(dir: &Path, name: &str, shift: impl Fn(usize) -> [f32; 2]) -> PathBuf {
    let mut text = String::new();
    for (row, (w, code)) in WORDS.iter().enumerate() {
        let v = vector(*code);
        let s = shift(row);
        text.push_str(&format!("{w} {} {}\n", v[0] + s[0], v[1] + s[1]));
    }
    // A word the .kdz does not have changes nothing.
    text.push_str("stranger 1 1\n");
    write_text(dir, name, &text)
}

struct Setup {
    dir: tempfile::TempDir,
    kdz: PathBuf,
    similarity: PathBuf,
    analogy: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let kdz = words_kdz(dir.path());
    let similarity = write_text(
        dir.path(),
        "sim.tsv",
        "# w1\tw2\tscore\nking\tqueen\t8.5\nking apple 1.0\nmonday tuesday 9\nQueen prince 7\nnowhere word 5\n",
    );
    let analogy = write_text(
        dir.path(),
        "questions.txt",
        ": royals\nking queen prince apple\nKing Queen Monday Tuesday\n: gram-days\nmonday sunday tuesday wednesday\nmonday sunday nowhere wednesday\n",
    );
    Setup {
        dir,
        kdz,
        similarity,
        analogy,
    }
}

impl Setup {
    /// `kdcompress eval KDZ --original ORIGINAL`, run in the temporary directory.
    fn eval(&self, original: &Path) -> Command {
        self.eval_file(&self.kdz, original)
    }

    fn eval_file(&self, kdz: &Path, original: &Path) -> Command {
        let mut cmd = kdc(self.dir.path());
        cmd.arg("eval").arg(kdz).arg("--original").arg(original);
        cmd
    }

    /// [`Setup::eval`] with the similarity and analogy files.
    fn eval_all(&self, original: &Path) -> Command {
        let mut cmd = self.eval(original);
        cmd.arg("--similarity")
            .arg(&self.similarity)
            .arg("--analogy")
            .arg(&self.analogy);
        cmd
    }
}

fn json(cmd: &mut Command) -> serde_json::Value {
    let out = cmd.assert().success().get_output().stdout.clone();
    serde_json::from_slice(&out).unwrap()
}

#[test]
fn identical_vectors_score_like_the_original() {
    let s = setup();
    let original = write_original(s.dir.path(), "same.txt", |_| [0.0, 0.0]);
    let v = json(s.eval_all(&original).arg("--json"));
    assert_eq!(v["words"], 9);
    assert_eq!(v["words_in_original"], 9);
    assert_eq!(v["dim"], 2);
    assert_eq!(v["mse"]["decoded"], 0.0);
    assert_eq!(v["mse"]["original"], 0.0);
    assert_eq!(v["relative_error"]["decoded"], 0.0);
    assert!((v["mean_cosine"]["decoded"].as_f64().unwrap() - 1.0).abs() < 1e-6);
    assert_eq!(v["neighbours"]["overlap"]["decoded"], 1.0);
    assert_eq!(v["neighbours"]["samples"], 9);
    let sim = &v["similarity"][0];
    assert_eq!(sim["pairs"], 5);
    assert_eq!(sim["found"], 4);
    assert_eq!(sim["spearman"]["decoded"], sim["spearman"]["original"]);
    let a = &v["analogy"];
    assert_eq!(a["questions"], 4);
    assert_eq!(a["answerable"], 3);
    assert_eq!(a["accuracy"]["decoded"], a["accuracy"]["original"]);
    assert_eq!(a["decoded"]["sections"][0]["name"], "royals");
    assert_eq!(a["decoded"]["syntactic"]["answered"], 1);
}

#[test]
fn shifted_original_gives_the_errors_worked_out_by_hand() {
    let s = setup();
    // Only king (row 3) moves, by (3, 4): a squared error of 25 over 9 words.
    let original = write_original(s.dir.path(), "shifted.txt", |row| {
        if row == 3 { [3.0, 4.0] } else { [0.0, 0.0] }
    });
    let v = json(s.eval(&original).arg("--json"));
    let mse = v["mse"]["decoded"].as_f64().unwrap();
    assert!((mse - 25.0 / 9.0).abs() < 1e-5, "{mse}");
    let norms: f64 = WORDS
        .iter()
        .enumerate()
        .map(|(row, (_, code))| {
            let mut x = vector(*code);
            if row == 3 {
                x[0] += 3.0;
                x[1] += 4.0;
            }
            f64::from(x[0] * x[0] + x[1] * x[1])
        })
        .sum();
    let rel = v["relative_error"]["decoded"].as_f64().unwrap();
    assert!((rel - (25.0 / norms).sqrt()).abs() < 1e-6, "{rel}");
    assert!(v["mean_cosine"]["decoded"].as_f64().unwrap() < 1.0);
    assert_eq!(v["mean_cosine"]["original"], 1.0);
    assert!(v["analogy"].is_null());
    assert_eq!(v["similarity"], serde_json::json!([]));
}

#[test]
fn text_output_puts_scores_side_by_side() {
    let s = setup();
    let original = write_original(s.dir.path(), "same.txt", |_| [0.0, 0.0]);
    let out = stdout(&mut s.eval_all(&original));
    for line in [
        ": 9 of 9 words found, d = 2",
        "MSE per word                           0.0000     0.0000",
        "top-10 neighbour overlap               1.0000     1.0000  9 sampled words",
        "4 of 5 pairs",
        "3CosAdd; 3 of 4 questions, answers among 9 words",
        "  semantic",
        "  syntactic",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
}

#[test]
fn report_is_written_with_curve_and_code_usage() {
    let s = setup();
    let original = write_original(s.dir.path(), "same.txt", |_| [0.0, 0.0]);
    let log = write_text(
        s.dir.path(),
        "train.jsonl",
        "{\"stage\":\"composer\",\"epoch\":1,\"train_loss\":1.0,\"val_mse\":0.9,\"best\":true}\n{\"stage\":\"composer\",\"epoch\":2,\"train_loss\":0.5,\"val_mse\":0.6,\"best\":true}\n",
    );
    let report = s.dir.path().join("report.html");
    s.eval(&original)
        .arg("--report")
        .arg(&report)
        .arg("--log")
        .arg(&log)
        .assert()
        .success()
        .stderr(predicate::str::contains("wrote"));
    let html = std::fs::read_to_string(&report).unwrap();
    for part in [
        "<h2>Scores</h2>",
        "2 records from",
        "train.jsonl",
        "Words per code",
        "<code>1-2-3</code></td><td>monday tuesday wednesday</td>",
        "Entropy per code position",
    ] {
        assert!(html.contains(part), "missing {part:?}");
    }
    assert_eq!(html.matches("<svg").count(), 3);
    // Refuses to overwrite without --force, before any work.
    fails_with(
        s.eval(&original).arg("--report").arg(&report),
        "report.html: the file already exists; pass --force to overwrite it",
    );
    s.eval(&original)
        .arg("--report")
        .arg(&report)
        .arg("--force")
        .assert()
        .success();
    let html = std::fs::read_to_string(&report).unwrap();
    // The report is never written over an input, --force or not, named directly or by a link.
    let before = std::fs::read(&original).unwrap();
    let link = s.dir.path().join("link.txt");
    std::os::unix::fs::symlink(&original, &link).unwrap();
    for target in [&original, &link] {
        fails_with(
            s.eval(&original).arg("--report").arg(target).arg("--force"),
            "is the input file",
        );
    }
    fails_with(
        s.eval(&original)
            .arg("--report")
            .arg(&log)
            .arg("--log")
            .arg(&log)
            .arg("--force"),
        "is the input file",
    );
    assert_eq!(std::fs::read(&original).unwrap(), before);
    assert!(
        html.contains("No training log"),
        "no --log, no log in the metadata"
    );
}

#[test]
fn errors_name_the_file_at_fault() {
    let s = setup();
    let original = write_original(s.dir.path(), "same.txt", |_| [0.0, 0.0]);
    let missing = s.dir.path().join("missing.tsv");
    fails_with(
        s.eval(&original).arg("--similarity").arg(&missing),
        format!("cannot read similarity file {}", missing.display()),
    );
    let bad = write_text(s.dir.path(), "bad.txt", ": s\na b c\n");
    fails_with(
        s.eval(&original).arg("--analogy").arg(&bad),
        format!("{}:2: expected four words", bad.display()),
    );
    let log = write_text(s.dir.path(), "log.jsonl", "{\"epoch\":1}\nnot json\n");
    let report = s.dir.path().join("r.html");
    fails_with(
        s.eval(&original)
            .arg("--report")
            .arg(&report)
            .arg("--log")
            .arg(&log),
        format!("{}:2: not a JSON object", log.display()),
    );
    assert!(!report.exists());
    // --log without --report is a usage error.
    fails_with(s.eval(&original).arg("--log").arg(&log), "--report");

    let wide = write_text(s.dir.path(), "wide.txt", "king 1 2 3\n");
    fails_with(
        &mut s.eval(&wide),
        format!(
            "{}: the vectors have 3 dimensions but {} decodes to 2",
            wide.display(),
            s.kdz.display()
        ),
    );
    let strangers = write_text(s.dir.path(), "strangers.txt", "x 1 2\n");
    fails_with(&mut s.eval(&strangers), "none of the 9 words of");

    let newer = s.dir.path().join("newer.kdz");
    with_major(&s.kdz, 3, &newer);
    fails_with(
        &mut s.eval_file(&newer, &original),
        "needs a reader for major version 3",
    );
}
