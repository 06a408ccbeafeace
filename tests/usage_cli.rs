//! `codes`, `groups`, `similar` and `export` on hand-built files in temporary directories.

mod usage_support;

use std::path::{Path, PathBuf};

use usage_support::{
    WORDS, cosine, export, fails_with, hidden_files, kdc, stdout, table, vector, with_major,
    words_kdz, write, write_text,
};

#[test]
fn codes_shows_code_same_code_words_and_nearest_codes() {
    let dir = tempfile::tempdir().unwrap();
    let kdz = words_kdz(dir.path());
    let out = stdout(
        kdc(dir.path())
            .args(["codes", "--near", "3"])
            .arg(&kdz)
            .args(["monday", "king"]),
    );
    let expected = "\
monday  1-2-3
  same code (2 other words): tuesday wednesday
  nearest codes (Hamming distance, code, words):
    1  1-2-0  sunday
    2  3-3-3  apple
    3  0-0-1  king

king  0-0-1
  same code: no other word
  nearest codes (Hamming distance, code, words):
    1  0-0-2  queen
    1  0-3-1  prince
    2  3-3-1  banana
";
    assert_eq!(out, expected);
}

#[test]
fn codes_limits_words_per_code() {
    let dir = tempfile::tempdir().unwrap();
    let kdz = words_kdz(dir.path());
    let out = stdout(
        kdc(dir.path())
            .args(["codes", "--near", "0", "--max-words", "1"])
            .arg(&kdz)
            .arg("tuesday"),
    );
    assert_eq!(
        out,
        "tuesday  1-2-3\n  same code (2 other words): monday (+1 more)\n"
    );
}

#[test]
fn unknown_word_suggests_close_words_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let kdz = words_kdz(dir.path());
    for cmd in ["codes", "similar"] {
        fails_with(
            kdc(dir.path()).arg(cmd).arg(&kdz).args(["king", "mondya"]),
            format!(
                "{}: \"mondya\" is not in the vocabulary (9 words); did you mean monday?",
                kdz.display()
            ),
        )
        .stdout("");
    }
    fails_with(
        kdc(dir.path()).arg("codes").arg(&kdz).arg("Queen"),
        "did you mean queen?",
    );
    fails_with(
        kdc(dir.path()).arg("similar").arg(&kdz).arg("zzzzzzzz"),
        "no word in it is close",
    );
}

#[test]
fn newer_major_version_says_which_version_is_needed() {
    let dir = tempfile::tempdir().unwrap();
    let kdz = words_kdz(dir.path());
    let newer = dir.path().join("newer.kdz");
    with_major(&kdz, 2, &newer);
    let message = format!(
        "{}: .kdz format version 2.0 needs a reader for major version 2; this kdcompress reads version 1.x",
        newer.display()
    );
    for args in [
        vec!["codes", "x", "king"],
        vec!["groups", "x"],
        vec!["similar", "x", "king"],
        vec!["export", "x", "-o", "out.npy"],
    ] {
        let args: Vec<&std::ffi::OsStr> = args
            .iter()
            .map(|a| {
                if *a == "x" {
                    newer.as_os_str()
                } else {
                    a.as_ref()
                }
            })
            .collect();
        fails_with(kdc(dir.path()).args(&args), message.clone());
    }
    assert!(!dir.path().join("out.npy").exists());
}

#[test]
fn missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.kdz");
    for cmd in ["codes", "similar"] {
        fails_with(
            kdc(dir.path()).arg(cmd).arg(&missing).arg("king"),
            format!("{}: cannot open for reading", missing.display()),
        );
    }
    fails_with(
        kdc(dir.path()).arg("groups").arg(&missing),
        "nope.kdz: cannot open for reading",
    );
}

#[test]
fn groups_by_full_code_and_by_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let kdz = words_kdz(dir.path());
    let out = stdout(kdc(dir.path()).arg("groups").arg(&kdz).args(["--top", "3"]));
    assert_eq!(
        out,
        "\
9 words in 7 groups by the whole code (D = 3); the 3 largest:
      3  1-2-3  monday tuesday wednesday
      1  0-0-1  king
      1  0-0-2  queen
"
    );
    let out =
        stdout(
            kdc(dir.path())
                .arg("groups")
                .arg(&kdz)
                .args(["--prefix", "1", "--max-words", "3"]),
        );
    assert_eq!(
        out,
        "\
9 words in 3 groups by the first 1 of 3 code positions; the 3 largest:
      4  1  monday tuesday wednesday (+1 more)
      3  0  king queen prince
      2  3  apple banana
"
    );
    fails_with(
        kdc(dir.path())
            .arg("groups")
            .arg(&kdz)
            .args(["--prefix", "0"]),
        "--prefix",
    );
}

