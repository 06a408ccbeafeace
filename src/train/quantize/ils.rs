//! Iterated local search over additive codes, the encoder of LSQ++ (Martinez et al., ECCV 2018;
//! faiss's `LocalSearchQuantizer`): ICM on the expanded squared error, then trials that change a
//! few random positions and run ICM again, each word keeping the best codes any trial found.
//!
//! With `u[i][c] = ||T_i[c]||² - 2 x·T_i[c]` and `p[i][j][c][c'] = 2 T_i[c]·T_j[c']`, the error
//! of codes `c` is `||x||² + Σ_i u[i][c_i] + Σ_{i<j} p[i][j][c_i][c_j]`. Each word keeps, for
//! every position i, the cost of each code there given the others,
//! `a[i][c] = u[i][c] + Σ_{j≠i} p[i][j][c][c_j]`: an ICM step is an argmin over K numbers, and a
//! changed code updates the D·K costs of the other positions. So a sweep costs D·K operations
//! however wide the vectors are, where the direct form ([`super::lsq::icm`]) costs D·K·d.

use std::sync::Arc;

use tch::{Device, Kind, Tensor};

use super::flat_cpu;
use crate::eval::SplitMix64;

/// Largest pairwise table, in terms (128 MiB as half floats): `(D·K)²`. K=256 with D up to 32
/// fits.
pub const MAX_PAIR_FLOATS: i64 = 1 << 26;

/// Most ICM sweeps after the start and after each perturbation (faiss's `icm_iters`); a sweep
/// that changes no code ends them early.
pub const SWEEPS: usize = 4;

/// The terms shared by every word: the flattened tables, their squared norms and the pairwise
/// products, laid out as `pair[((j·K + c_j)·D + i)·K + c_i] = 2 T_i[c_i]·T_j[c_j]` (the Gram
/// matrix of the table rows as it is): the K costs a code at position j adds to position i are
/// contiguous, and so are those it adds to every position, which a changed code reads. With the
/// layout `[i][j][c_j][c_i]` those D rows lay K²·4 bytes apart, each a fresh miss once the table
/// outgrows the caches (105 MB at K=256 D=20): GloVe 20k, K=256 D=20, 6 lsq rounds took 13.6 s
/// there and 10.0 s with this layout, for the same codes.
///
/// The searches stream these rows from memory (a changed code at D=20 reads 19 of them, twice),
/// so the pairwise terms are kept as IEEE half floats, in units of [`PairTerms::scale`] (a
/// power of two that keeps the largest term below 2^15, far from the format's limit), and the
/// unary terms come in the same units. The costs are then sums of terms rounded to 11
/// significant bits: the searches use them to choose, and the lsq search judges the codes it
/// returns by their exact error.
pub struct PairTerms {
    books: usize,
    k: usize,
    flat: Tensor,
    norms: Tensor,
    pair: Arc<Vec<u16>>,
    scale: f32,
    /// The tables `[D·K, d]` on the CPU, for exact errors.
    rows: Arc<Vec<f32>>,
}

impl PairTerms {
    /// The terms of `tables` `[D, K, d]`, or `None` when the pairwise table would exceed
    /// [`MAX_PAIR_FLOATS`].
    pub fn new(tables: &Tensor) -> Option<Self> {
        let s = tables.size();
        let (books, k, d) = (s[0], s[1], s[2]);
        if !Self::fit(books, k) {
            return None;
        }
        tch::no_grad(|| {
            let flat = tables
                .to_kind(Kind::Float)
                .reshape([books * k, d])
                .contiguous();
            let gram = flat.matmul(&flat.tr()) * 2.0;
            let largest = gram.abs().max().double_value(&[]);
            let scale = unit_for(largest)?;
            // gram[(j, c_j), (i, c_i)] is already [j][c_j][i][c_i].
            let pair = (gram / f64::from(scale))
                .to_kind(Kind::Half)
                .view(-1)
                .to_device(Device::Cpu);
            let pair = Vec::<half::f16>::try_from(pair).ok()?;
            let norms = flat.square().sum_dim_intlist(1, false, None::<Kind>);
            let rows = Vec::<f32>::try_from(flat.to_device(Device::Cpu).view(-1)).ok()?;
            Some(PairTerms {
                books: books as usize,
                k: k as usize,
                flat,
                norms,
                pair: Arc::new(pair.into_iter().map(half::f16::to_bits).collect()),
                scale,
                rows: Arc::new(rows),
            })
        })
    }

