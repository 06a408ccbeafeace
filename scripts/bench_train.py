#!/usr/bin/env python3
"""Quality of a .kdz against its source, measured independently of the Rust code.

Exports the decoded vectors with `kdcompress export`, then measures them against the first N
rows of a GloVe text file (N: the .kdz's word count) with scripts/bench_quality.py's own metrics
(its `Reference`): mse (mean over words of the squared L2 error), mean cosine, nn@10 (overlap of
the 10 nearest cosine neighbours of 2,000 words sampled with numpy seed 0) and the Spearman
correlation with human scores on WordSim-353 and SimLex-999, decoded against original.

  scripts/bench_train.py --bin target/release/kdcompress --glove data/glove.6B.50d.txt \
      --data data out.kdz [more.kdz ...]
"""
import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench_quality import Reference


def load_glove(path, n):
    """Words and matrix of the first `n` lines of a GloVe text file."""
    words, rows = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if len(words) >= n:
                break
            parts = line.rstrip("\n").split(" ")
            words.append(parts[0])
            rows.append(np.asarray(parts[1:], dtype=np.float32))
    return words, np.stack(rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/kdcompress")
    ap.add_argument("--glove", required=True)
    ap.add_argument("--data", required=True, help="directory with wordsim353.tsv, simlex999.txt")
    ap.add_argument("kdz", nargs="+")
    args = ap.parse_args()
    refs = {}
    for kdz in args.kdz:
        with tempfile.TemporaryDirectory() as tmp:
            npy = Path(tmp) / "decoded.npy"
            subprocess.run([args.bin, "export", kdz, "-o", str(npy)], check=True)
            y = np.load(npy).astype(np.float32)
        n = len(y)
        if n not in refs:
            words, x = load_glove(args.glove, n)
            if len(words) < n:
                sys.exit(f"{kdz} holds {n} words but {args.glove} only {len(words)}")
            refs[n] = Reference(words, x, Path(args.data))
        ref = refs[n]
        m = ref.metrics(y)
        print(f"{kdz}: n={n} mse {m['mse']:.4f} cosine {m['cosine']:.4f} nn@10 {m['nn10']:.4f} "
              + " ".join(f"{k} {m[k]:.4f} (original {ref.orig_sim[k]:.4f})" for k in ref.sims))


if __name__ == "__main__":
    main()
