//! Reading every input format: agreement across formats on real GloVe rows, provenance, the
//! tolerated oddities, and one test per error with its exact message.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use kdcompress::input::{
    Compression, DuplicatePolicy, Format, InputError, Loaded, Location, ReadOptions, detect, read,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn bad(name: &str) -> PathBuf {
    fixture(&format!("bad/{name}"))
}

fn load(path: &Path) -> Loaded {
    read(path, &ReadOptions::default())
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn error(path: &Path, opts: &ReadOptions) -> InputError {
    match read(path, opts) {
        Ok(l) => panic!(
            "{} read as {} rows of {:?}",
            path.display(),
            l.embeddings.len(),
            l.format
        ),
        Err(e) => e,
    }
}

/// The error for a fixture read with default options, and its message.
fn message(path: &Path) -> (InputError, String) {
    let e = error(path, &ReadOptions::default());
    let m = e.to_string();
    (e, m)
}

fn zstd_file(dir: &Path, name: &str, from: &Path) -> PathBuf {
    let out = dir.join(name);
    let bytes = zstd::encode_all(&fs::read(from).unwrap()[..], 3).unwrap();
    fs::write(&out, bytes).unwrap();
    out
}

fn gzip_file(dir: &Path, name: &str, from: &Path) -> PathBuf {
    let out = dir.join(name);
    let mut enc =
        flate2::write::GzEncoder::new(fs::File::create(&out).unwrap(), flate2::Compression::fast());
    enc.write_all(&fs::read(from).unwrap()).unwrap();
    enc.finish().unwrap();
    out
}

fn max_words(n: usize) -> ReadOptions {
    ReadOptions {
        max_words: Some(n),
        ..ReadOptions::default()
    }
}

#[test]
fn every_format_of_the_real_glove_rows_reads_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let w2v_txt = fixture("glove.6B.50d.head1k.w2v.txt");
    let bin = fixture("glove.6B.50d.head1k.w2v.bin");
    let cases = [
        (w2v_txt.clone(), Format::Word2vecText, None),
        (
            fixture("glove.6B.50d.head1k.vec"),
            Format::Word2vecText,
            None,
        ),
        (bin.clone(), Format::Word2vecBinary, None),
        (
            fixture("glove.6B.50d.head1k.txt.gz"),
            Format::Glove,
            Some(Compression::Gzip),
        ),
        (
            zstd_file(dir.path(), "w2v.txt.zst", &w2v_txt),
            Format::Word2vecText,
            Some(Compression::Zstd),
        ),
        (
            gzip_file(dir.path(), "w2v.bin.gz", &bin),
            Format::Word2vecBinary,
            Some(Compression::Gzip),
        ),
        (
            zstd_file(dir.path(), "w2v.bin.zst", &bin),
            Format::Word2vecBinary,
            Some(Compression::Zstd),
        ),
    ];
    let want = read(&fixture("glove.6B.50d.head5k.txt"), &max_words(1000)).unwrap();
    assert_eq!(want.format, Format::Glove);
    assert_eq!(want.embeddings.len(), 1000);
    assert_eq!(want.embeddings.dim(), 50);
    assert_eq!(want.embeddings.vocab().word(0), Some("the"));
    assert_eq!(want.embeddings.get("the").unwrap()[0], 0.418);
    for (path, format, compression) in cases {
        let got = load(&path);
        assert_eq!(got.format, format, "{}", path.display());
        assert_eq!(got.compression, compression, "{}", path.display());
        assert!(
            got.embeddings == want.embeddings,
            "{} differs from the GloVe text",
            path.display()
        );
        let detected = detect(&path).unwrap();
        assert_eq!(
            (detected.format, detected.compression),
            (format, compression)
        );
    }
}

#[test]
fn the_whole_head5k_fixture_reads() {
    let l = load(&fixture("glove.6B.50d.head5k.txt"));
    assert_eq!(l.embeddings.len(), 5000);
    assert_eq!(l.embeddings.matrix().len(), 5000 * 50);
    assert_eq!(l.dropped_duplicates, 0);
}