    /// Whether the pairwise terms of `books` tables of `k` codes stay within
    /// [`MAX_PAIR_FLOATS`].
    pub fn fit(books: i64, k: i64) -> bool {
        (books * k).pow(2) <= MAX_PAIR_FLOATS
    }

    /// A copy for another worker, sharing the tensors and the pairwise table.
    pub fn shallow_clone(&self) -> Self {
        PairTerms {
            books: self.books,
            k: self.k,
            flat: self.flat.shallow_clone(),
            norms: self.norms.shallow_clone(),
            pair: Arc::clone(&self.pair),
            scale: self.scale,
            rows: Arc::clone(&self.rows),
        }
    }

    /// The unit of the costs the searches add up: a power of two, so that scaling is exact.
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// Code positions D.
    pub fn books(&self) -> usize {
        self.books
    }

    /// Codes per position K.
    pub fn codes(&self) -> usize {
        self.k
    }

    /// The unary terms `‖T_i[c]‖² − 2·x·T_i[c]` of rows `target` `[B, d]`, `[B·D·K]` on the CPU,
    /// in units of [`PairTerms::scale`].
    pub fn unary(&self, target: &Tensor) -> Vec<f32> {
        tch::no_grad(|| {
            let u = (self.norms.unsqueeze(0)
                - target.to_kind(Kind::Float).matmul(&self.flat.tr()) * 2.0)
                / f64::from(self.scale);
            Vec::<f32>::try_from(u.to_device(Device::Cpu).contiguous().view(-1))
                .expect("float unary terms")
        })
    }

    /// The K costs that code `c` at position `j` adds to position `i`, as half floats (see
    /// [`widen`]).
    #[inline(always)]
    pub(super) fn row(&self, i: usize, j: usize, c: usize) -> &[u16] {
        let k = self.k;
        let at = ((j * k + c) * self.books + i) * k;
        &self.pair[at..at + k]
    }
}

/// A power of two `s` with `largest / s` at most 2^15 (and at least 2^14 unless `largest` is
/// tiny): half floats then hold every term `p / s` with 11 significant bits. `None` when
/// `largest` is not finite.
fn unit_for(largest: f64) -> Option<f32> {
    if !largest.is_finite() {
        return None;
    }
    let exponent = (largest.max(f64::MIN_POSITIVE).log2().ceil() as i32 - 15).clamp(-100, 100);
    Some(2f32.powi(exponent))
}

/// The value of IEEE half-float bits `h` (finite ones; subnormals included): the exponent and
/// fraction moved into place as an f32, then scaled by 2^112 to undo the difference between the
/// two formats' exponent biases. Integer and float operations only, so loops over rows of
/// terms become vector instructions on any x86_64 (no F16C needed).
#[inline(always)]
pub(super) fn widen(h: u16) -> f32 {
    let bits = u32::from(h);
    let magnitude = f32::from_bits((bits & 0x7fff) << 13) * f32::from_bits(0x7780_0000);
    f32::from_bits(magnitude.to_bits() | ((bits & 0x8000) << 16))
}

/// Floats of scratch per row: the unary terms and the costs.
pub fn memory_per_row(k: i64, num_codebooks: i64) -> i64 {
    3 * k * num_codebooks
}

/// New codes for rows `target` `[B, d]` starting from `codes` `[B, D]`: ICM, then `trials`
/// perturbations of `perturb` random positions each followed by ICM; a row keeps the best codes
/// seen, so its error never grows. The perturbations of a row are drawn from `seed` and the
/// row's starting codes, so they do not depend on how the rows are split into chunks.
pub fn encode(
    terms: &PairTerms,
    target: &Tensor,
    codes: &Tensor,
    trials: usize,
    perturb: usize,
    seed: u64,
) -> Tensor {
    let books = terms.books;
    let rows = target.size()[0] as usize;
    let unary = terms.unary(target);
    let x: Vec<f32> = flat_cpu(target);
    let mut all: Vec<i64> = flat_cpu(codes);
    {
        let (unary, x, all) = (&unary[..], &x[..], &mut all[..]);
        crate::vector::wide!(search_rows(
            terms: &PairTerms,
            unary: &[f32],
            x: &[f32],
            all: &mut [i64],
            trials: usize,
            perturb: usize,
            seed: u64
        ));
    }
    Tensor::from_slice(&all)
        .view([rows as i64, books as i64])
        .to_kind(codes.kind())
        .to_device(codes.device())
}

