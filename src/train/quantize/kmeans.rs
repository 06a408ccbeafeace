//! Lloyd's k-means with k-means++ seeding.

use tch::{Device, Kind, Tensor};

use super::chunk_rows;
use crate::train::rng::Rng;

/// Floats of scratch per point when assigning points to `k` centroids (one distance each).
pub fn memory_per_point(k: i64) -> i64 {
    k
}

/// Nearest centroid of each point, chunked: `[m]` Int64.
pub fn assign(points: &Tensor, centroids: &Tensor) -> Tensor {
    let k = centroids.size()[0];
    let norms = centroids.square().sum_dim_intlist(1, false, None::<Kind>);
    let m = points.size()[0];
    let step = chunk_rows(memory_per_point(k));
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
}
