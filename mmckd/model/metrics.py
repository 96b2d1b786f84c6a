"""Regression metrics of multimodal sentiment analysis, as MMSA defines them (metricsTop, MOSI regression).

  * MAE, Corr (Pearson);
  * Acc2_has0 / F1_has0: y >= 0 vs y < 0 for truth and prediction, accuracy and weighted F1;
  * Acc2_non0 / F1_non0: clips with truth != 0 only, y > 0 vs y <= 0;
  * Acc5: clip both to [-2, 2] and round; Acc7: clip both to [-3, 3] and round (round half to even).
Weighted F1 is the F1 of each class weighted by its support in the truth (scikit-learn's "weighted").
A metric that is undefined (no clip, constant prediction for Corr) is None.
"""

from __future__ import annotations

import math

import numpy as np

METRIC_NAMES = ("MAE", "Corr", "Acc2_has0", "F1_has0", "Acc2_non0", "F1_non0", "Acc5", "Acc7")


def weighted_f1(truth: np.ndarray, pred: np.ndarray) -> float:
    """F1 per class, averaged with the classes' truth support as weights."""
    truth, pred = np.asarray(truth), np.asarray(pred)
    total = 0.0
    for c in np.union1d(truth, pred):
        tp = float(np.sum((pred == c) & (truth == c)))
        fp = float(np.sum((pred == c) & (truth != c)))
        fn = float(np.sum((pred != c) & (truth == c)))
        denom = 2 * tp + fp + fn
        total += float(np.sum(truth == c)) * (2 * tp / denom if denom else 0.0)
    return total / len(truth)


def multiclass_accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean(np.round(pred) == np.round(truth)))


def regression_metrics(pred, truth) -> dict:
    """The metric dict M of predictions against labels: METRIC_NAMES plus n (number of clips)."""
    pred = np.asarray(pred, np.float64).reshape(-1)
    truth = np.asarray(truth, np.float64).reshape(-1)
    if pred.shape != truth.shape:
        raise ValueError(f"{len(pred)} predictions for {len(truth)} labels")
    n = len(truth)
    out: dict = {k: None for k in METRIC_NAMES}
    out["n"] = n
    if n == 0:
        return out
    out["MAE"] = float(np.mean(np.abs(pred - truth)))
    if n > 1 and np.std(pred) > 0 and np.std(truth) > 0:
        out["Corr"] = float(np.corrcoef(pred, truth)[0, 1])
    has0_t, has0_p = truth >= 0, pred >= 0
    out["Acc2_has0"] = float(np.mean(has0_t == has0_p))
    out["F1_has0"] = weighted_f1(has0_t, has0_p)
    nz = truth != 0
    if nz.any():
        non0_t, non0_p = truth[nz] > 0, pred[nz] > 0
        out["Acc2_non0"] = float(np.mean(non0_t == non0_p))
        out["F1_non0"] = weighted_f1(non0_t, non0_p)
    out["Acc5"] = multiclass_accuracy(np.clip(pred, -2, 2), np.clip(truth, -2, 2))
    out["Acc7"] = multiclass_accuracy(np.clip(pred, -3, 3), np.clip(truth, -3, 3))
    return out


def mean_metrics(per_seed: list[dict | None]) -> tuple[dict | None, dict | None]:
    """Mean and (population) standard deviation over seeds of metric dicts; None entries are skipped."""
    items = [m for m in per_seed if m is not None]
    if not items:
        return None, None
    mean: dict = {"n": items[0]["n"]}
    std: dict = {}
    for k in METRIC_NAMES:
        vals = [m[k] for m in items if m.get(k) is not None]
        mean[k] = float(np.mean(vals)) if vals else None
        std[k] = float(np.std(vals)) if vals else None
    return mean, std


def format_metric(value: float | None, std: float | None = None, percent: bool = False) -> str:
    """A metric for a table: '0.812', '81.2', with ' ± 0.4' when std is given; '—' when undefined."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    scale = 100.0 if percent else 1.0
    digits = 1 if percent else 3
    text = f"{value * scale:.{digits}f}"
    if std is not None:
        text += f" ± {std * scale:.{digits}f}"
    return text