#[test]
fn source_describes_the_file_as_stored() {
    for name in [
        "glove.6B.50d.head1k.w2v.bin",
        "glove.6B.50d.head1k.txt.gz",
        "glove.6B.50d.head5k.txt",
    ] {
        let path = fixture(name);
        let bytes = fs::read(&path).unwrap();
        let l = load(&path);
        assert_eq!(l.source.file_name, name);
        assert_eq!(l.source.file_size, bytes.len() as u64);
        assert_eq!(l.source.hash, format!("{:08x}", crc32fast::hash(&bytes)));
        assert_eq!(l.source.hash_algorithm, "crc32");
        assert_eq!(l.source.format, l.format.name());
    }
}

#[test]
fn max_words_keeps_the_first_rows_in_every_format() {
    let full = load(&fixture("glove.6B.50d.head1k.w2v.bin"));
    for name in [
        "glove.6B.50d.head1k.w2v.txt",
        "glove.6B.50d.head1k.w2v.bin",
        "glove.6B.50d.head1k.txt.gz",
        "glove.6B.50d.head5k.txt",
    ] {
        let path = fixture(name);
        let l = read(&path, &max_words(7)).unwrap();
        assert_eq!(l.embeddings.len(), 7, "{name}");
        assert_eq!(
            l.embeddings.vocab().words().collect::<Vec<_>>(),
            full.embeddings.vocab().words_in(0..7).collect::<Vec<_>>()
        );
        assert_eq!(l.embeddings.matrix(), &full.embeddings.matrix()[..7 * 50]);
        // The checksum still covers the whole file.
        let bytes = fs::read(&path).unwrap();
        assert_eq!(l.source.hash, format!("{:08x}", crc32fast::hash(&bytes)));
    }
    // More than there are: everything, and no complaint.
    let l = read(&fixture("glove.6B.50d.head1k.w2v.txt"), &max_words(5000)).unwrap();
    assert_eq!(l.embeddings.len(), 1000);
}

#[test]
fn crlf_bom_trailing_blanks_and_blank_last_lines_are_accepted() {
    let plain = fs::read_to_string(fixture("glove.6B.50d.head1k.w2v.txt")).unwrap();
    let mut odd = String::from("\u{feff}");
    for (i, line) in plain.lines().enumerate() {
        odd.push_str(line);
        odd.push_str(if i % 3 == 0 { " \t" } else { "" });
        odd.push_str("\r\n");
    }
    odd.push_str("\r\n \n\n");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("odd.vec");
    fs::write(&path, &odd).unwrap();
    let want = load(&fixture("glove.6B.50d.head1k.w2v.txt"));
    let got = load(&path);
    assert!(got.embeddings == want.embeddings);
    assert_eq!(got.format, Format::Word2vecText);
    // The same bytes compressed go through the streaming reader.
    let gz = gzip_file(dir.path(), "odd.vec.gz", &path);
    assert!(load(&gz).embeddings == want.embeddings);
}

#[test]
fn odd_tokens_are_words() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("odd.txt");
    fs::write(
        &path,
        ". 1 2\n, 3 4\n— 5 6\n\"quoted\" 7 8\nnaïve\t9\t10\n中文 11 12",
    )
    .unwrap();
    let l = load(&path);
    assert_eq!(
        l.embeddings.vocab().words().collect::<Vec<_>>(),
        [".", ",", "—", "\"quoted\"", "naïve", "中文"]
    );
    assert_eq!(l.embeddings.get("中文"), Some(&[11.0, 12.0][..]));
}

#[test]
fn a_pipe_is_read_as_a_stream() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["glove.6B.50d.head1k.w2v.txt", "glove.6B.50d.head1k.txt.gz"] {
        let fifo = dir.path().join(format!("{name}.fifo"));
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !made.is_ok_and(|s| s.success()) {
            eprintln!("mkfifo unavailable, skipping");
            return;
        }
        let bytes = fs::read(fixture(name)).unwrap();
        let writer = {
            let fifo = fifo.clone();
            let bytes = bytes.clone();
            std::thread::spawn(move || fs::write(fifo, bytes).unwrap())
        };
        let l = load(&fifo);
        writer.join().unwrap();
        assert_eq!(l.embeddings.len(), 1000);
        assert_eq!(l.source.file_size, bytes.len() as u64);
        assert_eq!(l.source.hash, format!("{:08x}", crc32fast::hash(&bytes)));
    }
}