/// [`RowSearch::run`] on every row of `all` (`[rows, D]` codes, rewritten in place) with its
/// unary terms (`[rows, D, K]`) and values (`x`, `[rows, d]`). It only adds, so `_FUSED`
/// changes nothing.
#[inline(always)]
fn search_rows<const _FUSED: bool>(
    terms: &PairTerms,
    unary: &[f32],
    x: &[f32],
    all: &mut [i64],
    trials: usize,
    perturb: usize,
    seed: u64,
) {
    let (books, k) = (terms.books, terms.k);
    let d = terms.rows.len() / (books * k).max(1);
    let mut search = RowSearch::new(books, k);
    for ((row, unary), x) in all
        .chunks_exact_mut(books)
        .zip(unary.chunks_exact(books * k))
        .zip(x.chunks_exact(d))
    {
        let mut rng = SplitMix64::new(row_seed(seed, row));
        search.run(terms, unary, x, row, trials, perturb, &mut rng);
    }
}

/// A seed for one row from the run's seed and the row's codes.
fn row_seed(seed: u64, codes: &[i64]) -> u64 {
    let mut h = SplitMix64::new(seed);
    let mut acc = h.next_u64();
    for &c in codes {
        acc = SplitMix64::new(acc ^ (c as u64)).next_u64();
    }
    acc
}

/// One row's scratch: its codes and costs, and the best seen.
struct RowSearch {
    books: usize,
    k: usize,
    codes: Vec<usize>,
    cost: Vec<f32>,
    best_codes: Vec<usize>,
    best_cost: Vec<f32>,
}

impl RowSearch {
    fn new(books: usize, k: usize) -> Self {
        RowSearch {
            books,
            k,
            codes: vec![0; books],
            cost: vec![0.0; books * k],
            best_codes: vec![0; books],
            best_cost: vec![0.0; books * k],
        }
    }

