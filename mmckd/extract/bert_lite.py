"""A BERT encoder in plain torch plus the model's own fast tokenizer (``tokenizers``), without ``transformers``.

Why: importing transformers' modelling code costs 2-5 s per process (it pulls in torch._dynamo and
scikit-learn), more than loading the model, and ``mmckd predict`` pays it before its first score. For the
plain BERT models mmckd reads (all-MiniLM-L6-v2 and any ``BertModel`` folder with ``model.safetensors`` and
``tokenizer.json``: absolute positions, GELU), this computes the same last hidden states (float32: the same operations
in the same order as transformers' BertModel with sdpa attention, so the same numbers; tests/test_bert_lite.py
compares both on real MOSI transcripts) and the
same wordpieces (the same Rust tokenizer transformers' BertTokenizerFast wraps). ``load_lite`` returns None
for anything else, and the caller falls back to transformers.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

_SUPPORTED = {"model_type": "bert", "hidden_act": "gelu", "position_embedding_type": "absolute"}


class LiteTokenizer:
    """The model's tokenizer.json with transformers' per-call settings: no padding, truncation to max_length
    (longest first, [SEP] kept by the post-processor), special tokens added."""

    def __init__(self, path: Path, max_length: int) -> None:
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(path))
        self._tok.no_padding()
        self._tok.enable_truncation(max_length)
        self.pad_token_id = self._tok.token_to_id("[PAD]") or 0

    def __call__(self, texts: list[str], truncation: bool = True, max_length: int | None = None) -> dict:
        if max_length is not None:
            self._tok.enable_truncation(max_length)
        return {"input_ids": [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=True)]}

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [self._tok.id_to_token(i) for i in ids]


class _Output:
    def __init__(self, last_hidden_state: torch.Tensor) -> None:
        self.last_hidden_state = last_hidden_state


class LiteBert(torch.nn.Module):
    """BertModel's forward pass (embeddings, post-LN encoder layers; no pooler), inference only."""

    def __init__(self, config: dict, state: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.config = config
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        for k, v in state.items():  # buffers, so .to(device) moves them
            if not k.startswith("pooler.") and k != "embeddings.position_ids":
                self.register_buffer(k.replace(".", "__"), v.float(), persistent=False)

    def _p(self, name: str) -> torch.Tensor:
        return getattr(self, name.replace(".", "__"))

    def _ln(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], self._p(f"{name}.weight"), self._p(f"{name}.bias"), self.eps)

    def _dense(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(x, self._p(f"{name}.weight"), self._p(f"{name}.bias"))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> _Output:
        # the operations of transformers' BertModel (sdpa attention) in the same order, so the results agree to
        # the bit, not just to rounding: (word + token type) += position; a float mask only when padding exists
        b, n = input_ids.shape
        x = F.embedding(input_ids, self._p("embeddings.word_embeddings.weight"))
        x = x + F.embedding(torch.zeros_like(input_ids), self._p("embeddings.token_type_embeddings.weight"))
        x += F.embedding(
            torch.arange(n, device=input_ids.device)[None], self._p("embeddings.position_embeddings.weight")
        )
        x = self._ln(x, "embeddings.LayerNorm")
        mask = None
        if not bool(torch.all(attention_mask == 1)):
            expanded = attention_mask[:, None, None, :].expand(b, 1, n, n).to(x.dtype)
            inverted = torch.tensor(1.0, dtype=x.dtype) - expanded
            mask = inverted.masked_fill(inverted.to(torch.bool), torch.finfo(x.dtype).min)
        d = x.shape[-1] // self.heads
        for i in range(self.layers):
            p = f"encoder.layer.{i}"
            q, k, v = (
                self._dense(x, f"{p}.attention.self.{t}").view(b, -1, self.heads, d).transpose(1, 2)
                for t in ("query", "key", "value")
            )
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False)
            ctx = ctx.transpose(1, 2).reshape(b, n, self.heads * d)
            a = self._ln(self._dense(ctx, f"{p}.attention.output.dense") + x, f"{p}.attention.output.LayerNorm")
            h = F.gelu(self._dense(a, f"{p}.intermediate.dense"))
            x = self._ln(self._dense(h, f"{p}.output.dense") + a, f"{p}.output.LayerNorm")
        return _Output(x)


def load_lite(folder: str | Path, max_tokens: int) -> tuple[LiteTokenizer, LiteBert, dict] | None:
    """(tokenizer, model, config) of a plain BERT folder, or None when the folder is anything else (other
    architecture or options, no safetensors weights or tokenizer.json, other weight names)."""
    folder = Path(folder)
    cfg_path, weights, tok = folder / "config.json", folder / "model.safetensors", folder / "tokenizer.json"
    if not (cfg_path.is_file() and weights.is_file() and tok.is_file()):
        return None
    try:
        config = json.loads(cfg_path.read_text())
    except (OSError, ValueError):
        return None
    if any(config.get(k, v if k == "position_embedding_type" else None) != v for k, v in _SUPPORTED.items()):
        return None
    try:
        tok_cfg = (
            json.loads((folder / "tokenizer_config.json").read_text())
            if (folder / "tokenizer_config.json").is_file()
            else {}
        )
        normalizer = json.loads(tok.read_text()).get("normalizer") or {}
    except (OSError, ValueError):
        return None
    # transformers rebuilds the normaliser when tokenizer_config disagrees with tokenizer.json: take no chances
    if (
        normalizer.get("type") != "BertNormalizer"
        or ("do_lower_case" in tok_cfg and bool(tok_cfg["do_lower_case"]) != bool(normalizer.get("lowercase")))
        or ("strip_accents" in tok_cfg and tok_cfg["strip_accents"] != normalizer.get("strip_accents"))
    ):
        return None
    from safetensors.torch import load_file

    state = load_file(str(weights))
    if any(k.startswith("bert.") for k in state):
        state = {k[5:]: v for k, v in state.items() if k.startswith("bert.")}
    need = [
        "embeddings.word_embeddings.weight",
        "embeddings.position_embeddings.weight",
        "embeddings.token_type_embeddings.weight",
        "embeddings.LayerNorm.weight",
    ]
    need += [f"encoder.layer.{i}.output.LayerNorm.bias" for i in range(int(config.get("num_hidden_layers", 0)))]
    if any(k not in state for k in need):
        return None
    max_len = min(max_tokens, int(config.get("max_position_embeddings", 512)))
    return LiteTokenizer(tok, max_len), LiteBert(config, state).eval(), config
