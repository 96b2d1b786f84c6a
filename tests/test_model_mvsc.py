"""The MVSC loss: value against a hand computation, class schemes, view exclusion, gradient flow."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmckd.model.architectures import create_model
from mmckd.model.config import ModelConfig
from mmckd.model.data import pad_batch
from mmckd.model.mvsc import mvsc_loss, sentiment_classes, supervised_contrastive_loss
from mmckd.model.routing import SUBSETS, subset_modalities


def _unit(deg: float) -> list[float]:
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


def _supcon_by_hand(vectors, sample, cls, t):
    """Khosla et al. L_out written out with plain Python loops."""
    n = len(vectors)
    dot = [[sum(a * b for a, b in zip(vectors[i], vectors[j])) / t for j in range(n)] for i in range(n)]
    losses = []
    for a in range(n):
        pos = [p for p in range(n) if p != a and (sample[p] == sample[a] or cls[p] == cls[a])]
        if not pos:
            continue
        denom = sum(math.exp(dot[a][k]) for k in range(n) if k != a)
        losses.append(-sum(math.log(math.exp(dot[a][p]) / denom) for p in pos) / len(pos))
    return sum(losses) / len(losses)


def test_two_samples_two_views_against_hand_computation():
    # sample 0: views at 0 and 60 degrees; sample 1: views at 180 and 200 degrees; different classes
    z = torch.tensor([_unit(0), _unit(60), _unit(180), _unit(200)], dtype=torch.float64)
    sample = torch.tensor([0, 0, 1, 1])
    cls = torch.tensor([0, 0, 2, 2])
    t = 0.5
    got = supervised_contrastive_loss(z, sample, cls, t).item()
    # anchor 0: positive 1 (cos 60 = .5); negatives 2 (cos 180 = -1), 3 (cos 200)
    c200 = math.cos(math.radians(200))
    c140 = math.cos(math.radians(140))
    c20 = math.cos(math.radians(20))
    l0 = -math.log(math.exp(0.5 / t) / (math.exp(0.5 / t) + math.exp(-1 / t) + math.exp(c200 / t)))
    l1 = -math.log(
        math.exp(0.5 / t) / (math.exp(0.5 / t) + math.exp(math.cos(math.radians(120)) / t) + math.exp(c140 / t))
    )
    l2 = -math.log(
        math.exp(c20 / t) / (math.exp(-1 / t) + math.exp(math.cos(math.radians(120)) / t) + math.exp(c20 / t))
    )
    l3 = -math.log(math.exp(c20 / t) / (math.exp(c200 / t) + math.exp(c140 / t) + math.exp(c20 / t)))
    assert got == pytest.approx((l0 + l1 + l2 + l3) / 4, rel=1e-9)


def test_same_class_views_of_other_samples_are_positives():
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(6, 3))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    sample = [0, 0, 1, 1, 2, 2]
    cls = [1, 1, 1, 1, 0, 0]  # samples 0 and 1 share a class
    got = supervised_contrastive_loss(torch.tensor(vecs), torch.tensor(sample), torch.tensor(cls), 0.2).item()
    assert got == pytest.approx(_supcon_by_hand(vecs.tolist(), sample, cls, 0.2), rel=1e-9)
    # with only same-sample positives (all classes distinct) the value changes
    alone = supervised_contrastive_loss(torch.tensor(vecs), torch.tensor(sample), torch.tensor([0, 0, 1, 1, 2, 2]), 0.2)
    assert alone.item() != pytest.approx(got, rel=1e-6)


def test_views_pooled_per_network_exclude_unseen_samples():
    # two networks; the second cannot see sample 1, so it adds no view of it
    za = torch.tensor([_unit(0), _unit(90)], dtype=torch.float64)
    zb = torch.tensor([_unit(30)], dtype=torch.float64)
    labels = torch.tensor([1.0, -2.0])
    got = mvsc_loss({"lav": (torch.tensor([0, 1]), za), "l": (torch.tensor([0]), zb)}, labels, 0.3)
    expect = _supcon_by_hand([_unit(0), _unit(90), _unit(30)], [0, 1, 0], [2, 0, 2], 0.3)
    assert got.item() == pytest.approx(expect, rel=1e-9)


def test_class_schemes():
    y = torch.tensor([-2.6, -0.4, 0.0, 0.2, 0.5, 1.5, 2.5, 3.0])
    assert sentiment_classes(y, "3class").tolist() == [0, 0, 1, 2, 2, 2, 2, 2]
    assert sentiment_classes(y, "3class", neutral_band=0.5).tolist() == [0, 1, 1, 1, 1, 2, 2, 2]
    # round half to even: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2
    assert sentiment_classes(y, "7class").tolist() == [0, 3, 3, 3, 3, 5, 5, 6]
    assert sentiment_classes(y, "2class").tolist() == [0, 0, 1, 1, 1, 1, 1, 1]
    with pytest.raises(ValueError):
        sentiment_classes(y, "5class")


def test_mvsc_gradients_reach_teacher_and_students():
    torch.manual_seed(0)
    dims = {"text": 6, "audio": 4, "vision": 5}
    model = create_model(ModelConfig(d_model=8, heads=2, proj_dim=4, dropout=0.0), dims)
    rng = np.random.default_rng(1)
    seqs = [{m: rng.normal(size=(3 + i, d)).astype(np.float32) for m, d in dims.items()} for i in range(4)]
    batch = pad_batch(seqs, dims, np.array([-1.0, 0.5, 2.0, -0.2]))
    rows = torch.arange(4)
    views = {s: (rows, model(s, batch).view) for s in SUBSETS}
    mvsc_loss(views, batch.y, 0.1).backward()
    for s in SUBSETS:
        net = model.networks[s]
        for m in subset_modalities(s):
            g = net.encoders[m].proj.weight.grad
            assert g is not None and g.abs().sum() > 0, f"no MVSC gradient in {s}/{m} encoder"
        assert net.head.weight.grad is None  # the regression head plays no part in MVSC
