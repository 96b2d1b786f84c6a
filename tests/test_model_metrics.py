"""Metrics as MMSA defines them, against hand-computed small cases and scikit-learn's weighted F1."""

from __future__ import annotations

import numpy as np
import pytest

from mmckd.model.metrics import mean_metrics, regression_metrics, weighted_f1


def test_hand_computed_case():
    truth = np.array([2.4, -0.8, 0.0, 1.2, -2.6, 0.4])
    pred = np.array([1.9, 0.3, -0.2, 1.6, -1.4, -0.1])
    m = regression_metrics(pred, truth)
    assert m["n"] == 6
    assert m["MAE"] == pytest.approx((0.5 + 1.1 + 0.2 + 0.4 + 1.2 + 0.5) / 6)
    # Has0: truth >= 0 -> T F T T F T ; pred >= 0 -> T T F T F F ; agree on clips 0, 3, 4
    assert m["Acc2_has0"] == pytest.approx(3 / 6)
    # weighted F1 by hand: class T (support 4): tp 2, fp 1, fn 2 -> 4/7; class F (support 2): tp 1, fp 2, fn 1 -> 2/5
    assert m["F1_has0"] == pytest.approx((4 * 4 / 7 + 2 * 2 / 5) / 6)
    # Non0 drops the clip with truth 0: truth > 0 -> T F T F T ; pred > 0 -> T T T F F ; agree on 3 of 5
    t = np.array([2.4, -0.8, 1.2, -2.6, 0.4]) > 0
    p = np.array([1.9, 0.3, 1.6, -1.4, -0.1]) > 0
    assert m["Acc2_non0"] == pytest.approx(np.mean(t == p)) == pytest.approx(3 / 5)
    # Acc7: rounded, clipped to [-3, 3]: truth 2 -1 0 1 -3 0 ; pred 2 0 -0 2 -1 -0 -> agree 0, 2, 5
    assert m["Acc7"] == pytest.approx(3 / 6)
    # Acc5: clipped to [-2, 2] first: truth 2 -1 0 1 -2 0 ; pred 2 0 0 2 -1 0 -> agree 0, 2, 5
    assert m["Acc5"] == pytest.approx(3 / 6)
    x, y = pred - pred.mean(), truth - truth.mean()
    assert m["Corr"] == pytest.approx(float((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum())))


def test_rounding_is_half_to_even_like_numpy():
    # 0.5 rounds to 0 and 2.5 to 2 (numpy), so these count as hits for truths 0 and 2
    m = regression_metrics([0.5, 2.5, -1.5], [0.0, 2.0, -2.0])
    assert m["Acc7"] == 1.0


def test_acc5_clips_before_rounding():
    m = regression_metrics([3.0, -2.9], [2.2, -2.4])
    assert m["Acc5"] == 1.0  # both clipped to +-2
    assert m["Acc7"] == 0.0  # without the [-2, 2] clip: 3 vs 2 and -3 vs -2 both miss
    assert regression_metrics([3.0, -2.9], [2.6, -2.6])["Acc7"] == 1.0


def test_weighted_f1_matches_scikit_learn():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    for _ in range(20):
        t = rng.random(30) < rng.random()
        p = rng.random(30) < rng.random()
        assert weighted_f1(t, p) == pytest.approx(f1_score(t, p, average="weighted", zero_division=0))


def test_undefined_metrics_are_none():
    empty = regression_metrics([], [])
    assert empty["n"] == 0 and empty["MAE"] is None
    constant = regression_metrics([0.5, 0.5, 0.5], [1.0, -1.0, 2.0])
    assert constant["Corr"] is None and constant["MAE"] == pytest.approx((0.5 + 1.5 + 1.5) / 3)
    zeros = regression_metrics([1.0, -1.0], [0.0, 0.0])
    assert zeros["Acc2_non0"] is None and zeros["Acc2_has0"] == 0.5


def test_mean_over_seeds():
    a = regression_metrics([1.0, -1.0, 0.5], [1.5, -0.5, 0.0])
    b = regression_metrics([0.0, -1.0, 0.5], [1.5, -0.5, 0.0])
    mean, std = mean_metrics([a, b, None])
    assert mean["MAE"] == pytest.approx((a["MAE"] + b["MAE"]) / 2)
    assert std["MAE"] == pytest.approx(abs(a["MAE"] - b["MAE"]) / 2)
    assert mean_metrics([None]) == (None, None)
