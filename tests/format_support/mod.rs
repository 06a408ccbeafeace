//! Builders shared by the `.kdz` tests: seeded random tables, and an independent implementation
//! of the container layout (split a file into sections, reassemble with fresh checksums) used to
//! craft files that are damaged in one precise way.
#![allow(dead_code)]

use std::collections::BTreeMap;

use kdcompress::codes::Codes;
use kdcompress::composer::{
    CODEBOOKS, Composer, ComposerConfig, ComposerKind, Tensor, split_columns,
};
use kdcompress::compressed::{Compressed, Metadata, Source};
use kdcompress::eval::SplitMix64;
use kdcompress::vocab::Vocab;

/// The library's seeded generator, with the draws test tables are built from.
pub struct Rng(SplitMix64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(SplitMix64::new(seed))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// By modulo, not rejection: the tables the tests were written against were drawn this way.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    /// Uniform in [-0.5, 0.5).
    pub fn float(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }
}

/// Sizes of a random table.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub kind: ComposerKind,
    pub n: usize,
    pub k: u32,
    pub d_codebooks: usize,
    pub code_dim: usize,
    pub hidden: usize,
    pub out_dim: usize,
    pub norms: bool,
}

pub fn metadata() -> Metadata {
    let mut metrics = BTreeMap::new();
    metrics.insert("mse".to_string(), 0.0123);
    metrics.insert("mean_cosine".to_string(), 0.91);
    Metadata {
        tool_version: "0.1.0".into(),
        method: "kd".into(),
        source: Source {
            file_name: "glove.6B.50d.txt".into(),
            file_size: 171_350_079,
            hash: "1a2b3c4d".into(),
            hash_algorithm: "crc32".into(),
            format: "glove".into(),
        },
        training: serde_json::json!({"epochs": 200, "lr": 0.001, "batch": 64}),
        seed: 7,
        device: "cpu".into(),
        metrics,
        train_seconds: 312.5,
    }
}

/// A table of random codes and weights with the given sizes and words `w0`, `w1`, ...
pub fn random(seed: u64, s: Shape) -> Compressed {
    random_with_words(seed, s, (0..s.n).map(|i| format!("w{i}")).collect())
}

pub fn random_with_words(seed: u64, s: Shape, words: Vec<String>) -> Compressed {
    let mut rng = Rng::new(seed);
    let n = words.len();
    let config = ComposerConfig {
        kind: s.kind,
        num_codebooks: s.d_codebooks,
        num_codes: s.k as usize,
        code_dim: s.code_dim,
        hidden: s.hidden,
        out_dim: s.out_dim,
    };
    let mut tensors: BTreeMap<String, Tensor> = Composer::expected_shapes(&config)
        .into_iter()
        .map(|(name, shape)| {
            let len = shape.iter().product();
            let data = (0..len).map(|_| rng.float()).collect();
            (name.to_string(), Tensor::new(shape, data).unwrap())
        })
        .collect();
    if s.kind == ComposerKind::Split {
        zero_split_padding(&config, &mut tensors.get_mut(CODEBOOKS).unwrap().data);
    }
    let codes = (0..n * s.d_codebooks)
        .map(|_| rng.below(u64::from(s.k)) as u16)
        .collect();
    Compressed {
        vocab: Vocab::new(words).unwrap(),
        codes: Codes::new(s.k, s.d_codebooks, codes).unwrap(),
        composer: Composer::new(config, tensors).unwrap(),
        metadata: metadata(),
        norms: s.norms.then(|| (0..n).map(|_| rng.float() + 1.0).collect()),
    }
}

/// Zeroes what a `split` writer must store as zero: the values of each code vector past its
/// group's width.
pub fn zero_split_padding(c: &ComposerConfig, codebooks: &mut [f32]) {
    let e = c.code_dim;
    for (r, row) in codebooks.chunks_exact_mut(e).enumerate() {
        let width = split_columns(c.out_dim, c.num_codebooks, r / c.num_codes).len();
        row[width..].fill(0.0);
    }
}

