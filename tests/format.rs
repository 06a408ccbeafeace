//! The `.kdz` writer and reader: round trips, the documented bytes, and every way a file can be
//! damaged.

mod format_support;

use format_support::{
    Sec, Shape, assemble, fix_header_crc, fix_table_crc, index_of, random, random_with_words,
    small, split,
};
use kdcompress::composer::ComposerKind;
use kdcompress::compressed::Compressed;
use kdcompress::format::{self, FormatError, Kdz, SectionKind};
use proptest::prelude::*;

const MODEL: u32 = 1;
const METADATA: u32 = 2;
const VOCAB: u32 = 3;
const CODES: u32 = 4;
const TENSORS: u32 = 5;
const NORMS: u32 = 6;

fn open(bytes: Vec<u8>) -> Result<Kdz, FormatError> {
    Kdz::from_bytes("test.kdz", bytes)
}

fn small_file() -> Vec<u8> {
    format::to_bytes(&small()).unwrap()
}

/// The reader gives back exactly what the writer took, and decodes as the in-memory table does.
fn assert_round_trip(c: &Compressed, kdz: &Kdz) {
    assert_eq!(kdz.vocab(), &c.vocab);
    assert_eq!(kdz.metadata(), &c.metadata);
    assert_eq!(kdz.norms(), c.norms.as_deref());
    assert_eq!(kdz.composer().config(), c.composer.config());
    assert_eq!(kdz.composer().tensors(), c.composer.tensors());
    let back = kdz.to_compressed();
    assert_eq!(back.codes, c.codes);
    let expected = c.decode_all();
    assert_eq!(kdz.decode_all(), expected);
    let d = c.composer.config().out_dim;
    for (row, word) in c.vocab.words().enumerate() {
        assert_eq!(kdz.code(word).as_deref(), Some(c.codes.row(row)));
        assert_eq!(kdz.code_of(row).as_deref(), Some(c.codes.row(row)));
        assert_eq!(
            kdz.embedding(word).as_deref(),
            Some(&expected[row * d..(row + 1) * d])
        );
    }
    assert_eq!(kdz.code_of(c.vocab.len()), None);
    assert_eq!(kdz.embedding_of(c.vocab.len()), None);
    assert_eq!(kdz.embedding("no such word"), None);
}

