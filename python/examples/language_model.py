"""A small neural language model on real news text, fed once by the original GloVe rows and once
by ``KdEmbedding`` from a 160-bit ``.kdz``: held-out perplexity and embedding bytes for both.

The corpus is the Lee news corpus that gensim ships (``gensim/test/test_data/lee_background.cor``,
300 Australian news articles, about 60,000 words; ``make tools`` installs gensim). The model
reads the 4 previous words (their 50-d vectors, concatenated; every corpus word the vectors
cover has one, the rest share a trained ``<unk>`` vector), a tanh layer of 128 units, and
predicts the next word among the 1,000 most frequent training words plus ``<unk>``. The
embeddings are frozen in both runs, so the only difference is where the input vectors come
from. The first 270 articles train, the last 30 give the perplexity. Run from the repository
root after ``make python tools`` (a few minutes per run on 2 cores)::

    target/release/kdcompress fixtures/glove.6B.50d.head5k.txt -K 32 -D 32 -o /tmp/g5k.kdz
    ~/.cache/kdcompress/torch-2.11.0/bin/python python/examples/language_model.py \\
        --vectors fixtures/glove.6B.50d.head5k.txt --kdz /tmp/g5k.kdz
"""

from __future__ import annotations

import argparse
import math
import re
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch import nn

import kdcompress
from kdcompress.torch import KdEmbedding

CONTEXT = 4
UNK = "<unk>"


def lee_corpus() -> List[List[str]]:
    """The Lee background corpus, one lowercase token list per article."""
    import gensim

    path = Path(gensim.__file__).parent / "test" / "test_data" / "lee_background.cor"
    token = re.compile(r"[a-z]+(?:'[a-z]+)?|[0-9]+|[.,!?;:()\"$%-]")
    return [token.findall(line.lower()) for line in path.read_text(encoding="utf-8").splitlines()]


def read_glove(path: Path) -> Tuple[List[str], np.ndarray]:
    words, rows = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split(" ")
            words.append(parts[0])
            rows.append(np.asarray(parts[1:], dtype=np.float32))
    return words, np.stack(rows)


class Embedded(nn.Module):
    """The input side: a table of the covered words, and one trained ``<unk>`` vector (id -1)."""

    def __init__(self, table: nn.Module, dim: int) -> None:
        super().__init__()
        self.table = table
        self.unk = nn.Parameter(torch.zeros(dim))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        known = ids >= 0
        vectors = self.table(ids.clamp(min=0))
        return torch.where(known.unsqueeze(-1), vectors, self.unk)


class NGramLM(nn.Module):
    def __init__(self, embed: Embedded, dim: int, vocab: int, hidden: int = 128) -> None:
        super().__init__()
        self.embed = embed
        self.hidden = nn.Linear(CONTEXT * dim, hidden)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        x = self.embed(context).flatten(1)
        return self.out(torch.tanh(self.hidden(x)))


