//! Nearest neighbours by cosine similarity, the one search behind `similar`, the evaluation's
//! neighbour overlap, the trainer's report and the analogy answers.
//!
//! Every list is ranked the same way: a higher cosine first, an equal cosine to the lower row
//! (in a frequency-sorted vocabulary, the more common word); a row without direction (all
//! zeros) and a NaN score are never anyone's neighbour.
//!
//! ```
//! use kdcompress::neighbours::UnitRows;
//!
//! let rows = UnitRows::new(vec![1.0, 0.0, 0.0, 3.0, 2.0, 0.1], 2);
//! let near = rows.nearest(&[1.0, 0.0], 2, None, &[0]);
//! assert_eq!(near.iter().map(|n| n.row).collect::<Vec<_>>(), [2, 1]);
//! ```

use rayon::prelude::*;

use crate::linalg::dot;
// LANES: queries scored together, in the lanes of one vector register (AVX-512) or two (AVX2).
use crate::vector::LANES;

/// `1 / ‖a‖`, or 0 for a vector without direction.
pub(crate) fn inverse_norm(a: &[f32]) -> f32 {
    let n = dot(a, a).sqrt();
    if n > 0.0 { 1.0 / n } else { 0.0 }
}

/// Scales `v` to unit length; a vector without direction becomes all zeros.
pub(crate) fn normalize(v: &mut [f32]) {
    let inv = inverse_norm(v);
    v.iter_mut().for_each(|x| *x *= inv);
}

/// A row and its cosine similarity to a query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbour {
    /// The row.
    pub row: usize,
    /// Cosine similarity, in [-1, 1].
    pub cosine: f32,
}

impl Neighbour {
    /// `self` ranks before `other`: a higher cosine, or an equal one on a lower row.
    fn ranks_before(&self, other: &Neighbour) -> bool {
        self.cosine > other.cosine || (self.cosine == other.cosine && self.row < other.row)
    }
}

/// The best `k` of a stream of scored rows, offered in any order; small k makes a sorted vector
/// faster than a heap.
#[derive(Debug, Clone)]
pub(crate) struct TopK {
    k: usize,
    items: Vec<Neighbour>,
}

impl TopK {
    pub(crate) fn new(k: usize) -> Self {
        TopK {
            k,
            items: Vec::with_capacity(k + 1),
        }
    }

    pub(crate) fn offer(&mut self, row: usize, cosine: f32) {
        if self.k == 0 || cosine.is_nan() {
            return;
        }
        let n = Neighbour { row, cosine };
        if self.items.len() == self.k && !n.ranks_before(&self.items[self.k - 1]) {
            return;
        }
        let at = self.items.partition_point(|x| x.ranks_before(&n));
        self.items.insert(at, n);
        self.items.truncate(self.k);
    }

    /// Adds what `other` kept, as if its rows had been offered here.
    pub(crate) fn merge(&mut self, other: TopK) {
        for n in other.items {
            self.offer(n.row, n.cosine);
        }
    }

    /// The kept rows, best first.
    pub(crate) fn sorted(&self) -> &[Neighbour] {
        &self.items
    }

    pub(crate) fn into_sorted(self) -> Vec<Neighbour> {
        self.items
    }
}

/// Offers row `first + i` (the `i`-th row of `rows`) to the list of every query it is not
/// `skip`ped for (`skip(query, row)`), scored `dot(query, row) * scale(row, values)`; queries
/// are unit rows of width `dim`, one list each. `scale` turns a row to unit length and is 0 for a
/// row without direction, which is offered to nobody.
fn offer_rows(
    rows: &[f32],
    dim: usize,
    first: usize,
    scale: impl Fn(usize, &[f32]) -> f32,
    queries: &[f32],
    skip: impl Fn(usize, usize) -> bool,
    tops: &mut [TopK],
) {
    let nq = tops.len().min(queries.len() / dim.max(1));
    if nq == 0 {
        return;
    }
    // Many queries are scored LANES at a time against a few rows at once (see `score_rows`);
    // a few, one `dot` at a time. Row i's scores start at `i · stride`.
    let blocks = nq.div_ceil(LANES);
    let packed = (nq >= LANES).then(|| pack_queries(&queries[..nq * dim], dim, blocks));
    let stride = if packed.is_some() { blocks * LANES } else { nq };
    let mut scores = vec![0f32; ROW_BLOCK * stride];
    for (c, chunk) in rows.chunks(ROW_BLOCK * dim).enumerate() {
        let scores = &mut scores[..chunk.len() / dim * stride];
        match &packed {
            Some(packed) => {
                let (packed, scores) = (&packed[..], &mut scores[..]);
                crate::vector::wide!(score_rows(
                    chunk: &[f32],
                    dim: usize,
                    packed: &[f32],
                    blocks: usize,
                    scores: &mut [f32]
                ));
            }
            None => {
                for (v, row_scores) in chunk.chunks_exact(dim).zip(scores.chunks_exact_mut(nq)) {
                    for (q, score) in queries.chunks_exact(dim).zip(row_scores.iter_mut()) {
                        *score = dot(q, v);
                    }
                }
            }
        }
        for (i, (v, row_scores)) in chunk
            .chunks_exact(dim)
            .zip(scores.chunks_exact(stride))
            .enumerate()
        {
            let row = first + c * ROW_BLOCK + i;
            let s = scale(row, v);
            if s == 0.0 {
                continue;
            }
            for (b, (&score, top)) in row_scores.iter().zip(tops.iter_mut()).enumerate() {
                if !skip(b, row) {
                    top.offer(row, score * s);
                }
            }
        }
    }
}

