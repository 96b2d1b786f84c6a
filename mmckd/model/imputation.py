"""Imputation baselines: one full-modality network that fills in the missing modalities' representations.

These are the methods MM-CKD claims to match at a fraction of the cost, built from the same modality
encoders as the MM-CKD networks so the comparison is about the strategy, not the encoder:

  * ``ImputationNetwork`` (fit mode "imputation"), after MMIN (Zhao et al., ACL 2021): the pooled
    representation of each modality (zeros where missing) goes through a cascade residual autoencoder
    (CRA: ``cra_blocks`` autoencoders, each reading the input plus the previous block's output) that
    reconstructs the full three-modality representation; a backward CRA maps the imputed part back to the
    available one (cycle consistency). Losses (per clip, as ``NetworkOutput.aux``): "reconstruction"
    (imputed vs the encoders' own representation of the withheld modalities, a stop-gradient target) and
    "cycle". The regression head reads the available representations and the imputed missing ones.
  * ``DiffusionImputationNetwork`` (fit mode "diffusion-imputation"), an IMDer-style cost foil (Wang et
    al., NeurIPS 2023): per modality, a score network (noise predictor) conditioned on the available
    modalities' representations, trained by denoising score matching ("denoising" loss) on DDPM's linear
    schedule over ``diffusion_steps`` steps; at inference each missing representation is sampled with
    ``diffusion_steps`` ancestral steps from a fixed-seed generator (the same clip gets the same answer).
    In training the head reads sampled representations of the withheld modalities too (no gradient
    through the sampler), so it learns on what it will see.

Both train with random missing patterns (the "imputation" modes draw a non-empty subset of each clip's
modalities per step) and answer every condition with the one network.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mmckd.model.config import ModelConfig
from mmckd.model.data import Batch
from mmckd.model.networks import ModalityEncoder, NetworkOutput, masked_mean
from mmckd.model.routing import MODALITIES, subset_modalities


class _FullModalityNetwork(nn.Module):
    """Shared parts: a modality encoder per modality (pooled to one vector each) and the fused head."""

    def __init__(self, subset: str, dims: dict[str, int], cfg: ModelConfig) -> None:
        super().__init__()
        self.subset = subset
        self.modalities = subset_modalities(subset)
        d = cfg.d_model
        self.d = d
        self.encoders = nn.ModuleDict({m: ModalityEncoder(int(dims[m]), cfg) for m in self.modalities})
        self.fuse = nn.Sequential(
            nn.Linear(d * len(self.modalities), d), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(d, d)
        )
        self.head = nn.Linear(d, 1)

    def _represent(self, batch: Batch, keep: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, k*d) representations of the modalities each clip has (its full target), the (B, k) mask of
        what the network may read (keep & present), and the (B, k) mask of what the clip has."""
        cols = [MODALITIES.index(m) for m in self.modalities]
        has = batch.present[:, cols]
        avail = has if keep is None else has & keep.to(has.device)[:, cols].bool()
        reps = [masked_mean(self.encoders[m](batch.x[m], batch.mask[m]), batch.mask[m]) for m in self.modalities]
        return torch.cat(reps, dim=-1), avail, has

    def _expand(self, mask: torch.Tensor) -> torch.Tensor:
        """(B, k) per-modality mask -> (B, k*d) per-dimension float mask."""
        return mask.to(torch.float32).repeat_interleave(self.d, dim=1)

    def _answer(self, filled: torch.Tensor, aux: dict[str, torch.Tensor]) -> NetworkOutput:
        embedding = self.fuse(filled)
        return NetworkOutput(self.head(embedding).squeeze(-1), embedding, F.normalize(embedding, dim=-1), aux)


