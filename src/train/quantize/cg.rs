//! Joint least-squares tables by conjugate gradients, for D·K too large for the dense solve.
//!
//! With codes fixed, the best additive tables solve `(AᵀA + λI) T = AᵀX`, `A` the `N × DK`
//! one-hot design. [`super::lsq::NormalEquations`] forms `AᵀA` and factors it, `(DK)³/3`
//! operations and `(DK)²` memory: fine at K=256 D=8, not at D=20 or 32 (160 and 256 bits),
//! where the fit used to fall back to one sweep of table-by-table fits per round. Here `AᵀA` is
//! never formed: applying it is decoding every row through `P` (`AP`) and summing the decoded
//! rows back into each code's slot (`Aᵀ`), `2·N·D·d` additions, and preconditioned conjugate
//! gradients (one per output column, preconditioned by the code counts, the diagonal of `AᵀA`)
//! start from the current tables. Each slot's sum runs over a fixed list of rows in row order,
//! so the result does not depend on the number of workers.

use tch::{Device, Kind, Tensor};

/// The design of the fit: every selected row's flattened code slots and, for every slot, the
/// rows that use it (compressed sparse rows).
struct Design {
    /// `[rows · D]` slot of each row's code at each position, `i·K + c`.
    slots: Vec<u32>,
    /// `[DK + 1]` where each slot's rows start in `rows_of`.
    starts: Vec<usize>,
    /// The rows of each slot, slot after slot, in increasing order.
    rows_of: Vec<u32>,
    books: usize,
    width: usize,
    /// `[rows]` weight of each row's squared error; `None`: all 1.
    weights: Option<Vec<f32>>,
}

impl Design {
    fn new(slots: Vec<u32>, books: usize, width: usize, weights: Option<Vec<f32>>) -> Self {
        let mut starts = vec![0usize; width + 1];
        for &s in &slots {
            starts[s as usize + 1] += 1;
        }
        for j in 0..width {
            starts[j + 1] += starts[j];
        }
        let mut next = starts.clone();
        let mut rows_of = vec![0u32; slots.len()];
        for (r, row) in slots.chunks_exact(books).enumerate() {
            for &s in row {
                rows_of[next[s as usize]] = r as u32;
                next[s as usize] += 1;
            }
        }
        Design {
            slots,
            starts,
            rows_of,
            books,
            width,
            weights,
        }
    }

    fn rows(&self) -> usize {
        self.slots.len() / self.books
    }

    /// The summed weight of the rows that use `slot` (their count when unweighted): the
    /// diagonal of `AᵀWA`.
    fn mass(&self, slot: usize) -> f32 {
        let rows = &self.rows_of[self.starts[slot]..self.starts[slot + 1]];
        match &self.weights {
            Some(w) => rows.iter().map(|&r| w[r as usize]).sum(),
            None => rows.len() as f32,
        }
    }

    /// `out[slot] = Σ_{rows r of slot} w[r] v[r] + lambda · p[slot]` for every slot, where
    /// `v = A p` is each row's decode through `p` (`[DK · d]`); `v` is scratch of `[rows · d]`.
    fn apply(
        &self,
        p: &[f32],
        lambda: f32,
        v: &mut [f32],
        out: &mut [f32],
        d: usize,
        workers: usize,
    ) {
        split(v, self.rows(), d, workers, |first, part| {
            for (r, vr) in part.chunks_exact_mut(d).enumerate() {
                let row = &self.slots[(first + r) * self.books..(first + r + 1) * self.books];
                vr.copy_from_slice(&p[row[0] as usize * d..(row[0] as usize + 1) * d]);
                for &s in &row[1..] {
                    let e = &p[s as usize * d..(s as usize + 1) * d];
                    for (a, &b) in vr.iter_mut().zip(e) {
                        *a += b;
                    }
                }
                if let Some(w) = &self.weights {
                    let w = w[first + r];
                    vr.iter_mut().for_each(|a| *a *= w);
                }
            }
        });
        self.sum_rows(v, Some((p, lambda)), out, d, workers);
    }