/// Rows scored per call of [`score_rows`].
const ROW_BLOCK: usize = 256;

/// `nq` queries of width `dim` in blocks of [`LANES`], each block stored dimension by dimension
/// (`packed[(b·dim + j)·LANES + l]` = value j of query `b·LANES + l`; zeros past the last query).
fn pack_queries(queries: &[f32], dim: usize, blocks: usize) -> Vec<f32> {
    let mut packed = vec![0f32; blocks * dim * LANES];
    for (q, values) in queries.chunks_exact(dim).enumerate() {
        let (b, l) = (q / LANES, q % LANES);
        for (j, &v) in values.iter().enumerate() {
            packed[(b * dim + j) * LANES + l] = v;
        }
    }
    packed
}

/// `scores[r·blocks·LANES + q]` = the dot product of row r of `rows` with query q, for the
/// queries [`pack_queries`] packed: four rows at a time share each load of a block's values,
/// each lane summing its query's products in dimension order (a multiply-add per dimension,
/// fused where `FUSED`) in four independent chains, as the k-means assignment does.
#[inline(always)]
fn score_rows<const FUSED: bool>(
    rows: &[f32],
    dim: usize,
    packed: &[f32],
    blocks: usize,
    scores: &mut [f32],
) {
    use crate::vector::madd_rows4;
    let n = rows.len() / dim;
    let width = blocks * LANES;
    let row = |i: usize| &rows[i.min(n - 1) * dim..(i.min(n - 1) + 1) * dim];
    let mut r = 0;
    while r < n {
        let (x0, x1, x2, x3) = (row(r), row(r + 1), row(r + 2), row(r + 3));
        for (b, block) in packed.chunks_exact(dim * LANES).enumerate().take(blocks) {
            let found = madd_rows4::<FUSED>(&[0f32; LANES], (x0, x1, x2, x3), block);
            for (i, acc) in found.iter().enumerate().take(n - r) {
                let at = (r + i) * width + b * LANES;
                scores[at..at + LANES].copy_from_slice(acc);
            }
        }
        r += 4;
    }
}

/// Lists of the nearest rows to a fixed set of queries, filled from rows arriving chunk by chunk
/// (not yet scaled to unit length), in any order and from any number of lists merged later.
#[derive(Debug, Clone)]
pub(crate) struct NearestLists {
    /// The query vectors, unit length, one row each.
    queries: std::sync::Arc<Vec<f32>>,
    /// Per query, the row left out of its list (its own).
    own: std::sync::Arc<Vec<usize>>,
    k: usize,
    tops: Vec<TopK>,
}

impl NearestLists {
    /// Lists of `k` for `queries` (rows of width `dim`, any length; scaled here), each leaving
    /// out its row of `own`.
    pub(crate) fn new(mut queries: Vec<f32>, dim: usize, own: Vec<usize>, k: usize) -> Self {
        queries.chunks_exact_mut(dim).for_each(normalize);
        NearestLists {
            queries: std::sync::Arc::new(queries),
            tops: vec![TopK::new(k); own.len()],
            own: std::sync::Arc::new(own),
            k,
        }
    }

    /// Empty lists for the same queries, for another thread.
    pub(crate) fn fork(&self) -> Self {
        NearestLists {
            queries: self.queries.clone(),
            own: self.own.clone(),
            k: self.k,
            tops: vec![TopK::new(self.k); self.tops.len()],
        }
    }

    /// Offers the rows `first..` held in `rows` (width `dim`).
    pub(crate) fn add(&mut self, first: usize, rows: &[f32], dim: usize) {
        self.offer(first, rows, dim, |_, v| inverse_norm(v));
    }

    /// [`NearestLists::add`] with each row's inverse norm (0: no direction) from `scale`.
    fn offer(
        &mut self,
        first: usize,
        rows: &[f32],
        dim: usize,
        scale: impl Fn(usize, &[f32]) -> f32,
    ) {
        let own = &self.own;
        let skip = |b: usize, row| own[b] == row;
        offer_rows(rows, dim, first, scale, &self.queries, skip, &mut self.tops);
    }

