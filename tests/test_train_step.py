"""The grouped training step (FitConfig.train_step "grouped") computes what the per-network step computes:
the same network outputs, the same first-step loss terms and gradients from the same initial weights, the
same fitted metrics; the bundles it leaves load and predict like any other."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from mmckd.model.architectures import create_model
from mmckd.model.bundle import load_bundle
from mmckd.model.config import FitConfig, ModelConfig
from mmckd.model.data import load_prepared
from mmckd.model.evaluation import evaluate_conditions
from mmckd.model.grouped import grouped_forward, grouped_unsupported
from mmckd.model.inference import subset_columns
from mmckd.model.modes import Phase
from mmckd.model.routing import SUBSETS
from mmckd.model.synthetic import write_synthetic_features
from mmckd.model.training import SeedTrainer, fit

# dropout off: the two paths draw their dropout masks in a different order, everything else is the same
TINY = ModelConfig(d_model=16, heads=2, proj_dim=8, dropout=0.0, max_audio=8, max_vision=8)
CFG = FitConfig(model=TINY, epochs=2, batch_size=32, lr=3e-3, missing_rates=(0.0, 0.5))
ROUTED = ("online", "offline-teacher", "no-mvsc")


@pytest.fixture(scope="module")
def features(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("train_step")
    return write_synthetic_features(
        d / "f.h5", n=90, seed=3, shared=1.0, gain=0.6, noise=0.5, missing={"text": 0.2, "audio": 0.2, "vision": 0.2}
    )


@pytest.mark.parametrize(
    "model_cfg",
    [TINY, dataclasses.replace(TINY, layers=2, residual_heads=True)],
    ids=["default-shape", "two-layers-residual-heads"],
)
def test_grouped_forward_equals_each_network_on_its_clips(features, model_cfg):
    data = load_prepared(features, model_cfg)
    torch.manual_seed(0)
    model = create_model(model_cfg, data.dims).train()
    batch = data.batch(data.indices("train"))
    out = grouped_forward([model.networks[s] for s in SUBSETS], batch)
    assert out.pred.shape == (len(SUBSETS), len(batch))
    chunked = grouped_forward([model.networks[s] for s in SUBSETS], batch, chunk_elements=1)  # a clip a call
    torch.testing.assert_close(chunked.view, out.view, atol=1e-6, rtol=1e-5)
    for g, s in enumerate(SUBSETS):
        rows = torch.nonzero(batch.present[:, torch.as_tensor(subset_columns(s))].all(1)).squeeze(1)
        assert 0 < len(rows) < len(batch)  # the file has clips without some modality: masking is exercised
        ref = model(s, batch.select(rows))
        torch.testing.assert_close(out.pred[g, rows], ref.pred, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out.embedding[g, rows], ref.embedding, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out.view[g, rows], ref.view, atol=1e-5, rtol=1e-5)


def test_configurations_the_grouped_pass_does_not_cover_are_named(features):
    data = load_prepared(features, TINY)
    for cfg in (dataclasses.replace(TINY, cross_layers=1), dataclasses.replace(TINY, modality_dropout=0.2)):
        model = create_model(cfg, data.dims)
        assert grouped_unsupported(list(model.networks.values())) is not None
    model = create_model(TINY, data.dims)
    assert grouped_unsupported(list(model.networks.values())) is None
    with pytest.raises(ValueError, match="cannot run grouped"):
        grouped_forward(
            [model.networks["lav"], create_model(TINY, data.dims, ("l",), "imputation").networks["l"]], data.batch([0])
        )


def _first_steps(data, cfg: FitConfig) -> list[tuple[Phase, float, dict[str, float], dict[str, torch.Tensor | None]]]:
    """Per phase: the phase, loss, terms and gradients of one step on the first 40 training clips."""
    trainer = SeedTrainer(data, cfg, 1, None, torch.device("cpu"))
    out = []
    for phase in trainer.phases:
        trainer.model.train()
        for s in phase.frozen:
            trainer.model.networks[s].eval()
        loss, terms = trainer.batch_loss(phase, data.indices("train")[:40])
        trainer.model.zero_grad()
        loss.backward()
        grads = {n: None if p.grad is None else p.grad.clone() for n, p in trainer.model.named_parameters()}
        out.append((phase, float(loss.detach()), terms, grads))
    return out


@pytest.mark.parametrize(
    "mode, options",
    [
        ("online", {}),
        ("offline-teacher", {}),
        ("no-mvsc", {}),
        ("online", {"mvsc_space": "embedding", "mvsc_teacher": "stop-gradient", "regression_loss": "mse"}),
    ],
    ids=["online", "offline-teacher", "no-mvsc", "online-embedding-stopgrad-mse"],
)
def test_first_step_losses_and_gradients_are_the_same_on_both_paths(features, mode, options):
    data = load_prepared(features, TINY)
    cfg = dataclasses.replace(CFG, mode=mode, **options)
    per_network = _first_steps(data, dataclasses.replace(cfg, train_step="per-network"))
    grouped = _first_steps(data, dataclasses.replace(cfg, train_step="grouped"))
    assert len(per_network) == len(grouped)
    for (_, loss_a, terms_a, grads_a), (_, loss_b, terms_b, grads_b) in zip(per_network, grouped):
        assert set(terms_a) == set(terms_b) and any(k.startswith("regression/") for k in terms_a)
        assert loss_b == pytest.approx(loss_a, rel=1e-5, abs=1e-6)
        for k in terms_a:
            assert terms_b[k] == pytest.approx(terms_a[k], rel=1e-5, abs=1e-6), k
        for name, ga in grads_a.items():
            gb = grads_b[name]
            assert (ga is None) == (gb is None), f"{name}: gradient on one path only"
            if ga is not None and gb is not None:
                torch.testing.assert_close(gb, ga, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("mode", ROUTED)
def test_every_parameter_of_the_active_networks_gets_a_gradient_when_grouped(features, mode):
    data = load_prepared(features, TINY)
    cfg = dataclasses.replace(CFG, mode=mode, train_step="grouped")
    for phase, _, _, grads in _first_steps(data, cfg):
        for s in phase.active:
            for name, g in grads.items():
                if not name.startswith(f"networks.{s}."):
                    continue
                if not phase.use_mvsc and ".projection." in name:  # the projection head serves MVSC alone
                    continue
                assert g is not None and bool(g.abs().sum() > 0), f"{mode}: {name} gets no gradient"
        for s in phase.frozen:
            assert all(g is None for n, g in grads.items() if n.startswith(f"networks.{s}."))


def _conditions(metrics: dict) -> dict[str, dict[str, float]]:
    return {
        s: {split: c[split]["MAE"] for split in ("valid", "test")}
        for s, c in metrics["conditions"].items()
        if c is not None
    }


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["online", "offline-teacher"])
def test_a_short_fit_gives_the_same_metrics_and_a_loadable_bundle_on_both_paths(features, tmp_path, mode):
    runs = {}
    for step in ("per-network", "grouped"):
        cfg = dataclasses.replace(CFG, mode=mode, epochs=3, train_step=step)
        runs[step] = fit(features, tmp_path / step, cfg, threads=1, progress=False)
    a, b = (_conditions(runs[s].metrics) for s in ("per-network", "grouped"))
    assert set(a) == set(b) == set(SUBSETS)
    for s in a:
        for split in ("valid", "test"):  # dropout off: the same trajectory up to float summation order
            assert b[s][split] == pytest.approx(a[s][split], abs=1e-3), (s, split)
    # the grouped path leaves the usual bundle: today's loader reads it and it answers what fit measured
    data = load_prepared(features, TINY)
    for step, run in runs.items():
        router = load_bundle(run.bundle_dir).predictor
        assert set(router.model.networks) == set(SUBSETS)
        conditions, _ = evaluate_conditions(router, data, {})
        measured = run.metrics["per_seed"]["1"]["conditions"]
        for s in SUBSETS:
            for split in ("valid", "test"):
                assert conditions[s][split]["MAE"] == pytest.approx(measured[s][split]["MAE"], abs=1e-6), step


@pytest.mark.slow
def test_with_dropout_the_two_paths_agree_within_seed_noise(features, tmp_path):
    """Dropout on (the default rate): the paths draw different masks, so they agree as two sets of seeds do."""
    seeds = (1, 2, 3)
    cfg = dataclasses.replace(CFG, model=dataclasses.replace(TINY, dropout=0.1), epochs=3, seeds=seeds)
    per_seed = {}
    for step in ("per-network", "grouped"):
        m = fit(features, tmp_path / step, dataclasses.replace(cfg, train_step=step), threads=1, progress=False)
        per_seed[step] = np.array(
            [
                np.mean([c["test"]["MAE"] for c in m.metrics["per_seed"][str(k)]["conditions"].values() if c])
                for k in seeds
            ]
        )
    a, b = per_seed["per-network"], per_seed["grouped"]
    noise = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    assert abs(a.mean() - b.mean()) <= 4 * noise + 1e-3, (a, b)


DDP_SCRIPT = """
import sys
from mmckd.model.config import FitConfig
from mmckd.model.training import fit
cfg = FitConfig.from_dict({cfg!r})
fit(sys.argv[1], sys.argv[2], cfg, threads=1, progress=False, device="cpu")
"""


@pytest.mark.slow
def test_grouped_step_trains_data_parallel_like_one_process(features, tmp_path):
    """torchrun, 2 CPU processes (gloo): the grouped step under DistributedDataParallel gives the one-process
    losses and weights (the objective gathers MVSC views and scales the sums itself). Batch 53 on 54 train
    clips: shards of 27 and 26 clips, then a one-clip last batch whose empty shard on rank 1 goes the
    per-network way while rank 0 runs grouped, and the two must stay in step."""
    cfg = dataclasses.replace(CFG, epochs=2, batch_size=53, train_step="grouped", missing_rates=(0.0,))
    one = fit(features, tmp_path / "one", cfg, threads=1, progress=False, device="cpu")
    script = tmp_path / "ddp_fit.py"
    script.write_text(DDP_SCRIPT.format(cfg=cfg.to_dict()))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script)]
    proc = subprocess.run(
        [*cmd, str(features), str(tmp_path / "two")], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    h1 = json.loads((one.out_dir / "seeds" / "seed_1" / "evaluation.json").read_text())["history"]
    h2 = json.loads((tmp_path / "two" / "seeds" / "seed_1" / "evaluation.json").read_text())["history"]
    assert len(h1) == len(h2) == 2
    for e1, e2 in zip(h1, h2):
        assert e2["loss"] == pytest.approx(e1["loss"], abs=1e-4)
        assert e2["mvsc"] == pytest.approx(e1["mvsc"], abs=1e-4)
        assert e2["regression"] == pytest.approx(e1["regression"], abs=1e-4)
        assert e2["valid_mae"] == pytest.approx(e1["valid_mae"], abs=1e-4)
    w1 = load_file(one.bundle_dir / "weights.safetensors")
    w2 = load_file(tmp_path / "two" / "model" / "weights.safetensors")
    assert w1.keys() == w2.keys()
    assert max(float(np.abs(w1[k] - w2[k]).max()) for k in w1) < 1e-3