#[test]
fn keep_first_drops_later_repeats() {
    let opts = ReadOptions {
        duplicates: DuplicatePolicy::KeepFirst,
        ..ReadOptions::default()
    };
    let l = read(&bad("duplicate.txt"), &opts).unwrap();
    assert_eq!(
        l.embeddings.vocab().words().collect::<Vec<_>>(),
        ["the", "of", "and"]
    );
    assert_eq!(l.embeddings.get("of"), Some(&[0.3, 0.4][..]));
    assert_eq!(l.dropped_duplicates, 1);
    let l = read(&bad("duplicate.w2v.bin"), &opts).unwrap();
    assert_eq!(
        l.embeddings.vocab().words().collect::<Vec<_>>(),
        ["the", "of"]
    );
    assert_eq!(l.embeddings.get("the"), Some(&[0.5, -1.0][..]));
}

#[test]
fn lossy_utf8_replaces_bad_bytes() {
    let lossy = ReadOptions {
        lossy_utf8: true,
        ..ReadOptions::default()
    };
    let l = read(&bad("utf8.txt"), &lossy).unwrap();
    assert_eq!(l.embeddings.vocab().word(1), Some("caf\u{fffd}"));
    let l = read(&bad("utf8.w2v.bin"), &lossy).unwrap();
    assert_eq!(l.embeddings.vocab().word(1), Some("caf\u{fffd}"));
    // Two broken spellings can decode to the same word: that is a duplicate like any other.
    let p = bad("duplicate-utf8.txt");
    let e = error(&p, &lossy);
    assert_eq!(
        e.to_string(),
        format!(
            "{}, line 2: the word `caf\u{fffd}` repeats the one at line 1",
            p.display()
        )
    );
    let keep = ReadOptions {
        duplicates: DuplicatePolicy::KeepFirst,
        ..lossy
    };
    assert_eq!(read(&p, &keep).unwrap().embeddings.len(), 2);
}

#[test]
fn forced_format_overrides_detection() {
    // A header-like first line read as GloVe is a word "3" with one value.
    let p = bad("header-count.w2v.txt");
    let opts = ReadOptions {
        format: Some(Format::Glove),
        ..ReadOptions::default()
    };
    let e = error(&p, &opts);
    assert_eq!(
        e.to_string(),
        format!(
            "{}, line 2: expected 1 values after the word, found 2",
            p.display()
        )
    );
}

// One test per error variant, each checking the whole message.

#[test]
fn open_error_names_the_missing_file() {
    let p = fixture("no-such-file.txt");
    let (e, m) = message(&p);
    assert!(matches!(e, InputError::Open { .. }));
    assert_eq!(
        m,
        format!(
            "cannot open {}: No such file or directory (os error 2)",
            p.display()
        )
    );
}

#[test]
fn directory_error() {
    let p = fixture("bad");
    let (e, m) = message(&p);
    assert!(matches!(e, InputError::Directory { .. }));
    assert_eq!(
        m,
        format!(
            "{} is a directory, expected a word-vector file",
            p.display()
        )
    );
}

#[cfg(target_os = "linux")]
#[test]
fn read_error() {
    // Reading our own address space from offset 0 fails: page 0 is never mapped.
    let p = Path::new("/proc/self/mem");
    let (e, m) = message(p);
    assert!(matches!(e, InputError::Read { .. }), "{m}");
    assert_eq!(
        m,
        "cannot read /proc/self/mem: Input/output error (os error 5)"
    );
}

#[test]
fn decompress_error() {
    let p = bad("corrupt.txt.gz");
    let (e, m) = message(&p);
    assert!(matches!(e, InputError::Decompress { .. }), "{m}");
    let prefix = format!("cannot decompress gzip data in {}: ", p.display());
    assert!(m.starts_with(&prefix), "{m}");
}

#[test]
fn empty_error() {
    for name in ["empty.txt", "blank.txt"] {
        let p = bad(name);
        let (e, m) = message(&p);
        assert!(matches!(e, InputError::Empty { .. }));
        assert_eq!(
            m,
            format!("{} is empty, expected word vectors", p.display())
        );
    }
}

