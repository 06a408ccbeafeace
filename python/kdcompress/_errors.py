"""The exceptions of :mod:`kdcompress`; the extension raises them too."""

from __future__ import annotations

from typing import List, Optional, Sequence

__all__ = ["KdzError", "UnknownWordError"]


class KdzError(ValueError):
    """A ``.kdz`` that cannot be used: truncated, corrupt, of a newer format version, or a
    word it does not hold. The message starts with the file's path, which is also
    :attr:`path`."""

    def __init__(self, message: str, path: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path

    def __str__(self) -> str:
        return self.message


class UnknownWordError(KdzError, KeyError):
    """A word the file's vocabulary lacks, with the close words it holds (as the CLI suggests
    them). Also a :class:`KeyError`, so code written for dicts and gensim's ``KeyedVectors``
    catches it."""

    def __init__(
        self, message: str, path: Optional[str], word: str, suggestions: Sequence[str]
    ) -> None:
        super().__init__(message, path)
        self.word = word
        self.suggestions: List[str] = list(suggestions)

    # KeyError's own __str__ would quote the message like a key.
    __str__ = KdzError.__str__
