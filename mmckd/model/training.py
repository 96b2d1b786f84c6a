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
``FitConfig.train_step`` chooses how a step runs the networks (one by one, or grouped in one stacked
pass: ``mmckd.model.objective``).

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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import mmckd
from mmckd.atomic_write import atomic_output
from mmckd.feature_file import FeatureFile, FeatureFileError
from mmckd.model.architectures import create_model
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
from mmckd.model.evaluation import evaluate_conditions, evaluate_missing_rates, valid_mae, validated_routing
from mmckd.model.inference import NetworkRouter, architecture_of_kind, subset_columns
from mmckd.model.metrics import mean_metrics
from mmckd.model.modes import Phase, get_mode
from mmckd.model.networks import parameter_count
from mmckd.model.objective import GlobalBatch, Objective
from mmckd.model.routing import MODALITIES, SUBSETS

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
    other: dict[str, float] = field(default_factory=dict)

    def line(self) -> str:
        reg = sum(self.regression.values())
        mv = f", mvsc {self.mvsc:.3f}" if self.mvsc is not None else ""
        mv += "".join(f", {k} {v:.3f}" for k, v in self.other.items())
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


class SeedTrainer:
    """Trains one mode with one seed, checkpointing every epoch into checkpoint_dir (None: no checkpoints);
    ``run()`` leaves the selected weights in ``model``."""

    def __init__(
        self,
        data: PreparedData,
        cfg: FitConfig,
        seed: int,
        checkpoint_dir: Path | None,
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
        self.mode = get_mode(cfg.mode)
        self.kind = self.mode.kind
        self.subsets, self.untrained = self.mode.networks(data)
        torch.manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.model = create_model(cfg.model, data.dims, self.subsets, architecture_of_kind(self.kind)).to(device)
        self.objective: torch.nn.Module = Objective(self.model, cfg, self.mode, dist)
        if dist is not None:
            from torch.nn.parallel import DistributedDataParallel

            self.objective = DistributedDataParallel(
                self.objective,
                device_ids=None,
                broadcast_buffers=False,
                find_unused_parameters=True,  # networks without clips in a shard, frozen or unused heads
            )
        self.predictor = NetworkRouter(self.model, self.kind, device)
        self.phases = self.mode.phases(cfg, self.subsets)
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
    def _new_optimizer(self, phase: Phase) -> torch.optim.Optimizer:
        params = [p for s in phase.active for p in self.model.networks[s].parameters()]
        return torch.optim.AdamW(params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)

    @property
    def is_main(self) -> bool:
        """The process that writes (always, unless a non-zero rank of a distributed run)."""
        return self.dist is None or self.dist.is_main

    # ---- checkpoints
    def _save(self) -> None:
        if self.checkpoint_dir is None:  # no crash safety asked (benchmarks that train many short runs)
            return
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
        if self.checkpoint_dir is None:
            return False
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
        if self.cfg.routing == "validated" and not self.predictor.single_network:
            self.predictor.set_routing(validated_routing(self.predictor, self.data))

    def _load_best(self, subsets: tuple[str, ...]) -> None:
        for s in subsets:
            if s in self.best_state:
                self.model.networks[s].load_state_dict(self.best_state[s])

    def _train_rows(self, phase: Phase) -> np.ndarray:
        idx = self.data.indices("train")
        if self.mode.random_missing:
            return idx
        need = np.zeros(len(idx), bool)
        for s in phase.active:
            need |= self.data.present[idx][:, subset_columns(s)].all(1)
        return idx[need]

    def _random_keep(self, idx: np.ndarray) -> np.ndarray:
        """Random-missing modes: per clip a uniformly drawn non-empty subset of the modalities it has."""
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

    def batch_loss(self, phase: Phase, idx: np.ndarray) -> tuple[torch.Tensor, dict[str, float]]:
        """The objective on the global batch of clips idx (this rank's shard of it in a distributed run),
        with the mode's random withholding drawn here: (loss, named terms)."""
        keep = self._random_keep(idx) if self.mode.random_missing else None
        part = slice(0, len(idx)) if self.dist is None else self.dist.shard(len(idx))
        present = self.data.present[idx] if keep is None else self.data.present[idx] & keep
        whole = GlobalBatch(present, self.data.labels[idx], part.start)
        batch = self.data.batch(idx[part]).to(self.device)
        keep_t = None if keep is None else torch.as_tensor(keep[part], device=self.device)
        return self.objective(phase, batch, keep_t, whole)

    def train_steps(self, phase: Phase) -> tuple[dict[str, float], dict[str, int]]:
        """One pass of optimisation steps over the phase's training clips (shuffled, ``batch_size`` per
        step): per logged term, this rank's clip-weighted sum and the clip count."""
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
        world = 1 if self.dist is None else self.dist.world
        optimizer = self.optimizer
        assert optimizer is not None  # set by the phase's start
        for b0 in starts:
            idx = rows[b0 : b0 + bs]
            loss, terms = self.batch_loss(phase, idx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # on several ranks DDP averages the gradients here
            if self.cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
            optimizer.step()
            for key, value in [("loss", float(loss.detach())), *terms.items()]:
                sums[key] = sums.get(key, 0.0) + value / world * len(idx)
                counts[key] = counts.get(key, 0) + len(idx)
        return sums, counts

    def _train_epoch(self, phase: Phase) -> EpochLog:
        maybe_inject_fault(self.dist.rank if self.dist is not None else 0, self.epoch + 1)
        start = time.perf_counter()
        sums, counts = self.train_steps(phase)
        if self.dist is not None:  # every rank holds its share of each sum; counts are the same everywhere
            keys = sorted(counts)
            sums = dict(zip(keys, self.dist.all_reduce_sum([sums.get(k, 0.0) for k in keys])))
        means = {k: sums[k] / counts[k] for k in sums}
        valid = (
            valid_mae(self.predictor, self.data)
            if self.dist is None
            else sharded_valid_mae(self.predictor, self.data, self.dist)
        )
        units = self.mode.selection_scores(valid, phase)
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
            regression={s: means[f"regression/{s}"] for s in phase.active if f"regression/{s}" in means},
            mvsc=means.get("mvsc"),
            other={k: v for k, v in means.items() if k != "loss" and k != "mvsc" and not k.startswith("regression/")},
            valid_mae=valid,
            improved=improved,
            seconds=time.perf_counter() - start,
        )
        self.history.append(asdict(entry))
        return entry

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
        assert dist is not None  # only ranks > 0 of a distributed run are not main
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
        routing=predictor.routing,
    )
    evaluation = {
        "mode": mode,
        "seed": seed,
        "kind": trainer.kind,
        "subsets": list(trainer.subsets),
        "parameters": parameter_count(trainer.model),
        "conditions": conditions,
        "null_reasons": reasons,
        "routing": predictor.routing,
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
        "routing": per_seed[best_seed].get("routing", {}),
        "conditions": conditions,
        "null_reasons": evals[0]["null_reasons"],
        "missing_rate": missing,
        "per_seed": {
            str(seed): {
                k: e[k]
                for k in (
                    "conditions",
                    "routing",
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


def _mode_cost(out_dir: Path, cfg: FitConfig, mode: str, best_seed: int, data: PreparedData) -> dict:
    """Inference cost per condition of a mode's best seed (see mmckd.model.cost); conditions it does not
    answer are left out."""
    from mmckd.model.bundle import load_bundle
    from mmckd.model.cost import model_cost

    predictor = load_bundle(_seed_dirs(out_dir, cfg, mode, best_seed)[0] / "model").predictor
    return {c: v for c, v in model_cost(predictor, data).items() if v is not None}


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
    from mmckd.file_lock import LockHeldError, run_folder_lock

    # one fit per run folder (a second one, --overwrite included, is refused while this one runs); under
    # torchrun rank 0 holds it, or the --nproc launcher; the CLI's own lock of this process nests
    lock, created = None, not Path(out_dir).exists()
    if os.environ.get("RANK", "0") in ("", "0") and not os.environ.get("MMCKD_FIT_LOCK_HELD"):
        lock = run_folder_lock(out_dir)
        try:
            lock.acquire()
        except LockHeldError as e:
            raise RunError(str(e)) from None
    quiet = os.environ.get("RANK", "0") not in ("", "0") and logging.getLogger("mmckd").level == logging.NOTSET
    if quiet:  # one log of the run (rank 0's); other ranks still report warnings and errors
        logging.getLogger("mmckd").setLevel(logging.WARNING)
    dist = None
    finished = False
    try:
        try:
            dist = init_from_env(device)
        except DistributedError as e:
            raise RunError(str(e)) from None
        result = _fit(
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
        finished = True
        return result
    finally:
        if quiet:
            logging.getLogger("mmckd").setLevel(logging.NOTSET)
        if dist is not None:
            dist.close(synchronize=finished)
        if lock is not None:
            lock.release()
            if created and [p.name for p in Path(out_dir).iterdir()] == [".lock"]:  # refused before writing
                shutil.rmtree(out_dir, ignore_errors=True)


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
    results: dict[str, dict[int, Any]] = {}  # a seed's result dict; None on the ranks > 0 of a distributed run
    for mode in config.modes:
        results[mode] = {}
        for seed in config.seeds:
            results[mode][seed] = _train_seed(
                data, config, mode, seed, out_dir, torch_device, progress, epoch_callback, dist
            )
    if not main:  # rank 0 writes the outputs; every rank returns its result
        assert dist is not None  # only ranks > 0 of a distributed run are not main
        metrics = dist.broadcast(None)
        return FitResult(out_dir=out_dir, bundle_dir=out_dir / "model", metrics=metrics, best_seed=metrics["best_seed"])
    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    aggregates = {mode: aggregate(results[mode]) for mode in config.modes}
    chosen = aggregates[config.mode]
    best_seed = chosen["best_seed"]
    best_dir = _seed_dirs(out_dir, config, config.mode, best_seed)[0] / "model"
    with atomic_output(out_dir / "model") as tmp:
        shutil.copytree(best_dir, tmp)
    cost = {mode: _mode_cost(out_dir, config, mode, aggregates[mode]["best_seed"], data) for mode in config.modes}
    metrics = {
        "mmckd_version": mmckd.__version__,
        "mode": config.mode,
        "features": features_info,
        "fit_config": config.to_dict(),
        "data": summary,
        "selection": "best seed = lowest mean over networks of their best valid MAE; model/ is its bundle",
        **chosen,
        "compare": {mode: aggregates[mode] for mode in config.compare},
        "cost": cost,
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