fn shapes() -> impl Strategy<Value = (u64, Shape)> {
    let kind = prop_oneof![
        Just(ComposerKind::Linear),
        Just(ComposerKind::Mlp),
        Just(ComposerKind::Lstm),
        Just(ComposerKind::Concat),
        Just(ComposerKind::Split),
    ];
    // The edges (2, 65536), non-powers of two on either side of a power, and anything between.
    let k = prop_oneof![
        Just(2u32),
        Just(3),
        Just(31),
        Just(33),
        Just(255),
        Just(257),
        Just(65_535),
        Just(65_536),
        2u32..=65_536,
    ];
    (
        kind,
        k,
        1usize..=3,
        1usize..=3,
        1usize..=5,
        0usize..=12,
        any::<bool>(),
        any::<u64>(),
    )
        .prop_flat_map(|(kind, k, code_dim, hidden, out_dim, n, norms, seed)| {
            // Keep the codebooks (D * K * d' floats) small, but let small K reach D = 1024.
            let max_d = (200_000 / (k as usize * code_dim)).clamp(1, 1024);
            let d = prop_oneof![Just(1usize), Just(max_d), 1..=max_d];
            (
                Just((kind, k, code_dim, hidden, out_dim, n, norms, seed)),
                d,
            )
        })
        .prop_map(
            |((kind, k, code_dim, hidden, out_dim, n, norms, seed), d_codebooks)| {
                let out_dim = match kind {
                    ComposerKind::Concat => out_dim.min(d_codebooks * code_dim),
                    // Split fixes d' = ceil(d / D) and D <= d: d = D (d' - 1) + r, 1 <= r <= D.
                    ComposerKind::Split if code_dim == 1 => d_codebooks,
                    ComposerKind::Split => d_codebooks * (code_dim - 1) + out_dim.min(d_codebooks),
                    _ => out_dim,
                };
                let shape = Shape {
                    kind,
                    n,
                    k,
                    d_codebooks,
                    code_dim,
                    hidden,
                    out_dim,
                    norms,
                };
                (seed, shape)
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn round_trip_any_shape((seed, shape) in shapes()) {
        let c = random(seed, shape);
        let bytes = format::to_bytes(&c).unwrap();
        let kdz = open(bytes).unwrap();
        assert_round_trip(&c, &kdz);
        // Codes are stored at ceil(log2 K) bits, rows padded to whole bytes only.
        let bits = 32 - (shape.k - 1).leading_zeros() as usize;
        prop_assert_eq!(kdz.packed_codes().len(), shape.n * (shape.d_codebooks * bits).div_ceil(8));
    }
}

#[test]
fn extremes_round_trip_through_a_file() {
    let dir = tempfile::tempdir().unwrap();
    for (i, (k, d)) in [(65_536, 2), (2, 1024), (65_535, 1), (3, 1024)]
        .into_iter()
        .enumerate()
    {
        let shape = Shape {
            kind: ComposerKind::Linear,
            n: 50,
            k,
            d_codebooks: d,
            code_dim: 1,
            hidden: 0,
            out_dim: 3,
            norms: i % 2 == 0,
        };
        let c = random(i as u64, shape);
        let path = dir.path().join(format!("t{i}.kdz"));
        format::write(&path, &c).unwrap();
        let kdz = Kdz::open(&path).unwrap();
        assert_round_trip(&c, &kdz);
        assert_eq!(kdz.path(), path);
    }
}

#[test]
fn every_composer_kind_round_trips_through_a_file() {
    let dir = tempfile::tempdir().unwrap();
    for kind in ComposerKind::ALL {
        let shape = Shape {
            kind,
            n: 300,
            k: 16,
            d_codebooks: 8,
            // Split: 11 columns over 8 groups, widths 1 and 2.
            // Conditioned and sum add code vectors to the output: d' = d.
            code_dim: match kind {
                ComposerKind::Split => 2,
                ComposerKind::Conditioned | ComposerKind::Sum => 6,
                _ => 4,
            },
            hidden: 5,
            out_dim: if kind == ComposerKind::Split { 11 } else { 6 },
            norms: true,
        };
        let c = random(9, shape);
        let path = dir.path().join(format!("{}.kdz", kind.name()));
        format::write(&path, &c).unwrap();
        assert_round_trip(&c, &Kdz::open(&path).unwrap());
    }
}

/// The small file's layout, worked out by hand from docs/kdz-format.md.
#[test]
fn small_file_has_the_documented_layout() {
    let c = small();
    let file = small_file();
    assert_eq!(&file[..8], b"\x89KDZ\r\n\x1a\n");
    assert_eq!(&file[8..12], &[1, 0, 1, 0], "version 1.1");
    assert_eq!(&file[12..16], &[6, 0, 0, 0], "six sections");
    assert_eq!(&file[16..24], &(file.len() as u64).to_le_bytes());
    let kdz = open(file.clone()).unwrap();
    let kinds: Vec<SectionKind> = kdz.sections().iter().map(|s| s.kind).collect();
    assert_eq!(kinds, SectionKind::KNOWN);
    // 64 + 6 * 48 = 352, so the first section starts at 384.
    assert_eq!(kdz.sections()[0].offset, 384);
    assert!(kdz.sections().iter().all(|s| s.offset % 64 == 0));
    // Model section: N = 4, linear, K = 5, D = 3, 3 bits, 2 bytes per row, d' = 2, h = 0, d = 2.
    let mut model = Vec::new();
    model.extend_from_slice(&4u64.to_le_bytes());
    for v in [0u32, 5, 3, 3] {
        model.extend_from_slice(&v.to_le_bytes());
    }
    model.extend_from_slice(&2u64.to_le_bytes());
    for v in [2u32, 0, 2, 0] {
        model.extend_from_slice(&v.to_le_bytes());
    }
    assert_eq!(&file[384..384 + 48], &model[..]);
    // Codes: each row is code0 + code1 * 8 + code2 * 64 in two little-endian bytes.
    let expected: Vec<u8> = (0..4)
        .flat_map(|r| {
            let row = c.codes.row(r);
            let v = row[0] | row[1] << 3 | row[2] << 6;
            v.to_le_bytes()
        })
        .collect();
    assert_eq!(kdz.packed_codes(), &expected[..]);
    let codes = kdz.sections()[3];
    assert_eq!(
        &file[codes.offset as usize..(codes.offset + codes.stored_len) as usize],
        &expected[..]
    );
    // An independent reading of the layout reassembles the very same bytes.
    let (minor, secs) = split(&file);
    assert_eq!(assemble(minor, &secs), file);
}

/// Concrete rows for the hand-packed case in the spec: K = 5, codes [1, 4, 2] and [3, 0, 4].
#[test]
fn spec_example_rows_are_packed_as_documented() {
    let mut c = small();
    c.vocab = kdcompress::vocab::Vocab::new(["a", "b"]).unwrap();
    c.codes = kdcompress::codes::Codes::new(5, 3, vec![1, 4, 2, 3, 0, 4]).unwrap();
    c.norms = None;
    let kdz = open(format::to_bytes(&c).unwrap()).unwrap();
    assert_eq!(kdz.packed_codes(), &[0xA1, 0x00, 0x03, 0x01]);
    assert_eq!(kdz.code("a"), Some(vec![1, 4, 2]));
    assert_eq!(kdz.code("b"), Some(vec![3, 0, 4]));
}

#[test]
fn truncation_at_every_length_is_reported() {
    let file = small_file();
    for len in 0..file.len() {
        match open(file[..len].to_vec()) {
            Err(FormatError::Truncated { .. }) => {}
            other => panic!("prefix of {len} bytes: expected Truncated, got {other:?}"),
        }
    }
    let dir = tempfile::tempdir().unwrap();
    for len in [0, 7, 63, 64, 500] {
        let path = dir.path().join(format!("cut{len}.kdz"));
        std::fs::write(&path, &file[..len]).unwrap();
        let err = Kdz::open(&path).unwrap_err();
        assert!(matches!(err, FormatError::Truncated { .. }), "{err}");
        assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
    }
}

#[test]
fn every_flipped_bit_is_detected() {
    let file = small_file();
    let kdz = open(file.clone()).unwrap();
    let section_at = |pos: u64| {
        kdz.sections()
            .iter()
            .find(|s| (s.offset..s.offset + s.stored_len).contains(&pos))
    };
    for pos in 0..file.len() {
        for bit in 0..8 {
            let mut bad = file.clone();
            bad[pos] ^= 1 << bit;
            let err = open(bad).expect_err("a flipped bit must not go unnoticed");
            let ok = match (pos, section_at(pos as u64)) {
                (0..8, _) => matches!(err, FormatError::BadMagic { .. }),
                (8..10, _) => matches!(err, FormatError::UnsupportedVersion { .. }),
                (10..64, _) => matches!(err, FormatError::HeaderChecksum { .. }),
                (64..352, _) => matches!(err, FormatError::TableChecksum { .. }),
                (_, Some(s)) => {
                    matches!(err, FormatError::SectionChecksum { kind, offset, .. }
                        if kind == s.kind && offset == s.offset)
                }
                (_, None) => {
                    matches!(err, FormatError::NonZeroPadding { offset, .. } if offset == pos as u64)
                }
            };
            assert!(ok, "bit {bit} of byte {pos}: unexpected {err:?}");
        }
    }
}

#[test]
fn size_is_codes_plus_parameters_plus_vocabulary_plus_4k() {
    // Real words: the first 1,000 of GloVe 6B.
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/glove.6B.50d.head1k.vec"
    ))
    .unwrap();
    let words: Vec<String> = text
        .lines()
        .skip(1)
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(words.len(), 1000);
    for kind in ComposerKind::ALL {
        let shape = Shape {
            kind,
            n: words.len(),
            k: 32,
            d_codebooks: 32,
            code_dim: if kind.is_assembled() { 2 } else { 50 },
            hidden: 16,
            out_dim: 50,
            norms: false,
        };
        let c = random_with_words(3, shape, words.clone());
        let file = format::to_bytes(&c).unwrap();
        let kdz = open(file.clone()).unwrap();
        let vocab = kdz
            .sections()
            .iter()
            .find(|s| s.kind == SectionKind::Vocabulary)
            .unwrap();
        let codes = 1000 * 32 * 5 / 8;
        let params = 4 * c.composer.num_params();
        let bound = codes + params + vocab.stored_len as usize + 4096;
        assert!(
            file.len() <= bound,
            "{}: {} bytes > {codes} codes + {params} parameters + {} vocabulary + 4096",
            kind.name(),
            file.len(),
            vocab.stored_len
        );
        // The words compress: well under their raw size.
        assert!(vocab.stored_len < vocab.raw_len * 3 / 4, "{vocab:?}");
    }
}