#[test]
fn header_error() {
    let p = bad("header-dim0.w2v.txt");
    let (e, m) = message(&p);
    assert!(matches!(e, InputError::Header { .. }));
    assert_eq!(
        m,
        format!(
            "{}, line 1: expected a word2vec header `<words> <dimension>` with a dimension of at \
             least 1, found `3 0`",
            p.display()
        )
    );
    let p = bad("dimension.txt");
    let opts = ReadOptions {
        format: Some(Format::Word2vecBinary),
        ..ReadOptions::default()
    };
    assert!(
        error(&p, &opts)
            .to_string()
            .ends_with("found `the 0.1 0.2 0.3`")
    );
}

#[test]
fn too_short_error() {
    let p = bad("too-short.w2v.bin");
    let (e, m) = message(&p);
    assert!(matches!(e, InputError::TooShort { .. }));
    assert_eq!(
        m,
        format!(
            "{}: the header promises 1000 words of dimension 2, which needs at least 10000 \
             bytes, but only 13 bytes follow it",
            p.display()
        )
    );
}

#[test]
fn header_count_error() {
    let p = bad("header-count.w2v.txt");
    let (e, m) = message(&p);
    assert!(matches!(e, InputError::HeaderCount { .. }));
    assert_eq!(
        m,
        format!("{}: the header promises 3 words, found 2", p.display())
    );
    // Asking for no more rows than there are makes the shortfall irrelevant.
    assert_eq!(read(&p, &max_words(2)).unwrap().embeddings.len(), 2);
}

#[test]
fn empty_line_error() {
    let p = bad("empty-line.txt");
    let (e, m) = message(&p);
    assert!(matches!(e, InputError::EmptyLine { .. }));
    assert_eq!(
        m,
        format!(
            "{}, line 2: empty line, expected a word and its values",
            p.display()
        )
    );
}

#[test]
fn empty_word_error() {
    let p = bad("empty-word.txt");
    let (e, m) = message(&p);
    assert!(matches!(
        e,
        InputError::EmptyWord {
            at: Location::Line(2),
            ..
        }
    ));
    assert_eq!(
        m,
        format!(
            "{}, line 2: empty word, expected a word before the values",
            p.display()
        )
    );
    let p = bad("empty-word.w2v.bin");
    assert_eq!(
        message(&p).1,
        format!(
            "{}, byte offset 17: empty word, expected a word before the values",
            p.display()
        )
    );
}

#[test]
fn no_values_error() {
    let p = bad("no-values.txt");
    let (e, m) = message(&p);
    assert!(matches!(e, InputError::NoValues { .. }));
    assert_eq!(
        m,
        format!(
            "{}, line 1: expected values after the word `the`, found none",
            p.display()
        )
    );
}

#[test]
fn dimension_error() {
    let p = bad("dimension.txt");
    let (e, m) = message(&p);
    assert!(matches!(
        e,
        InputError::Dimension {
            line: 3,
            expected: 3,
            found: 2,
            ..
        }
    ));
    assert_eq!(
        m,
        format!(
            "{}, line 3: expected 3 values after the word, found 2",
            p.display()
        )
    );
    let p = bad("too-many.txt");
    assert_eq!(
        message(&p).1,
        format!(
            "{}, line 2: expected 2 values after the word, found 4",
            p.display()
        )
    );
}

#[test]
fn number_error() {
    let p = bad("number.txt");
    let (e, m) = message(&p);
    assert!(matches!(e, InputError::Number { .. }));
    assert_eq!(
        m,
        format!(
            "{}, line 2: value 2 is `0,4`, expected a number",
            p.display()
        )
    );
}

#[test]
fn non_finite_error() {
    let p = bad("nan.txt");
    let (e, m) = message(&p);
    assert!(matches!(e, InputError::NonFinite { .. }));
    assert_eq!(
        m,
        format!(
            "{}, line 3: value 1 is NaN, expected a finite number",
            p.display()
        )
    );
    let p = bad("inf.txt");
    assert_eq!(
        message(&p).1,
        format!(
            "{}, line 1: value 2 is -inf, expected a finite number",
            p.display()
        )
    );
    let p = bad("nonfinite.w2v.bin");
    assert_eq!(
        message(&p).1,
        format!(
            "{}, byte offset 24: value 2 is inf, expected a finite number",
            p.display()
        )
    );
}

