"""Judging a trained model: per-condition metrics, the random-missing table, valid MAE for early stopping.

Condition S (one of the 7 subsets) is scored on the clips that have all of S's modalities, with the
other modalities withheld, answered by the network meant for S. The random-missing table scores all
test clips at each missing rate, routed (every clip to the network of what it kept; clips whose kept
modalities no trained network reads are left out and n says how many were scored) and, beside it,
the teacher reading every clip with zeros for the dropped modalities.
"""

from __future__ import annotations

import numpy as np

from mmckd.model.data import PreparedData
from mmckd.model.inference import NetworkRouter, subset_columns
from mmckd.model.metrics import regression_metrics
from mmckd.model.missing import drop_modalities
from mmckd.model.routing import SUBSETS, TEACHER, subset_modalities


def clips_with(data: PreparedData, split: str, subset: str) -> np.ndarray:
    """Indices of the clips of a split that have every modality of subset."""
    idx = data.indices(split)
    return idx[data.present[idx][:, subset_columns(subset)].all(1)]


def trainable_subsets(
    data: PreparedData, candidates: tuple[str, ...] = SUBSETS
) -> tuple[tuple[str, ...], dict[str, str]]:
    """Subsets with at least one train and one valid clip, and for the others the reason they are not."""
    ok, reasons = [], {}
    for s in candidates:
        names = "+".join(subset_modalities(s))
        if not len(clips_with(data, "train", s)):
            reasons[s] = f"no training clip has {names}"
        elif not len(clips_with(data, "valid", s)):
            reasons[s] = f"no valid clip has {names}"
        else:
            ok.append(s)
    return tuple(ok), reasons


def condition_predictions(
    predictor: NetworkRouter, data: PreparedData, split: str, subset: str
) -> tuple[np.ndarray, np.ndarray]:
    """The clips of split having subset's modalities, and their predictions with only those modalities."""
    idx = clips_with(data, split, subset)
    if not len(idx):
        return idx, np.zeros(0, np.float32)
    keep = np.tile(subset_columns(subset), (len(idx), 1))
    preds, _ = predictor.predict_rows(data, idx, keep, network=predictor.network_for(subset))
    return idx, preds


def condition_metrics(predictor: NetworkRouter, data: PreparedData, split: str, subset: str) -> dict | None:
    """Metrics of condition subset on split (None when no clip of the split has those modalities)."""
    idx, preds = condition_predictions(predictor, data, split, subset)
    return regression_metrics(preds, data.labels[idx]) if len(idx) else None


def valid_mae(predictor: NetworkRouter, data: PreparedData) -> dict[str, float]:
    """Valid MAE of each condition the predictor answers (early stopping / model selection)."""
    out = {}
    for s in predictor.answers:
        m = condition_metrics(predictor, data, "valid", s)
        if m is not None:
            out[s] = m["MAE"]
    return out


def validated_routing(predictor: NetworkRouter, data: PreparedData) -> dict[str, str]:
    """For each condition with valid clips, the trained network among those reading only its modalities
    with the lowest valid MAE on them (ties: the exact network, then the larger subset)."""
    table = {}
    for cond in SUBSETS:
        idx = clips_with(data, "valid", cond)
        candidates = [s for s in predictor.trained if set(s) <= set(cond)]
        if not len(idx) or not candidates:
            continue
        keep = np.tile(subset_columns(cond), (len(idx), 1))
        scores = {}
        for s in candidates:
            preds, _ = predictor.predict_rows(data, idx, keep, network=s)
            scores[s] = float(np.mean(np.abs(preds - data.labels[idx])))
        table[cond] = min(candidates, key=lambda s: (round(scores[s], 9), s != cond, -len(s)))
    return table


def evaluate_conditions(
    predictor: NetworkRouter, data: PreparedData, untrained_reasons: dict[str, str]
) -> tuple[dict[str, dict | None], dict[str, str]]:
    """{subset: {"valid": M, "test": M} or None} for all 7 subsets, and the reason of each None."""
    conditions: dict[str, dict | None] = {}
    reasons: dict[str, str] = {}
    for s in SUBSETS:
        if s not in predictor.answers:
            conditions[s] = None
            reasons[s] = untrained_reasons.get(s, "not trained")
            continue
        conditions[s] = {split: condition_metrics(predictor, data, split, s) for split in ("valid", "test")}
    return conditions, reasons


def evaluate_missing_rates(
    predictor: NetworkRouter, data: PreparedData, rates: tuple[float, ...], seed: int
) -> dict[str, dict]:
    """{"0.0": {"routed": M, "teacher_zero_fill": M or None}, ...} on the test split."""
    idx = data.indices("test")
    teacher = TEACHER if predictor.kind == "mmckd" and TEACHER in predictor.trained else None
    if predictor.single_network:
        teacher = predictor.trained[0]
    out = {}
    for rate in rates:
        keep = drop_modalities(data.present[idx], rate, seed)
        preds, _ = predictor.predict_rows(data, idx, keep)
        scored = np.isfinite(preds)
        entry = {"routed": regression_metrics(preds[scored], data.labels[idx][scored]), "teacher_zero_fill": None}
        if teacher is not None:
            tpreds, _ = predictor.predict_rows(data, idx, keep, network=teacher)
            entry["teacher_zero_fill"] = regression_metrics(tpreds, data.labels[idx])
        out[rate_key(rate)] = entry
    return out


def rate_key(rate: float) -> str:
    """The JSON key of a missing rate: "0.3" (one decimal unless more are needed)."""
    key = f"{rate:.1f}"
    return key if abs(float(key) - rate) < 1e-9 else repr(float(rate))
