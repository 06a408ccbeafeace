//! Least-squares quantization: with codes fixed, the best additive tables solve a linear
//! least-squares problem; with tables fixed, iterated conditional modes (ICM) re-encode a word
//! one position at a time.

use tch::{Device, Kind, Tensor};

use super::additive::{additive_decode, chunk, chunk_rows, offsets};

/// Largest D·K solved jointly (a 4096² f64 system is 128 MiB).
pub const JOINT_LIMIT: i64 = 4096;

/// Floats of scratch per row for ICM over tables of `k` codes of width `d`: the K distances of
/// one position, the residual and the gathered entries.
pub fn icm_memory_per_row(k: i64, d: i64) -> i64 {
    k * 4 + d * 4
}

/// One pass of iterated conditional modes per sweep: each position in turn takes the code that
/// best fits what the other positions leave, so the error never grows. `target` `[B, d]`,
/// `codes` `[B, D]`; returns the new codes.
pub fn icm(target: &Tensor, codes: &Tensor, tables: &Tensor, sweeps: usize) -> Tensor {
    let positions = tables.size()[0];
    let norms = tables.square().sum_dim_intlist(2, false, None::<Kind>);
    // A fresh copy: the columns are overwritten in place below.
    let codes = codes.to_kind(Kind::Int64).copy();
    let mut residual = target - additive_decode(tables, &codes);
    for _ in 0..sweeps {
        for i in 0..positions {
            let t = tables.get(i);
            let mut col = codes.select(1, i);
            residual += t.index_select(0, &col);
            let best =
                (norms.get(i).unsqueeze(0) - residual.matmul(&t.tr()) * 2.0).argmin(1, false);
            residual -= t.index_select(0, &best);
            col.copy_(&best);
        }
    }
    codes
}

/// Least-squares tables for fixed codes: minimises `Σ_rows ||x - Σ_i T[i, c_i]||² + ridge ||T||²`
/// jointly over all tables, counting only the rows where `rows` (a Bool mask) is true. Solves
/// the `DK × DK` normal equations when D·K is at most [`JOINT_LIMIT`], else updates one table at
/// a time (each the exact least-squares fit given the others). `ridge` is relative to the mean
/// number of rows per code.
pub fn fit_tables(
    x: &Tensor,
    codes: &Tensor,
    rows: Option<&Tensor>,
    old: &Tensor,
    ridge: f64,
) -> Tensor {
    let s = old.size();
    let (num_codebooks, k, d) = (s[0], s[1], s[2]);
    if num_codebooks * k <= JOINT_LIMIT {
        let mut normal = NormalEquations::new(num_codebooks, k, d, x.device());
        let n = x.size()[0];
        let step = NormalEquations::chunk_rows(num_codebooks);
        for st in (0..n).step_by(step as usize) {
            let len = step.min(n - st);
            let (xc, cc, _) = chunk(x, codes, None, rows, st, len);
            normal.add(&xc, &cc, None);
        }
        if let Some(t) = normal.solve(ridge) {
            return t;
        }
    }
    fit_blockwise(x, codes, rows, old)
}

/// The normal equations of the joint least-squares fit, accumulated over chunks of rows: the
/// co-occurrence counts of codes (`AᵀA` for the one-hot design `A`) and the sums of the rows
/// that use each code (`AᵀX`).
#[derive(Debug)]
pub struct NormalEquations {
    gram: Tensor,
    xt: Tensor,
    rows: i64,
    /// D, K, d.
    shape: (i64, i64, i64),
}

impl NormalEquations {
    /// Empty equations for `num_codebooks` tables of `k` codes of width `d`.
    pub fn new(num_codebooks: i64, k: i64, d: i64, device: Device) -> Self {
        let dk = num_codebooks * k;
        NormalEquations {
            // Sums of the rows' weights (counts when unweighted: f32 holds them exactly up to
            // 2^24 rows per pair of codes).
            gram: Tensor::zeros([dk * dk], (Kind::Float, device)),
            xt: Tensor::zeros([dk, d], (Kind::Float, device)),
            rows: 0,
            shape: (num_codebooks, k, d),
        }
    }

    /// Floats of scratch per added row: its D² code pairs as Int64.
    pub fn memory_per_row(num_codebooks: i64) -> i64 {
        num_codebooks * num_codebooks * 8
    }

    /// Rows to add at a time for `num_codebooks` tables.
    pub fn chunk_rows(num_codebooks: i64) -> i64 {
        chunk_rows(Self::memory_per_row(num_codebooks))
    }