#[test]
fn groups_stats_report_usage_and_entropy() {
    let dir = tempfile::tempdir().unwrap();
    let kdz = words_kdz(dir.path());
    let out = stdout(
        kdc(dir.path())
            .arg("groups")
            .arg(&kdz)
            .args(["--stats", "--top", "0"]),
    );
    // Position 0 holds 1 four times, 0 three times, 3 twice:
    // -(4/9 log2 4/9 + 3/9 log2 3/9 + 2/9 log2 2/9) = 1.53 bits.
    for line in [
        "9 words, 7 distinct codes; 6 words (66.7%) have a code of their own; the largest group has 3 words",
        "               1        6        6 (66.7%)",
        "             3-4        1        3 (33.3%)",
        "position  values used (of 4)  entropy (of 2.00 bits)",
        "         0                    3     1.53",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
}

#[test]
fn similar_ranks_by_cosine_of_decoded_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let kdz = words_kdz(dir.path());
    let out = stdout(
        kdc(dir.path())
            .arg("similar")
            .arg(&kdz)
            .args(["king", "-k", "3"]),
    );
    let king = vector([0, 0, 1]);
    let expected = format!(
        "king: nearest by cosine of the decoded vectors\n   1  queen                {:.3}\n   2  sunday               {:.3}\n   3  prince               {:.3}\n",
        cosine(king, vector([0, 0, 2])),
        cosine(king, vector([1, 2, 0])),
        cosine(king, vector([0, 3, 1])),
    );
    assert_eq!(out, expected);
}

