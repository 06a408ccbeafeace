//! What the quantizers share: decoding codes through additive tables, and chunk sizes.

use tch::{Device, Kind, Tensor};

/// Floats a chunk's largest temporary may hold (8 MiB): small enough that the allocator reuses
/// the memory from chunk to chunk (see [`crate::train::allocator`]), large enough that
/// per-operation overhead stays small.
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
/// Adds one position at a time so that nothing larger than `[B, d]` is made (a `[B, D, d]`
/// gather would dominate the memory of a chunk).
pub fn additive_decode(tables: &Tensor, codes: &Tensor) -> Tensor {
    let codes = codes.to_kind(Kind::Int64);
    let entry = |i: i64| tables.get(i).index_select(0, &codes.select(1, i));
    let mut sum = entry(0);
    for i in 1..tables.size()[0] {
        sum += entry(i);
    }
    sum
}

/// Rows `s..s+len` of `x`, `codes` (as Int64) and, when given, `weights` (`[N]`), keeping
/// only those selected by `rows` (a Bool mask over all rows).
pub fn chunk(
    x: &Tensor,
    codes: &Tensor,
    weights: Option<&Tensor>,
    rows: Option<&Tensor>,
    s: i64,
    len: i64,
) -> (Tensor, Tensor, Option<Tensor>) {
    let (xc, cc, wc) = (
        x.narrow(0, s, len),
        codes.narrow(0, s, len).to_kind(Kind::Int64),
        weights.map(|w| w.narrow(0, s, len)),
    );
    match rows {
        Some(m) => {
            let keep = m.narrow(0, s, len).nonzero().squeeze_dim(1);
            let wc = wc.map(|w| w.index_select(0, &keep));
            (xc.index_select(0, &keep), cc.index_select(0, &keep), wc)
        }
        None => (xc, cc, wc),
    }
}

/// Squared error of every row of `x` decoded from `codes` by the additive `tables` (tests).
#[cfg(test)]
pub fn row_errors(x: &Tensor, tables: &Tensor, codes: &Tensor) -> Vec<f64> {
    let e = (x - additive_decode(tables, codes))
        .square()
        .sum_dim_intlist(1, false, None::<Kind>)
        .to_kind(Kind::Double);
    Vec::try_from(e).expect("f64 errors")
}
