"""Inference routing (all 7 subsets, the empty set, fallbacks) and the random-missing protocol."""

from __future__ import annotations

import numpy as np
import pytest

from mmckd.model.architectures import create_model
from mmckd.model.config import ModelConfig
from mmckd.model.inference import NetworkRouter, non_empty_subsets
from mmckd.model.missing import drop_modalities
from mmckd.model.routing import SUBSETS, NoUsableModalityError, route, subset_modalities, subset_name

ALL = ("text", "audio", "vision")


@pytest.mark.parametrize("subset", SUBSETS)
def test_every_subset_routes_to_its_own_network(subset):
    mods = subset_modalities(subset)
    assert route(mods, SUBSETS) == subset
    assert route(reversed(mods), SUBSETS) == subset  # order of the given modalities does not matter


def test_subset_names_round_trip():
    assert [subset_name(subset_modalities(s)) for s in SUBSETS] == list(SUBSETS)
    assert subset_name(["vision", "text"]) == "lv"
    with pytest.raises(ValueError):
        subset_name(["smell"])


def test_nothing_usable_is_an_error():
    with pytest.raises(NoUsableModalityError, match="no usable modality"):
        route((), SUBSETS)


def test_missing_network_falls_back_to_the_largest_trained_subset():
    # a text-only model (MOSI text file): a full clip is answered by the text network
    assert route(ALL, ("l",)) == "l"
    assert route(("text", "audio"), ("lav", "lv", "l", "a")) == "l"  # la absent: l and a tie on size, l first
    assert route(("audio", "vision"), ("la", "av", "v")) == "av"
    with pytest.raises(NoUsableModalityError, match="no network"):
        route(("audio", "vision"), ("l",))


def test_dropout_baseline_answers_every_subset_of_its_modalities_with_one_network():
    model = create_model(ModelConfig(d_model=8, heads=2), {"text": 3, "audio": 2, "vision": 2}, ("la",))
    p = NetworkRouter(model, "dropout-baseline")
    assert p.answers == ("la", "l", "a") == non_empty_subsets("la")
    assert p.network_for("l") == p.network_for("lav") == "la"
    with pytest.raises(NoUsableModalityError):
        p.network_for("v")
    with pytest.raises(NoUsableModalityError):
        p.network_for("")


def test_missing_protocol_keeps_at_least_one_and_follows_the_rate():
    rng = np.random.default_rng(5)
    present = rng.random((4000, 3)) < 0.8
    present[~present.any(1), 0] = True
    assert (drop_modalities(present, 0.0, 0) == present).all()
    keep = drop_modalities(present, 0.5, 0)
    assert not (keep & ~present).any()  # never invents a modality
    assert keep.any(1).all()  # at least one kept
    dropped = present.sum() - keep.sum()
    # about half dropped, a little less because a clip never loses everything
    assert 0.40 < dropped / present.sum() < 0.5
    assert (drop_modalities(present, 0.5, 0) == keep).all()  # fixed seed: same draw
    assert not (drop_modalities(present, 0.5, 1) == keep).all()
    # higher rate drops more
    assert drop_modalities(present, 0.7, 0).sum() < keep.sum() < drop_modalities(present, 0.2, 0).sum()
    with pytest.raises(ValueError):
        drop_modalities(present, 1.0, 0)
