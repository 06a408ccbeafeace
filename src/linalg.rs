//! The dot product that decoding, neighbour search and the measurements all spend their time in.

/// Dot product with eight independent partial sums: a single running sum is a dependency chain
/// the compiler may not reorder, while eight lanes map onto SIMD registers (several times faster
/// on 50-wide rows). Every caller sums in this same order, so results agree to the bit.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for j in 0..LANES {
            acc[j] += x[j] * y[j];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_a_plain_sum_at_every_length() {
        for n in 0..40 {
            let a: Vec<f32> = (0..n).map(|i| i as f32 * 0.25 - 3.0).collect();
            let b: Vec<f32> = (0..n).map(|i| 1.5 - i as f32 * 0.125).collect();
            let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!(
                (dot(&a, &b) - plain).abs() <= 1e-4 * (1.0 + plain.abs()),
                "n = {n}"
            );
        }
    }
}
