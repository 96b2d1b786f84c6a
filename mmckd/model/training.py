"""Training MM-CKD: the run (seeds, compared modes, outputs) and the per-seed training loop.

    from mmckd.model.training import fit
    result = fit("features.h5", "runs/NAME", FitConfig(epochs=20, seeds=(1, 2, 3)))

Run folder:
    run.json                     fit configuration + the feature file's config hash (checked on resume)
    model/                       the predict bundle of the best seed (lowest mean valid MAE)
    seeds/seed_N/                per seed: model/ (its bundle) and evaluation.json (its metrics, history)
    compare/<mode>/seed_N/       the same for each compared mode (--compare)
    checkpoints/<mode>/seed_N/   crash-safe training state of a seed in progress (removed when it is done)
    metrics.json, report.md, training_curves.png, robustness.png

Online mode: the teacher and all students train jointly from scratch with one AdamW optimiser on
sum(regression losses) + lambda * MVSC, every network on the clips that have its modalities. Model
selection is per network: each keeps the weights of its own best valid-MAE epoch; training stops
when no network improved for ``patience`` epochs. The test split is only read after training.

Launched by torchrun (``torchrun --nproc-per-node N -m mmckd fit ...`` or ``mmckd fit --nproc N``),
the same run trains data-parallel with DistributedDataParallel: see ``mmckd.model.distributed`` for
how batches are sharded, how the losses and MVSC are computed across ranks, and why the result
matches a one-process run of the same global batch. Only rank 0 writes the run folder.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import mmckd
from mmckd.feature_file import FeatureFile, FeatureFileError
from mmckd.model.bundle import save_bundle
from mmckd.model.checkpoint import (
    latest_checkpoint,
    optimizer_from_parts,
    optimizer_to_parts,
    save_checkpoint,
    write_json_atomic,
)
from mmckd.model.config import FitConfig
from mmckd.model.data import DataError, PreparedData, load_prepared
from mmckd.model.distributed import (
    DistContext,
    DistributedError,
    init_from_env,
    maybe_inject_fault,
    sharded_valid_mae,
)
from mmckd.model.evaluation import evaluate_conditions, evaluate_missing_rates, trainable_subsets, valid_mae
from mmckd.model.inference import Predictor, kind_of_mode, non_empty_subsets, subset_columns
from mmckd.model.metrics import mean_metrics
from mmckd.model.mvsc import mvsc_loss, sentiment_classes, supervised_contrastive_loss
from mmckd.model.networks import create_model, parameter_count
from mmckd.model.routing import MODALITIES, SUBSETS, TEACHER, subset_modalities, subset_name

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
EVALUATION_FILE = "evaluation.json"
_RUN_OUTPUTS = (
    "model",
    "seeds",
    "compare",
    "checkpoints",
    "metrics.json",
    "report.md",
    "training_curves.png",
    "robustness.png",
    RUN_FILE,
)


class RunError(Exception):
    """The run folder cannot be used as asked (exists, other configuration, other features)."""


@dataclass
class EpochLog:
    """One finished epoch: mean training losses, valid MAE per condition, wall seconds."""

    mode: str
    seed: int
    phase: str
    epoch: int
    epochs: int
    loss: float
    regression: dict[str, float]
    mvsc: float | None
    valid_mae: dict[str, float]
    improved: list[str]
    seconds: float

    def line(self) -> str:
        reg = sum(self.regression.values())
        mv = f", mvsc {self.mvsc:.3f}" if self.mvsc is not None else ""
        valid = " ".join(f"{s} {v:.3f}" for s, v in self.valid_mae.items())
        return (
            f"{self.mode} seed {self.seed} {self.phase} epoch {self.epoch}/{self.epochs}: loss {self.loss:.3f} "
            f"(regression {reg:.3f}{mv}) | valid MAE {valid} | {self.seconds:.1f} s"
            + (f" | best: {','.join(self.improved)}" if self.improved else "")
        )


@dataclass
class FitResult:
    """What a finished run produced: its folder, the predict bundle folder, metrics.json's content."""

    out_dir: Path
    bundle_dir: Path
    metrics: dict
    best_seed: int


@dataclass
class Phase:
    """A stretch of training: which networks learn, which are frozen views, for how long, with MVSC or not."""

    name: str
    active: tuple[str, ...]
    frozen: tuple[str, ...]
    epochs: int
    use_mvsc: bool