def examples(
    docs: Sequence[List[str]], in_index: Dict[str, int], out_index: Dict[str, int]
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(context ids, next-word target) for every position, articles padded with <unk>."""
    contexts, targets = [], []
    unk_out = out_index[UNK]
    for doc in docs:
        ids = [-1] * CONTEXT + [in_index.get(w, -1) for w in doc]
        for i, w in enumerate(doc):
            contexts.append(ids[i : i + CONTEXT])
            targets.append(out_index.get(w, unk_out))
    return torch.tensor(contexts), torch.tensor(targets)


def train_and_score(
    table: nn.Module, dim: int, data, vocab: int, epochs: int, seed: int
) -> Tuple[float, float]:
    """Trains with a fixed seed; returns (held-out perplexity, seconds)."""
    (x_train, y_train), (x_test, y_test) = data
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = NGramLM(Embedded(table, dim), dim, vocab)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(trainable, lr=2e-3)
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=gen)
        for batch in order.split(256):
            opt.zero_grad()
            loss_fn(model(x_train[batch]), y_train[batch]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        nll = sum(
            float(loss_fn(model(x), y)) * len(y)
            for x, y in zip(x_test.split(4096), y_test.split(4096))
        )
    return math.exp(nll / len(y_test)), time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vectors", type=Path, default=Path("fixtures/glove.6B.50d.head5k.txt"))
    ap.add_argument("--kdz", type=Path, required=True, help="the same vectors, compressed")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--predict", type=int, default=1000, help="most frequent words to predict")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    docs = lee_corpus()
    train_docs, test_docs = docs[:270], docs[270:]
    glove_words, glove = read_glove(args.vectors)
    kd = kdcompress.load(args.kdz)
    if kd.words != glove_words:
        raise SystemExit(f"{args.kdz} does not hold the words of {args.vectors} in its order")

    # The model's words: those of the corpus the vectors cover, in table order.
    seen = {w for doc in docs for w in doc}
    rows = [r for r, w in enumerate(glove_words) if w in seen]
    words = [glove_words[r] for r in rows]
    in_index = {w: i for i, w in enumerate(words)}
    counts = Counter(w for doc in train_docs for w in doc)
    top = [w for w, _ in counts.most_common(args.predict)]
    out_index = {w: i for i, w in enumerate(top + [UNK])}
    data = (
        examples(train_docs, in_index, out_index),
        examples(test_docs, in_index, out_index),
    )
    tokens = sum(len(d) for d in docs)
    covered = sum(w in in_index for d in docs for w in d)
    print(
        f"corpus: {len(docs)} articles, {tokens} tokens, {len(data[0][1])} train / "
        f"{len(data[1][1])} held-out predictions; {len(words)} words covered by "
        f"{args.vectors.name} ({covered / tokens:.1%} of tokens), the rest <unk>; "
        f"predicting the {len(top)} most frequent words and <unk>"
    )

    # Original vectors: an nn.Embedding with the GloVe rows of the model's words.
    original = nn.Embedding.from_pretrained(torch.from_numpy(glove[rows]), freeze=True)
    original_bytes = original.weight.numel() * original.weight.element_size()

    # Compressed: KdEmbedding from the .kdz, cut to the same rows (codes are a buffer).
    compressed = KdEmbedding.from_kdz(kd, freeze=True)
    compressed.codes = compressed.codes[torch.tensor(rows)].clone()
    compressed.num_embeddings = len(rows)
    tables = sum(p.numel() * p.element_size() for p in compressed.parameters())
    code_bytes = len(rows) * kd.bits_per_word // 8
    compressed_bytes = code_bytes + tables
    with torch.no_grad():
        gap = (compressed(torch.arange(len(rows))) - original.weight).pow(2).sum(1).mean()
    print(
        f"{args.kdz.name}: {kd.config['kind']} composer, K={kd.config['num_codes']} "
        f"D={kd.config['num_codebooks']} ({kd.bits_per_word} bits a word); "
        f"MSE to the original rows {float(gap):.4f}"
    )

    results = []
    for name, table, size in (
        ("original GloVe rows", original, original_bytes),
        ("KdEmbedding (.kdz)", compressed, compressed_bytes),
    ):
        ppl, secs = train_and_score(table, glove.shape[1], data, len(out_index), args.epochs, args.seed)
        results.append((name, ppl, size, secs))
    print()
    print(f"{'input embedding':<22} {'held-out perplexity':>20} {'embedding bytes':>16} {'train s':>8}")
    for name, ppl, size, secs in results:
        print(f"{name:<22} {ppl:>20.1f} {size:>16,} {secs:>8.1f}")
    print(
        f"\nKdEmbedding bytes: {code_bytes:,} of codes ({kd.bits_per_word} bits x {len(rows)} "
        f"words) + {tables:,} of codebooks and composer, shared by all {len(kd)} words of the "
        f"file (whole table: {len(kd) * kd.bits_per_word // 8 + tables:,} bytes against "
        f"{glove.nbytes:,} as f32)."
    )


if __name__ == "__main__":
    main()
