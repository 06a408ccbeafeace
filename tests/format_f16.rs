//! Tensors stored as f16 (format 1.2): round trips of every composer kind, files that only hold
//! f32 staying exactly what earlier versions wrote, and the errors a reader gives.

mod format_support;

use std::collections::BTreeMap;

use format_support::{Sec, Shape, assemble, index_of, random, small, split};
use kdcompress::composer::{CODEBOOKS, Composer, ComposerKind, Tensor};
use kdcompress::compressed::Compressed;
use kdcompress::format::{self, FormatError, Kdz, SectionKind, TensorDtype};

const TENSORS: u32 = 5;

fn open(bytes: Vec<u8>) -> Result<Kdz, FormatError> {
    Kdz::from_bytes("test.kdz", bytes)
}

fn shape(kind: ComposerKind) -> Shape {
    Shape {
        kind,
        n: 300,
        k: 16,
        d_codebooks: 8,
        // Split: 11 columns over 8 groups, widths 1 and 2. Every other kind takes d' = d.
        code_dim: if kind == ComposerKind::Split { 2 } else { 6 },
        hidden: 5,
        out_dim: if kind == ComposerKind::Split { 11 } else { 6 },
        norms: true,
    }
}

/// `c`'s composer with every weight rounded to f16, as a reader of an f16 file gets it.
fn rounded(c: &Compressed) -> Composer {
    let tensors: BTreeMap<String, Tensor> = c
        .composer
        .tensors()
        .iter()
        .map(|(name, t)| {
            let data = t.data.iter().map(|&v| TensorDtype::F16.round(v)).collect();
            (name.clone(), Tensor::new(t.shape.clone(), data).unwrap())
        })
        .collect();
    Composer::new(*c.composer.config(), tensors).unwrap()
}

fn tensors_section_len(kdz: &Kdz) -> u64 {
    kdz.sections()
        .iter()
        .find(|s| s.kind == SectionKind::Tensors)
        .unwrap()
        .stored_len
}

/// Every kind written as f16 reads back as the rounded weights, decodes exactly as those do and
/// within f16's rounding of the f32 table, in a file of format 1.2 (1.3 for `sum`) whose tensors
/// take half the bytes.
#[test]
fn every_composer_kind_round_trips_as_f16() {
    let dir = tempfile::tempdir().unwrap();
    for kind in ComposerKind::ALL {
        let c = random(9, shape(kind));
        let path = dir.path().join(format!("{}.kdz", kind.name()));
        format::write_as(&path, &c, TensorDtype::F16).unwrap();
        let kdz = Kdz::open(&path).unwrap();
        let minor = if kind == ComposerKind::Sum { 3 } else { 2 };
        assert_eq!(kdz.version(), (1, minor), "{kind:?}");
        assert_eq!(kdz.tensor_dtypes().len(), c.composer.tensors().len());
        assert!(
            kdz.tensor_dtypes().values().all(|&d| d == TensorDtype::F16),
            "{kind:?}: {:?}",
            kdz.tensor_dtypes()
        );
        let half = rounded(&c);
        assert_eq!(kdz.composer().tensors(), half.tensors(), "{kind:?}");
        assert_eq!(kdz.vocab(), &c.vocab);
        assert_eq!(kdz.codes(), c.codes);
        assert_eq!(kdz.norms(), c.norms.as_deref(), "norms stay f32");
        assert_eq!(kdz.metadata(), &c.metadata);

        let got = kdz.decode_all();
        let mut expected = vec![0f32; got.len()];
        half.decode_batch(c.codes.as_slice(), &mut expected);
        assert_eq!(got, expected, "{kind:?}: decodes as the rounded weights do");
        // Weights below 0.5 in size move by at most 2^-12 each; through D = 8 code vectors and
        // the composer's layers that stays well under 1e-2.
        let full = c.decode_all();
        let worst = format_support::largest_difference(&got, &full);
        assert!(worst < 1e-2, "{kind:?}: f16 moved a value by {worst}");
        assert!(got.iter().all(|v| v.is_finite()));

        let f32_file = format::to_bytes(&c).unwrap();
        let f32_tensors = tensors_section_len(&open(f32_file).unwrap());
        let f16_tensors = tensors_section_len(&kdz);
        // Two bytes saved a parameter, give or take each tensor's alignment padding.
        let (saved, params) = (f32_tensors - f16_tensors, c.composer.num_params() as u64);
        let slack = 64 * c.composer.tensors().len() as u64;
        assert!(
            saved + slack >= 2 * params && saved <= 2 * params + slack,
            "{kind:?}: {f16_tensors} bytes as f16, {f32_tensors} as f32, {params} parameters"
        );
        // Written again from what was read: the same bytes.
        let again = format::to_bytes_as(&kdz.to_compressed(), TensorDtype::F16).unwrap();
        assert_eq!(again, std::fs::read(&path).unwrap(), "{kind:?}");
    }
}

