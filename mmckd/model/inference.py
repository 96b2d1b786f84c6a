"""Answering with a trained model: which network reads which clip, and batched no-grad prediction.

Two ways of answering:
  * routed, kind "mmckd" (modes online / offline-teacher / no-mvsc): one network per trained subset; a
    clip is answered by ``routing.route`` (the network whose subset equals the clip's modalities), or,
    with a validated routing table ({condition: network}, chosen on the valid split and stored in the
    bundle), by the network the table names for the clip's modalities;
  * single network, kinds "dropout-baseline", "imputation", "diffusion-imputation": one network over all
    trained modalities answers every clip; the modalities the clip lacks are zero-filled (the dropout
    baseline) or imputed inside the network (the imputation baselines).
Predicted scores are clipped to [-3, 3].
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import torch

from mmckd.model.architectures import ARCHITECTURES
from mmckd.model.data import Batch, PreparedData
from mmckd.model.networks import MMCKDModel
from mmckd.model.routing import MODALITIES, SUBSETS, NoUsableModalityError, route, subset_modalities, subset_name

KINDS = ("mmckd", "dropout-baseline", "imputation", "diffusion-imputation")
ROUTED = "mmckd"
SCORE_RANGE = (-3.0, 3.0)


def architecture_of_kind(kind: str) -> str:
    """The network class a model kind is made of (see architectures.ARCHITECTURES)."""
    return kind if kind in ARCHITECTURES else "subset"  # the imputation kinds are their own architectures


def non_empty_subsets(subset: str) -> tuple[str, ...]:
    """All non-empty subsets of a subset, in SUBSETS order: "la" -> ("la", "l", "a")."""
    letters = list(subset)
    found = {"".join(c) for k in range(1, len(letters) + 1) for c in combinations(letters, k)}
    return tuple(s for s in SUBSETS if s in found)


def subset_columns(subset: str) -> np.ndarray:
    """Boolean (3,) row selecting the subset's modalities in MODALITIES order."""
    mods = subset_modalities(subset)
    return np.array([m in mods for m in MODALITIES], bool)


class NetworkRouter:
    """A model plus its answering rule (which network answers each set of present modalities); runs on
    ``device``. Not the user-facing ``mmckd.predict.Predictor``, which wraps a bundle holding one of these."""

    def __init__(
        self,
        model: MMCKDModel,
        kind: str,
        device: torch.device | str = "cpu",
        routing: dict[str, str] | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
        if kind != ROUTED and len(model.subsets) != 1:
            raise ValueError(f"a {kind} model has exactly one network")
        self.model = model
        self.kind = kind
        self.device = torch.device(device)
        self.routing: dict[str, str] = {}
        self.set_routing(routing or {})

    def set_routing(self, routing: dict[str, str]) -> None:
        """Use a validated routing table {condition: network}; each network must be trained and read only
        modalities of its condition."""
        for cond, net in routing.items():
            if net not in self.trained or not set(net) <= set(cond):
                raise ValueError(f"routing {cond} -> {net}: not a trained network within that condition")
        self.routing = dict(routing)

    @property
    def single_network(self) -> bool:
        return self.kind != ROUTED

    @property
    def trained(self) -> tuple[str, ...]:
        return self.model.subsets

    @property
    def answers(self) -> tuple[str, ...]:
        """The modality subsets (conditions) this model answers with a network meant for them."""
        if self.single_network:
            return non_empty_subsets(self.trained[0])
        return self.trained

    def network_for(self, available: str) -> str:
        """The network answering a clip whose usable modalities form the subset ``available``."""
        if available in self.routing:
            return self.routing[available]
        if self.single_network:
            net = self.trained[0]
            if not set(available) & set(net):
                raise NoUsableModalityError(
                    f"the clip has {', '.join(subset_modalities(available)) if available else 'no usable modality'} "
                    f"and this model reads only {', '.join(subset_modalities(net))}"
                )
            return net
        return route(subset_modalities(available) if available else (), self.trained)

    @torch.no_grad()
    def predict_batch(self, batch: Batch, network: str) -> np.ndarray:
        self.model.eval()
        pred = self.model(network, batch.to(self.device)).pred
        return pred.clamp(*SCORE_RANGE).float().cpu().numpy()

    def predict_rows(
        self,
        data: PreparedData,
        idx: np.ndarray,
        keep: np.ndarray | None = None,
        network: str | None = None,
        batch_size: int = 256,
    ) -> tuple[np.ndarray, list[str | None]]:
        """Predictions for clips idx of data with only the modalities in keep ((n, 3) bool; default:
        all they have). network=None routes each clip; a given network reads every clip (zero fill).
        Clips no network can answer get NaN and network None."""
        idx = np.asarray(idx, np.int64)
        keep = data.present[idx] if keep is None else (np.asarray(keep, bool) & data.present[idx])
        preds = np.full(len(idx), np.nan, np.float32)
        nets: list[str | None] = [None] * len(idx)
        groups: dict[str, list[int]] = {}
        for k in range(len(idx)):
            if network is not None:
                groups.setdefault(network, []).append(k)
                continue
            have = subset_name(m for j, m in enumerate(MODALITIES) if keep[k, j])
            try:
                groups.setdefault(self.network_for(have), []).append(k)
            except NoUsableModalityError:
                continue
        for net, members in groups.items():
            members_arr = np.asarray(members, np.int64)
            for start in range(0, len(members_arr), batch_size):
                part = members_arr[start : start + batch_size]
                batch = data.batch(idx[part], keep[part])
                preds[part] = self.predict_batch(batch, net)
                for k in part:
                    nets[k] = net
        return preds, nets