    /// Adds what `other` found.
    pub(crate) fn merge(&mut self, other: NearestLists) {
        for (mine, theirs) in self.tops.iter_mut().zip(other.tops) {
            mine.merge(theirs);
        }
    }

    /// Each query's rows, best first.
    pub(crate) fn rows(&self) -> Vec<Vec<u32>> {
        self.tops
            .iter()
            .map(|t| t.sorted().iter().map(|n| n.row as u32).collect())
            .collect()
    }
}

/// Queries scanned together, so each row is loaded once per block.
const QUERY_BLOCK: usize = 8;

/// The `k` nearest rows by cosine to each of `queries` (rows of the row-major `matrix` of width
/// `dim`), the query itself left out, best first. Panics if `dim` is zero or does not divide
/// the matrix, or a query is not a row: the caller checks.
pub(crate) fn nearest_rows(
    matrix: &[f32],
    dim: usize,
    queries: &[usize],
    k: usize,
) -> Vec<Vec<u32>> {
    // Each row's norm once, not once per block of queries.
    let inv: Vec<f32> = matrix.par_chunks(dim).map(inverse_norm).collect();
    queries
        .par_chunks(QUERY_BLOCK)
        .flat_map_iter(|block| {
            let q: Vec<f32> = block
                .iter()
                .flat_map(|&r| matrix[r * dim..(r + 1) * dim].iter().copied())
                .collect();
            let mut lists = NearestLists::new(q, dim, block.to_vec(), k);
            lists.offer(0, matrix, dim, |row, _| inv[row]);
            lists.rows()
        })
        .collect()
}

/// Rows of a matrix scaled to unit length, for cosine similarity by dot product.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitRows {
    dim: usize,
    data: Vec<f32>,
}

impl UnitRows {
    /// Normalises each row of the row-major `matrix` of width `dim`; all-zero rows stay zero and
    /// are never anyone's neighbour. Panics if `dim` is zero or does not divide the length,
    /// which is a caller's bug.
    pub fn new(mut matrix: Vec<f32>, dim: usize) -> Self {
        assert!(
            dim > 0 && matrix.len().is_multiple_of(dim),
            "matrix is not rows of {dim}"
        );
        matrix.par_chunks_mut(dim).for_each(normalize);
        UnitRows { dim, data: matrix }
    }

    /// Row width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.data.len() / self.dim
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// One unit row.
    pub fn row(&self, row: usize) -> &[f32] {
        &self.data[row * self.dim..(row + 1) * self.dim]
    }

    /// Offers each of the first `limit` rows to the list of every query (rows of `queries`, used
    /// as they are: a longer query scales every score alike) it is not `skip`ped for
    /// (`skip(query, row)`), scored by dot product.
    pub(crate) fn offer_to(
        &self,
        limit: usize,
        queries: &[f32],
        skip: impl Fn(usize, usize) -> bool,
        tops: &mut [TopK],
    ) {
        let rows = &self.data[..limit.min(self.len()) * self.dim];
        offer_rows(rows, self.dim, 0, unit_scale, queries, skip, tops);
    }

    /// The `k` rows most similar by cosine to `query` (any length; normalised here), among the
    /// first `limit` rows (all when `None`), leaving out `exclude`; most similar first.
    pub fn nearest(
        &self,
        query: &[f32],
        k: usize,
        limit: Option<usize>,
        exclude: &[usize],
    ) -> Vec<Neighbour> {
        assert_eq!(query.len(), self.dim, "query width");
        let mut q = query.to_vec();
        normalize(&mut q);
        let rows = limit.map_or(self.len(), |l| l.min(self.len()));
        const CHUNK: usize = 4096;
        let partial: Vec<TopK> = self.data[..rows * self.dim]
            .par_chunks(CHUNK * self.dim)
            .enumerate()
            .map(|(chunk, block)| {
                let mut top = [TopK::new(k)];
                let skip = |_, row| exclude.contains(&row);
                offer_rows(
                    block,
                    self.dim,
                    chunk * CHUNK,
                    unit_scale,
                    &q,
                    skip,
                    &mut top,
                );
                let [top] = top;
                top
            })
            .collect();
        let mut top = TopK::new(k);
        for p in partial {
            top.merge(p);
        }
        top.into_sorted()
    }
}