/// A file holding only f32 tensors is byte for byte what the writer wrote before f16 existed,
/// version 1.1 included, so every earlier reader reads it; only a composer kind added after 1.1
/// raises it.
#[test]
fn f32_files_stay_format_1_1() {
    use ComposerKind::*;
    for kind in ComposerKind::ALL {
        let c = random(4, shape(kind));
        let file = format::to_bytes_as(&c, TensorDtype::F32).unwrap();
        assert_eq!(file, format::to_bytes(&c).unwrap());
        let minor = match kind {
            Linear | Mlp | Lstm | Concat | Split => 1,
            Conditioned => 2,
            Sum => 3,
        };
        assert_eq!(&file[8..12], &[1, 0, minor, 0], "{kind:?}");
        let kdz = open(file).unwrap();
        assert!(kdz.tensor_dtypes().values().all(|&d| d == TensorDtype::F32));
        assert_eq!(kdz.composer().tensors(), c.composer.tensors());
    }
    let f16 = format::to_bytes_as(&small(), TensorDtype::F16).unwrap();
    assert_eq!(&f16[8..12], &[1, 0, 2, 0], "version 1.2");
}

#[test]
fn file_len_as_is_the_length_written() {
    let c = random(2, shape(ComposerKind::Mlp));
    for dtype in TensorDtype::ALL {
        let bytes = format::to_bytes_as(&c, dtype).unwrap();
        assert_eq!(format::file_len_as(&c, dtype).unwrap(), bytes.len() as u64);
    }
}

/// Only the dtype byte and the data change: the directory offsets, the alignment and the
/// section layout of docs/kdz-format.md hold for f16 as for f32.
#[test]
fn f16_tensor_bytes_are_as_documented() {
    let c = small();
    let (minor, secs) = split(&format::to_bytes_as(&c, TensorDtype::F16).unwrap());
    assert_eq!(minor, 2);
    let t = &secs[index_of(&secs, TENSORS)].data;
    // Directory: 3 tensors, then "codebooks" [3, 5, 2] as dtype 2 at offset 192 (after a
    // 161-byte directory), 60 bytes.
    assert_eq!(&t[..4], &3u32.to_le_bytes());
    assert_eq!(&t[8..10], &9u16.to_le_bytes());
    assert_eq!(&t[10..19], b"codebooks");
    assert_eq!(t[19], 2, "dtype f16");
    assert_eq!(t[20], 3, "ndim");
    let u64_at = |at: usize| u64::from_le_bytes(t[at..at + 8].try_into().unwrap());
    assert_eq!((u64_at(21), u64_at(29), u64_at(37)), (3, 5, 2));
    assert_eq!(u64_at(45), 192, "offset");
    assert_eq!(u64_at(53), 60, "2 bytes a value");
    let books = &c.composer.tensors()[CODEBOOKS].data;
    for (i, &v) in books.iter().enumerate() {
        let at = 192 + 2 * i;
        let stored = u16::from_le_bytes([t[at], t[at + 1]]);
        assert_eq!(stored, half::f16::from_f32(v).to_bits(), "value {i}");
    }
}