#[test]
fn write_replaces_atomically_and_leaves_no_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.kdz");
    std::fs::write(&path, b"old contents").unwrap();
    format::write(&path, &small()).unwrap();
    assert!(Kdz::open(&path).is_ok());
    let names = |dir: &std::path::Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(dir.path()), ["out.kdz"]);

    // A table that cannot be written leaves the existing file as it was.
    let before = std::fs::read(&path).unwrap();
    let mut bad = small();
    bad.metadata.metrics.insert("loss".into(), f64::NAN);
    let err = format::write(&path, &bad).unwrap_err();
    assert!(matches!(err, FormatError::Unwritable { .. }), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_eq!(names(dir.path()), ["out.kdz"]);

    // So does one whose directory is missing, with the path in the message.
    let missing = dir.path().join("no/such/dir/out.kdz");
    let err = format::write(&missing, &small()).unwrap_err();
    assert!(matches!(err, FormatError::Io { .. }), "{err}");
    assert!(err.to_string().contains("no/such/dir/out.kdz"), "{err}");
}

#[cfg(unix)]
#[test]
fn written_files_get_ordinary_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.kdz");
    format::write(&path, &small()).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    // Readable by others unless the umask forbids it; never the 0600 of a temporary file.
    assert_ne!(mode & 0o777, 0o600, "{mode:o}");
}