    /// Adds rows `x` `[B, d]` with codes `[B, D]` (Int64), each counted with its weight
    /// (`[B]`; all 1 when `None`).
    pub fn add(&mut self, x: &Tensor, codes: &Tensor, weights: Option<&Tensor>) {
        let (num_codebooks, k, d) = self.shape;
        let dk = num_codebooks * k;
        let len = x.size()[0];
        let idx = codes + offsets(num_codebooks, k, x.device());
        // Counting pairs of flattened code indices builds AᵀA without the N × DK matrix A.
        let pairs = (idx.unsqueeze(2) * dk + idx.unsqueeze(1)).view(-1);
        // Counted in place (`bincount` would make a fresh D²K² table per chunk only to add it
        // here); unweighted, the ones are one value seen through a zero stride.
        let per_pair = match weights {
            Some(w) => w
                .unsqueeze(1)
                .expand([len, num_codebooks * num_codebooks], false)
                .reshape([-1]),
            None => Tensor::ones([1], (Kind::Float, x.device())).expand([pairs.size()[0]], false),
        };
        let _ = self.gram.index_add_(0, &pairs, &per_pair);
        drop((pairs, per_pair));
        let weighted = weights.map(|w| x * w.unsqueeze(1));
        let xs = weighted
            .as_ref()
            .unwrap_or(x)
            .unsqueeze(1)
            .expand([len, num_codebooks, d], false)
            .reshape([-1, d]);
        let _ = self.xt.index_add_(0, &idx.view(-1), &xs);
        self.rows += len;
    }

    /// Adds another accumulation of the same shape.
    pub fn merge(&mut self, other: &NormalEquations) {
        self.gram += &other.gram;
        self.xt += &other.xt;
        self.rows += other.rows;
    }

    /// Solves `(AᵀA + λI) T = AᵀX` by Cholesky in f64, `λ = ridge · rows / K`; `None` if it fails
    /// or gives non-finite values. A code no row uses gets the zero vector.
    pub fn solve(&self, ridge: f64) -> Option<Tensor> {
        let (num_codebooks, k, d) = self.shape;
        let dk = num_codebooks * k;
        let lambda = ridge * (self.rows as f64 / k as f64).max(1.0);
        // In place where LibTorch allows: each copy of the system is (D·K)² f64.
        let l = {
            let a = self.gram.view([dk, dk]).to_kind(Kind::Double);
            let _ = a.diagonal(0, 0, 1).g_add_scalar_(lambda);
            a.f_linalg_cholesky(false).ok()?
        };
        let sol = self
            .xt
            .to_kind(Kind::Double)
            .f_cholesky_solve(&l, false)
            .ok()?;
        let finite = sol.isfinite().all().int64_value(&[]) == 1;
        finite.then(|| sol.to_kind(Kind::Float).view([num_codebooks, k, d]))
    }
}

/// Least-squares tables one at a time, each the exact fit given the others (no ridge; a code
/// no selected row uses keeps its old vector). For D·K too large to solve jointly.
pub fn fit_blockwise(x: &Tensor, codes: &Tensor, rows: Option<&Tensor>, old: &Tensor) -> Tensor {
    let s = old.size();
    let (num_codebooks, k, d) = (s[0], s[1], s[2]);
    let mut tables = old.copy();
    let n = x.size()[0];
    let step = chunk_rows(num_codebooks * d);
    for i in 0..num_codebooks {
        let mut sums = Tensor::zeros([k, d], (Kind::Float, x.device()));
        let mut counts = Tensor::zeros([k], (Kind::Int64, x.device()));
        for st in (0..n).step_by(step as usize) {
            let (xc, c, _) = chunk(x, codes, None, rows, st, step.min(n - st));
            let ci = c.select(1, i);
            let rest = xc - additive_decode(&tables, &c) + tables.get(i).index_select(0, &ci);
            sums = sums.index_add(0, &ci, &rest);
            counts += ci.bincount::<Tensor>(None, k);
        }
        let used = counts.gt(0).unsqueeze(1);
        let mean = sums / counts.clamp_min(1).unsqueeze(1).to_kind(Kind::Float);
        let new = mean.where_self(&used, &tables.get(i));
        tables = tables.index_copy(
            0,
            &Tensor::from_slice(&[i]).to_device(x.device()),
            &new.unsqueeze(0),
        );
    }
    tables
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::rng::Rng;

    #[test]
    fn icm_never_increases_error_and_lsq_beats_any_other_tables() {
        let mut rng = Rng::new(3);
        let x = rng.normal_of(&[400, 5], 1.0);
        let tables = rng.normal_of(&[3, 4, 5], 0.5);
        let codes = rng.integers(4, &[400, 3]);
        let err = |t: &Tensor, c: &Tensor| {
            (additive_decode(t, c) - &x)
                .square()
                .sum(Kind::Float)
                .double_value(&[])
        };
        let before = err(&tables, &codes);
        let after_icm = icm(&x, &codes, &tables, 2);
        assert!(err(&tables, &after_icm) <= before + 1e-4);
        let fitted = fit_tables(&x, &after_icm, None, &tables, 1e-9);
        let best = err(&fitted, &after_icm);
        assert!(best <= err(&tables, &after_icm) + 1e-3);
        // A perturbed solution is never better.
        let nudged = &fitted + rng.normal_of(&[3, 4, 5], 0.01);
        assert!(best <= err(&nudged, &after_icm) + 1e-3);
        // The blockwise fallback lands close to the joint optimum.
        let mut bw = tables.copy();
        for _ in 0..50 {
            bw = fit_blockwise(&x, &after_icm, None, &bw);
        }
        assert!(
            err(&bw, &after_icm) <= best * 1.01 + 1e-3,
            "{} vs {best}",
            err(&bw, &after_icm)
        );
    }
}