/// The format allows each tensor its own dtype; a reader takes a file that mixes them.
#[test]
fn mixed_dtypes_are_read() {
    let c = small();
    let f32_file = format::to_bytes(&c).unwrap();
    let (minor, mut secs) = split(&f32_file);
    let i = index_of(&secs, TENSORS);
    // Rebuild the tensors section by hand with only the codebooks as f16.
    let tensors = c.composer.tensors();
    let mut dir = Vec::new();
    dir.extend_from_slice(&(tensors.len() as u32).to_le_bytes());
    dir.extend_from_slice(&[0; 4]);
    let entry_len = |name: &str, ndim: usize| 2 + name.len() + 2 + 8 * ndim + 16;
    let mut end = 8 + tensors
        .iter()
        .map(|(n, t)| entry_len(n, t.shape.len()))
        .sum::<usize>();
    let mut data = Vec::new();
    let mut offsets = Vec::new();
    for (name, t) in tensors {
        let start = end.div_ceil(64) * 64;
        let bytes: Vec<u8> = if name == CODEBOOKS {
            t.data
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect()
        } else {
            t.data.iter().flat_map(|v| v.to_le_bytes()).collect()
        };
        offsets.push((start, bytes.len()));
        end = start + bytes.len();
        data.push(bytes);
    }
    for ((name, t), &(offset, len)) in tensors.iter().zip(&offsets) {
        dir.extend_from_slice(&(name.len() as u16).to_le_bytes());
        dir.extend_from_slice(name.as_bytes());
        dir.push(if name == CODEBOOKS { 2 } else { 1 });
        dir.push(t.shape.len() as u8);
        for &s in &t.shape {
            dir.extend_from_slice(&(s as u64).to_le_bytes());
        }
        dir.extend_from_slice(&(offset as u64).to_le_bytes());
        dir.extend_from_slice(&(len as u64).to_le_bytes());
    }
    let mut section = dir;
    for ((offset, _), bytes) in offsets.iter().zip(&data) {
        section.resize(*offset, 0);
        section.extend_from_slice(bytes);
    }
    secs[i] = Sec {
        raw_len: section.len() as u64,
        data: section,
        ..secs[i].clone()
    };
    let kdz = open(assemble(minor.max(2), &secs)).unwrap();
    let dtypes = kdz.tensor_dtypes();
    assert_eq!(dtypes[CODEBOOKS], TensorDtype::F16);
    assert!(
        dtypes
            .iter()
            .filter(|(n, _)| n.as_str() != CODEBOOKS)
            .all(|(_, &d)| d == TensorDtype::F32)
    );
    let got = kdz.composer().tensors();
    assert_eq!(
        got[CODEBOOKS].data,
        rounded(&c).tensors()[CODEBOOKS].data,
        "codebooks rounded"
    );
    for (name, t) in tensors.iter().filter(|(n, _)| n.as_str() != CODEBOOKS) {
        assert_eq!(&got[name], t, "{name} exact");
    }
}

/// What a reader that predates a dtype sees: dtype 3 stands in for one a later minor version
/// adds, as f16 (dtype 2, format 1.2) is to a 1.1 reader.
#[test]
fn error_unknown_dtype_asks_for_a_newer_reader() {
    let (minor, mut secs) = split(&format::to_bytes(&small()).unwrap());
    let i = index_of(&secs, TENSORS);
    // The first entry is "codebooks": 8 bytes of count, 2 of name length, 9 of name.
    assert_eq!(secs[i].data[19], 1);
    secs[i].data[19] = 3;
    let file = assemble(minor + 2, &secs);
    let err = open(file).expect_err("an unknown dtype must be refused");
    let msg = err.to_string();
    assert!(
        matches!(
            &err,
            FormatError::UnknownDtype { dtype: 3, at: 19, major: 1, minor: 3, name, .. }
                if name == CODEBOOKS
        ),
        "{err:?}"
    );
    let expected = "test.kdz: tensors section at offset ";
    assert!(msg.starts_with(expected), "{msg}");
    assert!(
        msg.contains(
            "byte 19 of its content: tensor \"codebooks\" is stored as dtype 3, which this \
             kdcompress does not know (it reads dtypes 1 (f32) and 2 (f16) of format 1.3; the \
             file is format 1.3); a newer kdcompress is needed"
        ),
        "{msg}"
    );
}