#[test]
fn decode_into_checks_the_buffer() {
    let kdz = open(small_file()).unwrap();
    let mut out = vec![0f32; kdz.len() * kdz.dim()];
    kdz.decode_into(&mut out).unwrap();
    assert_eq!(out, kdz.decode_all());
    let mut short = vec![0f32; 3];
    let err = kdz.decode_into(&mut short).unwrap_err();
    assert!(matches!(
        err,
        FormatError::OutputSize {
            expected: 8,
            found: 3,
            ..
        }
    ));
    assert_eq!(
        err.to_string(),
        "test.kdz: decoding needs an output of 8 floats, got 3"
    );
}

// ----------------------------------------------------------------------------------------------
// One test per error variant, each checking the message names the file and the place.

/// Rebuilds the small file with section `kind` replaced (checksums and offsets fixed).
fn with_section(kind: u32, edit: impl FnOnce(&mut Sec)) -> Vec<u8> {
    let (minor, mut secs) = split(&small_file());
    let i = index_of(&secs, kind);
    edit(&mut secs[i]);
    assemble(minor, &secs)
}

fn err_of(bytes: Vec<u8>) -> (FormatError, String) {
    let err = open(bytes).expect_err("the file must be refused");
    let msg = err.to_string();
    assert!(
        msg.starts_with("test.kdz: "),
        "message must name the file: {msg}"
    );
    (err, msg)
}

#[test]
fn error_io_names_the_path() {
    let err = Kdz::open("/nonexistent/dir/x.kdz").unwrap_err();
    assert!(matches!(err, FormatError::Io { .. }));
    assert_eq!(
        err.to_string(),
        "/nonexistent/dir/x.kdz: cannot open for reading"
    );
}

#[test]
fn error_truncated() {
    let file = small_file();
    let (err, msg) = err_of(file[..100].to_vec());
    assert!(
        matches!(err, FormatError::Truncated { needed, len: 100, .. } if needed == file.len() as u64)
    );
    assert!(msg.contains("file is truncated"), "{msg}");
    let (_, msg) = err_of(file[..10].to_vec());
    assert_eq!(
        msg,
        "test.kdz: file is truncated: the header needs 64 bytes but the file has 10"
    );
}

#[test]
fn error_trailing_bytes() {
    let mut file = small_file();
    let len = file.len();
    file.extend_from_slice(b"xx");
    let (err, msg) = err_of(file);
    assert!(matches!(err, FormatError::TrailingBytes { extra: 2, .. }));
    assert_eq!(
        msg,
        format!("test.kdz: 2 unexpected bytes after the declared end of the file at offset {len}")
    );
}

#[test]
fn error_bad_magic_says_what_mangled_it() {
    let (err, msg) =
        err_of(b"GIF89a and then some more bytes to pass sixty-four bytes of header..".to_vec());
    assert!(matches!(err, FormatError::BadMagic { .. }));
    assert!(msg.contains("not a .kdz file"), "{msg}");
    // A text-mode transfer turns CR LF into LF.
    let file = small_file();
    let mut mangled = Vec::new();
    let mut i = 0;
    while i < file.len() {
        if file[i] == b'\r' && file.get(i + 1) == Some(&b'\n') {
            i += 1;
        }
        mangled.push(file[i]);
        i += 1;
    }
    let (_, msg) = err_of(mangled);
    assert!(msg.contains("copied in text mode"), "{msg}");
    // A 7-bit channel strips the high bit.
    let mut stripped = small_file();
    stripped[0] &= 0x7F;
    let (_, msg) = err_of(stripped);
    assert!(msg.contains("7-bit"), "{msg}");
}

#[test]
fn error_unsupported_major_names_the_needed_version() {
    let mut file = small_file();
    file[8] = 2;
    file[10] = 3;
    let (err, msg) = err_of(file);
    assert!(matches!(
        err,
        FormatError::UnsupportedVersion {
            major: 2,
            minor: 3,
            ..
        }
    ));
    assert_eq!(
        msg,
        "test.kdz: .kdz format version 2.3 needs a reader for major version 2; \
         this kdcompress reads version 1.x"
    );
}

