//! `KdEmbedding` (LibTorch) against the pure-Rust decoder, for every composer kind.
#![cfg(feature = "train")]

mod format_support;

use format_support::{Shape, random};
use kdcompress::composer::ComposerKind;
use kdcompress::format::Kdz;
use kdcompress::train::embedding_layer::KdEmbedding;
use tch::nn::{Module, OptimizerConfig};
use tch::{Device, Kind, Tensor, nn};

fn shape(kind: ComposerKind, k: u32) -> Shape {
    Shape {
        kind,
        n: 150,
        k,
        d_codebooks: 5,
        // Split: d = 9 over D = 5 groups of widths 1, 2, 2, 2, 2 in code vectors of 2.
        // Sum: d' = d = 9.
        code_dim: match kind {
            ComposerKind::Split => 2,
            ComposerKind::Sum => 9,
            _ => 6,
        },
        hidden: 7,
        out_dim: 9,
        norms: false,
    }
}

const KINDS: [(ComposerKind, u32); 6] = [
    (ComposerKind::Linear, 16),
    // K above 256 stores the codes as i16.
    (ComposerKind::Mlp, 300),
    (ComposerKind::Lstm, 8),
    (ComposerKind::Concat, 4),
    (ComposerKind::Split, 5),
    (ComposerKind::Sum, 12),
];

fn open(dir: &std::path::Path, kind: ComposerKind, k: u32) -> Kdz {
    let path = dir.join(format!("{}.kdz", kind.name()));
    kdcompress::format::write(&path, &random(7, shape(kind, k))).unwrap();
    Kdz::open(&path).unwrap()
}

#[test]
fn forward_equals_the_pure_rust_decode() {
    let dir = tempfile::tempdir().unwrap();
    for (kind, k) in KINDS {
        let kdz = open(dir.path(), kind, k);
        let vs = nn::VarStore::new(Device::Cpu);
        let emb = KdEmbedding::new(&vs.root().sub("emb"), &kdz);
        let rows = Tensor::arange(kdz.len() as i64, (Kind::Int64, Device::Cpu));
        let got = emb.f_forward(&rows).unwrap();
        assert_eq!(got.size(), [kdz.len() as i64, kdz.dim() as i64]);
        let got = Vec::<f32>::try_from(&got.reshape([-1])).unwrap();
        let want = kdz.decode_all();
        let worst = format_support::largest_difference(&got, &want);
        assert!(worst < 1e-5, "{kind:?}: largest difference {worst}");
        assert!(
            want.iter().any(|x| x.abs() > 0.1),
            "{kind:?}: nothing to compare"
        );
    }
}

#[test]
fn gradients_reach_the_codebooks_but_not_the_codes() {
    let dir = tempfile::tempdir().unwrap();
    for (kind, k) in KINDS {
        let kdz = open(dir.path(), kind, k);
        let vs = nn::VarStore::new(Device::Cpu);
        let emb = KdEmbedding::new(&vs.root(), &kdz);
        let names: Vec<String> = vs.variables().into_keys().collect();
        assert!(names.contains(&"codebooks".to_string()), "{names:?}");
        assert_eq!(
            names.contains(&"composer.out.weight".to_string()),
            kind.has_out_map(),
            "{kind:?}: {names:?}"
        );
        assert!(!emb.codes().requires_grad());
        let rows = Tensor::from_slice(&[3i64, 0, 3, 149]);
        emb.forward(&rows)
            .pow_tensor_scalar(2)
            .sum(Kind::Float)
            .backward();
        let grad = emb.codebooks().grad();
        assert!(grad.defined(), "{kind:?}");
        // The codebook entries of the used codes get a gradient, the others none; concat
        // cuts its output at d = 9, so of the 6-wide code vectors only positions 0 and 1 count,
        // while split gives every position some columns.
        let codes = kdz.codes();
        for i in 0..5 {
            let reaches_output = kind != ComposerKind::Concat || i * 6 < 9;
            for c in 0..k as i64 {
                let used = reaches_output
                    && [3usize, 0, 149]
                        .iter()
                        .any(|&r| i64::from(codes.row(r)[i]) == c);
                let norm = grad.get(i as i64).get(c).norm().double_value(&[]);
                assert_eq!(norm > 0.0, used, "{kind:?} codebook {i} code {c}");
            }
        }
        // Split's group 0 is one column wide: the second value of its code vectors is padding,
        // which must not reach the output, so fine-tuning keeps it zero.
        if kind == ComposerKind::Split {
            let padding = grad.select(0, 0).select(1, 1).abs().sum(Kind::Float);
            assert_eq!(padding.double_value(&[]), 0.0);
            assert!(grad.select(0, 1).abs().sum(Kind::Float).double_value(&[]) > 0.0);
        }
        for (name, var) in vs.variables() {
            assert!(
                var.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0,
                "{kind:?}: {name} got no gradient"
            );
        }
    }
}

#[test]
fn training_changes_weights_and_to_composer_decodes_them() {
    let dir = tempfile::tempdir().unwrap();
    let kdz = open(dir.path(), ComposerKind::Mlp, 300);
    let vs = nn::VarStore::new(Device::Cpu);
    let emb = KdEmbedding::new(&vs.root(), &kdz);
    let mut opt = nn::Adam::default().build(&vs, 1e-2).unwrap();
    let rows = Tensor::arange(150, (Kind::Int64, Device::Cpu));
    let target = Tensor::zeros([150, 9], (Kind::Float, Device::Cpu));
    let loss = |e: &KdEmbedding| e.forward(&rows).mse_loss(&target, tch::Reduction::Mean);
    let first = loss(&emb).double_value(&[]);
    for _ in 0..50 {
        opt.backward_step(&loss(&emb));
    }
    let last = loss(&emb).double_value(&[]);
    assert!(last < first * 0.5, "loss {first} -> {last}");
    let composer = emb.to_composer().unwrap();
    let codes = kdz.codes();
    let mut decoded = vec![0f32; 150 * 9];
    composer.decode_batch(codes.as_slice(), &mut decoded);
    let tuned = Vec::<f32>::try_from(&emb.forward(&rows).reshape([-1])).unwrap();
    let worst = format_support::largest_difference(&decoded, &tuned);
    assert!(worst < 1e-5, "{worst}");
}

#[test]
fn bad_indices_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let kdz = open(dir.path(), ComposerKind::Linear, 16);
    let vs = nn::VarStore::new(Device::Cpu);
    let emb = KdEmbedding::new(&vs.root(), &kdz);
    let err = emb
        .f_forward(&Tensor::from_slice(&[0i64, 150]))
        .unwrap_err();
    assert!(
        err.to_string().contains("index 150 is outside 0..150"),
        "{err}"
    );
    let err = emb.f_forward(&Tensor::from_slice(&[-1i64])).unwrap_err();
    assert!(err.to_string().contains("index -1"), "{err}");
    let err = emb.f_forward(&Tensor::from_slice(&[1.0f32])).unwrap_err();
    assert!(err.to_string().contains("must be integers"), "{err}");
    // Any index shape, including empty.
    let y = emb
        .f_forward(&Tensor::from_slice(&[1i64, 2, 3, 4, 5, 6]).reshape([2, 3]))
        .unwrap();
    assert_eq!(y.size(), [2, 3, 9]);
    let y = emb
        .f_forward(&Tensor::zeros([0], (Kind::Int64, Device::Cpu)))
        .unwrap();
    assert_eq!(y.size(), [0, 9]);
}
