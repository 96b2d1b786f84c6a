"""The network classes a model can be made of, and ``create_model``: one place that knows them all.

networks.py (the MM-CKD subset networks) and imputation.py (the baselines, built from the same encoders)
import nothing from here, so neither imports the other back.
"""

from __future__ import annotations

from mmckd.model.config import ModelConfig
from mmckd.model.imputation import DiffusionImputationNetwork, ImputationNetwork
from mmckd.model.networks import MMCKDModel, SubsetNetwork
from mmckd.model.routing import SUBSETS

ARCHITECTURES = ("subset", "imputation", "diffusion-imputation")
"""Network classes: "subset" (the MM-CKD networks, also the dropout baseline's), and the imputation
baselines' (mmckd.model.imputation)."""


def network_class(architecture: str):
    classes = {
        "subset": SubsetNetwork,
        "imputation": ImputationNetwork,
        "diffusion-imputation": DiffusionImputationNetwork,
    }
    if architecture not in classes:
        raise ValueError(f"unknown architecture {architecture!r}; expected one of {ARCHITECTURES}")
    return classes[architecture]


def create_model(
    config: ModelConfig, dims: dict[str, int], subsets: tuple[str, ...] = SUBSETS, architecture: str = "subset"
) -> MMCKDModel:
    """The model with one fresh network per subset in ``subsets`` (default: teacher and all six students),
    of the given architecture."""
    unknown = [s for s in subsets if s not in SUBSETS]
    if unknown:
        raise ValueError(f"unknown subsets {unknown}; expected some of {SUBSETS}")
    cls = network_class(architecture)
    return MMCKDModel({s: cls(s, dims, config) for s in SUBSETS if s in subsets})