#[test]
fn export_formats_by_extension() {
    let dir = tempfile::tempdir().unwrap();
    let kdz = words_kdz(dir.path());
    for ext in ["txt", "bin", "npy", "safetensors"] {
        export(dir.path(), &kdz, dir.path().join(format!("out.{ext}")))
            .assert()
            .success();
    }
    let glove = std::fs::read_to_string(dir.path().join("out.txt")).unwrap();
    let mut expected = String::new();
    for (w, code) in WORDS {
        let v = vector(*code);
        expected.push_str(&format!("{w} {} {}\n", v[0], v[1]));
    }
    assert_eq!(glove, expected);

    let bin = std::fs::read(dir.path().join("out.bin")).unwrap();
    let mut expected = b"9 2\n".to_vec();
    for (w, code) in WORDS {
        expected.extend_from_slice(w.as_bytes());
        expected.push(b' ');
        for x in vector(*code) {
            expected.extend_from_slice(&x.to_le_bytes());
        }
        expected.push(b'\n');
    }
    assert_eq!(bin, expected);

    let npy = std::fs::read(dir.path().join("out.npy")).unwrap();
    assert_eq!(&npy[..8], b"\x93NUMPY\x01\x00");
    let header_len = u16::from_le_bytes([npy[8], npy[9]]) as usize;
    let header = std::str::from_utf8(&npy[10..10 + header_len]).unwrap();
    assert!(header.contains("'shape': (9, 2)"), "{header}");
    assert_eq!((10 + header_len) % 64, 0);
    let data: Vec<f32> = npy[10 + header_len..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let expected: Vec<f32> = WORDS.iter().flat_map(|(_, c)| vector(*c)).collect();
    assert_eq!(data, expected);
    assert!(hidden_files(dir.path()).is_empty());
}

/// safetensors writes its metadata in hash order, which differs from process to process; the
/// export sorts it, so exporting one `.kdz` twice gives the same bytes.
#[test]
fn export_safetensors_is_the_same_bytes_every_time() {
    let dir = tempfile::tempdir().unwrap();
    let kdz = words_kdz(dir.path());
    let runs: Vec<Vec<u8>> = (0..4)
        .map(|i| {
            let out = dir.path().join(format!("model{i}.safetensors"));
            export(dir.path(), &kdz, &out).assert().success();
            std::fs::read(&out).unwrap()
        })
        .collect();
    assert!(runs.iter().all(|r| r == &runs[0]));
    let header_len = u64::from_le_bytes(runs[0][..8].try_into().unwrap());
    assert_eq!(header_len % 8, 0, "tensor data starts 8-byte aligned");
    safetensors::SafeTensors::deserialize(&runs[0]).unwrap();
}

#[test]
fn export_safetensors_holds_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let kdz = words_kdz(dir.path());
    let out = dir.path().join("model.st");
    export(dir.path(), &kdz, &out)
        .args(["--format", "safetensors"])
        .assert()
        .success();
    let bytes = std::fs::read(&out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let codes = st.tensor("codes").unwrap();
    assert_eq!(codes.dtype(), safetensors::Dtype::U8);
    assert_eq!(codes.shape(), &[9, 3]);
    let want: Vec<u8> = WORDS
        .iter()
        .flat_map(|(_, c)| c.iter().map(|&x| x as u8))
        .collect();
    assert_eq!(codes.data(), &want[..]);
    let original = table(WORDS);
    for (name, t) in original.composer.tensors() {
        let got = st.tensor(name).unwrap();
        assert_eq!(got.dtype(), safetensors::Dtype::F32, "{name}");
        assert_eq!(got.shape(), &t.shape[..], "{name}");
        let values: Vec<f32> = got
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(values, t.data, "{name}");
    }
    assert_eq!(st.len(), 1 + original.composer.tensors().len());
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().as_ref().unwrap();
    assert_eq!(meta["format"], "kdcompress");
    assert_eq!(meta["format_version"], "1");
    let config: serde_json::Value = serde_json::from_str(&meta["composer"]).unwrap();
    assert_eq!(
        config,
        serde_json::json!({"kind": "linear", "num_codebooks": 3, "num_codes": 4,
                           "code_dim": 2, "hidden": 0, "out_dim": 2})
    );
    let vocab: Vec<String> = serde_json::from_str(&meta["vocab"]).unwrap();
    assert_eq!(
        vocab,
        WORDS.iter().map(|(w, _)| w.to_string()).collect::<Vec<_>>()
    );
    let provenance: serde_json::Value = serde_json::from_str(&meta["kdz_metadata"]).unwrap();
    assert_eq!(provenance["method"], "hand");
}

#[test]
fn export_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let kdz = words_kdz(dir.path());
    let out = dir.path().join("out.npy");
    std::fs::write(&out, "keep me").unwrap();
    fails_with(
        &mut export(dir.path(), &kdz, &out),
        format!(
            "{}: the file already exists; pass --force to overwrite it",
            out.display()
        ),
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "keep me");
    // The word list is checked before anything is written, too.
    let words = dir.path().join("words.txt");
    std::fs::write(&words, "keep me too").unwrap();
    let fresh = dir.path().join("fresh.npy");
    fails_with(
        export(dir.path(), &kdz, &fresh).arg("--words").arg(&words),
        "words.txt: the file already exists",
    );
    assert!(!fresh.exists());
    export(dir.path(), &kdz, &out)
        .arg("--words")
        .arg(&words)
        .arg("--force")
        .assert()
        .success();
    assert_eq!(&std::fs::read(&out).unwrap()[..6], b"\x93NUMPY");
    let listed = std::fs::read_to_string(&words).unwrap();
    assert_eq!(
        listed.lines().collect::<Vec<_>>(),
        WORDS.iter().map(|(w, _)| *w).collect::<Vec<_>>()
    );
    assert!(hidden_files(dir.path()).is_empty());
}

#[test]
fn export_never_writes_over_the_kdz_it_reads() {
    let dir = tempfile::tempdir().unwrap();
    let kdz = words_kdz(dir.path());
    let before = std::fs::read(&kdz).unwrap();
    let link = dir.path().join("link.safetensors");
    std::os::unix::fs::symlink(&kdz, &link).unwrap();
    for (out, words) in [
        (&kdz, None),
        (&link, None),
        (&dir.path().join("v.npy"), Some(&kdz)),
    ] {
        let mut cmd = export(dir.path(), &kdz, out);
        cmd.arg("--force");
        match words {
            Some(w) => cmd.arg("--words").arg(w),
            None => cmd.args(["--format", "safetensors"]),
        };
        fails_with(&mut cmd, "is the input file");
    }
    assert_eq!(std::fs::read(&kdz).unwrap(), before);
    // Output and word list may not be one file either.
    let same = dir.path().join("same.txt");
    fails_with(
        export(dir.path(), &kdz, &same)
            .arg("--words")
            .arg(&same)
            .arg("--force"),
        "name the same file",
    );
    assert!(hidden_files(dir.path()).is_empty());
}

