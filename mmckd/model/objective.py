"""The training objective of every fit mode: one loss made of named terms, the same code on one process
and data-parallel.

Terms (each a scalar; the loss is their weighted sum):
  * ``regression/<subset>``: each active network's L1 (or MSE) loss on the clips it reads;
  * ``mvsc``: the multi-view supervised contrastive loss over the views of every network on the batch
    (weight ``lambda_mvsc``; variants: ``mvsc_space``, ``mvsc_teacher``, ``mvsc_positives``);
  * the networks' own auxiliary per-clip losses (``NetworkOutput.aux``): ``reconstruction`` and ``cycle``
    of the MMIN-style imputation (weights ``lambda_reconstruction``, ``lambda_cycle``), ``denoising`` of
    the diffusion imputation (weight ``lambda_reconstruction``).

How the networks run (``FitConfig.train_step``): "per-network", each network on the sub-batch of clips
that have its modalities, one after another; "grouped", the routed modes' active networks in one
stacked pass over the whole batch (``mmckd.model.grouped``), each network's regression sum taken over
the same clips and its MVSC views on them, in the same order, so the terms are the per-network ones up
to float rounding. Grouped falls back to per-network where it does not apply (``_grouped_networks``).

Data parallelism lives here, not in the training loop: the objective is called on one rank's shard of a
global batch (on one process: the whole batch, offset 0, world 1). Per-clip sums are divided by the
number of clips each term covers in the whole global batch and multiplied by the world size, so
DistributedDataParallel's gradient average equals the gradient of the global-batch means; MVSC views
are gathered from every rank with gradient and the loss is computed over the global pool.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mmckd.model.config import FitConfig
from mmckd.model.data import Batch
from mmckd.model.grouped import grouped_forward, grouped_unsupported, to_device
from mmckd.model.inference import subset_columns
from mmckd.model.modes import FitMode, Phase
from mmckd.model.mvsc import pooled_mvsc_loss
from mmckd.model.networks import MMCKDModel
from mmckd.model.routing import TEACHER

AUX_WEIGHTS = {"reconstruction": "lambda_reconstruction", "cycle": "lambda_cycle", "denoising": "lambda_reconstruction"}


@dataclass
class GlobalBatch:
    """What every rank knows of the global batch: the modalities each clip keeps (N, 3) bool after the
    mode's random withholding, the labels (N,), and where this rank's shard starts."""

    present: np.ndarray
    labels: np.ndarray
    offset: int = 0


class Objective(torch.nn.Module):
    """The loss of one training step (see module docstring). ``dist``: a DistContext or None."""

    def __init__(self, model: MMCKDModel, cfg: FitConfig, mode: FitMode, dist=None) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.mode = mode
        self.dist = dist

    @property
    def world(self) -> int:
        return 1 if self.dist is None else self.dist.world

    def forward(
        self, phase: Phase, batch: Batch, keep: torch.Tensor | None, whole: GlobalBatch
    ) -> tuple[torch.Tensor, dict[str, float]]:
        device = batch.y.device
        world = self.world
        terms: dict[str, torch.Tensor] = {}
        view_rows: list[torch.Tensor] = []
        view_parts: list[torch.Tensor] = []
        counted: list[str] = []
        grouped = self._grouped_networks(phase, batch, keep)
        if grouped:
            counted += self._grouped_terms(grouped, batch, whole, terms, view_rows, view_parts, phase.use_mvsc)
        for s in (*phase.active, *phase.frozen):
            if s in grouped:
                continue
            if self.mode.random_missing:
                rows = torch.arange(len(batch), device=device)
                total = len(whole.present)
            else:
                cols = subset_columns(s)
                rows = torch.nonzero(batch.present[:, torch.as_tensor(cols, device=device)].all(1)).squeeze(1)
                total = int(whole.present[:, cols].all(1).sum())
            if s in phase.active and total:
                counted.append(s)
            if not len(rows):
                continue
            sub = batch if len(rows) == len(batch) else batch.select(rows)
            sub_keep = None if keep is None else keep[rows]
            if s in phase.frozen:
                with torch.no_grad():
                    out = self.model(s, sub, sub_keep)
            else:
                out = self.model(s, sub, sub_keep)
                terms[f"regression/{s}"] = self._regression(out.pred, sub.y) * (world / total)
                for name, per_clip in out.aux.items():
                    terms[name] = terms.get(name, 0.0) + per_clip.sum() * (world / total)
            if phase.use_mvsc:
                view = out.view if self.cfg.mvsc_space == "projection" else F.normalize(out.embedding, dim=-1)
                if s == TEACHER and self.cfg.mvsc_teacher == "stop-gradient":
                    view = view.detach()
                view_rows.append(rows + whole.offset)
                view_parts.append(view)
        loss = torch.zeros((), device=device)
        for name, value in terms.items():
            weight = getattr(self.cfg, AUX_WEIGHTS[name]) if name in AUX_WEIGHTS else 1.0
            loss = loss + weight * value
        if phase.use_mvsc:
            mv = self._mvsc(view_rows, view_parts, whole, device)
            if mv is not None:
                terms["mvsc"] = mv
                loss = loss + self.cfg.lambda_mvsc * mv
        if not any(k.startswith("regression/") for k in terms) and self.dist is not None:
            # an empty shard (a global batch smaller than the world): no parameter is in this rank's graph, so
            # DDP would never start its gradient reduction here; a zero-gradient use of one parameter of each
            # network the global batch trains (parameters the other ranks use anyway) keeps it in step
            loss = loss + 0.0 * sum(next(self.model.networks[s].parameters()).sum() for s in counted)
        # one device-to-host copy for all the logged terms (not one synchronisation per term)
        values = torch.stack([torch.as_tensor(v).detach().float() for v in terms.values()]).tolist() if terms else []
        return loss, dict(zip(terms, values))

    def _grouped_networks(self, phase: Phase, batch: Batch, keep: torch.Tensor | None) -> tuple[str, ...]:
        """The active networks this step runs grouped (``train_step`` "grouped"), or () for one by one.

        Grouped: the routed modes' networks (online, offline-teacher, no-mvsc) in one pass of
        ``mmckd.model.grouped``; the frozen teacher of the offline-teacher students phase still runs on
        its own (no gradient, eval mode). One by one: the single-network modes (dropout baseline,
        imputation: random withholding, one network), an empty shard of a distributed step, and
        configurations the grouped pass does not cover (``grouped_unsupported``: cross-modal layers,
        modality dropout)."""
        if self.cfg.train_step != "grouped" or self.mode.random_missing or keep is not None or not len(batch):
            return ()
        networks = [self.model.networks[s] for s in phase.active]
        return phase.active if grouped_unsupported(networks) is None else ()

    def _grouped_terms(
        self,
        subsets: tuple[str, ...],
        batch: Batch,
        whole: GlobalBatch,
        terms: dict[str, torch.Tensor],
        view_rows: list[torch.Tensor],
        view_parts: list[torch.Tensor],
        use_mvsc: bool,
    ) -> list[str]:
        """The regression terms and MVSC views of the networks ``subsets`` from one grouped pass over the
        whole shard: each network's loss is summed over the clips that have its modalities (the clips the
        per-network step would give it), its views are taken on those clips, in the per-network order
        (network by network, clips ascending). Returns the networks the global batch trains."""
        device = batch.y.device
        need = np.stack([subset_columns(s) for s in subsets])  # (G, 3)
        local = whole.present[whole.offset : whole.offset + len(batch)]
        reads = (local[None] | ~need[:, None]).all(2)  # (G, B): network g reads clip b
        totals = (whole.present[None] | ~need[:, None]).all(2).sum(1)  # (G,) over the global batch
        out = grouped_forward([self.model.networks[s] for s in subsets], batch)
        reads_t = to_device(reads, device)
        diff = torch.where(reads_t, out.pred - batch.y, 0.0)  # a clip a network does not read adds nothing
        err = diff.abs() if self.cfg.regression_loss == "l1" else diff.square()
        scale = np.where(totals > 0, self.world / np.maximum(totals, 1), 0.0)
        per_network = err.sum(1) * to_device(scale, device, err.dtype)
        for g, s in enumerate(subsets):
            if reads[g].any():
                terms[f"regression/{s}"] = per_network[g]
        if use_mvsc:
            views = out.view if self.cfg.mvsc_space == "projection" else F.normalize(out.embedding, dim=-1)
            if TEACHER in subsets and self.cfg.mvsc_teacher == "stop-gradient":
                teacher = to_device([s == TEACHER for s in subsets], device)[:, None, None]
                views = torch.where(teacher, views.detach(), views)
            flat = np.flatnonzero(reads.ravel())
            view_parts.append(views.reshape(-1, views.shape[-1]).index_select(0, to_device(flat, device)))
            view_rows.append(to_device(flat % len(batch) + whole.offset, device))
        return [s for s, total in zip(subsets, totals) if total]

    def _regression(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = F.l1_loss if self.cfg.regression_loss == "l1" else F.mse_loss
        return loss(pred, y, reduction="sum")

    def _mvsc(self, view_rows, view_parts, whole: GlobalBatch, device) -> torch.Tensor | None:
        """MVSC over the views of the global batch (gathered with gradient across ranks)."""
        proj = view_parts[0].shape[1] if view_parts else self.cfg.model.proj_dim
        local = torch.cat(view_parts) if view_parts else torch.zeros((0, proj), device=device)
        positions = torch.cat(view_rows) if view_rows else torch.zeros(0, dtype=torch.long, device=device)
        if self.dist is not None:  # every rank joins the gathers, also with an empty shard
            if not local.requires_grad:  # the gather's backward is a collective: every rank must run it
                local = local.detach().requires_grad_()
            local = self.dist.gather_rows(local, with_grad=True)
            positions = self.dist.gather_rows(positions)
        if not len(local):
            return None
        labels = torch.as_tensor(whole.labels, device=device, dtype=torch.float32)
        cfg = self.cfg
        return pooled_mvsc_loss(
            positions, local, labels, cfg.temperature, cfg.class_scheme, cfg.neutral_band, cfg.mvsc_positives
        )
