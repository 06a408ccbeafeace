//! Random vocabularies and matrices written as GloVe text and word2vec binary read back exactly.

use std::fs;
use std::io::Write;

use kdcompress::input::{Format, ReadOptions, read};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Table {
    words: Vec<String>,
    dim: usize,
    matrix: Vec<f32>,
}

fn table() -> impl Strategy<Value = Table> {
    (
        proptest::collection::hash_set("[a-zé][a-z0-9.,'_中-]{0,6}", 1..40),
        1usize..6,
    )
        .prop_flat_map(|(words, dim)| {
            let words: Vec<String> = words.into_iter().collect();
            let cells = words.len() * dim;
            let finite = any::<f32>().prop_filter("finite", |v| v.is_finite());
            proptest::collection::vec(finite, cells).prop_map(move |matrix| Table {
                words: words.clone(),
                dim,
                matrix,
            })
        })
}

fn glove_text(t: &Table) -> Vec<u8> {
    let mut out = Vec::new();
    for (word, row) in t.words.iter().zip(t.matrix.chunks(t.dim)) {
        write!(out, "{word}").unwrap();
        for v in row {
            // `Display` writes the shortest text that parses back to the same f32.
            write!(out, " {v}").unwrap();
        }
        out.push(b'\n');
    }
    out
}

fn word2vec_binary(t: &Table, newlines: &[bool]) -> Vec<u8> {
    let mut out = format!("{} {}\n", t.words.len(), t.dim).into_bytes();
    for (i, (word, row)) in t.words.iter().zip(t.matrix.chunks(t.dim)).enumerate() {
        out.extend_from_slice(word.as_bytes());
        out.push(b' ');
        for v in row {
            out.extend_from_slice(&v.to_le_bytes());
        }
        if newlines.get(i).copied().unwrap_or(true) {
            out.push(b'\n');
        }
    }
    out
}

fn read_back(bytes: &[u8], format: Option<Format>) -> (Vec<String>, usize, Vec<u32>) {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(bytes).unwrap();
    let opts = ReadOptions {
        format,
        ..ReadOptions::default()
    };
    let l = read(file.path(), &opts).unwrap();
    let bits = l.embeddings.matrix().iter().map(|v| v.to_bits()).collect();
    (
        l.embeddings
            .vocab()
            .words()
            .map(String::from)
            .collect::<Vec<_>>(),
        l.embeddings.dim(),
        bits,
    )
}

fn bits(t: &Table) -> Vec<u32> {
    t.matrix.iter().map(|v| v.to_bits()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn glove_text_round_trips(t in table()) {
        let (words, dim, matrix) = read_back(&glove_text(&t), None);
        prop_assert_eq!(words, t.words.clone());
        prop_assert_eq!(dim, t.dim);
        prop_assert_eq!(matrix, bits(&t));
    }

    #[test]
    fn word2vec_binary_round_trips(t in table(), newlines in proptest::collection::vec(any::<bool>(), 40)) {
        let (words, dim, matrix) =
            read_back(&word2vec_binary(&t, &newlines), Some(Format::Word2vecBinary));
        prop_assert_eq!(words, t.words.clone());
        prop_assert_eq!(dim, t.dim);
        prop_assert_eq!(matrix, bits(&t));
    }

    #[test]
    fn compressed_text_round_trips(t in table()) {
        let text = glove_text(&t);
        let zst = zstd::encode_all(&text[..], 1).unwrap();
        let (words, _, matrix) = read_back(&zst, None);
        prop_assert_eq!(words, t.words.clone());
        prop_assert_eq!(matrix, bits(&t));
    }
}

#[test]
fn written_files_are_left_alone() {
    // Reading maps the file read-only: its bytes are the same afterwards.
    let t = Table {
        words: vec!["a".into(), "b".into()],
        dim: 1,
        matrix: vec![1.5, -2.0],
    };
    let mut file = tempfile::NamedTempFile::new().unwrap();
    let text = glove_text(&t);
    file.write_all(&text).unwrap();
    read(file.path(), &ReadOptions::default()).unwrap();
    assert_eq!(fs::read(file.path()).unwrap(), text);
}
