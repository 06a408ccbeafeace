#!/usr/bin/env python3
"""Probe variants of the conditioned composer's step network in plain PyTorch, on fixed codes.

Reads an additive run's tables and codes (`kdcompress export OUT.kdz -o OUT.safetensors`) and the
original vectors (GloVe text, the rows the run compressed, in order), then trains a step network
on the fixed codes the way `--composer conditioned` first does (Adam at sqrt(450/d) x 1e-3, warm-up
then cosine, batches of 512, unweighted squared error) and prints the MSE over all words against
the additive decode's. It answers "would this shape of network find more?" in a minute or two,
before any of it is built into the composer, the .kdz format and the decoders.

Variants (letters combine):
  A  the composer as built: x += e_i + W_o relu(W_c e_i + W_s x + t_i), W_o shared by the steps
  O  one output matrix W_o per step ([D, d, h]: no more multiply-adds where the decode runs in d
     dimensions, D times W_o's weights)
  P  a free hidden vector per code ([D, K, h], zero at the start) added before the relu: the
     decoder already keeps W_c e + t_i per code in a table, so no more multiply-adds, D*K*h weights
  G  a gain per step and hidden unit ([D, h], one at the start)

Example (the twenty-third session's runs, docs/benchmarks.md):
  kdcompress data/glove.6B.50d.txt -K 256 -D 8 -o add.kdz && kdcompress export add.kdz -o add.safetensors
  python scripts/probe_step_network.py add.safetensors data/glove.6B.50d.txt --variant O --hidden 208 --epochs 8
"""
import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file

from bench_quality import read_text_table


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="safetensors export of an additive .kdz")
    ap.add_argument("vectors", help="GloVe text with the compressed rows first, in order")
    ap.add_argument("--variant", default="A", help="letters of A, O, P, G (above)")
    ap.add_argument("--hidden", type=int, default=208)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(args.seed)
    v, h = args.variant, args.hidden

    st = load_file(args.model)
    tables = torch.tensor(st["codebooks"])
    codes = torch.tensor(st["codes"].astype(np.int64))
    dd, k, d = tables.shape
    n = len(codes)
    x = torch.tensor(read_text_table(Path(args.vectors))[1][:n])
    e_all = tables[torch.arange(dd), codes]  # [n, D, d]
    additive = ((e_all.sum(1) - x) ** 2).sum(1).mean().item()

    def uniform(*shape):
        return torch.nn.Parameter((torch.rand(*shape, generator=gen) * 2 - 1) / math.sqrt(d))

    wc, ws, step = uniform(h, d), uniform(h, d), uniform(dd, h)
    wo = torch.nn.Parameter(torch.zeros(dd, d, h) if "O" in v else torch.zeros(d, h))
    params = [wc, ws, step, wo]
    per_code = torch.nn.Parameter(torch.zeros(dd, k, h)) if "P" in v else None
    gain = torch.nn.Parameter(torch.ones(dd, h)) if "G" in v else None
    params += [p for p in (per_code, gain) if p is not None]

    def decode(rows):
        e, c = e_all[rows], codes[rows]
        out = torch.zeros(len(rows), d)
        for i in range(dd):
            pre = e[:, i] @ wc.T + out @ ws.T + step[i]
            if per_code is not None:
                pre = pre + per_code[i][c[:, i]]
            z = pre.relu()
            if gain is not None:
                z = z * gain[i]
            out = out + e[:, i] + z @ (wo[i] if "O" in v else wo).T
        return out

    def mse():
        with torch.no_grad():
            return sum(((decode(torch.arange(a, min(n, a + 50_000))) - x[a:a + 50_000]) ** 2)
                       .sum().item() for a in range(0, n, 50_000)) / n

    bs = 512
    steps = args.epochs * math.ceil(n / bs)
    warm = max(1, steps // 20)
    opt = torch.optim.Adam(params, lr=1e-3 * math.sqrt(450 / d))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    print(f"{n} words x {d}, K={k} D={dd}; additive MSE {additive:.4f}; variant {v}, h={h}, "
          f"{sum(p.numel() for p in params)} parameters", flush=True)
    t0 = time.time()
    for epoch in range(1, args.epochs + 1):
        perm = torch.randperm(n, generator=gen)
        for s in range(0, n, bs):
            rows = perm[s:s + bs]
            loss = ((decode(rows) - x[rows]) ** 2).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        if epoch % 10 == 0 or epoch == args.epochs:
            m = mse()
            print(f"epoch {epoch}: MSE {m:.4f} ({m / additive:.4f}x additive), "
                  f"{time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
