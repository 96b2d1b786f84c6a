"""The MM-CKD networks: one teacher over text+audio+vision and six students over the smaller subsets.

Every network is a ``SubsetNetwork`` over its own modalities and owns all of its parameters:
  * intra-modal: per modality, a linear projection + sinusoidal positions + a small Transformer encoder;
  * inter-modal (``cross_layers`` > 0; none by default): per modality stream, cross-modal attention to each
    other stream of the subset (MulT-style, small): the teacher has 6 directed pairs, a bimodal student 2, a
    unimodal one none;
  * masked mean pooling of every stream, an MLP to the fused embedding, a regression head, and a
    projection head whose L2-normalised output is the network's view for the MVSC loss.
A student never sees (nor reconstructs) the modalities outside its subset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from mmckd.model.config import ModelConfig
from mmckd.model.data import Batch
from mmckd.model.routing import MODALITIES, SUBSETS, TEACHER, subset_modalities

NETWORK_ROLES = {
    s: ("teacher" if s == TEACHER else "bimodal student" if len(s) == 2 else "unimodal student") for s in SUBSETS
}
"""The registry of networks: subset name -> role, in routing order."""


@dataclass
class NetworkOutput:
    """pred: (B,) sentiment scores; embedding: (B, d_model) fused embedding; view: (B, proj_dim) unit-norm;
    aux: per-clip auxiliary training losses of the network ((B,) tensors by name, e.g. the reconstruction
    loss of an imputation network), empty for the MM-CKD networks."""

    pred: torch.Tensor
    embedding: torch.Tensor
    view: torch.Tensor
    aux: dict[str, torch.Tensor] = field(default_factory=dict)


def sinusoidal_positions(length: int, dim: int, device: torch.device) -> torch.Tensor:
    """(length, dim) fixed sine/cosine position codes (no parameters, any length)."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    out = torch.zeros(length, dim, device=device)
    out[:, 0::2] = torch.sin(pos * freq)
    out[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return out


def masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of h (B, T, d) over the frames where mask (B, T) is True."""
    w = mask.to(h.dtype).unsqueeze(-1)
    return (h * w).sum(1) / w.sum(1).clamp_min(1.0)


class ModalityEncoder(nn.Module):
    """Intra-modal encoder: (B, T, dim_in) features -> (B, T, d_model) contextual frames."""

    def __init__(self, dim_in: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        layer = nn.TransformerEncoderLayer(
            cfg.d_model, cfg.heads, cfg.d_model * cfg.ff_mult, cfg.dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.proj(x) * math.sqrt(self.proj.out_features)
        h = self.drop(h + sinusoidal_positions(h.shape[1], h.shape[2], h.device))
        h = self.encoder(h, src_key_padding_mask=~mask)
        return self.norm(h)


class CrossModalLayer(nn.Module):
    """One stream attends to each other stream of the subset, then a feed-forward block (pre-norm)."""

    def __init__(self, sources: tuple[str, ...], cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.sources = sources
        self.norm_q = nn.LayerNorm(d)
        self.norm_kv = nn.ModuleDict({s: nn.LayerNorm(d) for s in sources})
        self.attn = nn.ModuleDict(
            {s: nn.MultiheadAttention(d, cfg.heads, cfg.dropout, batch_first=True) for s in sources}
        )
        self.norm_ff = nn.LayerNorm(d)
        self.ff = nn.Sequential(
            nn.Linear(d, d * cfg.ff_mult), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(d * cfg.ff_mult, d)
        )
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, target: torch.Tensor, streams: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]):
        q = self.norm_q(target)
        update = 0
        for s in self.sources:
            kv = self.norm_kv[s](streams[s])
            out, _ = self.attn[s](q, kv, kv, key_padding_mask=~masks[s], need_weights=False)
            update = update + out
        h = target + self.drop(update)
        return h + self.drop(self.ff(self.norm_ff(h)))


def stream_dropout(keep: torch.Tensor, rate: float) -> torch.Tensor:
    """Modality dropout: each stream a clip has is dropped with probability ``rate``, but never all of them
    (a clip that would lose all keeps one, drawn at random). keep: (B, k) bool -> (B, k) bool."""
    drop = torch.rand(keep.shape, device=keep.device) < rate
    out = keep & ~drop
    lost = ~out.any(1) & keep.any(1)
    if lost.any():
        scores = torch.rand(keep.shape, device=keep.device).masked_fill(~keep, -1.0)
        pick = F.one_hot(scores.argmax(1), keep.shape[1]).bool()
        out = torch.where(lost[:, None], pick, out)
    return out


class SubsetNetwork(nn.Module):
    """The network of one modality subset ("lav" teacher, "la"/"lv"/"av" bimodal, "l"/"a"/"v" unimodal).

    Two small-data safeguards of the multimodal networks (ModelConfig): ``modality_dropout`` drops whole
    pooled streams of a clip during training, so the fusion cannot lean on a weak modality it would then
    have to trust at test time; ``residual_heads`` adds one linear head per stream to the fused head, so
    the prediction is a sum of unimodal evidence plus a learned interaction (a strong modality reaches
    the output without passing through the fusion of weaker ones)."""

    def __init__(self, subset: str, dims: dict[str, int], cfg: ModelConfig) -> None:
        super().__init__()
        self.subset = subset
        self.modalities = subset_modalities(subset)
        self.modality_dropout = cfg.modality_dropout if len(self.modalities) > 1 else 0.0
        d = cfg.d_model
        self.encoders = nn.ModuleDict({m: ModalityEncoder(int(dims[m]), cfg) for m in self.modalities})
        cross = len(self.modalities) > 1 and cfg.cross_layers > 0
        self.cross = nn.ModuleDict(
            {
                m: nn.ModuleList(
                    CrossModalLayer(tuple(s for s in self.modalities if s != m), cfg) for _ in range(cfg.cross_layers)
                )
                for m in self.modalities
            }
            if cross
            else {}
        )
        self.fuse = nn.Sequential(
            nn.Linear(d * len(self.modalities), d), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(d, d)
        )
        self.head = nn.Linear(d, 1)
        self.residual_heads = (
            nn.ModuleDict({m: nn.Linear(d, 1) for m in self.modalities})
            if cfg.residual_heads and len(self.modalities) > 1
            else None
        )
        self.projection = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, cfg.proj_dim))

    def forward(self, batch: Batch, keep: torch.Tensor | None = None) -> NetworkOutput:
        """keep: (B, 3) bool in MODALITIES order, modalities to withhold from each clip (zero fill, as a
        clip that lacks them); None reads what the batch holds."""
        if keep is not None:
            batch = batch.withhold(keep)
        masks = {m: batch.mask[m] for m in self.modalities}
        streams = {m: self.encoders[m](batch.x[m], masks[m]) for m in self.modalities}
        if self.cross:
            # a ModuleDict of ModuleLists: its items are typed Module, which has no len() or [] for the checker
            for layer in range(len(next(iter(self.cross.values())))):  # type: ignore[arg-type]
                streams = {m: self.cross[m][layer](streams[m], streams, masks) for m in self.modalities}  # type: ignore[index]
        pooled = [masked_mean(streams[m], masks[m]) for m in self.modalities]
        if self.training and self.modality_dropout > 0:
            cols = [MODALITIES.index(m) for m in self.modalities]
            kept = stream_dropout(batch.present[:, cols], self.modality_dropout)
            pooled = [p * kept[:, j : j + 1].to(p.dtype) for j, p in enumerate(pooled)]
        embedding = self.fuse(torch.cat(pooled, dim=-1))
        pred = self.head(embedding).squeeze(-1)
        if self.residual_heads is not None:
            pred = pred + sum(self.residual_heads[m](p).squeeze(-1) for m, p in zip(self.modalities, pooled))
        view = F.normalize(self.projection(embedding), dim=-1)
        return NetworkOutput(pred, embedding, view)


class MMCKDModel(nn.Module):
    """The trained networks, keyed by subset name (only the subsets the data allowed to train)."""

    def __init__(self, networks: dict[str, SubsetNetwork]) -> None:
        super().__init__()
        self.networks = nn.ModuleDict(networks)

    @property
    def subsets(self) -> tuple[str, ...]:
        return tuple(s for s in SUBSETS if s in self.networks)

    def forward(self, subset: str, batch: Batch, keep: torch.Tensor | None = None) -> NetworkOutput:
        return self.networks[subset](batch, keep)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
