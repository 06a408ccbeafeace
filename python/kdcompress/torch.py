"""``KdEmbedding``: a drop-in replacement for ``torch.nn.Embedding`` that stays compressed.

Needs PyTorch; ``import kdcompress`` alone does not. Built straight from a ``.kdz``::

    from kdcompress.torch import KdEmbedding
    emb = KdEmbedding.from_kdz("glove.kdz")          # replaces nn.Embedding(N, d)
    vectors = emb(torch.tensor([emb.index("king"), emb.index("queen")]))

or from ``kdcompress export vectors.kdz -o vectors.safetensors`` (layout in
docs/kdz-format.md) with :meth:`KdEmbedding.from_safetensors`. Every word's D codes are a
buffer (moved by ``.to(device)``, never trained); the codebooks and the composer are parameters
(``freeze=True`` fixes them too), and ``forward(indices)`` rebuilds the vectors with the math
of ``src/composer.rs`` for every composer kind (linear, mlp, lstm, concat, split,
conditioned, sum).

Its state-dict names are the export's tensor names, so :meth:`KdEmbedding.save_safetensors`
writes a fine-tuned model back in the same layout.
"""

from __future__ import annotations

import difflib
import json
import os
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from . import Kdz, load

__all__ = ["KdEmbedding", "FORMAT", "FORMAT_VERSION"]

FORMAT = "kdcompress"
FORMAT_VERSION = "1"
KINDS = ("linear", "mlp", "lstm", "concat", "split", "conditioned", "sum")