#[test]
fn export_needs_a_known_format() {
    let dir = tempfile::tempdir().unwrap();
    let kdz = words_kdz(dir.path());
    fails_with(
        &mut export(dir.path(), &kdz, dir.path().join("out.vec")),
        "out.vec: cannot tell the format from the extension",
    );
    fails_with(
        export(dir.path(), &kdz, "x.npy").args(["--format", "parquet"]),
        "invalid value 'parquet'",
    );
    assert!(std::fs::read_dir(dir.path()).unwrap().count() == 1);
}

#[test]
fn export_refuses_words_text_formats_cannot_hold() {
    let dir = tempfile::tempdir().unwrap();
    let mut words = WORDS.to_vec();
    words[4].0 = "new york";
    let kdz = write(dir.path(), "spaces.kdz", &table(&words));
    for ext in ["txt", "bin"] {
        let out = dir.path().join(format!("out.{ext}"));
        fails_with(
            &mut export(dir.path(), &kdz, &out),
            "cannot write word 4 (\"new york\")",
        )
        .stderr(predicates::str::contains("contains whitespace"));
        assert!(!out.exists());
    }
    // Formats without separators hold any word.
    export(dir.path(), &kdz, dir.path().join("out.safetensors"))
        .assert()
        .success();
    assert!(hidden_files(dir.path()).is_empty());
}

#[test]
fn export_into_a_missing_directory_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let kdz = words_kdz(dir.path());
    let out = dir.path().join("no/such/dir/out.npy");
    fails_with(
        &mut export(dir.path(), &kdz, &out),
        format!("{}: cannot create a temporary file beside", out.display()),
    );
}

/// GloVe text for some of the example words: king's original neighbours differ from its
/// decoded ones, and `outsider` is not in the .kdz so it can never be listed.
fn write_original(dir: &Path) -> PathBuf {
    write_text(
        dir,
        "original.txt",
        "king 1 0\nqueen 0.9 0.1\noutsider 1 0.01\napple 0 1\nprince -1 0\nmonday 0.5 0.5\n",
    )
}

#[test]
fn similar_lists_original_neighbours_beside_decoded_ones() {
    let dir = tempfile::tempdir().unwrap();
    let kdz = words_kdz(dir.path());
    let original = write_original(dir.path());
    let out = stdout(
        kdc(dir.path())
            .arg("similar")
            .arg(&kdz)
            .args(["king", "-k", "4", "--original"])
            .arg(&original),
    );
    let king = vector([0, 0, 1]);
    let ours = [
        ("queen", [0, 0, 2]),
        ("sunday", [1, 2, 0]),
        ("prince", [0, 3, 1]),
        ("monday", [1, 2, 3]),
    ];
    let theirs = [
        ("queen", cosine([1.0, 0.0], [0.9, 0.1])),
        ("monday", cosine([1.0, 0.0], [0.5, 0.5])),
        ("apple", 0.0),
        ("prince", -1.0),
    ];
    let mut expected = String::from(
        "king: nearest by cosine among the 9 words of words.kdz\n      decoded (words.kdz)         original (original.txt)\n",
    );
    for (rank, ((w, code), (o, c))) in ours.iter().zip(theirs).enumerate() {
        expected.push_str(&format!(
            "{:>4}  {:<20} {:.3}  {:<20} {:.3}\n",
            rank + 1,
            w,
            cosine(king, vector(*code)),
            o,
            c
        ));
    }
    assert_eq!(out, expected);
    // A word the original lacks: decoded neighbours only, and a note.
    let out = stdout(
        kdc(dir.path())
            .arg("similar")
            .arg(&kdz)
            .args(["tuesday", "-k", "1", "--original"])
            .arg(&original),
    );
    assert!(
        out.contains("(the original has no vector for \"tuesday\")\n   1  monday"),
        "{out}"
    );
}

#[test]
fn similar_original_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let kdz = words_kdz(dir.path());
    let wide = write_text(dir.path(), "wide.txt", "king 1 0 0\nqueen 0 1 0\n");
    let strangers = write_text(dir.path(), "strangers.txt", "x 1 0\ny 0 1\n");
    let missing = dir.path().join("missing.txt");
    for (original, message) in [
        (
            &wide,
            format!(
                "{}: the vectors have 3 dimensions but {} decodes to 2",
                wide.display(),
                kdz.display()
            ),
        ),
        (&strangers, "none of the 9 words of".to_string()),
        (&missing, missing.display().to_string()),
    ] {
        fails_with(
            kdc(dir.path())
                .arg("similar")
                .arg(&kdz)
                .args(["king", "--original"])
                .arg(original),
            message,
        );
    }
}
