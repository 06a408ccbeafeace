//! Residual quantization: tables learned by k-means on what the earlier tables leave
//! unexplained, words encoded by beam search over the positions in order.

use tch::{Kind, Tensor};

use super::kmeans::KMeans;
use crate::train::parallel::with_torch_threads;
use crate::train::rng::Rng;

/// Floats of scratch per row for a beam search of width `beam` over tables of `k` codes of
/// width `d`: the `beam·K` candidates and the `beam` residuals with their gathers, given a
/// quarter of the chunk budget so that a chunk's temporaries stay in cache.
pub fn memory_per_row(beam: i64, k: i64, d: i64) -> i64 {
    beam * (k + d) * 12
}

/// Residual k-means tables `[D, K, d]` (K = `kmeans.k`) learned on `sample` (rows of word
/// vectors), the way a residual quantizer with beam search trains: table i is k-means of what
/// the `beam` best partial encodings of each sample row (with tables 0..i) leave unexplained,
/// at most `max_points` of them (drawn afresh for each table) when there are more.
pub fn residual_kmeans(
    sample: &Tensor,
    num_codebooks: i64,
    kmeans: &KMeans,
    beam: i64,
    max_points: i64,
    rng: &mut Rng,
) -> Tensor {
    let (m, d) = (sample.size()[0], sample.size()[1]);
    let mut state = Beam::start(sample);
    let mut tables = Vec::with_capacity(num_codebooks as usize);
    for _ in 0..num_codebooks {
        let mut points = state.residual.reshape([-1, d]);
        let n = points.size()[0];
        if n > max_points.max(1) {
            let pick = rng
                .permutation(n as usize, points.device())
                .narrow(0, 0, max_points.max(1));
            points = points.index_select(0, &pick);
        }
        let table = kmeans.fit(&points, rng);
        let norms = table.square().sum_dim_intlist(1, false, None::<Kind>);
        // Every sampled row's beam extended at once: a few large products, on every worker's core.
        with_torch_threads(kmeans.workers, || state.extend(&table, &norms, beam));
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

    /// The codes of the best entry, `[B, D]`.
    fn best(&self) -> Tensor {
        trace_back(&self.from, &self.code)
    }
}

/// The codes `[B, D]` of the first (best) entry of a beam search's last step, traced back through
/// `from` (per step, which entry of the step before each entry extends, `[B, w]`) and `code` (per
/// step, each entry's code, `[B, w]`).
pub fn trace_back(from: &[Tensor], code: &[Tensor]) -> Tensor {
    let b = code[0].size()[0];
    let mut at = Tensor::zeros([b, 1], (Kind::Int64, code[0].device()));
    let mut cols = Vec::with_capacity(code.len());
    for (from, code) in from.iter().zip(code).rev() {
        cols.push(code.gather(1, &at, false));
        at = from.gather(1, &at, false);
    }
    cols.reverse();
    Tensor::cat(&cols, 1)
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

#[cfg(test)]
mod tests {
    use super::super::additive_decode;
    use super::*;

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

    /// Two groups of words around -1 and +1 (and a second, constant coordinate): the first table
    /// finds both, so greedily each word is left a residual of at most 0.2 and the second table
    /// learns only small values. Along a beam of 2, each word's second-best entry leaves a
    /// residual of about ±2 that the second table's k-means sees.
    #[test]
    fn tables_learn_from_every_entry_of_the_training_beam() {
        let v = [-1.2f32, -1.1, -0.9, -0.8, 0.8, 0.9, 1.1, 1.2];
        let x = Tensor::stack(
            &[
                Tensor::from_slice(&v),
                Tensor::full([8], 0.5, (Kind::Float, tch::Device::Cpu)),
            ],
            1,
        );
        let kmeans = KMeans {
            k: 2,
            iterations: 10,
            progressive_rounds: 0,
            workers: 1,
        };
        let largest = |beam: i64, max_points: i64| {
            let t = residual_kmeans(&x, 2, &kmeans, beam, max_points, &mut Rng::new(3));
            assert_eq!(t.size(), [2, 2, 2]);
            let first: Vec<f32> = Vec::try_from(t.get(0).select(1, 0).sort(0, false).0).unwrap();
            assert!(
                (first[0] + 1.0).abs() < 1e-5 && (first[1] - 1.0).abs() < 1e-5,
                "{first:?}"
            );
            t.get(1).abs().max().double_value(&[])
        };
        assert!(
            largest(1, 1024) < 0.2 + 1e-5,
            "greedy residuals are at most 0.2"
        );
        assert!(
            largest(2, 1024) > 0.6,
            "the beam's residuals of ±2 reach the second table"
        );
    }
}