class _Autoencoder(nn.Module):
    def __init__(self, dim: int, widths: tuple[int, ...], dropout: float) -> None:
        super().__init__()
        enc, dec, prev = [], [], dim
        for w in widths:
            enc += [nn.Linear(prev, w), nn.GELU(), nn.Dropout(dropout)]
            prev = w
        for w in (*reversed(widths[:-1]), dim):
            dec += [nn.Linear(prev, w)] + ([nn.GELU()] if w != dim else [])
            prev = w
        self.net = nn.Sequential(*enc, *dec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CascadeResidualAutoencoder(nn.Module):
    """MMIN's CRA: block i reads x + sum of the outputs of blocks < i; the last block's output is the result."""

    def __init__(self, dim: int, widths: tuple[int, ...], blocks: int, dropout: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(_Autoencoder(dim, widths, dropout) for _ in range(blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_in, out = x, torch.zeros_like(x)
        for block in self.blocks:
            x_in = x_in + out
            out = block(x_in)
        return out


class ImputationNetwork(_FullModalityNetwork):
    """MMIN-style imputation network (see module docstring)."""

    TRAINING_ONLY = ("backward_cra",)  # the cycle-consistency path runs in training only

    def __init__(self, subset: str, dims: dict[str, int], cfg: ModelConfig) -> None:
        super().__init__(subset, dims, cfg)
        dim = cfg.d_model * len(self.modalities)
        self.forward_cra = CascadeResidualAutoencoder(dim, cfg.cra_layers, cfg.cra_blocks, cfg.dropout)
        self.backward_cra = CascadeResidualAutoencoder(dim, cfg.cra_layers, cfg.cra_blocks, cfg.dropout)

    def forward(self, batch: Batch, keep: torch.Tensor | None = None) -> NetworkOutput:
        full, avail, has = self._represent(batch, keep)
        a = self._expand(avail)
        imputed = self.forward_cra(full * a)
        filled = full * a + imputed * (1 - a)
        aux: dict[str, torch.Tensor] = {}
        if self.training:
            missing = self._expand(has & ~avail)
            n_missing = missing.sum(1).clamp_min(1.0)
            aux["reconstruction"] = ((imputed - full.detach()) ** 2 * missing).sum(1) / n_missing
            back = self.backward_cra(imputed * (1 - a))
            aux["cycle"] = (
                ((back - (full * a).detach()) ** 2 * a).sum(1) / a.sum(1).clamp_min(1.0) * (missing.sum(1) > 0)
            )
        return self._answer(filled, aux)


def linear_alpha_bars(steps: int) -> torch.Tensor:
    """Cumulative signal fractions alpha_bar_1..alpha_bar_T of DDPM's linear schedule, rescaled to T steps
    (beta from 1e-4 to 0.02 at T = 1000, so alpha_bar_T is near 0 at any T)."""
    scale = 1000.0 / steps
    betas = torch.linspace(1e-4 * scale, min(0.02 * scale, 0.999), steps, dtype=torch.float64)
    return torch.cumprod(1 - betas, 0).float()


class DiffusionImputationNetwork(_FullModalityNetwork):
    """IMDer-style diffusion imputation network (see module docstring)."""

    SAMPLING_SEED = 0
    X0_RANGE = 5.0

    alpha_bar: torch.Tensor  # buffers (register_buffer), declared for the type checker
    alpha_bar_prev: torch.Tensor

    def __init__(self, subset: str, dims: dict[str, int], cfg: ModelConfig) -> None:
        super().__init__(subset, dims, cfg)
        d, k, w = cfg.d_model, len(self.modalities), cfg.denoiser_width
        self.steps = cfg.diffusion_steps
        self.denoisers = nn.ModuleDict(
            {
                m: nn.Sequential(
                    nn.Linear(d + d + k * d + k, w), nn.SiLU(), nn.Linear(w, w), nn.SiLU(), nn.Linear(w, d)
                )
                for m in self.modalities
            }
        )
        ab = linear_alpha_bars(self.steps)
        self.register_buffer("alpha_bar", ab, persistent=False)
        self.register_buffer("alpha_bar_prev", torch.cat([torch.ones(1), ab[:-1]]), persistent=False)

    def _time_embedding(self, t: torch.Tensor) -> torch.Tensor:
        half = self.d // 2
        freq = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        arg = t.float()[:, None] * freq[None]
        return torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)

    def _noise_prediction(self, m: str, x_t, t, cond, cond_mask) -> torch.Tensor:
        inp = torch.cat([x_t, self._time_embedding(t), cond, cond_mask.to(x_t.dtype)], dim=-1)
        return self.denoisers[m](inp)

    def _condition(self, full: torch.Tensor, avail: torch.Tensor, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        """What the score network of modality j conditions on: the available others (j itself masked)."""
        mask = avail.clone()
        mask[:, j] = False
        return full * self._expand(mask), mask

    def forward(self, batch: Batch, keep: torch.Tensor | None = None) -> NetworkOutput:
        full, avail, has = self._represent(batch, keep)
        d = self.d
        parts = list(full.split(d, dim=1))
        aux: dict[str, torch.Tensor] = {}
        if self.training:
            denoise = torch.zeros(full.shape[0], device=full.device)
            for j, m in enumerate(self.modalities):
                cond, cmask = self._condition(full.detach(), avail, j)
                x0 = parts[j].detach()
                t = torch.randint(0, self.steps, (len(x0),), device=x0.device)
                ab = self.alpha_bar[t][:, None]
                eps = torch.randn_like(x0)
                x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
                eps_hat = self._noise_prediction(m, x_t, t, cond, cmask)
                per_clip = ((eps_hat - eps) ** 2).mean(1) * has[:, j]
                denoise = denoise + per_clip
            aux["denoising"] = denoise
        for j, m in enumerate(self.modalities):  # the head reads sampled representations of what is missing
            gone = ~avail[:, j]
            if bool(gone.any()):
                rows = torch.nonzero(gone).squeeze(1)
                cond, cmask = self._condition(full[rows].detach(), avail[rows], j)
                part = parts[j].clone()
                part[rows] = self.sample(m, cond, cmask, seeded=not self.training)
                parts[j] = part
        return self._answer(torch.cat(parts, dim=1), aux)

    @torch.no_grad()
    def sample(self, m: str, cond: torch.Tensor, cond_mask: torch.Tensor, seeded: bool = True) -> torch.Tensor:
        """Ancestral DDPM sampling of modality m's representation, ``diffusion_steps`` steps (each step:
        predict the noise, estimate x0 (clipped to the range of the layer-normed representations), then
        draw from the posterior q(x_{t-1} | x_t, x0)). seeded: from a fixed-seed generator (inference: the
        same clip gets the same answer), else from torch's global generator (training)."""
        gen = torch.Generator(device=cond.device).manual_seed(self.SAMPLING_SEED) if seeded else None
        n = cond.shape[0]
        x = torch.randn((n, self.d), generator=gen, device=cond.device)
        for step in reversed(range(self.steps)):
            t = torch.full((n,), step, device=cond.device, dtype=torch.long)
            eps = self._noise_prediction(m, x, t, cond, cond_mask)
            ab, ab_prev = self.alpha_bar[step], self.alpha_bar_prev[step]
            beta = 1 - ab / ab_prev
            x0 = ((x - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-self.X0_RANGE, self.X0_RANGE)
            x = (ab_prev.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - ab_prev) * x) / (1 - ab)
            if step > 0:
                sigma = ((1 - ab_prev) / (1 - ab) * beta).sqrt()
                x = x + sigma * torch.randn((n, self.d), generator=gen, device=cond.device)
        return x
