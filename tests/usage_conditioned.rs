//! A `conditioned` table through the commands that read a `.kdz`: `export` writes its four step
//! network tensors and the vectors the library decodes, `info` names its sizes, and `similar`,
//! `codes` and `groups` run on it.

mod format_support;
mod usage_support;

use std::path::{Path, PathBuf};

use format_support::{Shape, random};
use kdcompress::composer::{
    CODEBOOKS, COND_CODE_WEIGHT, COND_OUT_WEIGHT, COND_STEP, COND_SUM_WEIGHT, ComposerKind,
};
use kdcompress::compressed::Compressed;
use kdcompress::format::Kdz;
use usage_support::{export, kdc, stdout};

const SHAPE: Shape = Shape {
    kind: ComposerKind::Conditioned,
    n: 300,
    k: 16,
    d_codebooks: 6,
    code_dim: 12,
    hidden: 7,
    out_dim: 12,
    norms: false,
};

/// Random codes and weights (`W_o` among them, so the step network changes every vector).
fn write_table(dir: &Path) -> (Compressed, PathBuf) {
    let c = random(11, SHAPE);
    let path = dir.join("cond.kdz");
    kdcompress::format::write(&path, &c).unwrap();
    (c, path)
}

/// The definition, step by step in d dimensions and in f64:
/// `x̂_i = x̂_{i-1} + e_{i-1} + W_o relu(W_c e_{i-1} + W_s x̂_{i-1} + t_{i-1})`.
fn by_hand(c: &Compressed) -> Vec<f32> {
    let (k, d, h) = (SHAPE.k as usize, SHAPE.out_dim, SHAPE.hidden);
    let t = |name: &str| -> Vec<f64> {
        c.composer.tensors()[name]
            .data
            .iter()
            .map(|&x| f64::from(x))
            .collect()
    };
    let (cb, wc, ws, step, wo) = (
        t(CODEBOOKS),
        t(COND_CODE_WEIGHT),
        t(COND_SUM_WEIGHT),
        t(COND_STEP),
        t(COND_OUT_WEIGHT),
    );
    let mut out = Vec::with_capacity(SHAPE.n * d);
    for row in c.codes.as_slice().chunks_exact(SHAPE.d_codebooks) {
        let mut x = vec![0f64; d];
        for (i, &code) in row.iter().enumerate() {
            let e = &cb[(i * k + usize::from(code)) * d..][..d];
            let z: Vec<f64> = (0..h)
                .map(|j| {
                    let pre = step[i * h + j]
                        + (0..d)
                            .map(|l| wc[j * d + l] * e[l] + ws[j * d + l] * x[l])
                            .sum::<f64>();
                    pre.max(0.0)
                })
                .collect();
            for l in 0..d {
                x[l] += e[l] + (0..h).map(|j| wo[l * h + j] * z[j]).sum::<f64>();
            }
        }
        out.extend(x.iter().map(|&v| v as f32));
    }
    out
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

#[test]
fn export_safetensors_holds_the_step_network() {
    let dir = tempfile::tempdir().unwrap();
    let (c, kdz) = write_table(dir.path());
    let out = dir.path().join("cond.safetensors");
    export(dir.path(), &kdz, &out).assert().success();
    let bytes = std::fs::read(&out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (dd, k, d, h) = (
        SHAPE.d_codebooks,
        SHAPE.k as usize,
        SHAPE.out_dim,
        SHAPE.hidden,
    );
    for (name, shape) in [
        (CODEBOOKS, vec![dd, k, d]),
        (COND_CODE_WEIGHT, vec![h, d]),
        (COND_SUM_WEIGHT, vec![h, d]),
        (COND_STEP, vec![dd, h]),
        (COND_OUT_WEIGHT, vec![d, h]),
    ] {
        let got = st.tensor(name).unwrap();
        assert_eq!(got.dtype(), safetensors::Dtype::F32, "{name}");
        assert_eq!(got.shape(), &shape[..], "{name}");
        assert_eq!(f32s(got.data()), c.composer.tensors()[name].data, "{name}");
    }
    // The codes and those five, nothing else.
    assert_eq!(st.len(), 6);
    assert_eq!(st.tensor("codes").unwrap().shape(), &[SHAPE.n, dd]);
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().as_ref().unwrap();
    let config: serde_json::Value = serde_json::from_str(&meta["composer"]).unwrap();
    assert_eq!(
        config,
        serde_json::json!({"kind": "conditioned", "num_codebooks": dd, "num_codes": k,
                           "code_dim": d, "hidden": h, "out_dim": d})
    );
}

#[test]
fn export_npy_equals_the_library_decode_and_the_definition() {
    let dir = tempfile::tempdir().unwrap();
    let (c, kdz) = write_table(dir.path());
    let out = dir.path().join("cond.npy");
    export(dir.path(), &kdz, &out).assert().success();
    let npy = std::fs::read(&out).unwrap();
    let header_len = u16::from_le_bytes([npy[8], npy[9]]) as usize;
    let header = std::str::from_utf8(&npy[10..10 + header_len]).unwrap();
    assert!(header.contains("'shape': (300, 12)"), "{header}");
    let exported = f32s(&npy[10 + header_len..]);

    let library = Kdz::open(&kdz).unwrap().decode_all();
    assert_eq!(exported, library, "one decoder serves both");
    let want = by_hand(&c);
    let worst = format_support::largest_difference(&exported, &want);
    assert!(worst < 1e-5, "largest difference {worst}");
    // The step network does something here: not the plain sum of code vectors.
    let (k, d) = (SHAPE.k as usize, SHAPE.out_dim);
    let cb = &c.composer.tensors()[CODEBOOKS].data;
    let additive: Vec<f32> = c
        .codes
        .as_slice()
        .chunks_exact(SHAPE.d_codebooks)
        .flat_map(|row| {
            (0..d).map(move |l| {
                row.iter()
                    .enumerate()
                    .map(|(i, &code)| cb[(i * k + usize::from(code)) * d + l])
                    .sum::<f32>()
            })
        })
        .collect();
    let moved = format_support::largest_difference(&exported, &additive);
    assert!(moved > 0.05, "largest correction {moved}");
}

#[test]
fn reading_commands_run_on_a_conditioned_table() {
    let dir = tempfile::tempdir().unwrap();
    let (_, kdz) = write_table(dir.path());
    let info = stdout(kdc(dir.path()).arg("info").arg(&kdz));
    let line = info.lines().find(|l| l.starts_with("composer")).unwrap();
    assert!(
        line.starts_with(
            "composer      conditioned: code width d = 12, hidden = 7 (shared by the 6 steps)"
        ),
        "{line}"
    );
    let similar = stdout(
        kdc(dir.path())
            .args(["similar"])
            .arg(&kdz)
            .args(["w7", "-k", "3"]),
    );
    assert_eq!(similar.lines().count(), 4, "{similar}");
    stdout(kdc(dir.path()).arg("codes").arg(&kdz).arg("w7"));
    stdout(kdc(dir.path()).arg("groups").arg(&kdz).arg("--stats"));
}