/// A small linear table with K = 5, D = 3, norms: every section present, ~1 KiB.
pub fn small() -> Compressed {
    random(
        1,
        Shape {
            kind: ComposerKind::Linear,
            n: 4,
            k: 5,
            d_codebooks: 3,
            code_dim: 2,
            hidden: 0,
            out_dim: 2,
            norms: true,
        },
    )
}

/// One section of a file, as the table describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sec {
    pub kind: u32,
    pub flags: u32,
    pub codec: u32,
    pub raw_len: u64,
    pub data: Vec<u8>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The sections of a valid file, read straight from the layout in docs/kdz-format.md.
pub fn split(file: &[u8]) -> (u16, Vec<Sec>) {
    let minor = u16::from_le_bytes([file[10], file[11]]);
    let count = u32_at(file, 12) as usize;
    let secs = (0..count)
        .map(|i| {
            let e = 64 + 48 * i;
            let (offset, stored) = (u64_at(file, e + 16) as usize, u64_at(file, e + 24) as usize);
            Sec {
                kind: u32_at(file, e),
                flags: u32_at(file, e + 4),
                codec: u32_at(file, e + 8),
                raw_len: u64_at(file, e + 32),
                data: file[offset..offset + stored].to_vec(),
            }
        })
        .collect();
    (minor, secs)
}

fn align(x: usize) -> usize {
    x.div_ceil(64) * 64
}

/// Lays out sections with correct offsets, padding and checksums.
pub fn assemble(minor: u16, secs: &[Sec]) -> Vec<u8> {
    let mut offsets = Vec::new();
    let mut pos = align(64 + 48 * secs.len());
    for s in secs {
        offsets.push(pos);
        pos = align(pos + s.data.len());
    }
    let file_len = offsets
        .last()
        .map_or(64, |&o| o + secs.last().unwrap().data.len());
    let mut table = Vec::new();
    for (s, &o) in secs.iter().zip(&offsets) {
        table.extend_from_slice(&s.kind.to_le_bytes());
        table.extend_from_slice(&s.flags.to_le_bytes());
        table.extend_from_slice(&s.codec.to_le_bytes());
        table.extend_from_slice(&crc32fast::hash(&s.data).to_le_bytes());
        table.extend_from_slice(&(o as u64).to_le_bytes());
        table.extend_from_slice(&(s.data.len() as u64).to_le_bytes());
        table.extend_from_slice(&s.raw_len.to_le_bytes());
        table.extend_from_slice(&[0; 8]);
    }
    let mut out = vec![0u8; file_len];
    out[..8].copy_from_slice(b"\x89KDZ\r\n\x1a\n");
    out[8..10].copy_from_slice(&1u16.to_le_bytes());
    out[10..12].copy_from_slice(&minor.to_le_bytes());
    out[12..16].copy_from_slice(&(secs.len() as u32).to_le_bytes());
    out[16..24].copy_from_slice(&(file_len as u64).to_le_bytes());
    out[24..28].copy_from_slice(&crc32fast::hash(&table).to_le_bytes());
    let crc = crc32fast::hash(&out[..60]);
    out[60..64].copy_from_slice(&crc.to_le_bytes());
    out[64..64 + table.len()].copy_from_slice(&table);
    for (s, &o) in secs.iter().zip(&offsets) {
        out[o..o + s.data.len()].copy_from_slice(&s.data);
    }
    out
}

/// Recomputes the header checksum after a test edited the header.
pub fn fix_header_crc(file: &mut [u8]) {
    let crc = crc32fast::hash(&file[..60]);
    file[60..64].copy_from_slice(&crc.to_le_bytes());
}

/// Recomputes the table and header checksums after a test edited the table.
pub fn fix_table_crc(file: &mut [u8]) {
    let count = u32_at(file, 12) as usize;
    let crc = crc32fast::hash(&file[64..64 + 48 * count]);
    file[24..28].copy_from_slice(&crc.to_le_bytes());
    fix_header_crc(file);
}

/// Index of the section of `kind` (1 model, 2 metadata, 3 vocabulary, 4 codes, 5 tensors, 6 norms).
pub fn index_of(secs: &[Sec], kind: u32) -> usize {
    secs.iter().position(|s| s.kind == kind).unwrap()
}

/// The largest absolute difference between two equally long vectors (0 when both are empty).
pub fn largest_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "vectors of different lengths");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}