def split_columns(out_dim: int, groups: int, i: int) -> range:
    """The output columns code vector ``i`` fills in the ``split`` layout (src/composer.rs)."""
    return range(i * out_dim // groups, (i + 1) * out_dim // groups)


def assembled_columns(kind: str, d_books: int, code_dim: int, out_dim: int) -> torch.Tensor:
    """For ``concat`` and ``split``: each output column's position in e_0 ‖ … ‖ e_{D-1}."""
    if kind == "concat":
        return torch.arange(out_dim)
    return torch.tensor(
        [
            i * code_dim + j
            for i in range(d_books)
            for j in range(len(split_columns(out_dim, d_books, i)))
        ],
        dtype=torch.long,
    )


class KdEmbedding(nn.Module):
    """Word vectors rebuilt from frozen KD codes by trainable codebooks and a composer.

    Args:
        codes: integer tensor ``[N, D]``, every value below K.
        config: the composer configuration: ``kind``, ``num_codebooks`` (D), ``num_codes``
            (K), ``code_dim`` (d'), ``hidden`` (h), ``out_dim`` (d).
        tensors: ``codebooks`` and the composer tensors by their export names, e.g.
            ``composer.out.weight``; missing ones start at PyTorch's defaults.
        vocab: the N words in row order, if known.
    """

    def __init__(
        self,
        codes: torch.Tensor,
        config: Dict[str, object],
        tensors: Optional[Dict[str, torch.Tensor]] = None,
        vocab: Optional[Sequence[str]] = None,
    ) -> None:
        super().__init__()
        kind = config["kind"]
        if kind not in KINDS:
            raise ValueError(f"unknown composer kind {kind!r}; expected one of {KINDS}")
        d_books, k = int(config["num_codebooks"]), int(config["num_codes"])
        code_dim, hidden, out_dim = (
            int(config["code_dim"]),
            int(config["hidden"]),
            int(config["out_dim"]),
        )
        if codes.dim() != 2 or codes.shape[1] != d_books:
            raise ValueError(f"codes have shape {tuple(codes.shape)}, expected [N, {d_books}]")
        if codes.is_floating_point() or codes.dtype == torch.bool:
            raise ValueError(f"codes must be integers, got {codes.dtype}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= k):
            raise ValueError(f"codes must lie in 0..{k - 1}")
        if kind == "concat" and d_books * code_dim < out_dim:
            raise ValueError("concat needs num_codebooks * code_dim >= out_dim")
        if kind == "split" and d_books > out_dim:
            raise ValueError("split needs num_codebooks <= out_dim")
        widest = -(-out_dim // d_books) if d_books else 0
        if kind == "split" and code_dim != widest:
            raise ValueError(
                f"split of out_dim {out_dim} into {d_books} groups needs "
                f"code_dim = ceil(out_dim / num_codebooks) = {widest}, got {code_dim}"
            )
        if kind in ("mlp", "lstm", "conditioned") and hidden < 1:
            raise ValueError(f"the {kind} composer needs hidden >= 1, got {hidden}")
        if kind in ("conditioned", "sum") and code_dim != out_dim:
            raise ValueError(
                f"{kind} adds code vectors to the output: code_dim must equal "
                f"out_dim = {out_dim}, got {code_dim}"
            )
        if vocab is not None and len(vocab) != codes.shape[0]:
            raise ValueError(f"{len(vocab)} words for {codes.shape[0]} rows of codes")

        self.kind = kind
        self.num_codebooks, self.num_codes = d_books, k
        self.code_dim, self.hidden, self.out_dim = code_dim, hidden, out_dim
        self.embedding_dim = out_dim
        self.num_embeddings = int(codes.shape[0])
        # Kept in the export's narrow dtype: N x D int64 would cost 8 bytes a code.
        self.register_buffer("codes", codes.clone())
        self.register_buffer("_positions", torch.arange(d_books), persistent=False)
        if kind in ("concat", "split"):
            # Where each output column sits in the D * d' chosen values; a gather keeps split's
            # padding values out of the output and out of the gradient.
            self.register_buffer(
                "_columns", assembled_columns(kind, d_books, code_dim, out_dim), persistent=False
            )
        self.codebooks = nn.Parameter(torch.randn(d_books, k, code_dim) * 0.1)

        self.composer = nn.Module()
        if kind in ("linear", "mlp"):
            self.composer.out = nn.Linear(code_dim, out_dim)
        if kind == "mlp":
            self.composer.hidden = nn.Linear(code_dim, hidden)
            self.composer.hidden_out = nn.Linear(hidden, out_dim, bias=False)
        if kind == "lstm":
            # LSTMCell's gates (input, forget, cell, output) and parameter names match
            # src/composer.rs and the export: composer.lstm.weight_ih and so on.
            self.composer.lstm = nn.LSTMCell(code_dim, hidden)
            self.composer.out = nn.Linear(hidden, out_dim)
        if kind == "conditioned":
            # composer.cond.{code,sum,out}.weight and composer.cond.step, as in the export.
            cond = nn.Module()
            cond.code = nn.Linear(out_dim, hidden, bias=False)
            cond.sum = nn.Linear(out_dim, hidden, bias=False)
            cond.step = nn.Parameter(torch.zeros(d_books, hidden))
            cond.out = nn.Linear(hidden, out_dim, bias=False)
            # As the trainer starts: the correction is zero, so a fresh layer decodes as the sum.
            nn.init.zeros_(cond.out.weight)
            self.composer.cond = cond

        self.vocab: Optional[List[str]] = list(vocab) if vocab is not None else None
        self._index = {w: i for i, w in enumerate(self.vocab)} if self.vocab else {}
        #: The open ``.kdz`` when built by :meth:`from_kdz`: words and lookups come from it.
        self.kdz: Optional[Kdz] = None
        self.source_metadata: Dict[str, object] = {}
        if tensors:
            self.load_tensors(tensors)

    def load_tensors(self, tensors: Dict[str, torch.Tensor]) -> None:
        """Copies ``codebooks`` and composer tensors in, checking that names and shapes match."""
        own = dict(self.named_parameters())
        unknown = sorted(set(tensors) - set(own))
        if unknown:
            raise ValueError(f"tensors {unknown} are not used by the {self.kind} composer")
        missing = sorted(set(own) - set(tensors))
        if missing:
            raise ValueError(f"tensors {missing} are missing for the {self.kind} composer")
        with torch.no_grad():
            for name, value in tensors.items():
                if tuple(value.shape) != tuple(own[name].shape):
                    raise ValueError(
                        f"tensor {name} has shape {tuple(value.shape)}, "
                        f"expected {tuple(own[name].shape)}"
                    )
                own[name].copy_(value.to(own[name].dtype))

    @classmethod
    def from_kdz(
        cls,
        path: Union[str, "os.PathLike[str]", Kdz],
        freeze_codes: bool = True,
        freeze: bool = False,
        device: Union[str, torch.device, None] = None,
    ) -> "KdEmbedding":
        """Builds the layer from a ``.kdz`` (a path, or a :class:`kdcompress.Kdz` already open).

        The codes become a buffer in the narrowest dtype that indexes (``uint8`` for K <= 256,
        else ``int16`` or ``int32``); the codebooks and the composer become parameters with the
        file's values, trainable unless ``freeze``. ``freeze_codes`` must stay True: codes are
        discrete and get no gradient (new codes come from re-running ``kdcompress``).
        ``forward`` then equals ``Kdz.vectors`` to float rounding.
        """
        if not freeze_codes:
            raise ValueError(
                "freeze_codes=False is not supported: codes are discrete and get no gradient; "
                "train the codebooks and composer instead, or compress again"
            )
        kdz = path if isinstance(path, Kdz) else load(path)
        k = int(kdz.config["num_codes"])
        dtype = np.uint8 if k <= 256 else np.int16 if k <= 32768 else np.int32
        codes = torch.from_numpy(kdz.codes.astype(dtype))
        tensors = {name: torch.from_numpy(v) for name, v in kdz.tensors().items()}
        module = cls(codes, kdz.config, tensors, vocab=None)
        module.kdz = kdz
        module.vocab = kdz.words
        module.source_metadata = kdz.metadata
        if freeze:
            module.requires_grad_(False)
        return module.to(device) if device is not None else module

    @classmethod
    def from_safetensors(cls, path: str, device: Optional[str] = None) -> "KdEmbedding":
        """Loads ``kdcompress export --format safetensors`` output."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device=device or "cpu") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise ValueError(f"{path}: not a kdcompress safetensors export")
            if meta.get("format_version") != FORMAT_VERSION:
                raise ValueError(
                    f"{path}: export layout version {meta.get('format_version')!r}; "
                    f"this module reads version {FORMAT_VERSION}"
                )
            config = json.loads(meta["composer"])
            vocab = json.loads(meta["vocab"]) if "vocab" in meta else None
            tensors = {name: f.get_tensor(name) for name in f.keys()}
        codes = tensors.pop("codes")
        tensors.pop("norms", None)
        module = cls(codes, config, tensors, vocab)
        module.source_metadata = json.loads(meta.get("kdz_metadata", "{}"))
        return module.to(device) if device else module

    def config(self) -> Dict[str, object]:
        """The composer configuration, as in the export's ``composer`` metadata."""
        return {
            "kind": self.kind,
            "num_codebooks": self.num_codebooks,
            "num_codes": self.num_codes,
            "code_dim": self.code_dim,
            "hidden": self.hidden,
            "out_dim": self.out_dim,
        }

    def save_safetensors(self, path: str) -> None:
        """Writes the current weights in the export layout (for example after fine-tuning)."""
        from safetensors.torch import save_file

        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "composer": json.dumps(self.config()),
        }
        if self.vocab is not None:
            meta["vocab"] = json.dumps(self.vocab)
        save_file(tensors, str(path), metadata=meta)

    def index(self, word: str) -> int:
        """The row of ``word``; ``KeyError`` naming close words if absent."""
        if self.kdz is not None:
            return self.kdz.index(word)
        if not self._index:
            raise KeyError("this embedding has no vocabulary")
        try:
            return self._index[word]
        except KeyError:
            folded = word.lower()
            close = [w for w in self._index if w.lower() == folded][:5]
            close += difflib.get_close_matches(word, self._index, n=5 - len(close), cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise KeyError(f"{word!r} is not in the vocabulary{hint}") from None

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        """Vectors ``[..., out_dim]`` for integer ``indices`` of any shape."""
        codes = self.codes[indices].long()  # [..., D]
        # codebooks[i, codes[..., i]] for every position i: [..., D, d']
        e = self.codebooks[self._positions, codes]
        if self.kind in ("concat", "split"):
            flat = e.reshape(*e.shape[:-2], self.num_codebooks * self.code_dim)
            return flat[..., self._columns]
        if self.kind == "sum":
            return e.sum(dim=-2)
        if self.kind in ("linear", "mlp"):
            s = e.sum(dim=-2)
            y = self.composer.out(s)
            if self.kind == "mlp":
                y = y + self.composer.hidden_out(torch.tanh(self.composer.hidden(s)))
            return y
        lead = e.shape[:-2]
        steps = e.reshape(-1, self.num_codebooks, self.code_dim)
        if self.kind == "conditioned":
            return self._conditioned(steps).reshape(*lead, self.out_dim)
        h = steps.new_zeros(steps.shape[0], self.hidden)
        c = steps.new_zeros(steps.shape[0], self.hidden)
        total = steps.new_zeros(steps.shape[0], self.hidden)
        for t in range(self.num_codebooks):
            h, c = self.composer.lstm(steps[:, t], (h, c))
            total = total + h
        return self.composer.out(total).reshape(*lead, self.out_dim)

    def _conditioned(self, steps: torch.Tensor) -> torch.Tensor:
        """x_i = x_{i-1} + e_{i-1} + W_o relu(W_c e_{i-1} + W_s x_{i-1} + t_{i-1}), from x_0 = 0."""
        cond = self.composer.cond
        x = steps.new_zeros(steps.shape[0], self.out_dim)
        for i in range(self.num_codebooks):
            e = steps[:, i]
            z = torch.relu(cond.code(e) + cond.sum(x) + cond.step[i])
            x = x + e + cond.out(z)
        return x

    def extra_repr(self) -> str:
        return (
            f"{self.num_embeddings}, {self.out_dim}, kind={self.kind}, "
            f"D={self.num_codebooks}, K={self.num_codes}, code_dim={self.code_dim}"
            + (f", hidden={self.hidden}" if self.kind in ("mlp", "lstm", "conditioned") else "")
        )
