//! Additive quantization without gradients: a word is approximated by `Σ_i T[i, c_i]` for tables
//! `T` `[D, K, d]`.
//!
//! One quantizer per file, each owning the scratch memory its encoder needs per row:
//! [`kmeans`] (Lloyd's k-means on progressively more principal dimensions), [`rq`] (residual k-means tables, beam-search
//! encoding; [`beam`], the same search in pairwise form), [`lsq`] (least-squares tables for fixed codes, re-encoding by iterated conditional
//! modes; [`cg`], the same least squares by conjugate gradients when D·K is too large to solve densely; [`ils`], the same search in pairwise form with random perturbations); [`additive`] holds what they share (the additive decode, chunk sizes). Everything
//! works on chunks of rows so that no N×D×K or N×D×d tensor ever exists.

pub mod additive;
pub mod beam;
pub mod cg;
pub mod ils;
pub mod kmeans;
pub mod lsq;
pub mod rq;

pub use additive::{additive_decode, chunk_rows};

/// The elements of `t` in row-major order, as `T` on the CPU.
pub(crate) fn flat_cpu<T: tch::kind::Element>(t: &tch::Tensor) -> Vec<T>
where
    Vec<T>: TryFrom<tch::Tensor, Error = tch::TchError>,
{
    Vec::try_from(
        t.to_kind(T::KIND)
            .to_device(tch::Device::Cpu)
            .contiguous()
            .view(-1),
    )
    .expect("a tensor converted to its element kind")
}
