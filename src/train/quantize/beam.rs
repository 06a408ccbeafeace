//! Beam search over positions in order (the residual quantizer's encoder) in pairwise form.
//!
//! Extending a partial encoding `c_0..c_{i-1}` by code `c` at position i adds
//! `‖T_i[c]‖² − 2·x·T_i[c] + Σ_{j<i} 2·T_j[c_j]·T_i[c]` to its squared error (less `‖x‖²`): the
//! unary terms of the row and K costs per earlier position read from the pairwise table of
//! [`PairTerms`]. So scoring the K extensions of an entry costs `i·K` additions however wide the
//! vectors are, where the residual form ([`super::rq::beam_encode`]) costs `K·d` multiply-adds
//! and a gather of `d`-wide residuals. The `beam` best extensions are kept by a threshold that
//! rejects most candidates with one comparison, instead of a sort of all `beam·K`.

use std::cmp::Ordering;

use tch::Tensor;

use super::ils::{PairTerms, widen};

/// Codes whose extension costs are compared with the beam's threshold at once.
const BLOCK: usize = 16;

/// Floats of scratch per row: the unary terms.
pub fn memory_per_row(k: i64, num_codebooks: i64) -> i64 {
    2 * k * num_codebooks
}

/// Codes `[B, D]` (Int64) of rows `target` `[B, d]` by a beam search of width `beam` over the
/// positions in order: the best of the `beam` best full encodings it keeps.
pub fn encode(terms: &PairTerms, target: &Tensor, beam: usize) -> Tensor {
    let (books, rows) = (terms.books(), target.size()[0]);
    let unary = terms.unary(target);
    let mut all = vec![0i64; rows as usize * books];
    {
        let (unary, all, beam) = (&unary[..], &mut all[..], beam.max(1));
        crate::vector::wide!(search_rows(
            terms: &PairTerms,
            unary: &[f32],
            beam: usize,
            all: &mut [i64]
        ));
    }
    Tensor::from_slice(&all)
        .view([rows, books as i64])
        .to_device(target.device())
}

/// A candidate extension: its cost, the entry it extends and its code.
#[derive(Clone, Copy)]
struct Candidate {
    cost: f32,
    entry: u32,
    code: u32,
}

/// Cost first, then entry and code: a total order, so the search is the same on every run.
fn order(a: &Candidate, b: &Candidate) -> Ordering {
    a.cost
        .total_cmp(&b.cost)
        .then(a.entry.cmp(&b.entry))
        .then(a.code.cmp(&b.code))
}

/// The search on every row of `all` (`[rows, D]`, written) from its unary terms `[rows, D, K]`.
#[inline(always)]
fn search_rows<const _FUSED: bool>(terms: &PairTerms, unary: &[f32], beam: usize, all: &mut [i64]) {
    let (books, k) = (terms.books(), terms.codes());
    let mut cost = vec![0f32; beam];
    let mut codes = vec![0u32; beam * books];
    let mut next_codes = vec![0u32; beam * books];
    let mut acc = vec![0f32; k];
    let mut cand: Vec<Candidate> = Vec::with_capacity(4 * beam);
    for (out, unary) in all
        .chunks_exact_mut(books)
        .zip(unary.chunks_exact(books * k))
    {
        let mut width = 1;
        cost[0] = 0.0;
        for i in 0..books {
            let keep = beam.min(width * k);
            let mut threshold = f32::INFINITY;
            cand.clear();
            for e in 0..width {
                acc.copy_from_slice(&unary[i * k..(i + 1) * k]);
                for j in 0..i {
                    let add = terms.row(i, j, codes[e * books + j] as usize);
                    for (a, &p) in acc.iter_mut().zip(add) {
                        *a += widen(p);
                    }
                }
                let base = cost[e];
                let mut consider = |c: usize, v: f32, threshold: &mut f32| {
                    if v < *threshold {
                        cand.push(Candidate {
                            cost: v,
                            entry: e as u32,
                            code: c as u32,
                        });
                        if cand.len() >= 4 * keep {
                            *threshold = shrink(&mut cand, keep);
                        }
                    }
                };
                // Sixteen codes at a time: one vector comparison gives the mask of those under
                // the threshold (none, for most blocks once the beam has filled), and only they
                // are looked at one by one.
                let mut blocks = acc.chunks_exact(BLOCK);
                for (b, block) in (&mut blocks).enumerate() {
                    let mut under = 0u32;
                    for (l, &a) in block.iter().enumerate() {
                        under |= u32::from(base + a < threshold) << l;
                    }
                    while under != 0 {
                        let l = under.trailing_zeros() as usize;
                        under &= under - 1;
                        consider(b * BLOCK + l, base + block[l], &mut threshold);
                    }
                }
                let done = acc.len() - blocks.remainder().len();
                for (c, &a) in blocks.remainder().iter().enumerate() {
                    consider(done + c, base + a, &mut threshold);
                }
            }
            if cand.len() > keep {
                shrink(&mut cand, keep);
            }
            cand.sort_unstable_by(order);
            for (n, c) in cand.iter().enumerate() {
                let (from, to) = (c.entry as usize * books, n * books);
                next_codes[to..to + i].copy_from_slice(&codes[from..from + i]);
                next_codes[to + i] = c.code;
                cost[n] = c.cost;
            }
            std::mem::swap(&mut codes, &mut next_codes);
            width = cand.len();
        }
        for (o, &c) in out.iter_mut().zip(&codes[..books]) {
            *o = i64::from(c);
        }
    }
}