    /// `out[slot] = Σ_{rows r of slot} v[r]` (`v` `[rows · d]`) for every slot, plus
    /// `lambda · p[slot]` when `ridge` is `Some((p, lambda))`; each slot summed in row order.
    fn sum_rows(
        &self,
        v: &[f32],
        ridge: Option<(&[f32], f32)>,
        out: &mut [f32],
        d: usize,
        workers: usize,
    ) {
        split(out, self.width, d, workers, |first, part| {
            for (j, o) in part.chunks_exact_mut(d).enumerate() {
                let slot = first + j;
                match ridge {
                    Some((p, lambda)) => {
                        for (a, &b) in o.iter_mut().zip(&p[slot * d..(slot + 1) * d]) {
                            *a = lambda * b;
                        }
                    }
                    None => o.fill(0.0),
                }
                for &r in &self.rows_of[self.starts[slot]..self.starts[slot + 1]] {
                    for (a, &b) in o.iter_mut().zip(&v[r as usize * d..(r as usize + 1) * d]) {
                        *a += b;
                    }
                }
            }
        });
    }
}

/// Runs `f(first item, items)` on up to `workers` threads over consecutive parts of `data`, a
/// sequence of `items` items of `width` floats each.
fn split(
    data: &mut [f32],
    items: usize,
    width: usize,
    workers: usize,
    f: impl Fn(usize, &mut [f32]) + Sync,
) {
    let per = items.div_ceil(workers.max(1)).max(1);
    if workers <= 1 || items <= per {
        f(0, data);
        return;
    }
    std::thread::scope(|scope| {
        for (j, part) in data.chunks_mut(per * width).enumerate() {
            let f = &f;
            scope.spawn(move || f(j * per, part));
        }
    });
}

/// `num[c] / den[c]` for every column, 0 where the denominator is not positive (a column whose
/// search direction has vanished stays where it is).
fn ratios(num: &[f64], den: &[f64]) -> Vec<f32> {
    num.iter()
        .zip(den)
        .map(|(&a, &b)| if b > 0.0 { (a / b) as f32 } else { 0.0 })
        .collect()
}

/// Sums over the slots of each of the `d` columns of `a ⊙ b` (`[DK · d]` each), in f64.
fn column_dots(a: &[f32], b: &[f32], d: usize) -> Vec<f64> {
    let mut dots = vec![0f64; d];
    for (ra, rb) in a.chunks_exact(d).zip(b.chunks_exact(d)) {
        for ((s, &x), &y) in dots.iter_mut().zip(ra).zip(rb) {
            *s += f64::from(x) * f64::from(y);
        }
    }
    dots
}

/// How [`CgFit::fit`] solves.
#[derive(Debug, Clone, Copy)]
pub struct CgFit {
    /// Ridge, relative to the mean number of rows per code.
    pub ridge: f64,
    /// Most steps.
    pub iterations: usize,
    /// The steps end when every column's residual has fallen below this share of its
    /// right-hand side.
    pub tolerance: f64,
    /// Threads the rows and slots are spread over (the result is the same for any number).
    pub workers: usize,
}