/// The data length follows the dtype: an f32 tensor relabelled f16 declares twice the bytes.
#[test]
fn error_data_length_disagrees_with_the_dtype() {
    let (minor, mut secs) = split(&format::to_bytes(&small()).unwrap());
    let i = index_of(&secs, TENSORS);
    secs[i].data[19] = 2;
    let err = open(assemble(minor, &secs)).unwrap_err();
    assert!(matches!(err, FormatError::Malformed { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("tensor \"codebooks\" of shape [3, 5, 2] and dtype f16 declares 120 bytes"),
        "{msg}"
    );
}

/// A weight f16 cannot hold is never written as an infinity: the writer refuses before it
/// creates the file, naming the tensor and the value.
#[test]
fn f16_refuses_a_weight_beyond_its_range() {
    let mut c = small();
    let mut tensors = c.composer.tensors().clone();
    tensors.get_mut(CODEBOOKS).unwrap().data[4] = -1.0e5;
    c.composer = Composer::new(*c.composer.config(), tensors).unwrap();
    let err = format::to_bytes_as(&c, TensorDtype::F16).unwrap_err();
    assert!(matches!(err, FormatError::Unwritable { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "cannot write <memory>: tensor \"codebooks\" holds -100000 at index 4, beyond the f16 \
         range; store it as f32"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.kdz");
    assert!(format::write_new_as(&path, &c, TensorDtype::F16).is_err());
    assert!(!path.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    format::write_new_as(&path, &c, TensorDtype::F32).unwrap();
    assert_eq!(
        Kdz::open(&path).unwrap().composer().tensors()[CODEBOOKS].data[4],
        -1.0e5
    );
}

/// docs/kdz-format.md's bound with 2 bytes a parameter.
#[test]
fn f16_size_is_codes_plus_two_bytes_per_parameter_plus_vocabulary_plus_4k() {
    for kind in ComposerKind::ALL {
        let c = random(3, shape(kind));
        let file = format::to_bytes_as(&c, TensorDtype::F16).unwrap();
        let kdz = open(file.clone()).unwrap();
        let vocab = kdz
            .sections()
            .iter()
            .find(|s| s.kind == SectionKind::Vocabulary)
            .unwrap()
            .stored_len as usize;
        let codes = 300 * 8 * 4 / 8;
        let bound = codes + 2 * c.composer.num_params() + vocab + 4 * 300 + 4096;
        assert!(file.len() <= bound, "{kind:?}: {} > {bound}", file.len());
    }
}

/// The safetensors export stays F32 from an f16 file: the stored f16 values, widened.
#[test]
fn safetensors_export_of_an_f16_file_is_f32() {
    use kdcompress::export::{ExportFormat, ExportOptions, export};
    let dir = tempfile::tempdir().unwrap();
    let c = random(6, shape(ComposerKind::Mlp));
    let kdz_path = dir.path().join("t.kdz");
    format::write_as(&kdz_path, &c, TensorDtype::F16).unwrap();
    let out = dir.path().join("t.safetensors");
    let opts = ExportOptions {
        format: ExportFormat::Safetensors,
        overwrite: false,
    };
    export(&Kdz::open(&kdz_path).unwrap(), &out, &opts).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let half = rounded(&c);
    for (name, t) in half.tensors() {
        let view = st.tensor(name).unwrap();
        assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
        assert_eq!(view.shape(), &t.shape[..], "{name}");
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(values, t.data, "{name}");
    }
}
