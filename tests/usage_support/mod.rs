//! Hand-built `.kdz` files for the usage tests: codes chosen so that the expected groups,
//! neighbours and decoded vectors can be worked out by hand; and the binary run on them.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use assert_cmd::assert::Assert;
use assert_cmd::cargo::cargo_bin_cmd;
use predicates::prelude::*;

use kdcompress::codes::Codes;
use kdcompress::composer::{
    CODEBOOKS, Composer, ComposerConfig, ComposerKind, OUT_BIAS, OUT_WEIGHT, Tensor,
};
use kdcompress::compressed::{Compressed, Metadata};
use kdcompress::vocab::Vocab;

/// K = 4, D = 3, d' = d = 2, linear with W = I and b = 0, so a word's vector is
/// `Σ_i codebooks[i, code_i]` with `codebooks[i, k] = [k + 1, 10·i - 5·k]`.
pub fn table(words: &[(&str, [u16; 3])]) -> Compressed {
    let (d, k, dim) = (3usize, 4usize, 2usize);
    let mut cb = Vec::new();
    for i in 0..d {
        for c in 0..k {
            cb.push(c as f32 + 1.0);
            cb.push(10.0 * i as f32 - 5.0 * c as f32);
        }
    }
    let tensors = BTreeMap::from([
        (
            CODEBOOKS.to_string(),
            Tensor::new(vec![d, k, dim], cb).unwrap(),
        ),
        (
            OUT_WEIGHT.to_string(),
            Tensor::new(vec![dim, dim], vec![1.0, 0.0, 0.0, 1.0]).unwrap(),
        ),
        (
            OUT_BIAS.to_string(),
            Tensor::new(vec![dim], vec![0.0, 0.0]).unwrap(),
        ),
    ]);
    let config = ComposerConfig {
        kind: ComposerKind::Linear,
        num_codebooks: d,
        num_codes: k,
        code_dim: dim,
        hidden: 0,
        out_dim: dim,
    };
    Compressed {
        vocab: Vocab::new(words.iter().map(|(w, _)| *w)).unwrap(),
        codes: Codes::new(
            k as u32,
            d,
            words.iter().flat_map(|(_, c)| c.iter().copied()).collect(),
        )
        .unwrap(),
        composer: Composer::new(config, tensors).unwrap(),
        metadata: Metadata {
            method: "hand".into(),
            ..Metadata::default()
        },
        norms: None,
    }
}

/// The decoded vector of `code` in [`table`].
pub fn vector(code: [u16; 3]) -> [f32; 2] {
    let mut v = [0.0f32; 2];
    for (i, &c) in code.iter().enumerate() {
        v[0] += f32::from(c) + 1.0;
        v[1] += 10.0 * i as f32 - 5.0 * f32::from(c);
    }
    v
}

/// Weekdays share a code; king and queen differ in one position; the rest are spread out.
pub const WORDS: &[(&str, [u16; 3])] = &[
    ("monday", [1, 2, 3]),
    ("tuesday", [1, 2, 3]),
    ("wednesday", [1, 2, 3]),
    ("king", [0, 0, 1]),
    ("queen", [0, 0, 2]),
    ("prince", [0, 3, 1]),
    ("apple", [3, 3, 3]),
    ("banana", [3, 3, 1]),
    ("sunday", [1, 2, 0]),
];

pub fn write(dir: &Path, name: &str, c: &Compressed) -> PathBuf {
    let path = dir.join(name);
    kdcompress::format::write(&path, c).unwrap();
    path
}

/// The example table written to `dir/words.kdz`.
pub fn words_kdz(dir: &Path) -> PathBuf {
    write(dir, "words.kdz", &table(WORDS))
}

/// A copy of `kdz` claiming format version `major.0`, header checksum fixed, so that only the
/// version is wrong.
pub fn with_major(kdz: &Path, major: u16, out: &Path) {
    let mut bytes = std::fs::read(kdz).unwrap();
    bytes[8..10].copy_from_slice(&major.to_le_bytes());
    bytes[10..12].copy_from_slice(&0u16.to_le_bytes());
    let crc = crc32fast::hash(&bytes[..60]);
    bytes[60..64].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(out, bytes).unwrap();
}

/// Files in `dir` whose names start with a dot: leftovers of an interrupted atomic write.
pub fn hidden_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

/// The decoded vectors' cosine, worked out by hand.
pub fn cosine(a: [f32; 2], b: [f32; 2]) -> f32 {
    (a[0] * b[0] + a[1] * b[1]) / (a[0].hypot(a[1]) * b[0].hypot(b[1]))
}

/// Writes `text` to `dir/name`.
pub fn write_text(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The binary, run inside `dir` so that nothing can land in the working directory.
pub fn kdc(dir: &Path) -> Command {
    let mut cmd = cargo_bin_cmd!("kdcompress");
    cmd.current_dir(dir);
    cmd
}

/// `kdcompress export KDZ -o OUT`, run inside `dir`.
pub fn export(dir: &Path, kdz: &Path, out: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = kdc(dir);
    cmd.arg("export").arg(kdz).arg("-o").arg(out);
    cmd
}

/// Runs `cmd`, which must succeed, and returns what it printed.
pub fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(cmd.assert().success().get_output().stdout.clone()).unwrap()
}

/// Runs `cmd`, which must fail saying `message` somewhere on standard error.
pub fn fails_with(cmd: &mut Command, message: impl Into<String>) -> Assert {
    cmd.assert()
        .failure()
        .stderr(predicate::str::contains(message))
}
