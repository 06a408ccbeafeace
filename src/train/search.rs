//! Additive quantization without gradients: residual k-means tables, beam-search encoding,
//! least-squares table fitting with codes fixed, and re-encoding by iterated conditional modes.
//!
//! Here a word is approximated by `Σ_i T[i, c_i]` for tables `T` `[D, K, d]`. Everything works
//! on chunks of rows so that no N×D×K or N×D×d tensor ever exists.

use tch::{Device, Kind, Tensor};

use super::rng::Rng;

/// Floats a chunk's largest temporary may hold (8 MiB): small enough that the allocator reuses
/// the memory from chunk to chunk (see `limit_heap_growth`) instead of mapping and zeroing fresh
/// pages each time, large enough that per-operation overhead stays small.
const CHUNK_FLOATS: i64 = 1 << 21;

/// Rows per chunk when each row needs `per_row` floats of scratch (at least 1, at most 65,536).
pub fn chunk_rows(per_row: i64) -> i64 {
    (CHUNK_FLOATS / per_row.max(1)).clamp(1, 65_536)
}

/// Index offsets `i * K` that turn position-local codes into rows of the flattened tables.
pub fn offsets(num_codebooks: i64, num_codes: i64, device: Device) -> Tensor {
    Tensor::arange_start_step(
        0,
        num_codebooks * num_codes,
        num_codes,
        (Kind::Int64, device),
    )
}

/// The sum of each row's table entries, `[B, d]`, for codes `[B, D]`.
///
/// Adds one position at a time, so that nothing larger than `[B, d]` is made: gathering all
/// D entries first (`[B, D, d]`) and summing was 41 MB per chunk of the least-squares rounds at
/// D=32, a peak of ~80 MB with two workers.
pub fn additive_decode(tables: &Tensor, codes: &Tensor) -> Tensor {
    let codes = codes.to_kind(Kind::Int64);
    let entry = |i: i64| tables.get(i).index_select(0, &codes.select(1, i));
    let mut sum = entry(0);
    for i in 1..tables.size()[0] {
        sum += entry(i);
    }
    sum
}

/// Nearest centroid of each point, chunked: `[m]` Int64.
pub fn assign(points: &Tensor, centroids: &Tensor) -> Tensor {
    let k = centroids.size()[0];
    let norms = centroids.square().sum_dim_intlist(1, false, None::<Kind>);
    let m = points.size()[0];
    let step = chunk_rows(k);
    let parts: Vec<Tensor> = (0..m)
        .step_by(step as usize)
        .map(|s| {
            let p = points.narrow(0, s, step.min(m - s));
            (norms.unsqueeze(0) - p.matmul(&centroids.tr()) * 2.0).argmin(1, false)
        })
        .collect();
    Tensor::cat(&parts, 0)
}

/// Lloyd's k-means with k-means++ seeding from `rng`. Empty clusters take the points farthest
/// from their centroids, so all `k` stay in use when possible.
pub fn kmeans(points: &Tensor, k: i64, iterations: usize, rng: &mut Rng) -> Tensor {
    let m = points.size()[0];
    let mut chosen = vec![rng.below(m as usize) as i64];
    let dist_to = |i: i64| {
        (points - points.get(i).unsqueeze(0))
            .square()
            .sum_dim_intlist(1, false, None::<Kind>)
    };
    let mut d2 = dist_to(chosen[0]);
    for _ in 1..k {
        let weights = Vec::<f32>::try_from(d2.to_device(Device::Cpu)).unwrap_or_default();
        let next = rng.weighted(&weights) as i64;
        d2 = d2.minimum(&dist_to(next));
        chosen.push(next);
    }
    let chosen = Tensor::from_slice(&chosen).to_device(points.device());
    let mut centroids = points.index_select(0, &chosen);
    for _ in 0..iterations {
        let a = assign(points, &centroids);
        let sums = centroids.zeros_like().index_add(0, &a, points);
        let counts = a.bincount::<Tensor>(None, k).to_kind(Kind::Float);
        let used = counts.gt(0.0).unsqueeze(1);
        let mean = &sums / counts.clamp_min(1.0).unsqueeze(1);
        centroids = mean.where_self(&used, &centroids);
        let empty = k - used.sum(Kind::Int64).int64_value(&[]);
        if empty > 0 {
            // Reseed empty clusters with the worst-served points.
            let err = (points - centroids.index_select(0, &a))
                .square()
                .sum_dim_intlist(1, false, None::<Kind>);
            let (_, far) = err.topk(empty.min(m), 0, true, true);
            let holes = used.squeeze_dim(1).logical_not().nonzero().squeeze_dim(1);
            let n = holes.size()[0].min(far.size()[0]);
            centroids = centroids.index_copy(
                0,
                &holes.narrow(0, 0, n),
                &points.index_select(0, &far.narrow(0, 0, n)),
            );
        }
    }
    centroids
}

