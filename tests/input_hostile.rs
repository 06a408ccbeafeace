//! Hostile input: arbitrary, cut and corrupted files give an answer or an error, never a panic,
//! and every error names the file.

use std::io::Write;
use std::path::Path;

use kdcompress::input::{Format, ReadOptions, read};
use proptest::prelude::*;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(name),
    )
    .unwrap()
}

/// Reads `bytes` from a temporary file in every way a user could ask for; fails the test on a
/// panic (by unwinding) or on an error that does not name the file.
fn read_every_way(bytes: &[u8]) {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(bytes).unwrap();
    let formats = [
        None,
        Some(Format::Glove),
        Some(Format::Word2vecText),
        Some(Format::Word2vecBinary),
    ];
    for format in formats {
        for lossy_utf8 in [false, true] {
            // A few words only, so that cut files still get past the header checks.
            for max_words in [None, Some(3)] {
                let opts = ReadOptions {
                    format,
                    lossy_utf8,
                    max_words,
                    ..ReadOptions::default()
                };
                if let Err(e) = read(file.path(), &opts) {
                    assert_eq!(e.path(), file.path());
                    assert!(e.to_string().contains(&file.path().display().to_string()));
                }
            }
        }
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn noise() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => proptest::sample::select(b"0123456789 .-e\nab\t\r".to_vec()),
        1 => any::<u8>(),
    ];
    let prefix = proptest::sample::select(vec![
        &b""[..],
        b"3 2\n",
        b"2 1\n",
        b"\xEF\xBB\xBF",
        b"1 4\nw ",
        b"\x1f\x8b",
        b"\x28\xb5\x2f\xfd",
    ]);
    (prefix, proptest::collection::vec(byte, 0..300)).prop_map(|(p, mut rest)| {
        let mut out = p.to_vec();
        out.append(&mut rest);
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn arbitrary_bytes(bytes in noise()) {
        read_every_way(&bytes);
        read_every_way(&gzip(&bytes));
    }

    #[test]
    fn cut_and_corrupted_binary(cut in 0usize..3000, flip in 0usize..3000, bit in 0u8..8) {
        let mut bytes = fixture("glove.6B.50d.head1k.w2v.bin");
        bytes.truncate(cut.min(bytes.len()));
        if let Some(b) = bytes.get_mut(flip) {
            *b ^= 1 << bit;
        }
        read_every_way(&bytes);
    }

    #[test]
    fn cut_and_corrupted_text(cut in 0usize..3000, flip in 0usize..3000, bit in 0u8..8) {
        let mut bytes = fixture("glove.6B.50d.head1k.w2v.txt");
        bytes.truncate(cut.min(bytes.len()));
        if let Some(b) = bytes.get_mut(flip) {
            *b ^= 1 << bit;
        }
        read_every_way(&bytes);
        read_every_way(&gzip(&bytes));
    }
}

#[test]
fn a_cut_gzip_stream_is_an_error() {
    let gz = fixture("glove.6B.50d.head1k.txt.gz");
    for cut in [10, gz.len() / 2, gz.len() - 1] {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(&gz[..cut]).unwrap();
        let e = read(file.path(), &ReadOptions::default()).unwrap_err();
        assert!(
            e.to_string().starts_with(&format!(
                "cannot decompress gzip data in {}",
                file.path().display()
            )),
            "cut at {cut}: {e}"
        );
    }
}