/// A unit row needs no scaling; an all-zero one has no direction.
fn unit_scale(_: usize, v: &[f32]) -> f32 {
    if v.iter().all(|&x| x == 0.0) {
        0.0
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_by_cosine_excludes_and_limits() {
        let m = UnitRows::new(
            vec![
                1.0, 0.0, // 0
                0.0, 2.0, // 1: orthogonal to the query
                3.0, 0.1, // 2: nearly the query
                -1.0, 0.0, // 3: opposite
                0.0, 0.0, // 4: zero row
            ],
            2,
        );
        let near = m.nearest(&[1.0, 0.0], 4, None, &[0]);
        let rows: Vec<usize> = near.iter().map(|n| n.row).collect();
        assert_eq!(rows, vec![2, 1, 3]);
        assert!((near[0].cosine - 3.0 / (9.01f32).sqrt()).abs() < 1e-6);
        let rows: Vec<usize> = m
            .nearest(&[1.0, 0.0], 10, Some(2), &[])
            .iter()
            .map(|n| n.row)
            .collect();
        assert_eq!(rows, vec![0, 1]);
    }

    #[test]
    fn nearest_by_cosine_across_chunks_matches_brute_force() {
        let dim = 3;
        let n = 10_000;
        let data: Vec<f32> = (0..n * dim)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let m = UnitRows::new(data.clone(), dim);
        let q = [0.3, -0.2, 0.9];
        let got: Vec<usize> = m.nearest(&q, 5, None, &[]).iter().map(|n| n.row).collect();
        let mut all: Vec<(f32, usize)> = (0..n)
            .map(|r| {
                (
                    dot(m.row(r), &{
                        let mut q = q.to_vec();
                        normalize(&mut q);
                        q
                    }),
                    r,
                )
            })
            .collect();
        all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let want: Vec<usize> = all.iter().take(5).map(|x| x.1).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn top_k_keeps_the_best_in_any_order_ties_to_the_lower_row() {
        let scores = [
            (5, 0.5),
            (1, 0.9),
            (3, 0.5),
            (0, f32::NAN),
            (2, 0.1),
            (4, 0.9),
        ];
        let mut one = TopK::new(3);
        for &(row, s) in &scores {
            one.offer(row, s);
        }
        let (mut a, mut b) = (TopK::new(3), TopK::new(3));
        for &(row, s) in scores.iter().rev() {
            if row % 2 == 0 { &mut a } else { &mut b }.offer(row, s);
        }
        a.merge(b);
        let rows = |t: &TopK| t.sorted().iter().map(|n| n.row).collect::<Vec<_>>();
        assert_eq!(rows(&one), [1, 4, 3]);
        assert_eq!(rows(&a), rows(&one));
        let mut none = TopK::new(0);
        none.offer(0, 1.0);
        assert!(none.into_sorted().is_empty());
    }

    #[test]
    fn lists_fed_in_chunks_equal_one_scan() {
        // Rows 2 and 5 are copies (a tie), row 4 has no direction.
        let m = [
            1.0, 0.2, 0.0, 1.0, 0.9, 0.3, -1.0, 0.5, 0.0, 0.0, 0.9, 0.3, 0.4, 0.4,
        ];
        let whole = nearest_rows(&m, 2, &[0, 3], 4);
        assert_eq!(whole, vec![vec![2, 5, 6, 1], vec![1, 6, 2, 5]]);
        let queries = [&m[0..2], &m[6..8]].concat();
        let mut a = NearestLists::new(queries, 2, vec![0, 3], 4);
        let mut b = a.fork();
        b.add(4, &m[8..], 2);
        a.add(0, &m[..8], 2);
        a.merge(b);
        assert_eq!(a.rows(), whole);
    }

    /// Sixteen queries or more go through the blocked kernel: 37 queries (three blocks, the last
    /// padded) over 103 rows (not a multiple of the four rows scored together), fed in uneven
    /// chunks, give the lists and, within rounding, the scores of one `dot` at a time.
    #[test]
    fn many_queries_score_as_one_dot_at_a_time() {
        let (dim, n, nq) = (13, 103, 37);
        let value = |i: usize| ((i * 7919 % 1013) as f32 - 506.0) / 97.0;
        let m: Vec<f32> = (0..n * dim).map(value).collect();
        let own: Vec<usize> = (0..nq).map(|q| q * 2).collect();
        let queries: Vec<f32> = own
            .iter()
            .flat_map(|&r| m[r * dim..(r + 1) * dim].to_vec())
            .collect();
        let mut lists = NearestLists::new(queries, dim, own.clone(), 5);
        let mut rest = lists.fork();
        lists.add(0, &m[..40 * dim], dim);
        rest.add(40, &m[40 * dim..], dim);
        lists.merge(rest);
        let unit = UnitRows::new(m.clone(), dim);
        for (q, &r) in own.iter().enumerate() {
            let want = unit.nearest(unit.row(r), 5, None, &[r]);
            let got = lists.tops[q].sorted();
            let rows = |l: &[Neighbour]| l.iter().map(|x| x.row).collect::<Vec<_>>();
            assert_eq!(rows(got), rows(&want), "query {q}");
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g.cosine - w.cosine).abs() < 1e-5,
                    "query {q}: {g:?} against {w:?}"
                );
            }
        }
    }
}