/// Residual k-means tables `[D, K, d]` learned on `sample` (rows of word vectors), the way a
/// residual quantizer with beam search trains: table i is k-means of what the `beam` best
/// partial encodings of each sample row (with tables 0..i) leave unexplained.
pub fn residual_kmeans(
    sample: &Tensor,
    num_codebooks: i64,
    num_codes: i64,
    iterations: usize,
    beam: i64,
    rng: &mut Rng,
) -> Tensor {
    let (m, d) = (sample.size()[0], sample.size()[1]);
    let mut state = Beam::start(sample);
    let mut tables = Vec::with_capacity(num_codebooks as usize);
    for _ in 0..num_codebooks {
        let table = kmeans(&state.residual.reshape([-1, d]), num_codes, iterations, rng);
        let norms = table.square().sum_dim_intlist(1, false, None::<Kind>);
        state.extend(&table, &norms, beam);
        tables.push(table);
    }
    debug_assert_eq!(state.residual.size()[0], m);
    Tensor::stack(&tables, 0)
}

/// The state of a beam search over positions: the `w` best partial encodings of each row.
struct Beam {
    /// What each partial encoding leaves unexplained, `[B, w, d]`.
    residual: Tensor,
    /// Squared norm of `residual` minus that of the row, `[B, w]` (only differences matter).
    dist: Tensor,
    /// Per extended position: which earlier entry each entry extends, and its code, `[B, w]`.
    from: Vec<Tensor>,
    code: Vec<Tensor>,
}

impl Beam {
    fn start(x: &Tensor) -> Self {
        let b = x.size()[0];
        Beam {
            residual: x.unsqueeze(1),
            dist: Tensor::zeros([b, 1], (Kind::Float, x.device())),
            from: Vec::new(),
            code: Vec::new(),
        }
    }

    /// Extends every entry by every code of `table` (`[K, d]`, squared norms `norms`) and keeps
    /// the `beam` best.
    fn extend(&mut self, table: &Tensor, norms: &Tensor, beam: i64) {
        let s = self.residual.size();
        let (b, width, d) = (s[0], s[1], s[2]);
        let k = table.size()[0];
        let cand = self.dist.unsqueeze(2) - self.residual.matmul(&table.tr()) * 2.0
            + norms.view([1, 1, k]);
        let keep = beam.min(width * k);
        let (val, ix) = cand.view([b, width * k]).topk(keep, 1, false, true);
        let from = ix.divide_scalar_mode(k, "floor");
        let code = ix.remainder(k);
        self.residual =
            self.residual
                .gather(1, &from.unsqueeze(2).expand([b, keep, d], false), false)
                - table.index_select(0, &code.view(-1)).view([b, keep, d]);
        self.dist = val;
        self.from.push(from);
        self.code.push(code);
    }

    /// The codes of the best entry, `[B, D]`, traced back through `from`.
    fn best(&self) -> Tensor {
        let b = self.residual.size()[0];
        let mut at = Tensor::zeros([b, 1], (Kind::Int64, self.residual.device()));
        let mut cols = Vec::with_capacity(self.code.len());
        for (from, code) in self.from.iter().zip(&self.code).rev() {
            cols.push(code.gather(1, &at, false));
            at = from.gather(1, &at, false);
        }
        cols.reverse();
        Tensor::cat(&cols, 1)
    }
}

