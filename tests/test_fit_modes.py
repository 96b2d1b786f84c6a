"""Every registered fit mode trains, answers every condition, gets gradients everywhere and reports its cost;
modes that cannot be trained on the data say why; validated routing is recorded and used."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mmckd.model.bundle import load_bundle
from mmckd.model.config import MODES, FitConfig, ModelConfig
from mmckd.model.cost import COST_FIELDS
from mmckd.model.data import DataError, load_prepared
from mmckd.model.modes import MODE_REGISTRY, get_mode
from mmckd.model.routing import SUBSETS
from mmckd.model.synthetic import synthetic_clips, write_synthetic_features
from mmckd.model.training import SeedTrainer, fit

TINY = ModelConfig(
    d_model=16, heads=2, proj_dim=8, dropout=0.0, max_audio=8, max_vision=8, cra_blocks=2, cra_layers=(32, 16),
    diffusion_steps=8, denoiser_width=32,
)  # fmt: skip
CFG = FitConfig(model=TINY, epochs=2, batch_size=32, lr=3e-3, missing_rates=(0.0, 0.5))


@pytest.fixture(scope="module")
def trimodal(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("modes")
    return write_synthetic_features(
        d / "f.h5", n=90, seed=3, shared=1.0, gain=0.6, noise=0.5, missing={"text": 0.1, "audio": 0.1, "vision": 0.1}
    )


def test_the_registry_is_the_list_of_modes():
    assert tuple(MODE_REGISTRY) == MODES
    with pytest.raises(ValueError, match="unknown fit mode"):
        get_mode("nope")


@pytest.mark.parametrize("mode", MODES)
def test_every_network_of_every_mode_gets_gradients(trimodal, mode):
    data = load_prepared(trimodal, TINY)
    trainer = SeedTrainer(data, CFG.for_mode(mode), 1, Path("/nonexistent"), torch.device("cpu"))
    for phase in trainer.phases:
        trainer.model.train()
        loss, terms = trainer.batch_loss(phase, data.indices("train"))
        assert torch.isfinite(loss) and terms
        trainer.model.zero_grad()
        loss.backward()
        for s in phase.active:
            net = trainer.model.networks[s]
            skip = set() if phase.use_mvsc else {"projection"}  # the projection head serves MVSC alone
            for name, p in net.named_parameters():
                if name.split(".")[0] in skip:
                    continue
                assert p.grad is not None and bool(p.grad.abs().sum() > 0), f"{mode}: {s}.{name} gets no gradient"


@pytest.mark.slow
@pytest.mark.parametrize("mode", [m for m in MODES if m != "online"])
def test_each_mode_trains_answers_all_conditions_and_reports_its_cost(trimodal, tmp_path, mode):
    cfg = FitConfig(**{**CFG.__dict__, "compare": (mode,)})
    result = fit(trimodal, tmp_path / "run", cfg, threads=1, progress=False)
    m = result.metrics
    agg = m["compare"][mode]
    for s in SUBSETS:
        assert agg["conditions"][s] is not None, f"{mode} does not answer {s}"
        assert agg["conditions"][s]["test"]["n"] > 0
    assert agg["missing_rate"]["0.5"]["routed"]["MAE"] is not None
    for name in ("online", mode):
        cost = m["cost"][name]
        assert set(cost) == set(SUBSETS)
        for entry in cost.values():
            assert set(entry) == set(COST_FIELDS)
            assert isinstance(entry["params"], int) and isinstance(entry["flops"], int)
            assert all(entry[k] > 0 for k in COST_FIELDS)
    on_disk = json.loads((result.out_dir / "metrics.json").read_text())
    assert on_disk["cost"][mode]["l"]["flops"] == m["cost"][mode]["l"]["flops"]
    report = (result.out_dir / "report.md").read_text()
    assert "Accuracy against inference cost" in report and (result.out_dir / "cost.png").stat().st_size > 0
    # the compared mode's bundle answers a clip with a missing modality, the same way twice
    bundle = load_bundle(result.out_dir / "compare" / mode / "seed_1" / "model")
    assert bundle.kind == get_mode(mode).kind
    data = load_prepared(trimodal, TINY)
    idx = data.indices("test")[:5]
    keep = np.tile([True, False, True], (len(idx), 1))
    p1, nets = bundle.predictor.predict_rows(data, idx, keep)
    p2, _ = bundle.predictor.predict_rows(data, idx, keep)
    assert np.isfinite(p1).all() and np.array_equal(p1, p2)


@pytest.mark.slow
def test_imputation_costs_more_than_the_students_it_replaces(trimodal, tmp_path):
    # the imputation baselines at their default sizes (MMIN's CRA, 100 sampling steps); small encoders
    defaults = ModelConfig()
    model = dataclasses.replace(
        TINY, cra_blocks=defaults.cra_blocks, cra_layers=defaults.cra_layers,
        diffusion_steps=defaults.diffusion_steps, denoiser_width=defaults.denoiser_width,
    )  # fmt: skip
    cfg = FitConfig(**{**CFG.__dict__, "model": model, "epochs": 1, "compare": ("imputation", "diffusion-imputation")})
    cost = fit(trimodal, tmp_path / "run", cfg, threads=1, progress=False).metrics["cost"]
    for cond in ("l", "a", "v", "la", "lv", "av"):
        assert cost["imputation"][cond]["flops"] > cost["online"][cond]["flops"]
        assert cost["diffusion-imputation"][cond]["flops"] > cost["imputation"][cond]["flops"]
    assert (
        cost["diffusion-imputation"]["lav"]["flops"] < cost["diffusion-imputation"]["l"]["flops"]
    )  # nothing to sample


@pytest.mark.parametrize("mode", ["imputation", "diffusion-imputation"])
def test_an_imputation_mode_on_one_modality_says_why_it_cannot_train(tmp_path, mode):
    clips = synthetic_clips(n=40, seed=1, missing={"text": 0.0, "audio": 1.0, "vision": 1.0})
    path = write_synthetic_features(tmp_path / "text.h5", clips=clips)
    with pytest.raises(DataError, match=f"mode {mode} needs at least 2 modalities.*only text"):
        fit(path, tmp_path / "run", FitConfig(model=TINY, epochs=1, mode=mode), threads=1)


def test_validated_routing_is_chosen_on_valid_recorded_and_used(trimodal, tmp_path):
    cfg = FitConfig(**{**CFG.__dict__, "routing": "validated"})
    result = fit(trimodal, tmp_path / "run", cfg, threads=1, progress=False)
    table = result.metrics["routing"]
    assert set(table) == set(SUBSETS)
    for cond, net in table.items():
        assert set(net) <= set(cond)
    bundle = load_bundle(result.out_dir)
    assert bundle.meta["routing"] == table
    for cond in SUBSETS:
        assert bundle.predictor.network_for(cond) == table[cond]
    assert "Validated routing" in (result.out_dir / "report.md").read_text()
