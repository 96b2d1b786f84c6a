"""Fit modes: the registry of what ``mmckd fit`` can train (``--compare`` takes any of these names).

A mode is one object that says which networks it trains on given data (and why others are not), its
training phases, whether training withholds random modality subsets of each clip, how its networks
select their best epoch, and the kind of model it leaves (``kind``: how the model answers a condition
and which network class it is made of, see ``mmckd.model.inference``). The loss is not here: it is
``mmckd.model.objective.Objective``, one objective of named terms for every mode. Adding a mode is one
``register_mode`` call (and its name in ``config.MODES``, which a test keeps equal to the registry).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from mmckd.model.config import FitConfig
from mmckd.model.data import DataError, PreparedData
from mmckd.model.evaluation import trainable_subsets
from mmckd.model.inference import non_empty_subsets
from mmckd.model.routing import MODALITIES, SUBSETS, TEACHER, subset_modalities, subset_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Phase:
    """A stretch of training: which networks learn, which are frozen views, for how long, with MVSC or not."""

    name: str
    active: tuple[str, ...]
    frozen: tuple[str, ...]
    epochs: int
    use_mvsc: bool


@dataclass(frozen=True)
class FitMode:
    """Base of the modes; see the module docstring."""

    name: str
    kind: str
    summary: str

    random_missing = False
    """Training withholds a random non-empty subset of each clip's modalities at every step."""

    def networks(self, data: PreparedData) -> tuple[tuple[str, ...], dict[str, str]]:
        """The subsets to train on data, and for each condition not answered, the reason."""
        raise NotImplementedError

    def phases(self, cfg: FitConfig, subsets: tuple[str, ...]) -> list[Phase]:
        raise NotImplementedError

    def selection_scores(self, valid: dict[str, float], phase: Phase) -> dict[str, float]:
        """Score (lower is better) of each unit that keeps its own best epoch, from valid MAE per condition."""
        return {s: valid.get(s, math.inf) for s in phase.active}


@dataclass(frozen=True)
class RoutedMode(FitMode):
    """MM-CKD and its ablations: one network per modality subset; a clip goes to the network of its modalities."""

    mvsc: bool = True
    offline_teacher: bool = False

    def networks(self, data: PreparedData) -> tuple[tuple[str, ...], dict[str, str]]:
        subsets, reasons = trainable_subsets(data)
        if not subsets:
            raise DataError(f"{data.path}: no modality has both training and valid clips")
        return subsets, reasons

    def phases(self, cfg: FitConfig, subsets: tuple[str, ...]) -> list[Phase]:
        mvsc = self.mvsc and cfg.lambda_mvsc > 0
        if self.offline_teacher and TEACHER in subsets and len(subsets) > 1:
            students = tuple(s for s in subsets if s != TEACHER)
            return [  # the teacher learns its views too (supervised contrastive over clips), or they are random
                Phase("teacher", (TEACHER,), (), cfg.teacher_epochs or cfg.epochs, mvsc),
                Phase("students", students, (TEACHER,), cfg.epochs, mvsc),
            ]
        if self.offline_teacher:
            log.warning("%s: no teacher can be trained on these data; students train online together", self.name)
        return [Phase("joint", subsets, (), cfg.epochs, mvsc)]


@dataclass(frozen=True)
class SingleNetworkMode(FitMode):
    """One network over every modality the data has, trained on random modality subsets of each clip; it
    answers every condition (the dropout baseline zero-fills what is missing, the imputation baselines
    impute it). ``min_modalities``: fewer modalities in the data make the mode meaningless (nothing to impute)."""

    min_modalities: int = 1

    random_missing = True

    def networks(self, data: PreparedData) -> tuple[tuple[str, ...], dict[str, str]]:
        train_has = data.present[data.indices("train")].any(0)
        valid_has = data.present[data.indices("valid")].any(0)
        union = subset_name(m for j, m in enumerate(MODALITIES) if train_has[j] and valid_has[j])
        if not union:
            raise DataError(f"{data.path}: no modality has both training and valid clips")
        if len(union) < self.min_modalities:
            raise DataError(
                f"{data.path}: mode {self.name} needs at least {self.min_modalities} modalities with training and "
                f"valid clips to learn to impute one from another; these data have only "
                f"{', '.join(subset_modalities(union))}"
            )
        answered = non_empty_subsets(union)
        reasons = {s: f"no training clip has {'+'.join(subset_modalities(s))}" for s in SUBSETS if s not in answered}
        return (union,), reasons

    def phases(self, cfg: FitConfig, subsets: tuple[str, ...]) -> list[Phase]:
        return [Phase(self.name, subsets, (), cfg.epochs, False)]

    def selection_scores(self, valid: dict[str, float], phase: Phase) -> dict[str, float]:
        """The one network: its mean valid MAE over all the conditions it answers."""
        return {phase.active[0]: float(np.mean(list(valid.values()))) if valid else math.inf}


MODE_REGISTRY: dict[str, FitMode] = {}


def register_mode(mode: FitMode) -> FitMode:
    if mode.name in MODE_REGISTRY:
        raise ValueError(f"fit mode {mode.name!r} is registered twice")
    MODE_REGISTRY[mode.name] = mode
    return mode


def get_mode(name: str) -> FitMode:
    try:
        return MODE_REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown fit mode {name!r}; choose from {', '.join(MODE_REGISTRY)}") from None


register_mode(RoutedMode("online", "mmckd", "MM-CKD: teacher and six students trained together with MVSC"))
register_mode(
    RoutedMode(
        "offline-teacher",
        "mmckd",
        "ablation: the teacher is trained first and frozen, then the students distil from it",
        offline_teacher=True,
    )
)
register_mode(RoutedMode("no-mvsc", "mmckd", "ablation: every network on its regression loss only", mvsc=False))
register_mode(
    SingleNetworkMode(
        "dropout-baseline", "dropout-baseline", "baseline: one network trained with random modality dropout"
    )
)
register_mode(
    SingleNetworkMode(
        "imputation",
        "imputation",
        "MMIN-style: cascade residual autoencoder imputes missing representations, with cycle consistency",
        min_modalities=2,
    )
)
register_mode(
    SingleNetworkMode(
        "diffusion-imputation",
        "diffusion-imputation",
        "IMDer-style: a score network per modality samples missing representations (diffusion_steps steps)",
        min_modalities=2,
    )
)
