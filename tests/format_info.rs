//! `kdcompress info` on files written into a temporary directory.

mod format_support;
mod usage_support;

use format_support::{Shape, random};
use kdcompress::composer::ComposerKind;
use predicates::prelude::*;
use usage_support::{fails_with, kdc, stdout};

fn write_sample(dir: &std::path::Path) -> std::path::PathBuf {
    write_kind(dir, ComposerKind::Mlp)
}

fn write_kind(dir: &std::path::Path, kind: ComposerKind) -> std::path::PathBuf {
    let c = random(
        5,
        Shape {
            kind,
            n: 2000,
            k: 32,
            d_codebooks: 16,
            code_dim: 8,
            hidden: 4,
            out_dim: 50,
            norms: true,
        },
    );
    let path = dir.join(format!("{}.kdz", kind.name()));
    kdcompress::format::write(&path, &c).unwrap();
    path
}

#[test]
fn info_reports_sections_ratio_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_sample(dir.path());
    let file_len = std::fs::metadata(&path).unwrap().len();
    let out = stdout(kdc(dir.path()).arg("info").arg(&path));
    for expected in [
        "words (N)     2,000",
        "dimension (d) 50",
        "D = 16 codebooks of K = 32 codes, 5 bits each, 10 bytes per word",
        "composer      mlp: code width d' = 8, hidden = 4",
        "vocabulary",
        "zstd",
        "norms",
        // 16 codes of 5 bits; rows are 10 bytes.
        "bits per word      80 in codes (80 with padding to whole bytes)",
        "N x d x 4 = 400,000 bytes",
        "\"file_name\": \"glove.6B.50d.txt\"",
        "\"method\": \"kd\"",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    let digits = file_len.to_string();
    let (head, tail) = digits.split_at(digits.len() - 3);
    let size = format!("format        .kdz 1.1, {head},{tail} bytes");
    assert!(
        (1000..1_000_000).contains(&file_len) && out.contains(&size),
        "{size:?} in:\n{out}"
    );
    // The codes alone: 400,000 / 20,000 bytes; the whole file in the direction it goes.
    assert!(out.contains("codes alone 20.0× smaller than it"), "{out}");
    let whole = if file_len < 400_000 {
        format!(
            "whole file {:.1}× smaller than",
            400_000.0 / file_len as f64
        )
    } else {
        format!("whole file {:.1}× larger than", file_len as f64 / 400_000.0)
    };
    assert!(out.contains(&whole), "{whole:?} in:\n{out}");
    // Shares of the sections and overhead add up to the file.
    let shares: f64 = out
        .lines()
        .filter_map(|l| l.strip_suffix('%'))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum();
    assert!(
        (shares - 100.0).abs() < 0.5,
        "shares sum to {shares}:\n{out}"
    );
}

/// Each kind shows the sizes it has and no other: a linear composer has no hidden layer.
#[test]
fn info_shows_only_the_sizes_a_composer_has() {
    let dir = tempfile::tempdir().unwrap();
    for (kind, expected) in [
        (
            ComposerKind::Linear,
            "composer      linear: code width d' = 8, ",
        ),
        (
            ComposerKind::Mlp,
            "composer      mlp: code width d' = 8, hidden = 4, ",
        ),
        (
            ComposerKind::Lstm,
            "composer      lstm: code width d' = 8, hidden = 4, ",
        ),
    ] {
        let path = write_kind(dir.path(), kind);
        let out = stdout(kdc(dir.path()).arg("info").arg(&path));
        let line = out.lines().find(|l| l.starts_with("composer")).unwrap();
        assert!(line.starts_with(expected), "{kind:?}: {line}");
        assert!(line.ends_with(" parameters"), "{kind:?}: {line}");
        if kind == ComposerKind::Linear {
            assert!(!line.contains("hidden"), "{line}");
        }
    }
}

#[test]
fn info_on_a_damaged_file_names_it_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_sample(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    fails_with(
        kdc(dir.path()).arg("info").arg(&path),
        path.to_string_lossy(),
    )
    .stderr(predicate::str::contains("norms section at offset"))
    .stderr(predicate::str::contains("is corrupt"));
}

#[test]
fn info_on_a_missing_file_fails_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.kdz");
    fails_with(
        kdc(dir.path()).arg("info").arg(&path),
        "absent.kdz: cannot open for reading",
    );
}

/// The stored dtype of the tensors, and what they cost per word beside the codes.
#[test]
fn info_shows_how_the_tensors_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let c = random(
        5,
        Shape {
            kind: ComposerKind::Linear,
            n: 2000,
            k: 32,
            d_codebooks: 16,
            code_dim: 8,
            hidden: 0,
            out_dim: 50,
            norms: false,
        },
    );
    let mut per_word = Vec::new();
    for dtype in kdcompress::format::TensorDtype::ALL {
        let path = dir.path().join(format!("{dtype}.kdz"));
        kdcompress::format::write_as(&path, &c, dtype).unwrap();
        let out = stdout(kdc(dir.path()).arg("info").arg(&path));
        let minor = if dtype == kdcompress::format::TensorDtype::F16 {
            2
        } else {
            1
        };
        assert!(
            out.contains(&format!("format        .kdz 1.{minor}, ")),
            "{out}"
        );
        let expected =
            format!("tensors       {dtype} (codebooks, composer.out.bias, composer.out.weight)");
        assert!(out.contains(&expected), "missing {expected:?} in:\n{out}");
        let line = out
            .lines()
            .find(|l| l.starts_with("bits per word"))
            .unwrap();
        assert!(line.contains("80 in codes"), "{line}");
        let tables: f64 = line
            .split(" for the whole file (")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no tables' bits per word in {line}"));
        per_word.push(tables);
    }
    // 16 x 32 x 8 + 50 x 8 + 50 parameters: 4,546, over 2,000 words.
    let bits = |bytes: f64| bytes * 8.0 / 2000.0;
    assert!(
        (per_word[0] - bits(4.0 * 4546.0)).abs() < 1.0,
        "{per_word:?}"
    );
    assert!(
        (per_word[1] - bits(2.0 * 4546.0)).abs() < 1.0,
        "{per_word:?}"
    );
}