#[test]
fn newer_minor_with_unknown_optional_section_is_read() {
    let (_, mut secs) = split(&small_file());
    secs.insert(
        2,
        Sec {
            kind: 77,
            flags: 0,
            codec: 42,
            raw_len: 3,
            data: b"new".to_vec(),
        },
    );
    let kdz = open(assemble(4, &secs)).unwrap();
    assert_eq!(kdz.version(), (1, 4));
    assert_eq!(kdz.sections()[2].kind, SectionKind::Unknown(77));
    assert_round_trip(&small(), &kdz);
}

#[test]
fn error_unknown_required_section() {
    let (_, mut secs) = split(&small_file());
    secs.push(Sec {
        kind: 77,
        flags: 1,
        codec: 0,
        raw_len: 3,
        data: b"new".to_vec(),
    });
    let (err, msg) = err_of(assemble(4, &secs));
    assert!(matches!(
        err,
        FormatError::UnknownRequiredSection {
            kind: 77,
            index: 6,
            ..
        }
    ));
    assert!(
        msg.contains("format 1.4") && msg.contains("newer kdcompress"),
        "{msg}"
    );
}

#[test]
fn error_header_checksum() {
    let mut file = small_file();
    file[40] = 1; // reserved, but covered by the checksum
    let (err, msg) = err_of(file);
    assert!(matches!(err, FormatError::HeaderChecksum { .. }));
    assert!(msg.contains("header (bytes 0..64) is corrupt"), "{msg}");
}

#[test]
fn error_section_count() {
    for count in [0u32, 257] {
        let mut file = small_file();
        file[12..16].copy_from_slice(&count.to_le_bytes());
        fix_header_crc(&mut file);
        let (err, msg) = err_of(file);
        assert!(matches!(err, FormatError::SectionCount { .. }), "{err:?}");
        assert!(msg.contains(&format!("declares {count} sections")), "{msg}");
    }
}

#[test]
fn error_table_checksum() {
    let mut file = small_file();
    file[64 + 48 + 44] ^= 1; // reserved bytes of the second entry
    let (err, msg) = err_of(file);
    assert!(matches!(err, FormatError::TableChecksum { offset: 64, .. }));
    assert!(
        msg.contains("section table at offset 64 is corrupt"),
        "{msg}"
    );
}

/// Edits entry `i` of the table of the small file and fixes the checksums.
fn with_entry(i: usize, field: usize, value: u64) -> Vec<u8> {
    let mut file = small_file();
    let at = 64 + 48 * i + field;
    file[at..at + 8].copy_from_slice(&value.to_le_bytes());
    fix_table_crc(&mut file);
    file
}

fn entry_u64(file: &[u8], i: usize, field: usize) -> u64 {
    let at = 64 + 48 * i + field;
    u64::from_le_bytes(file[at..at + 8].try_into().unwrap())
}

#[test]
fn error_section_out_of_bounds() {
    let (err, msg) = err_of(with_entry(5, 24, 1 << 40));
    assert!(matches!(
        err,
        FormatError::SectionOutOfBounds {
            index: 5,
            kind: SectionKind::Norms,
            ..
        }
    ));
    assert!(msg.contains("reaches past the end of the file"), "{msg}");
    // An offset near u64::MAX must not overflow.
    let (err, _) = err_of(with_entry(5, 24, u64::MAX));
    assert!(matches!(err, FormatError::SectionOutOfBounds { .. }));
}

#[test]
fn error_section_overlap() {
    let file = small_file();
    let first = entry_u64(&file, 0, 16);
    let (err, msg) = err_of(with_entry(1, 16, first));
    assert!(matches!(
        err,
        FormatError::SectionOverlap {
            index: 1,
            kind: SectionKind::Metadata,
            ..
        }
    ));
    assert!(
        msg.contains(&format!("section 1 (metadata) at offset {first} overlaps")),
        "{msg}"
    );
    // Pointing into the header or table is an overlap too.
    let (err, _) = err_of(with_entry(0, 16, 0));
    assert!(matches!(
        err,
        FormatError::SectionOverlap {
            previous_end: 352,
            ..
        }
    ));
}

#[test]
fn error_section_placement() {
    let file = small_file();
    let second = entry_u64(&file, 1, 16);
    let (err, msg) = err_of(with_entry(1, 16, second + 64));
    assert!(matches!(
        err,
        FormatError::SectionPlacement { index: 1, .. }
    ));
    assert!(msg.contains(&format!("should start at {second}")), "{msg}");
    let (err, _) = err_of(with_entry(1, 16, second + 1));
    assert!(matches!(err, FormatError::SectionPlacement { .. }));
}

