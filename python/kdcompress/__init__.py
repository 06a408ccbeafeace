"""Read ``.kdz`` files (compressed word vectors, KD codes) from Python.

``kdcompress.load`` opens and validates a file written by the ``kdcompress`` command; lookups
and decoding run in Rust (the reader of the ``kdcompress`` crate, no LibTorch), arrays come
back as numpy. Names follow gensim's ``KeyedVectors`` where it has one::

    import kdcompress
    kd = kdcompress.load("glove.kdz")
    kd["king"]                      # float32 vector, shape (d,)
    kd.most_similar("king", topn=5) # [(word, cosine), ...], as `kdcompress similar` lists them
    matrix = kd.decode_all()        # (N, d), decoded on all cores

``kdcompress.torch.KdEmbedding`` (needs PyTorch) is an ``nn.Embedding`` that stays compressed.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _native
from ._errors import KdzError, UnknownWordError

__all__ = ["load", "Kdz", "KdzError", "UnknownWordError", "__version__"]

__version__ = "0.1.0"

PathLike = Union[str, "os.PathLike[str]"]
#: A word, or a row number.
Key = Union[str, int]


def load(path: PathLike) -> "Kdz":
    """Opens the ``.kdz`` at ``path`` and checks all of it (header, checksums, sizes, codes).

    Raises :class:`KdzError` (a ``ValueError``) naming the file and the reason when it is
    truncated, corrupt or of a newer format version, and ``OSError`` (e.g.
    ``FileNotFoundError``) when it cannot be read. The file is memory-mapped: replace it by
    renaming a new file over it, never by writing into it while it is open.
    """
    return Kdz(_native.open(os.fspath(path)))


class Kdz:
    """An open ``.kdz``: the vocabulary, the codes and the composer that decodes them.

    Made by :func:`load`. Row ``i`` is word ``words[i]``; vectors are float32.
    """

    def __init__(self, reader: "_native.Reader") -> None:
        self._reader = reader
        self._words: Optional[List[str]] = None
        self._key_to_index: Optional[Dict[str, int]] = None
        self._codes: Optional[np.ndarray] = None

    # The vocabulary --------------------------------------------------------------------

    @property
    def path(self) -> str:
        """The file this was read from."""
        return self._reader.path_str

    def __len__(self) -> int:
        return len(self._reader)

    def __contains__(self, word: object) -> bool:
        return isinstance(word, str) and self._reader.row(word) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self.words)

    @property
    def words(self) -> List[str]:
        """The words in row order (gensim: ``index_to_key``). Do not modify the list."""
        if self._words is None:
            self._words = self._reader.words()
        return self._words

    @property
    def index_to_key(self) -> List[str]:
        """gensim's name for :attr:`words`."""
        return self.words

    @property
    def key_to_index(self) -> Dict[str, int]:
        """Word to row, as a dict (built on first use; :meth:`index` needs no dict)."""
        if self._key_to_index is None:
            self._key_to_index = {w: i for i, w in enumerate(self.words)}
        return self._key_to_index

    def index(self, word: str) -> int:
        """The row of ``word``; :class:`UnknownWordError` with suggestions if it is absent."""
        row = self._reader.row(word) if isinstance(word, str) else None
        if row is None:
            raise self._unknown(word)
        return row

    def get_index(self, word: str, default: Optional[int] = None) -> int:
        """gensim's ``get_index``: the row of ``word``, else ``default`` if given, else raises."""
        row = self._reader.row(word) if isinstance(word, str) else None
        if row is not None:
            return row
        if default is not None:
            return default
        raise self._unknown(word)

    def has_index_for(self, word: str) -> bool:
        """gensim's name for ``word in kd``."""
        return word in self

    def _unknown(self, word: object) -> UnknownWordError:
        if not isinstance(word, str):
            return UnknownWordError(
                f"{self.path}: words are str, not {type(word).__name__} ({word!r})",
                self.path,
                str(word),
                [],
            )
        message, suggestions = self._reader.unknown_word(word)
        return UnknownWordError(message, self.path, word, suggestions)

    # What the file holds ---------------------------------------------------------------

    @property
    def vector_size(self) -> int:
        """Width d of a decoded vector (gensim's name)."""
        return self._reader.dim

    @property
    def config(self) -> Dict[str, Any]:
        """The composer: ``kind`` (linear, mlp, lstm, concat, split, conditioned),
        ``num_codebooks`` (D), ``num_codes`` (K), ``code_dim`` (d'), ``hidden`` (h),
        ``out_dim`` (d)."""
        return self._reader.config()

    @property
    def version(self) -> Tuple[int, int]:
        """Format version of the file, ``(major, minor)``."""
        return self._reader.version

    @property
    def metadata(self) -> Dict[str, Any]:
        """How the file was made (method, source file, training options, metrics), as the
        metadata section holds it."""
        meta: Dict[str, Any] = json.loads(self._reader.metadata_json())
        return meta

    @property
    def bits_per_word(self) -> int:
        """Bits of code per word: ``D * ceil(log2 K)``."""
        return int(self.config["num_codebooks"]) * self._reader.bits_per_code

    @property
    def file_size(self) -> int:
        """Bytes of the ``.kdz`` file."""
        return self._reader.file_len

    @property
    def codes(self) -> np.ndarray:
        """Every word's D codes, unpacked: read-only ``uint16`` array ``(N, D)``."""
        if self._codes is None:
            d_books = self.config["num_codebooks"]
            codes = np.frombuffer(self._reader.codes(), dtype=np.uint16)
            self._codes = codes.reshape(len(self), d_books)
        return self._codes

    def code(self, word: Key) -> np.ndarray:
        """The D codes of one word (or row)."""
        row: np.ndarray = self.codes[self._row(word)]
        return row

    @property
    def norms(self) -> Optional[np.ndarray]:
        """Per-word L2 norms of the source vectors, if the file has them."""
        raw = self._reader.norms()
        return None if raw is None else np.frombuffer(raw, dtype=np.float32)

    def tensors(self) -> Dict[str, np.ndarray]:
        """The codebooks ``[D, K, d']`` and composer weights, by their names in the format
        (``codebooks``, ``composer.out.weight``, ...): fresh float32 arrays."""
        return {
            name: np.frombuffer(raw, dtype=np.float32).reshape(shape).copy()
            for name, (shape, raw) in self._reader.tensors().items()
        }

    # Vectors ---------------------------------------------------------------------------

    def _row(self, key: Key) -> int:
        if isinstance(key, str):
            return self.index(key)
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            row = int(key)
            if not 0 <= row < len(self):
                raise IndexError(f"{self.path}: row {row} is out of range for {len(self)} words")
            return row
        raise TypeError(f"expected a word or a row number, got {type(key).__name__}")

    def _rows(self, keys: Any) -> Tuple[List[int], Tuple[int, ...]]:
        """Rows for a sequence or array of words or row numbers, and the shape it had."""
        if isinstance(keys, str):
            raise TypeError("vectors() takes a sequence of words or ids; use kd[word] for one")
        if isinstance(keys, (list, tuple)) and any(isinstance(k, str) for k in keys):
            # Not through numpy, which would turn the ids of a mixed list into strings.
            return [self._row(k) for k in keys], (len(keys),)
        if hasattr(keys, "detach") and hasattr(keys, "cpu"):  # a torch tensor
            keys = keys.detach().cpu().numpy()
        arr = np.asarray(keys)
        if arr.size == 0:
            return [], arr.shape
        if arr.dtype.kind in "iu":
            flat = arr.reshape(-1)
            if int(flat.min()) < 0 or int(flat.max()) >= len(self):
                bad = int(flat.min()) if int(flat.min()) < 0 else int(flat.max())
                raise IndexError(f"{self.path}: row {bad} is out of range for {len(self)} words")
            return flat.tolist(), arr.shape
        if arr.dtype.kind in "UO":
            return [self._row(k) for k in arr.reshape(-1).tolist()], arr.shape
        raise TypeError(f"expected words or integer ids, got an array of {arr.dtype}")

    def __getitem__(self, key: Union[Key, Sequence[Key]]) -> np.ndarray:
        """``kd["king"]``: the decoded vector ``(d,)``; a row number works too, and a list of
        words or ids gives ``(len, d)`` as :meth:`vectors`."""
        if isinstance(key, (str, int, np.integer)):
            return self._decode([self._row(key)], ())
        return self.vectors(key)

    def get_vector(self, word: Key, norm: bool = False) -> np.ndarray:
        """gensim's ``get_vector``: the decoded vector, scaled to unit length if ``norm``."""
        v = self[word]
        if norm:
            length = float(np.linalg.norm(v))
            if length > 0:
                v = v / length
        return v

    def vectors(self, words_or_ids: Any) -> np.ndarray:
        """Decoded vectors of words or row ids (a list, a numpy or torch array of any shape):
        float32, the input's shape plus ``(d,)``."""
        rows, shape = self._rows(words_or_ids)
        return self._decode(rows, shape)

    def _decode(self, rows: List[int], shape: Tuple[int, ...]) -> np.ndarray:
        raw = self._reader.decode_rows(rows)
        return np.frombuffer(raw, dtype=np.float32).reshape(*shape, self.vector_size)

    def decode_all(self) -> np.ndarray:
        """Every word decoded, ``(N, d)`` float32, in row order; on all cores, without the
        GIL. A new writable array on each call."""
        raw = self._reader.decode_all()
        return np.frombuffer(raw, dtype=np.float32).reshape(len(self), self.vector_size)

    # Neighbours ------------------------------------------------------------------------

    def most_similar(
        self,
        positive: Union[Key, np.ndarray, Sequence[Key], None] = None,
        negative: Union[Key, Sequence[Key], None] = None,
        topn: int = 10,
    ) -> List[Tuple[str, float]]:
        """The ``topn`` words nearest by cosine of the decoded vectors, most similar first:
        ``[(word, cosine), ...]``, the query words left out.

        ``positive`` is a word, a row, a vector ``(d,)``, or a list of words whose unit vectors
        are added (and ``negative``'s subtracted), as in gensim. For one word this is exactly
        the list ``kdcompress similar FILE WORD -k TOPN`` prints. The first call decodes and
        normalises the whole table once and keeps it (N x d floats).
        """
        if topn < 0:
            raise ValueError(f"topn must be >= 0, got {topn}")
        vector = None
        pos: List[int] = []
        if isinstance(positive, np.ndarray) and positive.dtype.kind == "f":
            vector = [float(x) for x in positive.reshape(-1)]
        elif positive is not None:
            keys = [positive] if isinstance(positive, (str, int, np.integer)) else positive
            pos = [self._row(k) for k in keys]
        neg_keys = [] if negative is None else negative
        if isinstance(neg_keys, (str, int, np.integer)):
            neg_keys = [neg_keys]
        neg = [self._row(k) for k in neg_keys]
        if vector is None and not pos and not neg:
            raise ValueError("most_similar needs at least one positive or negative word")
        found = self._reader.most_similar(pos, neg, topn, vector)
        return [(self._reader.word(row), cosine) for row, cosine in found]

    def similar_by_vector(self, vector: np.ndarray, topn: int = 10) -> List[Tuple[str, float]]:
        """The ``topn`` words whose decoded vectors are nearest by cosine to ``vector``."""
        return self.most_similar(np.asarray(vector, dtype=np.float32), topn=topn)

    def similarity(self, w1: Key, w2: Key) -> float:
        """Cosine similarity of two words' decoded vectors."""
        a, b = self[w1], self[w2]
        denom = float(np.linalg.norm(a) * np.linalg.norm(b))
        return float(np.dot(a, b) / denom) if denom > 0 else 0.0

    def same_code(self, word: Key) -> List[str]:
        """The other words with exactly the code of ``word`` (they decode to the same vector),
        in row order, as ``kdcompress codes`` lists them."""
        return [self._reader.word(r) for r in self._reader.same_code(self._row(word))]

    def __repr__(self) -> str:
        c = self.config
        return (
            f"<kdcompress.Kdz {self.path!r}: {len(self)} words, d={c['out_dim']}, "
            f"{c['kind']} composer, K={c['num_codes']}, D={c['num_codebooks']}>"
        )