/// Beam search over positions 0..D in order (the residual quantizer's encoder): keeps the
/// `beam` best partial sums, extends each by every code of the next table. `x` `[B, d]`;
/// returns codes `[B, D]` Int64.
pub fn beam_encode(x: &Tensor, tables: &Tensor, beam: i64) -> Tensor {
    let norms = tables.square().sum_dim_intlist(2, false, None::<Kind>);
    let mut state = Beam::start(x);
    for i in 0..tables.size()[0] {
        state.extend(&tables.get(i), &norms.get(i), beam);
    }
    state.best()
}

/// One pass of iterated conditional modes per sweep: each position in turn takes the code that
/// best fits what the other positions leave, so the error never grows. `target` `[B, d]`,
/// `codes` `[B, D]`; returns the new codes.
pub fn icm(target: &Tensor, codes: &Tensor, tables: &Tensor, sweeps: usize) -> Tensor {
    let dd = tables.size()[0];
    let norms = tables.square().sum_dim_intlist(2, false, None::<Kind>);
    // A fresh copy: the columns are overwritten in place below.
    let codes = codes.to_kind(Kind::Int64).copy();
    let mut residual = target - additive_decode(tables, &codes);
    for _ in 0..sweeps {
        for i in 0..dd {
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
/// the `DK × DK` normal equations when that is small enough, else updates one table at a time
/// (each the exact least-squares fit given the others). `ridge` is relative to the mean number of
/// rows per code.
pub fn fit_tables(
    x: &Tensor,
    codes: &Tensor,
    rows: Option<&Tensor>,
    old: &Tensor,
    ridge: f64,
) -> Tensor {
    let s = old.size();
    let (dd, k, d) = (s[0], s[1], s[2]);
    if dd * k <= JOINT_LIMIT {
        let mut normal = Normal::new(dd, k, d, x.device());
        let n = x.size()[0];
        let step = Normal::chunk_rows(dd);
        for st in (0..n).step_by(step as usize) {
            let len = step.min(n - st);
            let (xc, cc) = chunk(x, codes, rows, st, len);
            normal.add(&xc, &cc);
        }
        if let Some(t) = normal.solve(ridge) {
            return t;
        }
    }
    fit_blockwise(x, codes, rows, old)
}

/// Largest D·K solved jointly (a 4096² f64 system is 128 MiB).
pub const JOINT_LIMIT: i64 = 4096;

/// Rows `s..s+len` of `x` and `codes` (as Int64), keeping only those selected by `rows`.
pub fn chunk(
    x: &Tensor,
    codes: &Tensor,
    rows: Option<&Tensor>,
    s: i64,
    len: i64,
) -> (Tensor, Tensor) {
    let (xc, cc) = (
        x.narrow(0, s, len),
        codes.narrow(0, s, len).to_kind(Kind::Int64),
    );
    match rows {
        Some(m) => {
            let keep = m.narrow(0, s, len).nonzero().squeeze_dim(1);
            (xc.index_select(0, &keep), cc.index_select(0, &keep))
        }
        None => (xc, cc),
    }
}

/// The normal equations of the joint least-squares fit, accumulated over chunks of rows: the
/// co-occurrence counts of codes (`AᵀA` for the one-hot design `A`) and the sums of the rows
/// that use each code (`AᵀX`).
#[derive(Debug)]
pub struct Normal {
    gram: Tensor,
    xt: Tensor,
    rows: i64,
    shape: (i64, i64, i64),
}

impl Normal {
    /// Empty equations for `dd` tables of `k` codes of width `d`.
    pub fn new(dd: i64, k: i64, d: i64, device: Device) -> Self {
        let dk = dd * k;
        Normal {
            // Counts of at most one per row: Int32 holds any vocabulary (rows are u32).
            gram: Tensor::zeros([dk * dk], (Kind::Int, device)),
            xt: Tensor::zeros([dk, d], (Kind::Float, device)),
            rows: 0,
            shape: (dd, k, d),
        }
    }

    /// Rows to add at a time for `dd` tables: each row makes `dd²` Int64 code pairs, kept to
    /// 2 MB a chunk.
    pub fn chunk_rows(dd: i64) -> i64 {
        chunk_rows(dd * dd * 8)
    }

    /// Adds rows `x` `[B, d]` with codes `[B, D]` (Int64).
    pub fn add(&mut self, x: &Tensor, codes: &Tensor) {
        let (dd, k, d) = self.shape;
        let dk = dd * k;
        let len = x.size()[0];
        let idx = codes + offsets(dd, k, x.device());
        // Counting pairs of flattened code indices builds AᵀA without the N × DK matrix A.
        let pairs = (idx.unsqueeze(2) * dk + idx.unsqueeze(1)).view(-1);
        // Counted in place: `bincount` would make a fresh D²K² table per chunk (8 MB at D=32 K=32)
        // only to add it here. The ones are one value seen through a zero stride.
        let ones = Tensor::ones([1], (Kind::Int, x.device())).expand([pairs.size()[0]], false);
        let _ = self.gram.index_add_(0, &pairs, &ones);
        drop(pairs);
        let xs = x.unsqueeze(1).expand([len, dd, d], false).reshape([-1, d]);
        let _ = self.xt.index_add_(0, &idx.view(-1), &xs);
        self.rows += len;
    }

    /// Adds another accumulation of the same shape.
    pub fn merge(&mut self, other: &Normal) {
        self.gram += &other.gram;
        self.xt += &other.xt;
        self.rows += other.rows;
    }

    /// Solves `(AᵀA + λI) T = AᵀX` by Cholesky in f64, `λ = ridge · rows / K`; `None` if it fails
    /// or gives non-finite values. A code no row uses gets the zero vector.
    pub fn solve(&self, ridge: f64) -> Option<Tensor> {
        let (dd, k, d) = self.shape;
        let dk = dd * k;
        let lambda = ridge * (self.rows as f64 / k as f64).max(1.0);
        // In place where LibTorch allows: at D·K = 1024 each copy of the system is 8 MB.
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
        finite.then(|| sol.to_kind(Kind::Float).view([dd, k, d]))
    }
}

/// Least-squares tables one at a time, each the exact fit given the others (no ridge; a code
/// no selected row uses keeps its old vector). For D·K too large to solve jointly.
pub fn fit_blockwise(x: &Tensor, codes: &Tensor, rows: Option<&Tensor>, old: &Tensor) -> Tensor {
    let s = old.size();
    let (dd, k, d) = (s[0], s[1], s[2]);
    let mut tables = old.copy();
    let n = x.size()[0];
    let step = chunk_rows(dd * d);
    for i in 0..dd {
        let mut sums = Tensor::zeros([k, d], (Kind::Float, x.device()));
        let mut counts = Tensor::zeros([k], (Kind::Int64, x.device()));
        for st in (0..n).step_by(step as usize) {
            let (xc, c) = chunk(x, codes, rows, st, step.min(n - st));
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

    #[test]
    fn kmeans_finds_separated_clusters() {
        let mut rng = Rng::new(1);
        let centres = Tensor::from_slice(&[0f32, 0., 10., 10., -10., 10.]).view([3, 2]);
        let labels = Tensor::arange(300, (Kind::Int64, Device::Cpu)).remainder(3);
        let pts = centres.index_select(0, &labels) + rng.normal_of(&[300, 2], 0.1);
        let c = kmeans(&pts, 3, 10, &mut rng);
        let a = assign(&pts, &c);
        // Same partition as the labels, up to renaming.
        for j in 0..3 {
            let mine = a.masked_select(&labels.eq(j));
            assert_eq!(mine.min().int64_value(&[]), mine.max().int64_value(&[]));
        }
    }

    #[test]
    fn beam_as_wide_as_the_search_space_finds_the_exact_codes() {
        let mut rng = Rng::new(2);
        let tables = rng.normal_of(&[4, 8, 6], 1.0);
        let codes = rng.integers(8, &[50, 4]);
        let x = additive_decode(&tables, &codes);
        // 8^3 entries cover every prefix of the first three positions: the search is exhaustive.
        let got = beam_encode(&x, &tables, 512);
        let err = (additive_decode(&tables, &got) - &x)
            .square()
            .sum(Kind::Float)
            .double_value(&[]);
        assert!(err < 1e-6, "{err}");
        // A narrower beam is never better than a wider one on the same tables.
        let e = |c: &Tensor| {
            (additive_decode(&tables, c) - &x)
                .square()
                .sum(Kind::Float)
                .double_value(&[])
        };
        assert!(e(&beam_encode(&x, &tables, 1)) >= e(&beam_encode(&x, &tables, 8)) - 1e-4);
    }

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