#[test]
fn error_file_length() {
    // The last section shortened (checksum kept valid) leaves bytes the sections do not cover.
    let (minor, mut secs) = split(&small_file());
    let last = secs.len() - 1;
    let len = secs[last].data.len() as u64;
    let mut file = assemble(minor, &secs);
    secs[last].data.pop();
    let crc = crc32fast::hash(&secs[last].data);
    let at = 64 + 48 * last;
    file[at + 12..at + 16].copy_from_slice(&crc.to_le_bytes());
    file[at + 24..at + 32].copy_from_slice(&(len - 1).to_le_bytes());
    fix_table_crc(&mut file);
    let (err, msg) = err_of(file);
    assert!(matches!(err, FormatError::FileLength { .. }), "{err:?}");
    assert!(msg.contains("sections end at offset"), "{msg}");
}

#[test]
fn error_non_zero_padding() {
    let mut file = small_file();
    file[360] = 9; // between the end of the table (352) and the first section (384)
    let (err, msg) = err_of(file);
    assert!(matches!(
        err,
        FormatError::NonZeroPadding { offset: 360, .. }
    ));
    assert_eq!(msg, "test.kdz: padding byte at offset 360 is not zero");
}

#[test]
fn error_section_checksum_names_the_section() {
    let file = small_file();
    let codes = entry_u64(&file, 3, 16);
    let mut bad = file.clone();
    bad[codes as usize] ^= 0x10;
    let (err, msg) = err_of(bad);
    assert!(matches!(
        err,
        FormatError::SectionChecksum {
            kind: SectionKind::Codes,
            ..
        }
    ));
    assert!(
        msg.contains(&format!("codes section at offset {codes} is corrupt")),
        "{msg}"
    );
}

#[test]
fn error_duplicate_section() {
    let (minor, mut secs) = split(&small_file());
    let dup = secs[index_of(&secs, METADATA)].clone();
    secs.push(dup);
    let (err, msg) = err_of(assemble(minor, &secs));
    assert!(matches!(
        err,
        FormatError::DuplicateSection {
            kind: SectionKind::Metadata,
            ..
        }
    ));
    assert!(msg.contains("second metadata section"), "{msg}");
}

#[test]
fn error_missing_section() {
    let (minor, mut secs) = split(&small_file());
    secs.remove(index_of(&secs, TENSORS));
    let (err, msg) = err_of(assemble(minor, &secs));
    assert!(matches!(
        err,
        FormatError::MissingSection {
            kind: SectionKind::Tensors,
            ..
        }
    ));
    assert_eq!(msg, "test.kdz: the required tensors section is missing");
    // Norms are optional.
    let (minor, mut secs) = split(&small_file());
    secs.remove(index_of(&secs, NORMS));
    assert_eq!(open(assemble(minor, &secs)).unwrap().norms(), None);
}

#[test]
fn error_bad_codec() {
    let (err, msg) = err_of(with_section(CODES, |s| s.codec = 1));
    assert!(matches!(
        err,
        FormatError::BadCodec {
            kind: SectionKind::Codes,
            ..
        }
    ));
    assert!(
        msg.contains("codes section") && msg.contains("codec zstd, which this section may not use"),
        "{msg}"
    );
    let (err, msg) = err_of(with_section(VOCAB, |s| s.codec = 9));
    assert!(matches!(
        err,
        FormatError::BadCodec {
            kind: SectionKind::Vocabulary,
            ..
        }
    ));
    assert!(msg.contains("unknown codec 9"), "{msg}");
}

#[test]
fn error_raw_length() {
    let (err, msg) = err_of(with_section(VOCAB, |s| s.raw_len += 1));
    assert!(matches!(
        err,
        FormatError::RawLength {
            kind: SectionKind::Vocabulary,
            ..
        }
    ));
    assert!(
        msg.contains("vocabulary section") && msg.contains("the table declares"),
        "{msg}"
    );
    let (err, _) = err_of(with_section(VOCAB, |s| s.raw_len -= 1));
    assert!(matches!(err, FormatError::RawLength { .. }));
    let (err, _) = err_of(with_section(MODEL, |s| s.raw_len = 47));
    assert!(matches!(
        err,
        FormatError::RawLength {
            kind: SectionKind::Model,
            ..
        }
    ));
}

#[test]
fn error_decompress() {
    let (err, msg) = err_of(with_section(VOCAB, |s| {
        s.data = b"definitely not zstd".to_vec()
    }));
    assert!(matches!(
        err,
        FormatError::Decompress {
            kind: SectionKind::Vocabulary,
            ..
        }
    ));
    assert!(msg.contains("is not a valid zstd stream"), "{msg}");
}