#[test]
fn utf8_error() {
    let p = bad("utf8.txt");
    let (e, m) = message(&p);
    assert!(matches!(e, InputError::Utf8 { .. }));
    assert_eq!(
        m,
        format!(
            "{}, line 2: the word is not valid UTF-8, found `caf\\xe9` (lossy decoding would \
             accept it)",
            p.display()
        )
    );
    let p = bad("utf8.w2v.bin");
    assert_eq!(
        message(&p).1,
        format!(
            "{}, byte offset 17: the word is not valid UTF-8, found `caf\\xc3` (lossy decoding \
             would accept it)",
            p.display()
        )
    );
}

#[test]
fn duplicate_error_names_both_places() {
    let p = bad("duplicate.txt");
    let (e, m) = message(&p);
    assert!(matches!(
        e,
        InputError::Duplicate {
            first: Location::Line(2),
            second: Location::Line(4),
            ..
        }
    ));
    assert_eq!(
        m,
        format!(
            "{}, line 4: the word `of` repeats the one at line 2",
            p.display()
        )
    );
    let p = bad("duplicate.w2v.bin");
    assert_eq!(
        message(&p).1,
        format!(
            "{}, byte offset 29: the word `the` repeats the one at byte offset 4",
            p.display()
        )
    );
}

#[test]
fn truncated_error() {
    let p = bad("truncated.w2v.bin");
    let (e, m) = message(&p);
    assert!(matches!(e, InputError::Truncated { .. }));
    assert_eq!(
        m,
        format!(
            "{}, byte offset 17: the file ends inside word 2: expected 8 bytes of vector, found 5",
            p.display()
        )
    );
    // The same cut inside a compressed stream.
    let dir = tempfile::tempdir().unwrap();
    let gz = gzip_file(dir.path(), "truncated.w2v.bin.gz", &p);
    assert!(
        message(&gz)
            .1
            .ends_with("expected 8 bytes of vector, found 5")
    );
}

#[test]
fn trailing_data_error() {
    let p = bad("trailing.w2v.bin");
    let (e, m) = message(&p);
    assert!(matches!(e, InputError::TrailingData { .. }));
    assert_eq!(
        m,
        format!(
            "{}, byte offset 17: more data after the last of the words the header promises (1)",
            p.display()
        )
    );
}

#[test]
fn word_too_long_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("long.bin");
    let mut bytes = b"2 2\n".to_vec();
    bytes.resize(bytes.len() + 70_000, b'x');
    fs::write(&p, bytes).unwrap();
    let opts = ReadOptions {
        format: Some(Format::Word2vecBinary),
        ..ReadOptions::default()
    };
    let e = error(&p, &opts);
    assert!(matches!(e, InputError::WordTooLong { .. }));
    assert_eq!(
        e.to_string(),
        format!(
            "{}, byte offset 4: no space within 65536 bytes, expected a word followed by a space",
            p.display()
        )
    );
}

#[test]
fn line_too_long_error() {
    // Only a stream needs the limit; a compressed line of 65 MiB takes 64 KiB on disk.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("long.txt.gz");
    let mut enc =
        flate2::write::GzEncoder::new(fs::File::create(&p).unwrap(), flate2::Compression::fast());
    enc.write_all(b"word").unwrap();
    let run = vec![b'1'; 1 << 20];
    for _ in 0..65 {
        enc.write_all(&run).unwrap();
    }
    enc.finish().unwrap();
    let (e, m) = message(&p);
    assert!(matches!(e, InputError::LineTooLong { .. }), "{m}");
    assert_eq!(
        m,
        format!("{}, line 1: line longer than 67108864 bytes", p.display())
    );
}

#[test]
fn too_large_error() {
    let p = bad("huge-dim.w2v.txt");
    let (e, m) = message(&p);
    assert!(matches!(e, InputError::TooLarge { .. }), "{m}");
    assert_eq!(
        m,
        format!(
            "{}: a matrix of 1 words by 4611686018427387904 values does not fit in memory",
            p.display()
        )
    );
}

#[test]
fn every_error_names_its_file() {
    for entry in fs::read_dir(fixture("bad")).unwrap() {
        let path = entry.unwrap().path();
        match read(&path, &ReadOptions::default()) {
            Ok(_) => panic!("{} should not read", path.display()),
            Err(e) => {
                assert_eq!(e.path(), path);
                assert!(e.to_string().contains(&path.display().to_string()), "{e}");
            }
        }
    }
}
