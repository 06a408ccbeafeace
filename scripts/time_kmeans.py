#!/usr/bin/env python3
"""Where kdcompress's k-means time goes, against faiss's, on one table of real data.

Replays the LibTorch operations of `search::kmeans` (HEAD 9f42bb2) in torch, which calls the same
LibTorch kernels: k-means++ seeding with a full `(points - seed)^2` pass per seed, then Lloyd
iterations (chunked distance matmul + argmin, index_add, bincount). Times each part on 1 thread
(what the pipeline gives LibTorch: `tch::set_num_threads(1)`, and k-means runs outside the worker
threads) and on --threads threads, beside faiss.Kmeans (random seeding, same iterations).

  scripts/time_kmeans.py --data data --dataset mpnet -K 256 --iters 15
"""
import argparse
import time

import numpy as np
import torch

from diagnose_rq import load


def kmeanspp_rust_style(x, k, g):
    """As search::kmeans seeds: per seed, (points - seed).square().sum(1): three passes."""
    n = len(x)
    chosen = [int(torch.randint(n, (1,), generator=g))]
    dist_to = lambda i: (x - x[i].unsqueeze(0)).square().sum(1)
    d2 = dist_to(chosen[0])
    for _ in range(1, k):
        w = d2.double()
        nxt = int(torch.multinomial(w / w.sum(), 1, generator=g))
        d2 = torch.minimum(d2, dist_to(nxt))
        chosen.append(nxt)
    return x[chosen].clone()


def kmeanspp_gemv(x, k, g):
    """The same draws, distances by one matrix-vector product per seed."""
    n = len(x)
    xn = x.square().sum(1)
    chosen = [int(torch.randint(n, (1,), generator=g))]
    dist_to = lambda i: (xn - 2.0 * (x @ x[i]) + xn[i]).clamp_min(0)
    d2 = dist_to(chosen[0])
    for _ in range(1, k):
        w = d2.double()
        nxt = int(torch.multinomial(w / w.sum(), 1, generator=g))
        d2 = torch.minimum(d2, dist_to(nxt))
        chosen.append(nxt)
    return x[chosen].clone()


def lloyd_rust_style(x, c, iters):
    k = len(c)
    step = max(1, (1 << 21) // k)  # search::chunk_rows(k)
    for _ in range(iters):
        norms = c.square().sum(1)
        a = torch.cat([(norms[None, :] - 2.0 * x[s : s + step] @ c.T).argmin(1)
                       for s in range(0, len(x), step)])
        sums = torch.zeros_like(c).index_add(0, a, x)
        counts = torch.bincount(a, minlength=k).float()
        used = (counts > 0)[:, None]
        c = torch.where(used, sums / counts.clamp_min(1)[:, None], c)
    return c


def timed(f):
    t0 = time.perf_counter()
    out = f()
    return out, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data")
    ap.add_argument("--dataset", default="mpnet")
    ap.add_argument("--n", type=int, default=0)
    ap.add_argument("-K", type=int, default=256)
    ap.add_argument("--iters", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    from pathlib import Path

    import faiss

    x = load(args.dataset, Path(args.data), args.n or None)
    xt = torch.from_numpy(x)
    print(f"{args.dataset} {x.shape}, K={args.K}, {args.iters} iterations")
    for threads in sorted({1, args.threads}):
        torch.set_num_threads(threads)
        faiss.omp_set_num_threads(threads)
        g = torch.Generator().manual_seed(0)
        c, t_pp = timed(lambda: kmeanspp_rust_style(xt, args.K, g))
        _, t_pp2 = timed(lambda: kmeanspp_gemv(xt, args.K, g))
        _, t_ll = timed(lambda: lloyd_rust_style(xt, c, args.iters))
        km = faiss.Kmeans(x.shape[1], args.K, niter=args.iters, seed=1,
                          max_points_per_centroid=1 << 30)
        _, t_f = timed(lambda: km.train(x))
        print(f"  {threads} thread(s): kd seeding (k-means++, difference per seed) {t_pp:.1f} s, "
              f"the same seeding by matrix-vector {t_pp2:.1f} s, kd Lloyd x{args.iters} "
              f"{t_ll:.1f} s, faiss.Kmeans x{args.iters} (random seeding) {t_f:.1f} s",
              flush=True)


if __name__ == "__main__":
    main()