/// A raw vocabulary section's content.
fn raw_vocab(count: u64, words: &[&[u8]]) -> Vec<u8> {
    let mut b = count.to_le_bytes().to_vec();
    for w in words {
        b.extend_from_slice(&(w.len() as u32).to_le_bytes());
    }
    for w in words {
        b.extend_from_slice(w);
    }
    b
}

fn with_raw_vocab(content: Vec<u8>) -> Vec<u8> {
    with_section(VOCAB, |s| {
        s.codec = 0;
        s.raw_len = content.len() as u64;
        s.data = content;
    })
}

#[test]
fn raw_vocabulary_is_accepted() {
    let kdz = open(with_raw_vocab(raw_vocab(4, &[b"w0", b"w1", b"w2", b"w3"]))).unwrap();
    assert_eq!(kdz.vocab(), &small().vocab);
}

#[test]
fn error_vocabulary_count_disagrees_with_codes() {
    let (err, msg) = err_of(with_raw_vocab(raw_vocab(3, &[b"w0", b"w1", b"w2"])));
    assert!(matches!(
        err,
        FormatError::VocabularyCount { words: 3, n: 4, .. }
    ));
    assert!(
        msg.contains("holds 3 words but the codes are for N = 4 words"),
        "{msg}"
    );
}

#[test]
fn error_malformed_names_section_and_position() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            with_raw_vocab(raw_vocab(4, &[b"w0", b"w1", b"w2", b"\xff"])),
            "word 3 is not UTF-8",
        ),
        (
            with_raw_vocab(raw_vocab(4, &[b"w0", b"w1", b"w0", b"w3"])),
            "rows 0 and 2 hold the same word",
        ),
        (
            with_raw_vocab(raw_vocab(4, &[b"w0"])),
            "too short for the byte lengths",
        ),
        (
            with_raw_vocab({
                let mut v = raw_vocab(4, &[b"w0", b"w1", b"w2", b"w3"]);
                v.push(b'!');
                v
            }),
            "1 bytes follow the last word",
        ),
        (
            with_raw_vocab({
                let mut v = raw_vocab(4, &[b"w0", b"w1", b"w2", b"w3"]);
                v.truncate(v.len() - 1);
                v
            }),
            "word 3 (2 bytes) runs past the end",
        ),
        (
            with_section(METADATA, |s| {
                s.data = b"{\"tool_version\": 3}".to_vec();
                s.raw_len = s.data.len() as u64;
            }),
            "invalid metadata JSON",
        ),
        (
            with_section(TENSORS, |s| {
                s.data.truncate(10);
                s.raw_len = 10;
            }),
            "the tensor directory ends early",
        ),
        (
            with_section(TENSORS, |s| {
                s.data.push(0);
                s.raw_len += 1;
            }),
            "1 bytes follow the last tensor",
        ),
    ];
    for (file, reason) in cases {
        let (err, msg) = err_of(file);
        assert!(matches!(err, FormatError::Malformed { .. }), "{err:?}");
        assert!(msg.contains(reason), "expected {reason:?} in {msg}");
        assert!(
            msg.contains("section at offset") && msg.contains("malformed at byte"),
            "{msg}"
        );
    }
}

/// What a reader that predates a composer kind sees: here kind 7 stands in for a kind added by
/// a later minor version, as kind 4 (`split`, format 1.1) is to a 1.0 reader.
#[test]
fn error_unknown_composer_kind_asks_for_a_newer_reader() {
    let (minor, mut secs) = split(&small_file());
    let i = index_of(&secs, MODEL);
    secs[i].data[8] = 7;
    let (err, msg) = err_of(assemble(minor + 1, &secs));
    assert!(matches!(
        err,
        FormatError::UnknownComposerKind {
            kind: 7,
            max_known: 6,
            major: 1,
            minor: 2,
            ..
        }
    ));
    assert!(
        msg.contains("model section (offset 384) uses composer kind 7")
            && msg.contains("kinds 0 to 6 of format 1.3; the file is format 1.2")
            && msg.contains("a newer kdcompress is needed"),
        "{msg}"
    );
}

#[test]
fn error_section_length() {
    let (err, msg) = err_of(with_section(CODES, |s| {
        s.data.pop();
        s.raw_len -= 1;
    }));
    assert!(matches!(
        err,
        FormatError::SectionLength {
            kind: SectionKind::Codes,
            expected: 8,
            found: 7,
            ..
        }
    ));
    assert!(
        msg.contains("codes section") && msg.contains("holds 7 bytes; the model implies 8"),
        "{msg}"
    );
    let (err, _) = err_of(with_section(NORMS, |s| {
        s.data.extend_from_slice(&[0; 4]);
        s.raw_len += 4;
    }));
    assert!(matches!(
        err,
        FormatError::SectionLength {
            kind: SectionKind::Norms,
            ..
        }
    ));
}

