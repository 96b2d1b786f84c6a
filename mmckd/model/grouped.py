"""The grouped forward pass of training: several ``SubsetNetwork``s on one batch without a Python loop per network.

The per-network modules stay the owners of every parameter (the bundle and checkpoint formats do not
change); each call stacks the parameters of the same-shaped parts of the networks into a leading
network dimension and runs them with batched matrix products, so autograd routes every gradient back
to the per-network parameters:

  * intra-modal encoders: the networks that read a modality (the teacher, two bimodal students and one
    unimodal student) share its input, so the modality's encoders run as one group: one GEMM for the
    input projections of the group, then each Transformer layer as batched matmuls and one
    scaled-dot-product attention over (networks x clips);
  * fusion: the first fusion layer reads the concatenation of a network's pooled streams, so it is the
    sum over its modalities of one weight block each; per modality the blocks of the networks reading
    it are one batched matmul, added into their networks' rows. The rest (second fusion layer,
    regression head, residual heads, projection head) is the same shape for every network: one batched
    matmul each.

Every network sees every clip of the batch (a clip's absent modalities are zero filled, as ``Batch``
holds them); the caller weights each network's losses by the clips that have its modalities. Outputs
per clip equal ``SubsetNetwork.forward`` on that clip up to floating-point summation order (exactly the
same operations; dropout draws its masks in another order, so with dropout on the two agree in
distribution, not bit for bit).

What it does not cover (``grouped_unsupported`` says why, and the objective runs those networks one by
one): cross-modal attention layers (``cross_layers`` > 0: each stream attends to a different set of
streams in each network) and modality dropout (drawn per network and per clip). Networks that are not
``SubsetNetwork`` (the imputation baselines') are single-network modes and never grouped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmckd.model.data import Batch
from mmckd.model.networks import ModalityEncoder, SubsetNetwork, masked_mean, sinusoidal_positions
from mmckd.model.routing import MODALITIES


@dataclass
class GroupedOutput:
    """pred: (G, B) scores; embedding: (G, B, d_model); view: (G, B, proj_dim) unit-norm; G networks in the
    order they were given, B the clips of the batch (every network on every clip)."""

    pred: torch.Tensor
    embedding: torch.Tensor
    view: torch.Tensor


def grouped_unsupported(networks: list) -> str | None:
    """Why these networks cannot run grouped (None: they can)."""
    if not networks:
        return "no network to run"
    for net in networks:
        if not isinstance(net, SubsetNetwork):
            return f"{type(net).__name__} is not a SubsetNetwork"
        if net.cross:
            return "cross-modal layers (cross_layers > 0) differ per network"
        if net.modality_dropout > 0:
            return "modality dropout is drawn per network"
    if len({net.training for net in networks}) > 1:
        return "the networks are not all in the same (train/eval) mode"
    return None


def to_device(values, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A small host array (indices, masks, scales) on device, copied without waiting for the device's queue
    (a blocking copy to a GPU would stall the step on the kernels already queued)."""
    return torch.as_tensor(np.asarray(values), dtype=dtype).to(device, non_blocking=True)


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    return tensors[0].unsqueeze(0) if len(tensors) == 1 else torch.stack(tensors)