def default_threads() -> int:
    """Torch CPU threads when none are asked: half the usable cores, 1 to 4. The networks are small, so
    more threads gain little, and on a busy machine spinning OpenMP threads slow training several-fold."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores // 2))


def resolve_device(name: str) -> torch.device:
    """ "auto" -> CUDA when available, else CPU; "cpu"/"cuda" as given (cuda must exist)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RunError("--device cuda asked, but no CUDA device is available")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise RunError(f"device must be auto, cpu or cuda; got {name!r}")
    return torch.device(name)


# --------------------------------------------------------------------------- one seed


class _ShardObjective(torch.nn.Module):
    """What DistributedDataParallel wraps: the model, and as forward the trainer's loss on one rank's
    shard of a global batch (one forward per step, whichever networks it runs)."""

    def __init__(self, model: torch.nn.Module, loss_fn: Callable) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, *args):
        return self.loss_fn(*args)


class SeedTrainer:
    """Trains one mode with one seed, checkpointing every epoch; ``run()`` returns the selected model."""

    def __init__(
        self,
        data: PreparedData,
        cfg: FitConfig,
        seed: int,
        checkpoint_dir: Path,
        device: torch.device,
        progress: bool = False,
        epoch_callback: Callable[[EpochLog], None] | None = None,
        dist: DistContext | None = None,
    ) -> None:
        self.data, self.cfg, self.seed = data, cfg, seed
        self.dist = dist
        self.checkpoint_dir = checkpoint_dir
        self.device = device
        self.progress = progress
        self.epoch_callback = epoch_callback
        self.kind = kind_of_mode(cfg.mode)
        self.subsets, self.untrained = self._choose_subsets()
        torch.manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.model = create_model(cfg.model, data.dims, self.subsets).to(device)
        self.ddp = None
        if dist is not None:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp = DistributedDataParallel(
                _ShardObjective(self.model, self._shard_loss),
                device_ids=None,
                broadcast_buffers=False,
                find_unused_parameters=True,  # networks without clips in a shard, frozen or unused heads
            )
        self.predictor = Predictor(self.model, self.kind, device)
        self.phases = self._phases()
        self.phase_index = 0
        self.epoch = 0
        self.stale = 0
        self.saves = 0
        self.best: dict[str, float] = {}
        self.best_epoch: dict[str, int] = {}
        self.best_state: dict[str, dict[str, torch.Tensor]] = {}
        self.history: list[dict] = []
        self.optimizer: torch.optim.Optimizer | None = None

    # ---- setup
    def _choose_subsets(self) -> tuple[tuple[str, ...], dict[str, str]]:
        if self.kind == "mmckd":
            subsets, reasons = trainable_subsets(self.data)
        else:
            train_has = self.data.present[self.data.indices("train")].any(0)
            valid_has = self.data.present[self.data.indices("valid")].any(0)
            union = subset_name(m for j, m in enumerate(MODALITIES) if train_has[j] and valid_has[j])
            subsets = (union,) if union else ()
            answered = non_empty_subsets(union) if union else ()
            reasons = {
                s: f"no training clip has {'+'.join(subset_modalities(s))}" for s in SUBSETS if s not in answered
            }
        if not subsets:
            raise DataError(f"{self.data.path}: no modality has both training and valid clips")
        return subsets, reasons

    def _phases(self) -> list[Phase]:
        cfg = self.cfg
        mvsc = cfg.lambda_mvsc > 0
        if self.kind == "dropout-baseline":
            return [Phase("dropout", self.subsets, (), cfg.epochs, False)]
        if cfg.mode == "no-mvsc":
            return [Phase("joint", self.subsets, (), cfg.epochs, False)]
        if cfg.mode == "offline-teacher" and TEACHER in self.subsets and len(self.subsets) > 1:
            students = tuple(s for s in self.subsets if s != TEACHER)
            return [
                Phase("teacher", (TEACHER,), (), cfg.teacher_epochs or cfg.epochs, False),
                Phase("students", students, (TEACHER,), cfg.epochs, mvsc),
            ]
        if cfg.mode == "offline-teacher":
            log.warning("offline-teacher: no teacher can be trained on these data; students train online together")
        return [Phase("joint", self.subsets, (), cfg.epochs, mvsc)]

    def _new_optimizer(self, phase: Phase) -> torch.optim.Optimizer:
        params = [p for s in phase.active for p in self.model.networks[s].parameters()]
        return torch.optim.AdamW(params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)

    @property
    def is_main(self) -> bool:
        """The process that writes (always, unless a non-zero rank of a distributed run)."""
        return self.dist is None or self.dist.is_main

    # ---- checkpoints
    def _save(self) -> None:
        if not self.is_main:  # only rank 0 writes; the others keep the same count
            self.saves += 1
            return
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        for s, st in self.best_state.items():
            tensors.update({f"best.{s}.{k}": v for k, v in st.items()})
        opt_meta = None
        if self.optimizer is not None:
            opt_tensors, opt_meta = optimizer_to_parts(self.optimizer)
            tensors.update(opt_tensors)
        tensors["rng.torch"] = torch.get_rng_state()
        if self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        state = {
            "mode": self.cfg.mode,
            "seed": self.seed,
            "fit_config": self.cfg.to_dict(),
            "subsets": list(self.subsets),
            "phase_index": self.phase_index,
            "epoch": self.epoch,
            "stale": self.stale,
            "saves": self.saves + 1,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "history": self.history,
            "numpy_rng": self.rng.bit_generator.state,
            "optimizer": opt_meta,
        }
        self.saves += 1
        save_checkpoint(self.checkpoint_dir, self.saves, tensors, state)

    def _restore(self) -> bool:
        found = latest_checkpoint(self.checkpoint_dir)
        if found is None:
            return False
        tensors, state = found
        if state.get("fit_config") != self.cfg.to_dict() or tuple(state.get("subsets", ())) != self.subsets:
            raise RunError(f"{self.checkpoint_dir}: checkpoint of another configuration; start over with --overwrite")
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        self.best_state = {}
        for k, v in tensors.items():
            if k.startswith("best."):
                s, name = k[5:].split(".", 1)
                self.best_state.setdefault(s, {})[name] = v.to(self.device)
        self.phase_index, self.epoch, self.stale = state["phase_index"], state["epoch"], state["stale"]
        self.saves = state["saves"]
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.history = state["history"]
        self.rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(tensors["rng.torch"])
        if "rng.cuda" in tensors and self.device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        if state["optimizer"] is not None and self.phase_index < len(self.phases):
            self.optimizer = self._new_optimizer(self.phases[self.phase_index])
            optimizer_from_parts(self.optimizer, tensors, state["optimizer"])
        log.info(
            "%s seed %d: resumed from checkpoint %d (phase %d, epoch %d)",
            self.cfg.mode,
            self.seed,
            self.saves,
            self.phase_index,
            self.epoch,
        )
        return True

    # ---- training
    def run(self) -> None:
        """Train (or finish training) and leave the selected weights in self.model."""
        self._restore()
        while self.phase_index < len(self.phases):
            phase = self.phases[self.phase_index]
            if self.optimizer is None:
                self.optimizer = self._new_optimizer(phase)
            while self.epoch < phase.epochs and self.stale < self.cfg.patience:
                entry = self._train_epoch(phase)
                self._save()
                log.info("%s", entry.line())
                if self.epoch_callback is not None and self.is_main:
                    self.epoch_callback(entry)
            if self.stale >= self.cfg.patience:
                log.info("%s seed %d %s: early stop after %d epochs", self.cfg.mode, self.seed, phase.name, self.epoch)
            self._load_best(phase.active)
            self.phase_index += 1
            self.epoch, self.stale, self.optimizer = 0, 0, None
            self._save()

    def _load_best(self, subsets: tuple[str, ...]) -> None:
        for s in subsets:
            if s in self.best_state:
                self.model.networks[s].load_state_dict(self.best_state[s])

    def _train_rows(self, phase: Phase) -> np.ndarray:
        idx = self.data.indices("train")
        if self.kind == "dropout-baseline":
            return idx
        need = np.zeros(len(idx), bool)
        for s in phase.active:
            need |= self.data.present[idx][:, subset_columns(s)].all(1)
        return idx[need]

    def _random_keep(self, idx: np.ndarray) -> np.ndarray:
        """Dropout baseline: per clip a uniformly drawn non-empty subset of the modalities it has."""
        net_cols = subset_columns(self.subsets[0])
        keep = np.zeros((len(idx), len(MODALITIES)), bool)
        draws = self.rng.random(len(idx))
        for k, i in enumerate(idx):
            have = np.flatnonzero(self.data.present[i] & net_cols)
            if not len(have):
                continue
            code = 1 + min(int(draws[k] * (2 ** len(have) - 1)), 2 ** len(have) - 2)
            for bit, col in enumerate(have):
                keep[k, col] = bool(code >> bit & 1)
        return keep

    def _regression(self, pred: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        loss = F.l1_loss if self.cfg.regression_loss == "l1" else F.mse_loss
        return loss(pred, y, reduction=reduction)

    def _forward_networks(self, phase: Phase, batch) -> Iterator[tuple[str, torch.Tensor, object, object]]:
        """Each network of the phase on the clips of batch it can read (the dropout baseline: all of them):
        (subset, rows, sub-batch, output), sub-batch and output None when it reads none; frozen
        networks run without gradient."""
        all_rows = torch.arange(len(batch), device=self.device)
        for s in (*phase.active, *phase.frozen):
            if self.kind == "dropout-baseline":
                rows = all_rows
            else:
                cols = torch.as_tensor(subset_columns(s), device=self.device)
                rows = torch.nonzero(batch.present[:, cols].all(1)).squeeze(1)
            if not len(rows):
                yield s, rows, None, None
                continue
            sub = batch if len(rows) == len(batch) else batch.select(rows)
            if s in phase.frozen:
                with torch.no_grad():
                    out = self.model(s, sub)
            else:
                out = self.model(s, sub)
            yield s, rows, sub, out

    def _batch_loss(self, phase: Phase, batch) -> tuple[torch.Tensor, dict[str, float], float | None]:
        views: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        regression: dict[str, torch.Tensor] = {}
        for s, rows, sub, out in self._forward_networks(phase, batch):
            if out is None:
                continue
            if s not in phase.frozen:
                regression[s] = self._regression(out.pred, sub.y)
            views[s] = (rows, out.view)
        loss = sum(regression.values()) if regression else torch.zeros((), device=self.device)
        mv = None
        if phase.use_mvsc and views:
            mvt = mvsc_loss(views, batch.y, self.cfg.temperature, self.cfg.class_scheme, self.cfg.neutral_band)
            loss = loss + self.cfg.lambda_mvsc * mvt
            mv = float(mvt.detach())
        return loss, {s: float(v.detach()) for s, v in regression.items()}, mv

    def _shard_loss(
        self, phase: Phase, batch, offset: int, idx: np.ndarray, keep: np.ndarray | None
    ) -> tuple[torch.Tensor, dict[str, float], float | None, dict[str, int]]:
        """Distributed objective of the global batch idx on this rank's shard (batch: its clips
        offset, offset+1, ... of idx). Regression sums are divided by the clips each network sees in
        the whole global batch and multiplied by the world size, so DDP's gradient average is the
        gradient of the global-batch means; MVSC is computed on every rank over the views of the
        whole global batch, gathered with gradient. Returns the loss, this rank's share of each
        regression loss, the MVSC value, and each active network's clip count in the global batch."""
        world = self.dist.world
        present = self.data.present[idx] if keep is None else self.data.present[idx] & keep
        regression: dict[str, torch.Tensor] = {}
        totals: dict[str, int] = {}
        view_rows, view_parts = [], []
        for s, rows, sub, out in self._forward_networks(phase, batch):
            # clips of the whole global batch that this network reads (every rank knows them)
            total = len(idx) if self.kind == "dropout-baseline" else int(present[:, subset_columns(s)].all(1).sum())
            if s in phase.active and total:
                totals[s] = total
            if out is None:
                continue
            if s not in phase.frozen:
                regression[s] = self._regression(out.pred, sub.y, "sum") * (world / total)
            view_rows.append(rows + offset)
            view_parts.append(out.view)
        loss = sum(regression.values()) if regression else torch.zeros((), device=self.device)
        mv = None
        if phase.use_mvsc:  # every rank joins the gathers, also with an empty shard
            local = (
                torch.cat(view_parts) if view_parts else torch.zeros((0, self.cfg.model.proj_dim), device=self.device)
            )
            if not local.requires_grad:  # the gather's backward is a collective: every rank must run it
                local = local.detach().requires_grad_()
            positions_local = (
                torch.cat(view_rows) if view_rows else torch.zeros(0, dtype=torch.long, device=self.device)
            )
            pool = self.dist.gather_rows(local, with_grad=True)
            positions = self.dist.gather_rows(positions_local)
            if len(pool):
                labels = torch.as_tensor(self.data.labels[idx], device=self.device)
                classes = sentiment_classes(labels, self.cfg.class_scheme, self.cfg.neutral_band)[positions]
                mvt = supervised_contrastive_loss(pool, positions, classes, self.cfg.temperature)
                loss = loss + self.cfg.lambda_mvsc * mvt
                mv = float(mvt.detach())
        if not regression:
            # an empty shard (a global batch smaller than the world): no parameter is in this rank's graph, so
            # DDP would never start its gradient reduction here; a zero-gradient use of one parameter of each
            # network the global batch trains (parameters the other ranks use anyway) keeps it in step
            loss = loss + 0.0 * sum(next(self.model.networks[s].parameters()).sum() for s in totals)
        return loss, {s: float(v.detach()) for s, v in regression.items()}, mv, totals

    def _train_epoch(self, phase: Phase) -> EpochLog:
        maybe_inject_fault(self.dist.rank if self.dist is not None else 0, self.epoch + 1)
        start = time.perf_counter()
        self.model.train()
        for s in phase.frozen:
            self.model.networks[s].eval()
        rows = self.rng.permutation(self._train_rows(phase))
        bs = self.cfg.batch_size
        starts = range(0, len(rows), bs)
        if self.progress and self.is_main:
            from tqdm import tqdm

            starts = tqdm(
                starts, desc=f"{phase.name} epoch {self.epoch + 1}", leave=False, file=sys.stderr, unit="batch"
            )
        params = [p for s in phase.active for p in self.model.networks[s].parameters()]
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for b0 in starts:
            idx = rows[b0 : b0 + bs]
            keep = self._random_keep(idx) if self.kind == "dropout-baseline" else None
            if self.dist is not None:
                self._train_step_sharded(phase, idx, keep, params, sums, counts)
                continue
            batch = self.data.batch(idx, keep).to(self.device)
            loss, regression, mv = self._batch_loss(phase, batch)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
            self.optimizer.step()
            for key, value in [
                ("loss", float(loss.detach())),
                *regression.items(),
                *([("mvsc", mv)] if mv is not None else []),
            ]:
                sums[key] = sums.get(key, 0.0) + value * len(idx)
                counts[key] = counts.get(key, 0) + len(idx)
        if self.dist is not None:  # every rank holds its share of each sum; counts are the same everywhere
            keys = sorted(counts)
            sums = dict(zip(keys, self.dist.all_reduce_sum([sums.get(k, 0.0) for k in keys])))
        means = {k: sums[k] / counts[k] for k in sums}
        valid = valid_mae(self.predictor, self.data) if self.dist is None else sharded_valid_mae(
            self.predictor, self.data, self.dist
        )
        units = self._selection_scores(valid, phase)
        improved = []
        for unit, score in units.items():
            if math.isfinite(score) and score < self.best.get(unit, math.inf) - 1e-7:
                self.best[unit], self.best_epoch[unit] = score, self.epoch + 1
                self.best_state[unit] = {
                    k: v.detach().clone() for k, v in self.model.networks[unit].state_dict().items()
                }
                improved.append(unit)
        self.stale = 0 if improved else self.stale + 1
        self.epoch += 1
        entry = EpochLog(
            mode=self.cfg.mode,
            seed=self.seed,
            phase=phase.name,
            epoch=self.epoch,
            epochs=phase.epochs,
            loss=means.get("loss", math.nan),
            regression={s: means[s] for s in phase.active if s in means},
            mvsc=means.get("mvsc"),
            valid_mae=valid,
            improved=improved,
            seconds=time.perf_counter() - start,
        )
        self.history.append(asdict(entry))
        return entry

    def _train_step_sharded(
        self,
        phase: Phase,
        idx: np.ndarray,
        keep: np.ndarray | None,
        params: list[torch.nn.Parameter],
        sums: dict[str, float],
        counts: dict[str, int],
    ) -> None:
        """One optimiser step of a distributed run on this rank's shard of the global batch idx;
        adds this rank's share of the batch's logged losses to sums (reduced at the end of the epoch)."""
        part = self.dist.shard(len(idx))
        local_keep = None if keep is None else keep[part]
        batch = self.data.batch(idx[part], local_keep).to(self.device)
        loss, regression, mv, totals = self.ddp(phase, batch, part.start, idx, keep)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # DDP averages the gradients over the ranks here
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        self.optimizer.step()
        world, n = self.dist.world, len(idx)
        shares = [("loss", float(loss.detach()))] + [(s, regression.get(s, 0.0)) for s in totals]
        if mv is not None:
            shares.append(("mvsc", mv))
        for key, value in shares:
            sums[key] = sums.get(key, 0.0) + value / world * n
            counts[key] = counts.get(key, 0) + n

    def _selection_scores(self, valid: dict[str, float], phase: Phase) -> dict[str, float]:
        """Score of each network that selects its own best epoch: its valid MAE (dropout baseline: the
        mean valid MAE over all conditions it answers)."""
        if self.kind == "dropout-baseline":
            return {self.subsets[0]: float(np.mean(list(valid.values()))) if valid else math.inf}
        return {s: valid.get(s, math.inf) for s in phase.active}

    def selection_score(self) -> float:
        """The seed's score for choosing the best seed: mean best valid MAE over its networks."""
        return float(np.mean(list(self.best.values()))) if self.best else math.inf


# --------------------------------------------------------------------------- the run


def _seed_dirs(out_dir: Path, cfg: FitConfig, mode: str, seed: int) -> tuple[Path, Path]:
    base = out_dir / "seeds" if mode == cfg.mode else out_dir / "compare" / mode
    return base / f"seed_{seed}", out_dir / "checkpoints" / mode / f"seed_{seed}"


def _train_seed(
    data: PreparedData,
    cfg: FitConfig,
    mode: str,
    seed: int,
    out_dir: Path,
    device: torch.device,
    progress: bool,
    epoch_callback,
    dist: DistContext | None = None,
) -> dict | None:
    """Train and evaluate one seed of one mode; its evaluation (None on the ranks other than 0)."""
    main = dist is None or dist.is_main
    seed_dir, ckpt_dir = _seed_dirs(out_dir, cfg, mode, seed)
    done = seed_dir / EVALUATION_FILE
    finished = done.exists() if dist is None else dist.broadcast(done.exists())  # rank 0 decides
    if finished:
        log.info("%s seed %d: already finished, kept (%s)", mode, seed, seed_dir)
        return json.loads(done.read_text()) if main else None
    mode_cfg = cfg.for_mode(mode)
    trainer = SeedTrainer(data, mode_cfg, seed, ckpt_dir, device, progress, epoch_callback, dist=dist)
    log.info(
        "%s seed %d: networks %s (%d parameters) on %s; %d train clips",
        mode,
        seed,
        ",".join(trainer.subsets),
        parameter_count(trainer.model),
        device,
        len(data.indices("train")),
    )
    trainer.run()
    if not main:
        dist.barrier()  # wait for rank 0 to evaluate and write this seed
        return None
    train_seconds = sum(h["seconds"] for h in trainer.history)
    predictor = trainer.predictor
    conditions, reasons = evaluate_conditions(predictor, data, trainer.untrained)
    missing = evaluate_missing_rates(predictor, data, cfg.missing_rates, cfg.eval_seed)
    seed_dir.mkdir(parents=True, exist_ok=True)
    save_bundle(
        seed_dir / "model",
        trainer.model,
        trainer.kind,
        cfg.model,
        data.dims,
        data.normaliser,
        data.extractor_config,
        data.extractor_config_hash,
        data.provenance,
        extra={"mode": mode, "seed": seed, "fit_config": mode_cfg.to_dict(), "best_valid_mae": trainer.best},
    )
    evaluation = {
        "mode": mode,
        "seed": seed,
        "kind": trainer.kind,
        "subsets": list(trainer.subsets),
        "parameters": parameter_count(trainer.model),
        "conditions": conditions,
        "null_reasons": reasons,
        "missing_rate": missing,
        "best_valid_mae": trainer.best,
        "best_epoch": trainer.best_epoch,
        "selection_score": trainer.selection_score(),
        "epochs_run": len(trainer.history),
        "train_seconds": train_seconds,
        "history": trainer.history,
    }
    write_json_atomic(done, evaluation)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    if dist is not None:
        dist.barrier()
    return evaluation


def aggregate(per_seed: dict[int, dict]) -> dict:
    """Means and standard deviations over seeds of the conditions and the missing-rate table."""
    evals = list(per_seed.values())
    conditions: dict = {}
    for s in SUBSETS:
        entries = [e["conditions"].get(s) for e in evals]
        if all(x is None for x in entries):
            conditions[s] = None
            continue
        conditions[s] = {}
        for split in ("valid", "test"):
            mean, std = mean_metrics([x[split] if x else None for x in entries])
            conditions[s][split], conditions[s][f"{split}_std"] = mean, std
    missing: dict = {}
    for rate in evals[0]["missing_rate"]:
        missing[rate] = {}
        for key in ("routed", "teacher_zero_fill"):
            mean, std = mean_metrics([e["missing_rate"][rate][key] for e in evals])
            missing[rate][key], missing[rate][f"{key}_std"] = mean, std
    best_seed = min(per_seed, key=lambda k: per_seed[k]["selection_score"])
    return {
        "seeds": list(per_seed),
        "best_seed": best_seed,
        "conditions": conditions,
        "null_reasons": evals[0]["null_reasons"],
        "missing_rate": missing,
        "per_seed": {
            str(seed): {
                k: e[k]
                for k in (
                    "conditions",
                    "missing_rate",
                    "best_valid_mae",
                    "best_epoch",
                    "selection_score",
                    "epochs_run",
                    "train_seconds",
                    "parameters",
                )
            }
            for seed, e in per_seed.items()
        },
    }


def _read_run(out_dir: Path) -> dict | None:
    path = out_dir / RUN_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RunError(f"{path}: unreadable ({e})") from None


def run_config(out_dir: str | Path) -> FitConfig | None:
    """The configuration of the run stored in out_dir (None when out_dir holds no run)."""
    run = _read_run(Path(out_dir))
    return None if run is None else FitConfig.from_dict(run["fit_config"])


def _config_differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _config_differences(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: run has {va!r}, asked {vb!r}")
    return out


def check_resume(out_dir: Path, features_hash: str | None, config: FitConfig | None) -> FitConfig:
    """The configuration to resume the run in out_dir with; RunError when features or options differ."""
    run = _read_run(out_dir)
    if run is None:
        raise RunError(f"{out_dir}: no run to resume ({RUN_FILE} missing)")
    stored = FitConfig.from_dict(run["fit_config"])
    run_hash = run["features"]["config_hash"]
    if features_hash != run_hash:
        raise RunError(
            f"{out_dir}: this run was trained on features of extractor configuration {run_hash}, the given file "
            f"has {features_hash}; resume with the same feature file or start a new run"
        )
    if config is not None and config != stored:
        diffs = "; ".join(_config_differences(stored.to_dict(), config.to_dict()))
        raise RunError(f"{out_dir}: options differ from the run being resumed ({diffs})")
    return stored


def fit(
    features_path: str | Path,
    out_dir: str | Path,
    config: FitConfig | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    device: str = "auto",
    threads: int | None = None,
    progress: bool | None = None,
    epoch_callback: Callable[[EpochLog], None] | None = None,
) -> FitResult:
    """Train MM-CKD on a feature file and write the run folder (see module docstring).

    resume: continue the run in out_dir (finished seeds are kept, the seed in progress restarts from
    its last checkpoint); config None then means the run's own configuration. overwrite: replace a
    previous run in out_dir. threads: torch CPU threads (default: default_threads()). progress: a
    per-batch progress bar on stderr (default: when stderr is a terminal). epoch_callback: called
    after every epoch, once its checkpoint is written.
    Raises DataError (bad feature file) or RunError (run folder conflicts) before any training.

    Under torchrun (WORLD_SIZE > 1) the run is data-parallel over the launched processes (see
    ``mmckd.model.distributed``); every rank returns the same FitResult, only rank 0 writes.
    """
    torch_device = resolve_device(device)  # a bad --device is a RunError before any process group is joined
    quiet = os.environ.get("RANK", "0") not in ("", "0") and logging.getLogger("mmckd").level == logging.NOTSET
    if quiet:  # one log of the run (rank 0's); other ranks still report warnings and errors
        logging.getLogger("mmckd").setLevel(logging.WARNING)
    dist = None
    try:
        try:
            dist = init_from_env(device)
        except DistributedError as e:
            raise RunError(str(e)) from None
        return _fit(
            features_path,
            out_dir,
            config,
            resume,
            overwrite,
            torch_device if dist is None else dist.device,
            threads,
            progress,
            epoch_callback,
            dist,
        )
    finally:
        if quiet:
            logging.getLogger("mmckd").setLevel(logging.NOTSET)
        if dist is not None:
            dist.close()


def _fit(
    features_path: str | Path,
    out_dir: str | Path,
    config: FitConfig | None,
    resume: bool,
    overwrite: bool,
    torch_device: torch.device,
    threads: int | None,
    progress: bool | None,
    epoch_callback: Callable[[EpochLog], None] | None,
    dist: DistContext | None,
) -> FitResult:
    main = dist is None or dist.is_main
    features_path, out_dir = Path(features_path), Path(out_dir)
    if threads:
        torch.set_num_threads(int(threads))
    else:  # the processes of one machine share its cores
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if dist is not None else 1
        torch.set_num_threads(max(1, default_threads() // max(1, local_world)))
    try:
        features_hash = FeatureFile(features_path).config_hash
    except FeatureFileError as e:
        raise DataError(str(e)) from None
    existing = _read_run(out_dir)
    if resume and existing is not None:
        config = check_resume(out_dir, features_hash, config)
    elif existing is not None and not overwrite:
        raise RunError(f"{out_dir}: already holds a run; pass --resume to continue it or --overwrite to replace it")
    elif resume:
        log.info("%s: no run to resume, starting a new one", out_dir)
    config = config or FitConfig()
    data = load_prepared(features_path, config.model)
    if dist is not None:
        dist.barrier()  # every rank has read the run folder before rank 0 changes it
    if existing is not None and overwrite and not resume and main:
        for name in _RUN_OUTPUTS:
            p = out_dir / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    summary = data.summary()
    log.info(
        "%s: %s",
        features_path,
        "; ".join(
            f"{s} {v['clips']} clips (text {v['text']}, audio {v['audio']}, vision {v['vision']})"
            for s, v in summary.items()
        ),
    )
    features_info = {"path": str(features_path), "config_hash": features_hash, "dims": data.dims}
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            out_dir / RUN_FILE,
            {
                "fit_config": config.to_dict(),
                "features": features_info,
                "mmckd_version": mmckd.__version__,
                "status": "running",
            },
        )
    if progress is None:
        progress = sys.stderr.isatty()
    started = time.perf_counter()
    results: dict[str, dict[int, dict]] = {}
    for mode in config.modes:
        results[mode] = {}
        for seed in config.seeds:
            results[mode][seed] = _train_seed(
                data, config, mode, seed, out_dir, torch_device, progress, epoch_callback, dist
            )
    if not main:  # rank 0 writes the outputs; every rank returns its result
        metrics = dist.broadcast(None)
        return FitResult(out_dir=out_dir, bundle_dir=out_dir / "model", metrics=metrics, best_seed=metrics["best_seed"])
    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    main = aggregate(results[config.mode])
    best_seed = main["best_seed"]
    best_dir = _seed_dirs(out_dir, config, config.mode, best_seed)[0] / "model"
    tmp = out_dir / "model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(best_dir, tmp)
    shutil.rmtree(out_dir / "model", ignore_errors=True)
    tmp.rename(out_dir / "model")
    metrics = {
        "mmckd_version": mmckd.__version__,
        "mode": config.mode,
        "features": features_info,
        "fit_config": config.to_dict(),
        "data": summary,
        "selection": "best seed = lowest mean over networks of their best valid MAE; model/ is its bundle",
        **main,
        "compare": {mode: aggregate(results[mode]) for mode in config.compare},
        "seconds": time.perf_counter() - started,
    }
    write_json_atomic(out_dir / "metrics.json", metrics)
    from mmckd.model.report import write_report

    histories = {mode: {seed: r["history"] for seed, r in res.items()} for mode, res in results.items()}
    write_report(out_dir, metrics, histories)
    write_json_atomic(
        out_dir / RUN_FILE,
        {
            "fit_config": config.to_dict(),
            "features": features_info,
            "mmckd_version": mmckd.__version__,
            "status": "done",
        },
    )
    log.info("run finished: %s (best seed %d)", out_dir, best_seed)
    if dist is not None:
        dist.broadcast(metrics)
    return FitResult(out_dir=out_dir, bundle_dir=out_dir / "model", metrics=metrics, best_seed=best_seed)