#[test]
fn error_code_not_below_k() {
    // K = 5, three bits: 7 in the first code of row 0.
    let (err, msg) = err_of(with_section(CODES, |s| s.data[0] |= 0x07));
    assert!(matches!(
        err,
        FormatError::CodeOutOfRange {
            row: 0,
            dim: 0,
            value: 7,
            k: 5,
            ..
        }
    ));
    assert!(msg.contains("row 0, code 0: 7 is not below K = 5"), "{msg}");
    // 6 in the last code of row 2 (bits 6..9 of the row).
    let (err, _) = err_of(with_section(CODES, |s| {
        s.data[4] = (s.data[4] & 0x3F) | 0x80;
        s.data[5] = 0x01;
    }));
    assert!(
        matches!(
            err,
            FormatError::CodeOutOfRange {
                row: 2,
                dim: 2,
                value: 6,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn error_row_padding() {
    let (err, msg) = err_of(with_section(CODES, |s| s.data[3] |= 0x80));
    assert!(matches!(err, FormatError::RowPadding { row: 1, .. }));
    assert!(msg.contains("row 1 has non-zero padding bits"), "{msg}");
}

#[test]
fn error_composer_shapes() {
    // Model says mlp with h = 1, but the tensors are a linear composer's.
    let (err, msg) = err_of(with_section(MODEL, |s| {
        s.data[8] = 1;
        s.data[36] = 1;
    }));
    assert!(matches!(err, FormatError::Composer { .. }));
    assert!(
        msg.contains("tensors section at offset") && msg.contains("does not fit the model"),
        "{msg}"
    );
    let chain = std::error::Error::source(&err).unwrap().to_string();
    assert!(chain.contains("composer.hidden.weight"), "{chain}");
}

#[test]
fn error_unwritable() {
    let mut c = small();
    c.vocab.truncate(3);
    let err = format::to_bytes(&c).unwrap_err();
    assert!(matches!(err, FormatError::Unwritable { .. }));
    assert_eq!(
        err.to_string(),
        "cannot write <memory>: the vocabulary has 3 words but there are codes for 4"
    );
    let mut c = small();
    c.norms = Some(vec![1.0]);
    assert!(
        format::to_bytes(&c)
            .unwrap_err()
            .to_string()
            .contains("1 norms for 4 words")
    );
    let mut c = small();
    c.metadata.train_seconds = f64::INFINITY;
    assert!(
        format::to_bytes(&c)
            .unwrap_err()
            .to_string()
            .contains("train_seconds is inf")
    );
}

// ----------------------------------------------------------------------------------------------
// Hostile bytes never panic.

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        prop_assert!(open(bytes).is_err());
    }

    #[test]
    fn mutated_files_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut file = small_file();
        for (at, v) in edits {
            let i = at.index(file.len());
            file[i] = v;
        }
        if truncate {
            file.truncate(cut.index(file.len()));
        }
        exercise(open(file));
    }

    /// Damage inside one section with every checksum made valid again, so the parsers behind
    /// the checksums see it.
    #[test]
    fn mutated_sections_with_valid_checksums_never_panic(
        section in 0usize..6,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        resize in prop_oneof![Just(None), (0usize..200).prop_map(Some)],
        raw_len_delta in prop_oneof![Just(0i64), -3i64..3],
    ) {
        let (minor, mut secs) = split(&small_file());
        let s = &mut secs[section];
        if let Some(len) = resize {
            s.data.resize(len, 0);
            if s.codec == 0 {
                s.raw_len = len as u64;
            }
        }
        if !s.data.is_empty() {
            for (at, v) in edits {
                let i = at.index(s.data.len());
                s.data[i] = v;
            }
        }
        s.raw_len = s.raw_len.saturating_add_signed(raw_len_delta);
        exercise(open(assemble(minor, &secs)));
    }
}

/// Uses everything a successfully opened file offers, which must not panic either.
fn exercise(result: Result<Kdz, FormatError>) {
    match result {
        Ok(kdz) => {
            let all = kdz.decode_all();
            assert_eq!(all.len(), kdz.len() * kdz.dim());
            for row in 0..kdz.len().min(8) {
                let _ = kdz.embedding_of(row);
                let _ = kdz.code_of(row);
            }
            let _ = kdz.to_compressed();
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("test.kdz"), "{msg}");
        }
    }
}