    /// Searches from `row`'s codes and writes the best found back into it.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn run(
        &mut self,
        terms: &PairTerms,
        unary: &[f32],
        x: &[f32],
        row: &mut [i64],
        trials: usize,
        perturb: usize,
        rng: &mut SplitMix64,
    ) {
        let (books, k) = (self.books, self.k);
        for (c, r) in self.codes.iter_mut().zip(in_range(row, k)) {
            *c = r;
        }
        self.cost.copy_from_slice(unary);
        // Position j's code adds one contiguous block of rows, one per position i.
        for j in 0..books {
            for i in 0..books {
                if i != j {
                    let add = terms.row(i, j, self.codes[j]);
                    for (a, &p) in self.cost[i * k..(i + 1) * k].iter_mut().zip(add) {
                        *a += widen(p);
                    }
                }
            }
        }
        let start = self.objective(unary);
        self.icm(terms);
        let mut best = self.objective(unary);
        self.best_codes.copy_from_slice(&self.codes);
        self.best_cost.copy_from_slice(&self.cost);
        for _ in 0..trials {
            for _ in 0..perturb {
                let i = rng.below(books as u64) as usize;
                let c = rng.below(k as u64) as usize;
                self.set(terms, i, c);
            }
            self.icm(terms);
            let value = self.objective(unary);
            if value < best {
                best = value;
                self.best_codes.copy_from_slice(&self.codes);
                self.best_cost.copy_from_slice(&self.cost);
            } else {
                self.codes.copy_from_slice(&self.best_codes);
                self.cost.copy_from_slice(&self.best_cost);
            }
        }
        // The costs add rounded terms: codes they rank better replace the row's only if their
        // exact error is lower.
        if best < start
            && self
                .best_codes
                .iter()
                .zip(row.iter())
                .any(|(&b, &r)| b as i64 != r)
            && error_of(terms, x, self.best_codes.iter().copied())
                < error_of(terms, x, in_range(row, k))
        {
            for (r, &c) in row.iter_mut().zip(&self.best_codes) {
                *r = c as i64;
            }
        }
    }

    /// The error less `||x||²`: `Σ_i u[i][c_i] + Σ_{i<j} p` = `½ Σ_i (u[i][c_i] + a[i][c_i])`.
    #[inline(always)]
    fn objective(&self, unary: &[f32]) -> f64 {
        let k = self.k;
        self.codes
            .iter()
            .enumerate()
            .map(|(i, &c)| 0.5 * (f64::from(unary[i * k + c]) + f64::from(self.cost[i * k + c])))
            .sum()
    }

    /// Sets position `i` to code `c`, updating the other positions' costs.
    #[inline(always)]
    fn set(&mut self, terms: &PairTerms, i: usize, c: usize) {
        let (books, k) = (self.books, self.k);
        let old = self.codes[i];
        if old == c {
            return;
        }
        for j in (0..books).filter(|&j| j != i) {
            let (sub, add) = (terms.row(j, i, old), terms.row(j, i, c));
            for ((a, &s), &p) in self.cost[j * k..(j + 1) * k].iter_mut().zip(sub).zip(add) {
                *a += widen(p) - widen(s);
            }
        }
        self.codes[i] = c;
    }

    /// ICM sweeps until one changes nothing (at most [`SWEEPS`]).
    #[inline(always)]
    fn icm(&mut self, terms: &PairTerms) {
        let k = self.k;
        for _ in 0..SWEEPS {
            let mut changed = false;
            for i in 0..self.books {
                let best = argmin_from(&self.cost[i * k..(i + 1) * k], self.codes[i]);
                if best != self.codes[i] {
                    self.set(terms, i, best);
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
    }
}

/// Per row of `target` `[B, d]`, whichever of the codes `a` and `b` (`[B, D]`) decodes closer
/// under the terms' tables, by the exact error; `a` unless `b` is strictly closer. Returns the
/// codes and how many rows took `b`'s.
pub fn closer_of(terms: &PairTerms, target: &Tensor, a: &Tensor, b: &Tensor) -> (Tensor, usize) {
    let (books, k) = (terms.books, terms.k);
    let d = terms.rows.len() / (books * k).max(1);
    let x: Vec<f32> = flat_cpu(target);
    let (mut out, other): (Vec<i64>, Vec<i64>) = (flat_cpu(a), flat_cpu(b));
    let mut taken = 0;
    for ((ra, rb), x) in out
        .chunks_exact_mut(books)
        .zip(other.chunks_exact(books))
        .zip(x.chunks_exact(d))
    {
        if ra != rb && error_of(terms, x, in_range(rb, k)) < error_of(terms, x, in_range(ra, k)) {
            ra.copy_from_slice(rb);
            taken += 1;
        }
    }
    let codes = Tensor::from_slice(&out)
        .view([a.size()[0], books as i64])
        .to_kind(a.kind())
        .to_device(a.device());
    (codes, taken)
}

/// `row`'s codes as the searches read them: clamped to `0..k`.
fn in_range(row: &[i64], k: usize) -> impl Iterator<Item = usize> + '_ {
    row.iter().map(move |&r| (r.max(0) as usize).min(k - 1))
}

/// The squared error of `codes` for the row `x`, in f64: `‖x − Σ_i T_i[c_i]‖²`.
#[inline(always)]
fn error_of(terms: &PairTerms, x: &[f32], codes: impl Iterator<Item = usize>) -> f64 {
    let (k, d) = (terms.k, x.len());
    let mut residual: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    for (i, c) in codes.enumerate() {
        let at = (i * k + c) * d;
        for (r, &t) in residual.iter_mut().zip(&terms.rows[at..at + d]) {
            *r -= f64::from(t);
        }
    }
    residual.iter().map(|r| r * r).sum()
}

/// The first index of the smallest of `costs`, or `current` when nothing is smaller than the
/// cost there (what a scan replacing `current` only by a strictly smaller cost returns). The
/// minimum is found eight lanes at a time, which the compiler turns into vector instructions.
#[inline(always)]
fn argmin_from(costs: &[f32], current: usize) -> usize {
    let mut lanes = [f32::INFINITY; 8];
    let mut blocks = costs.chunks_exact(8);
    for block in &mut blocks {
        for (m, &v) in lanes.iter_mut().zip(block) {
            *m = if v < *m { v } else { *m };
        }
    }
    let mut low = blocks
        .remainder()
        .iter()
        .fold(f32::INFINITY, |m, &v| if v < m { v } else { m });
    for m in lanes {
        low = if m < low { m } else { low };
    }
    if costs[current].is_nan() || costs[current] <= low {
        return current;
    }
    costs.iter().position(|&v| v == low).unwrap_or(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::quantize::additive::{additive_decode, row_errors};
    use crate::train::quantize::lsq;
    use crate::train::rng::Rng;

    #[test]
    fn closer_of_takes_the_second_codes_only_where_they_decode_strictly_closer() {
        let mut rng = Rng::new(8);
        let (books, k, d, n) = (3, 16, 10, 200);
        let tables = rng.normal_of(&[books, k, d], 1.0);
        let terms = PairTerms::new(&tables).unwrap();
        let x = rng.normal_of(&[n, d], 2.0);
        let (a, b) = (
            rng.integers(k as usize, &[n, books]),
            rng.integers(k as usize, &[n, books]),
        );
        let (got, taken) = closer_of(&terms, &x, &a, &b);
        let (ea, eb, eg) = (
            row_errors(&x, &tables, &a),
            row_errors(&x, &tables, &b),
            row_errors(&x, &tables, &got),
        );
        let mut expected = 0;
        for r in 0..n as usize {
            assert!((eg[r] - ea[r].min(eb[r])).abs() < 1e-3, "row {r}");
            expected += usize::from(eb[r] < ea[r] - 1e-3);
        }
        assert!(
            taken >= expected && taken > n as usize / 4,
            "{taken} vs {expected}"
        );
        // Against itself nothing is taken.
        assert_eq!(closer_of(&terms, &x, &a, &a).1, 0);
    }

    #[test]
    fn icm_in_pairwise_form_equals_the_direct_icm_and_search_never_worsens_a_row() {
        let mut rng = Rng::new(3);
        let (books, k, d, n) = (4, 16, 24, 300);
        let tables = rng.normal_of(&[books, k, d], 1.0);
        let x = rng.normal_of(&[n, d], 2.0);
        let codes = rng.integers(k as usize, &[n, books]);
        let terms = PairTerms::new(&tables).unwrap();
        // Without trials the search is ICM: the same codes as the direct form after as many
        // sweeps (a sweep that changes nothing changes nothing after it; ties aside, which random
        // tables do not have).
        let direct = lsq::icm(&x, &codes, &tables, SWEEPS);
        let pairwise = encode(&terms, &x, &codes, 0, 0, 1);
        let same = direct.eq_tensor(&pairwise).all().int64_value(&[]);
        let (ed, ep) = (
            row_errors(&x, &tables, &direct),
            row_errors(&x, &tables, &pairwise),
        );
        assert!(
            same == 1 || ed.iter().zip(&ep).all(|(a, b)| (a - b).abs() < 1e-3),
            "pairwise ICM differs from the direct one on {} rows",
            direct
                .ne_tensor(&pairwise)
                .any_dim(1, false)
                .sum(Kind::Int64)
                .int64_value(&[])
        );
        // Trials never make a row worse than ICM alone, and find lower errors overall.
        let searched = encode(&terms, &x, &codes, 16, 2, 1);
        let es = row_errors(&x, &tables, &searched);
        let start = row_errors(&x, &tables, &codes);
        for r in 0..n as usize {
            assert!(
                es[r] <= start[r] + 1e-3,
                "row {r}: {} > {}",
                es[r],
                start[r]
            );
        }
        let (sum_p, sum_s): (f64, f64) = (ep.iter().sum(), es.iter().sum());
        assert!(
            sum_s < 0.99 * sum_p,
            "trials found nothing: {sum_s} vs ICM {sum_p}"
        );
        // Seeded by the row's codes: the same rows give the same codes in any chunking.
        let halves = Tensor::cat(
            &[
                encode(
                    &terms,
                    &x.narrow(0, 0, 100),
                    &codes.narrow(0, 0, 100),
                    16,
                    2,
                    1,
                ),
                encode(
                    &terms,
                    &x.narrow(0, 100, 200),
                    &codes.narrow(0, 100, 200),
                    16,
                    2,
                    1,
                ),
            ],
            0,
        );
        assert!(halves.equal(&searched));
    }

    #[test]
    fn widen_reads_every_finite_half_float_exactly() {
        for bits in 0..=u16::MAX {
            let h = half::f16::from_bits(bits);
            if h.is_finite() {
                assert_eq!(widen(bits).to_bits(), h.to_f32().to_bits(), "{bits:#06x}");
            }
        }
    }

    #[test]
    fn the_unit_keeps_the_largest_term_between_2_14_and_2_15() {
        // Tiny terms (all tables near zero) get the smallest unit, 2^-100.
        assert_eq!(unit_for(1e-30), Some(2f32.powi(-100)));
        for largest in [3e-7, 0.5, 1.0, 3.0, 1000.0, 65504.0, 1e12] {
            let s = f64::from(unit_for(largest).unwrap());
            assert_eq!(s.log2().fract(), 0.0, "{s} is a power of two");
            let scaled = largest / s;
            assert!((16384.0..=32768.0).contains(&scaled), "{largest}: {scaled}");
        }
        assert_eq!(unit_for(f64::NAN), None);
        assert_eq!(unit_for(f64::INFINITY), None);
        // Tables too large for half floats unscaled still get every term finite.
        let mut rng = Rng::new(6);
        let tables = rng.normal_of(&[3, 8, 5], 1.0) * 1e4;
        let terms = PairTerms::new(&tables).unwrap();
        assert!(
            terms
                .pair
                .iter()
                .all(|&h| half::f16::from_bits(h).is_finite())
        );
        let x = rng.normal_of(&[20, 5], 1e4);
        let codes = encode(&terms, &x, &rng.integers(8, &[20, 3]), 4, 1, 3);
        let start = row_errors(&x, &tables, &codes);
        let again = encode(&terms, &x, &codes, 4, 1, 3);
        let after = row_errors(&x, &tables, &again);
        for (a, b) in after.iter().zip(&start) {
            assert!(a <= &(b * (1.0 + 1e-6)), "{a} > {b}");
        }
    }

    #[test]
    fn argmin_keeps_the_current_code_on_ties_and_else_takes_the_first_minimum() {
        let mut rng = Rng::new(4);
        for len in [1usize, 7, 8, 9, 32, 257] {
            for _ in 0..50 {
                // Few distinct values, so that ties are common.
                let costs: Vec<f32> = (0..len).map(|_| rng.below(4) as f32).collect();
                let current = rng.below(len);
                let mut scan = current;
                for (c, &v) in costs.iter().enumerate() {
                    if v < costs[scan] {
                        scan = c;
                    }
                }
                assert_eq!(
                    argmin_from(&costs, current),
                    scan,
                    "{costs:?} from {current}"
                );
            }
        }
    }

    #[test]
    fn search_finds_the_exact_codes_of_rows_made_from_the_tables() {
        // Rows that are exact sums of table entries have error 0 at their own codes; ICM from
        // random codes gets stuck on some, the perturbed search finds most of them.
        let mut rng = Rng::new(9);
        let (books, k, d, n) = (4, 8, 16, 200);
        let tables = rng.normal_of(&[books, k, d], 1.0);
        let truth = rng.integers(k as usize, &[n, books]);
        let x = additive_decode(&tables, &truth);
        let start = rng.integers(k as usize, &[n, books]);
        let terms = PairTerms::new(&tables).unwrap();
        let exact = |c: &Tensor| {
            row_errors(&x, &tables, c)
                .iter()
                .filter(|&&e| e < 1e-4)
                .count()
        };
        let icm_only = exact(&encode(&terms, &x, &start, 0, 0, 5));
        let searched = exact(&encode(&terms, &x, &start, 32, 2, 5));
        assert!(
            searched >= 190,
            "search found {searched} of {n} (ICM alone {icm_only})"
        );
        assert!(searched > icm_only, "search {searched} vs ICM {icm_only}");
    }
}