def _wb(modules: list) -> tuple[torch.Tensor, torch.Tensor]:
    """The stacked weights and biases of same-shaped Linear or LayerNorm modules, one per network."""
    return _stack([m.weight for m in modules]), _stack([m.bias for m in modules])


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Per-network linear layer: x (G, ..., in), weight (G, out, in), bias (G, out) -> (G, ..., out)."""
    g, out = weight.shape[0], weight.shape[1]
    flat = x.reshape(g, -1, x.shape[-1])
    y = torch.baddbmm(bias.unsqueeze(1), flat, weight.transpose(1, 2))
    return y.reshape(*x.shape[:-1], out)


def _layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """Per-network LayerNorm over the last dimension: x (G, ..., d), weight/bias (G, d)."""
    shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],)
    return torch.addcmul(bias.reshape(shape), F.layer_norm(x, x.shape[-1:], eps=eps), weight.reshape(shape))


def _encode(encoders: list[ModalityEncoder], x: torch.Tensor, mask: torch.Tensor, training: bool) -> torch.Tensor:
    """The encoders (same modality, one per network) on the same input x (B, T, dim), mask (B, T) ->
    (G, B, T, d): ``ModalityEncoder.forward`` of each, with the networks stacked."""
    g, (b, t, _) = len(encoders), x.shape
    first = encoders[0]
    d = first.proj.out_features
    # one GEMM for the group's input projections (the input is shared)
    w = torch.cat([e.proj.weight for e in encoders])
    bias = torch.cat([e.proj.bias for e in encoders])
    h = F.linear(x, w, bias).reshape(b, t, g, d).permute(2, 0, 1, 3).contiguous()  # (G, B, T, d)
    h = F.dropout(h * math.sqrt(d) + sinusoidal_positions(t, d, h.device), first.drop.p, training)
    attend = mask[:, None, None, :].repeat(g, 1, 1, 1)  # (G*B, 1, 1, T): True on the keys to attend to
    for i, layer in enumerate(first.encoder.layers):
        layers = [e.encoder.layers[i] for e in encoders]
        heads = layer.self_attn.num_heads
        # self-attention block (pre-norm), as nn.TransformerEncoderLayer(norm_first=True) computes it
        y = _layer_norm(h, *_wb([la.norm1 for la in layers]), layer.norm1.eps)
        in_w = _stack([la.self_attn.in_proj_weight for la in layers])
        in_b = _stack([la.self_attn.in_proj_bias for la in layers])
        q, k, v = _linear(y, in_w, in_b).reshape(g * b, t, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        p_attn = layer.self_attn.dropout if training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=attend, dropout_p=p_attn)
        a = _linear(a.transpose(1, 2).reshape(g, b, t, d), *_wb([la.self_attn.out_proj for la in layers]))
        h = h + F.dropout(a, layer.dropout1.p, training)
        # feed-forward block (pre-norm)
        y = _layer_norm(h, *_wb([la.norm2 for la in layers]), layer.norm2.eps)
        y = layer.activation(_linear(y, *_wb([la.linear1 for la in layers])))
        y = _linear(F.dropout(y, layer.dropout.p, training), *_wb([la.linear2 for la in layers]))
        h = h + F.dropout(y, layer.dropout2.p, training)
    return _layer_norm(h, *_wb([e.norm for e in encoders]), first.norm.eps)


CPU_CHUNK_ELEMENTS = 1 << 21
"""On a CPU, the encoders of a group run on chunks of clips whose attention matrices (networks x clips x
heads x frames x frames) hold at most about this many elements: one group over the whole batch works on
tensors the networks' count times larger than one network's, which fall out of the CPU caches and made
the grouped step slower than the per-network one (memory-bound elementwise work: softmax, dropout).
On a GPU the group runs on the whole batch at once (few large kernels are what it needs)."""


def _chunk_rows(
    group: int, clips: int, frames: int, encoder: ModalityEncoder, device: torch.device, elements: int | None
) -> int:
    """Clips per encoder call: all of them on a GPU (or when elements is 0), else see CPU_CHUNK_ELEMENTS."""
    budget = (CPU_CHUNK_ELEMENTS if device.type == "cpu" else 0) if elements is None else elements
    if budget <= 0:
        return max(1, clips)
    per_clip = group * encoder.encoder.layers[0].self_attn.num_heads * frames * frames
    return max(1, min(clips, budget // max(1, per_clip)))


def grouped_forward(modules: Sequence[nn.Module], batch: Batch, chunk_elements: int | None = None) -> GroupedOutput:
    """The networks (SubsetNetworks, see ``grouped_unsupported``) on every clip of batch, stacked in the
    given order."""
    reason = grouped_unsupported(list(modules))
    if reason is not None:
        raise ValueError(f"these networks cannot run grouped: {reason}")
    networks = cast(list[SubsetNetwork], list(modules))
    fuse_in = [cast(nn.Linear, net.fuse[0]) for net in networks]
    training = networks[0].training
    n, b = len(networks), len(batch)
    d = networks[0].head.in_features
    device = batch.y.device
    fused = _stack([f.bias for f in fuse_in]).unsqueeze(1).expand(n, b, d)
    residual = torch.zeros(n, b, device=device)
    for m in MODALITIES:
        readers = [g for g, net in enumerate(networks) if m in net.modalities]
        if not readers:
            continue
        encoders = [cast(ModalityEncoder, networks[g].encoders[m]) for g in readers]
        x, mask = batch.x[m], batch.mask[m]
        rows = _chunk_rows(len(readers), b, x.shape[1], encoders[0], x.device, chunk_elements)
        streams = torch.cat(
            [_encode(encoders, x[r : r + rows], mask[r : r + rows], training) for r in range(0, b, rows)], dim=1
        )
        t = streams.shape[2]
        pooled = masked_mean(streams.reshape(-1, t, d), batch.mask[m].repeat(len(readers), 1))
        pooled = pooled.reshape(len(readers), b, d)
        blocks = []
        for g in readers:
            j = networks[g].modalities.index(m)
            blocks.append(fuse_in[g].weight[:, j * d : (j + 1) * d])
        part = torch.bmm(pooled, _stack(blocks).transpose(1, 2))
        index = to_device(readers, device)
        fused = fused.index_add(0, index, part)
        with_heads = [k for k, g in enumerate(readers) if networks[g].residual_heads is not None]
        if with_heads:
            heads = [networks[readers[k]].residual_heads[m] for k in with_heads]  # type: ignore[index]
            sel = to_device(with_heads, device)
            r = _linear(pooled.index_select(0, sel), *_wb(heads))
            residual = residual.index_add(0, index.index_select(0, sel), r.squeeze(-1))
    hidden = F.dropout(networks[0].fuse[1](fused), cast(nn.Dropout, networks[0].fuse[2]).p, training)
    embedding = _linear(hidden, *_wb([net.fuse[3] for net in networks]))
    pred = _linear(embedding, *_wb([net.head for net in networks])).squeeze(-1) + residual
    proj = F.relu(_linear(embedding, *_wb([net.projection[0] for net in networks])))
    proj = _linear(proj, *_wb([net.projection[2] for net in networks]))
    return GroupedOutput(pred, embedding, F.normalize(proj, dim=-1))