/// Keeps the `keep` best of `cand` (unordered) and returns the largest cost kept: a later
/// candidate must cost less to enter.
#[inline(always)]
fn shrink(cand: &mut Vec<Candidate>, keep: usize) -> f32 {
    cand.select_nth_unstable_by(keep - 1, order);
    cand.truncate(keep);
    cand[keep - 1].cost
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::train::quantize::additive::{additive_decode, row_errors};
    use crate::train::quantize::rq;
    use crate::train::rng::Rng;

    /// Asserts that the pairwise search with each of `beams` finds what the residual search
    /// finds on `x` under `tables`, up to rounding between equally good encodings (two rows).
    fn agree_with_the_residual_search(tables: &Tensor, x: &Tensor, beams: &[usize]) {
        let terms = PairTerms::new(tables).unwrap();
        let n = x.size()[0] as usize;
        for &beam in beams {
            let (a, b) = (
                encode(&terms, x, beam),
                rq::beam_encode(x, tables, beam as i64),
            );
            let (ea, eb) = (row_errors(x, tables, &a), row_errors(x, tables, &b));
            let same = ea
                .iter()
                .zip(&eb)
                .filter(|(p, q)| (*p - *q).abs() < 1e-3)
                .count();
            assert!(
                same >= n - 2,
                "K={} beam {beam}: {same} of {n} rows agree",
                tables.size()[1]
            );
        }
    }

    /// The pairwise search finds what the residual search finds (up to rounding between equally
    /// good encodings), and the exact codes when the beam covers every prefix.
    #[test]
    fn pairwise_beam_search_equals_the_residual_one() {
        let mut rng = Rng::new(5);
        let (books, k, d, n) = (4, 8, 6, 200);
        let tables = rng.normal_of(&[books, k, d], 1.0);
        let terms = PairTerms::new(&tables).unwrap();
        let x = rng.normal_of(&[n, d], 2.0);
        agree_with_the_residual_search(&tables, &x, &[1, 3, 16]);
        // 8^3 entries cover every prefix of the first three positions: the search is exhaustive.
        let codes = rng.integers(k as usize, &[50, books]);
        let exact = additive_decode(&tables, &codes);
        let got = encode(&terms, &exact, 512);
        let err: f64 = row_errors(&exact, &tables, &got).iter().sum();
        assert!(err < 1e-4, "{err}");
        // Tables wider than one block of codes, with a partial block at the end: the block scan
        // keeps what the residual search keeps.
        let wide = rng.normal_of(&[books, 40, 12], 1.0);
        agree_with_the_residual_search(&wide, &rng.normal_of(&[n, 12], 2.0), &[1, 5, 24]);
        // A wider beam is never worse in total.
        let total = |beam| -> f64 {
            row_errors(&x, &tables, &encode(&terms, &x, beam))
                .iter()
                .sum()
        };
        assert!(total(16) <= total(1) + 1e-3);
    }
}
