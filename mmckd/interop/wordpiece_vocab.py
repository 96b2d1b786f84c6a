"""A BERT wordpiece vocabulary file (``vocab.txt``: one token per line, the line number is its id).

Used to turn MMSA's ``text_bert`` token ids into wordpieces on import and wordpieces back into ids on
export. bert-base-uncased and all-MiniLM-L6-v2 (mmckd's default text model) share one vocabulary.
"""

from __future__ import annotations

import os
from pathlib import Path

from mmckd.interop.errors import InteropError

UNKNOWN = "[UNK]"


class WordpieceVocab:
    """Tokens by id (``tokens``) and ids by token (``index``) of one vocab.txt."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise InteropError(f"{self.path}: cannot read the wordpiece vocabulary ({e})") from None
        self.tokens = [ln.rstrip("\r") for ln in lines]
        if not self.tokens:
            raise InteropError(f"{self.path}: empty wordpiece vocabulary")
        self.index: dict[str, int] = {}
        for i, t in enumerate(self.tokens):
            self.index.setdefault(t, i)
        self.unknown_id = self.index.get(UNKNOWN, 0)

    def __len__(self) -> int:
        return len(self.tokens)

    def to_tokens(self, ids, source: Path) -> list[str]:
        """The wordpieces of integer ids; an id outside the vocabulary is an error naming source."""
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.tokens):
                raise InteropError(f"{source}: token id {i} is outside the vocabulary {self.path} ({len(self)} tokens)")
            out.append(self.tokens[i])
        return out

    def to_ids(self, tokens: list[str]) -> list[int]:
        """Ids of wordpieces; a token the vocabulary lacks becomes [UNK]."""
        return [self.index.get(t, self.unknown_id) for t in tokens]
