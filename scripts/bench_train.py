#!/usr/bin/env python3
"""Quality of a .kdz against its source, measured independently of the Rust code.

Exports the decoded vectors with `kdcompress export`, then measures, on the first N rows of a
GloVe text file, exactly as scripts/bench_quality.py does: mse (mean over words of the squared
L2 error), mean cosine, nn@10 (overlap of the 10 nearest cosine neighbours of 2,000 words sampled
with numpy seed 0) and the Spearman correlation with human scores on WordSim-353 and SimLex-999,
decoded against original.

  scripts/bench_train.py --bin target/release/kdcompress --glove data/glove.6B.50d.txt \
      --data data out.kdz [more.kdz ...]
"""
import argparse
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr


def load_glove(path, n):
    words, rows = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if len(words) >= n:
                break
            parts = line.rstrip("\n").split(" ")
            words.append(parts[0])
            rows.append(np.asarray(parts[1:], dtype=np.float32))
    return words, np.stack(rows)


def normalize(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def neighbours(x, rows, k=10):
    xn = normalize(x)
    out = np.empty((len(rows), k), dtype=np.int64)
    for s in range(0, len(rows), 256):
        q = rows[s : s + 256]
        sims = xn[q] @ xn.T
        sims[np.arange(len(q)), q] = -np.inf
        out[s : s + len(q)] = np.argpartition(-sims, k, axis=1)[:, :k]
    return out


def pairs(path):
    out = []
    for line in open(path, encoding="utf-8"):
        if line.startswith("#") or not line.strip():
            continue
        f = line.split()
        out.append((f[0].lower(), f[1].lower(), float(f[2])))
    return out


def spearman(x, index, ps):
    xn = normalize(x)
    got, gold = [], []
    for a, b, s in ps:
        if a in index and b in index:
            got.append(float(xn[index[a]] @ xn[index[b]]))
            gold.append(s)
    return spearmanr(got, gold).correlation


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/kdcompress")
    ap.add_argument("--glove", required=True)
    ap.add_argument("--data", required=True, help="directory with wordsim353.tsv, simlex999.txt")
    ap.add_argument("kdz", nargs="+")
    args = ap.parse_args()
    cache = {}
    for kdz in args.kdz:
        with tempfile.TemporaryDirectory() as tmp:
            npy = Path(tmp) / "decoded.npy"
            subprocess.run([args.bin, "export", kdz, "-o", str(npy)], check=True)
            y = np.load(npy).astype(np.float32)
        n = len(y)
        if n not in cache:
            words, x = load_glove(args.glove, n)
            rows = np.random.default_rng(0).choice(n, size=min(2000, n), replace=False)
            index = {w: i for i, w in enumerate(words)}
            sims = {k: pairs(Path(args.data) / f) for k, f in
                    [("ws353", "wordsim353.tsv"), ("sl999", "simlex999.txt")]}
            orig = {k: spearman(x, index, p) for k, p in sims.items()}
            cache[n] = (x, rows, neighbours(x, rows), index, sims, orig)
        x, rows, nn, index, sims, orig = cache[n]
        err = ((y - x) ** 2).sum(axis=1).mean()
        cos = (normalize(y) * normalize(x)).sum(axis=1).mean()
        got = neighbours(y, rows)
        overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, nn)])
        sp = {k: spearman(y, index, p) for k, p in sims.items()}
        print(f"{kdz}: n={n} mse {err:.4f} cosine {cos:.4f} nn@10 {overlap:.4f} "
              + " ".join(f"{k} {sp[k]:.4f} (original {orig[k]:.4f})" for k in sp))


if __name__ == "__main__":
    main()