impl CgFit {
    /// Least-squares tables `[D, K, d]` for rows `x` `[N, d]` with codes `[N, D]`, counting only
    /// the rows where `rows` (a Bool mask) is true, each row's squared error times its weight
    /// (`weights` `[N]`, all 1 when `None`): preconditioned conjugate gradients on
    /// `(AᵀWA + λI) T = AᵀWX` from `old`, `λ = ridge · rows / K`. A code no selected row uses
    /// tends to the zero vector, as in the dense solve.
    pub fn fit(
        &self,
        x: &Tensor,
        codes: &Tensor,
        rows: Option<&Tensor>,
        weights: Option<&Tensor>,
        old: &Tensor,
    ) -> Tensor {
        let CgFit {
            ridge,
            iterations,
            tolerance,
            workers,
        } = *self;
        let s = old.size();
        let (books, k, d) = (s[0] as usize, s[1] as usize, s[2] as usize);
        let width = books * k;
        let (x, codes, weights) = match rows {
            Some(m) => {
                let keep = m.nonzero().squeeze_dim(1);
                (
                    x.index_select(0, &keep),
                    codes.index_select(0, &keep),
                    weights.map(|w| w.index_select(0, &keep)),
                )
            }
            None => (
                x.shallow_clone(),
                codes.shallow_clone(),
                weights.map(Tensor::shallow_clone),
            ),
        };
        let n = x.size()[0] as usize;
        let flat =
            |t: Tensor, kind: Kind| t.to_kind(kind).to_device(Device::Cpu).contiguous().view(-1);
        let offsets: Vec<i64> = (0..books as i64).map(|i| i * k as i64).collect();
        let slots = flat(
            codes.to_kind(Kind::Int64).clamp(0, k as i64 - 1)
                + Tensor::from_slice(&offsets).to_device(codes.device()),
            Kind::Int64,
        );
        let slots: Vec<u32> = Vec::<i64>::try_from(slots)
            .expect("int64 codes")
            .into_iter()
            .map(|s| s as u32)
            .collect();
        let weights =
            weights.map(|w| Vec::<f32>::try_from(flat(w, Kind::Float)).expect("float weights"));
        let design = Design::new(slots, books, width, weights);
        let mut xs = Vec::<f32>::try_from(flat(x, Kind::Float)).expect("float rows");
        if let Some(w) = &design.weights {
            for (row, &wr) in xs.chunks_exact_mut(d).zip(w) {
                row.iter_mut().for_each(|a| *a *= wr);
            }
        }
        // The right-hand side AᵀX, slot by slot in row order.
        let mut rhs = vec![0f32; width * d];
        design.sum_rows(&xs, None, &mut rhs, d, workers);
        drop(xs);
        let lambda = (ridge * (n as f64 / k as f64).max(1.0)) as f32;
        let inv_diag: Vec<f32> = (0..width)
            .map(|j| 1.0 / (design.mass(j) + lambda.max(f32::MIN_POSITIVE)))
            .collect();
        let mut t =
            Vec::<f32>::try_from(flat(old.shallow_clone(), Kind::Float)).expect("float tables");
        let mut scratch = vec![0f32; n * d];
        let mut ap = vec![0f32; width * d];
        design.apply(&t, lambda, &mut scratch, &mut ap, d, workers);
        let mut r: Vec<f32> = rhs.iter().zip(&ap).map(|(b, a)| b - a).collect();
        let precondition = |r: &[f32]| -> Vec<f32> {
            r.chunks_exact(d)
                .zip(&inv_diag)
                .flat_map(|(row, &w)| row.iter().map(move |&v| v * w))
                .collect()
        };
        let mut z = precondition(&r);
        let mut p = z.clone();
        let mut rz = column_dots(&r, &z, d);
        let goal: Vec<f64> = column_dots(&rhs, &rhs, d)
            .into_iter()
            .map(|b| b * tolerance * tolerance)
            .collect();
        for _ in 0..iterations {
            let rr = column_dots(&r, &r, d);
            if rr.iter().zip(&goal).all(|(a, g)| a <= g) {
                break;
            }
            design.apply(&p, lambda, &mut scratch, &mut ap, d, workers);
            let pap = column_dots(&p, &ap, d);
            let alpha = ratios(&rz, &pap);
            for ((tr, rr), (pr, apr)) in t
                .chunks_exact_mut(d)
                .zip(r.chunks_exact_mut(d))
                .zip(p.chunks_exact(d).zip(ap.chunks_exact(d)))
            {
                for c in 0..d {
                    tr[c] += alpha[c] * pr[c];
                    rr[c] -= alpha[c] * apr[c];
                }
            }
            z = precondition(&r);
            let rz_new = column_dots(&r, &z, d);
            let beta = ratios(&rz_new, &rz);
            for (pr, zr) in p.chunks_exact_mut(d).zip(z.chunks_exact(d)) {
                for c in 0..d {
                    pr[c] = zr[c] + beta[c] * pr[c];
                }
            }
            rz = rz_new;
        }
        Tensor::from_slice(&t)
            .view([books as i64, k as i64, d as i64])
            .to_device(old.device())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::quantize::additive::additive_decode;
    use crate::train::quantize::lsq::{NormalEquations, fit_blockwise, fit_tables};
    use crate::train::rng::Rng;

    fn err(x: &Tensor, t: &Tensor, c: &Tensor) -> f64 {
        (additive_decode(t, c) - x)
            .square()
            .sum(Kind::Double)
            .double_value(&[])
    }

    fn cg(iterations: usize, tolerance: f64, workers: usize) -> CgFit {
        CgFit {
            ridge: 1e-4,
            iterations,
            tolerance,
            workers,
        }
    }

    #[test]
    fn conjugate_gradients_reach_the_dense_solution_whatever_the_workers() {
        let mut rng = Rng::new(11);
        // Codes correlated across positions (as residual codes are), some codes unused.
        let (n, books, k, d) = (3000, 4, 16, 7);
        let base = rng.integers(12, &[n, 1]);
        let noise = rng.integers(4, &[n, books]);
        let codes = (base + noise).remainder(k);
        let truth = rng.normal_of(&[books, k, d], 1.0);
        let x = additive_decode(&truth, &codes) + rng.normal_of(&[n, d], 0.5);
        let mask = rng.normal_of(&[n], 1.0).gt(-1.0);
        let start = rng.normal_of(&[books, k, d], 0.1);
        let dense = fit_tables(&x, &codes, Some(&mask), &start, 1e-4);
        let keep = mask.nonzero().squeeze_dim(1);
        let (xs, cs) = (x.index_select(0, &keep), codes.index_select(0, &keep));
        let best = err(&xs, &dense, &cs);
        let one = cg(200, 1e-6, 1).fit(&x, &codes, Some(&mask), None, &start);
        let three = cg(200, 1e-6, 3).fit(&x, &codes, Some(&mask), None, &start);
        assert!(one.equal(&three), "the workers changed the result");
        let got = err(&xs, &one, &cs);
        assert!(got <= best * (1.0 + 1e-4), "{got} against the dense {best}");
        let diff = (&one - &dense).abs().max().double_value(&[]);
        assert!(diff < 1e-2, "{diff}");
        // A few steps from the start already beat a sweep of table-by-table fits.
        let few = err(
            &xs,
            &cg(8, 0.0, 2).fit(&x, &codes, Some(&mask), None, &start),
            &cs,
        );
        let blockwise = err(&xs, &fit_blockwise(&x, &codes, Some(&mask), &start), &cs);
        assert!(few < blockwise, "{few} against blockwise {blockwise}");
    }

    #[test]
    fn a_weight_of_two_counts_a_row_twice_in_both_solves() {
        let mut rng = Rng::new(5);
        let (n, books, k, d) = (1500, 3, 8, 5);
        let codes = rng.integers(k as usize, &[n, books]);
        let truth = rng.normal_of(&[books, k, d], 1.0);
        let x = additive_decode(&truth, &codes) + rng.normal_of(&[n, d], 0.7);
        // Rows 0..500 weigh 2, the rest 1: the same fit as rows 0..500 given twice.
        let weights = Tensor::cat(
            &[
                Tensor::full([500], 2.0, (Kind::Float, Device::Cpu)),
                Tensor::ones([n - 500], (Kind::Float, Device::Cpu)),
            ],
            0,
        );
        let twice = |t: &Tensor| Tensor::cat(&[t.shallow_clone(), t.narrow(0, 0, 500)], 0);
        let (x2, codes2) = (twice(&x), twice(&codes));
        let start = rng.normal_of(&[books, k, d], 0.1);
        // Tables are compared by what they decode: a constant moved from one table to another
        // decodes the same, and only the tiny ridge pins it.
        let gap = |a: &Tensor, b: &Tensor| {
            (additive_decode(a, &codes) - additive_decode(b, &codes))
                .abs()
                .max()
                .double_value(&[])
        };
        let doubled = cg(300, 1e-7, 2).fit(&x2, &codes2, None, None, &start);
        let weighted = cg(300, 1e-7, 2).fit(&x, &codes, None, Some(&weights), &start);
        let diff = gap(&doubled, &weighted);
        assert!(diff < 1e-3, "conjugate gradients: {diff}");
        let mut normal = NormalEquations::new(books, k, d, Device::Cpu);
        normal.add(&x, &codes.to_kind(Kind::Int64), Some(&weights));
        let dense = normal.solve(1e-4).expect("a solvable system");
        let diff = gap(&dense, &weighted);
        assert!(diff < 1e-3, "dense against conjugate gradients: {diff}");
        // And the weights matter: the unweighted fit decodes measurably differently.
        let plain = cg(300, 1e-7, 2).fit(&x, &codes, None, None, &start);
        let moved = gap(&plain, &weighted);
        assert!(moved > 1e-2, "the weights changed nothing: {moved}");
    }
}
