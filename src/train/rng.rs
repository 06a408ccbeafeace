//! The trainer's one source of randomness, seeded per run.
//!
//! LibTorch's generator is global to the process, so two trainings in parallel threads (tests,
//! or a caller's own threads) would draw from it in an interleaved order and lose
//! reproducibility. Every random number of a training comes from here instead.

use tch::{Device, Kind, Tensor};

use crate::eval::SplitMix64;

/// A seeded generator with the draws the trainer needs.
#[derive(Debug, Clone)]
pub struct Rng(SplitMix64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(SplitMix64::new(seed))
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// 64 random bits, to seed a derived generator.
    pub fn seed(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        self.0.below(n as u64) as usize
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u = 1.0 - self.unit();
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// An index drawn with probability proportional to `weights` (uniform if they sum to 0).
    pub fn weighted(&mut self, weights: &[f32]) -> usize {
        let total: f64 = weights.iter().map(|&w| f64::from(w.max(0.0))).sum();
        if total <= 0.0 || !total.is_finite() {
            return self.below(weights.len().max(1));
        }
        let mut target = self.unit() * total;
        for (i, &w) in weights.iter().enumerate() {
            target -= f64::from(w.max(0.0));
            if target < 0.0 {
                return i;
            }
        }
        weights.len() - 1
    }

    /// A random permutation of `0..n` as an Int64 tensor on `device`.
    pub fn permutation(&mut self, n: usize, device: Device) -> Tensor {
        let mut p: Vec<i64> = (0..n as i64).collect();
        for i in (1..n).rev() {
            p.swap(i, self.below(i + 1));
        }
        Tensor::from_slice(&p).to_device(device)
    }

    /// Overwrites `t` with values uniform in `[-bound, bound)`.
    pub fn fill_uniform(&mut self, t: &Tensor, bound: f64) {
        let v: Vec<f32> = (0..t.numel())
            .map(|_| ((self.unit() * 2.0 - 1.0) * bound) as f32)
            .collect();
        overwrite(t, &v);
    }

    /// Overwrites `t` with normal values of deviation `stdev`.
    pub fn fill_normal(&mut self, t: &Tensor, stdev: f64) {
        let v: Vec<f32> = (0..t.numel())
            .map(|_| (self.normal() * stdev) as f32)
            .collect();
        overwrite(t, &v);
    }

    /// A CPU float tensor of `shape` with normal values (`.to_device` places it elsewhere) of deviation `stdev`.
    pub fn normal_of(&mut self, shape: &[i64], stdev: f64) -> Tensor {
        let t = Tensor::zeros(shape, (Kind::Float, Device::Cpu));
        self.fill_normal(&t, stdev);
        t
    }

    /// A CPU Int64 tensor of `shape` with values uniform in `0..high` (`high > 0`).
    pub fn integers(&mut self, high: usize, shape: &[i64]) -> Tensor {
        let count: i64 = shape.iter().product();
        let v: Vec<i64> = (0..count).map(|_| self.below(high) as i64).collect();
        Tensor::from_slice(&v).view(shape)
    }

    /// A tensor shaped, typed and placed like `like`, uniform in `[low, high)`.
    pub fn uniform_like(&mut self, like: &Tensor, low: f64, high: f64) -> Tensor {
        let t = Tensor::zeros(like.size(), (like.kind(), like.device()));
        let v: Vec<f32> = (0..t.numel())
            .map(|_| (low + self.unit() * (high - low)) as f32)
            .collect();
        overwrite(&t, &v);
        t
    }
}

fn overwrite(t: &Tensor, values: &[f32]) {
    let src = Tensor::from_slice(values)
        .view(t.size().as_slice())
        .to_kind(t.kind())
        .to_device(t.device());
    tch::no_grad(|| t.shallow_clone().copy_(&src));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_seeded_and_in_range() {
        let (mut a, mut b) = (Rng::new(5), Rng::new(5));
        for _ in 0..100 {
            let u = a.unit();
            assert!((0.0..1.0).contains(&u));
            assert_eq!(u, b.unit());
        }
        let p: Vec<i64> = Vec::try_from(a.permutation(50, Device::Cpu)).unwrap();
        let mut s = p.clone();
        s.sort();
        assert_eq!(s, (0..50).collect::<Vec<i64>>());
        assert_eq!(a.weighted(&[0.0, 0.0, 3.0]), 2);
        let t = Tensor::zeros([1000], (Kind::Float, Device::Cpu));
        a.fill_uniform(&t, 0.5);
        assert!(t.abs().max().double_value(&[]) <= 0.5);
        a.fill_normal(&t, 2.0);
        let sd = t.std(true).double_value(&[]);
        assert!((sd - 2.0).abs() < 0.2, "{sd}");
    }
}
