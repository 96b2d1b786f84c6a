"""`mmckd fit --nproc 2` (torchrun, DistributedDataParallel over gloo): the same training as one process.

Two CPU processes train on a small synthetic file with the same global batch as a one-process run.
With dropout off, the only difference left is float rounding (sums over ranks in another order), so
the tolerances are far below what a real difference makes (a shard-local MVSC or a mean of per-rank
means moves the losses in the second decimal):
  * every epoch's training losses and valid MAEs: within 1e-4;
  * every final weight: within 1e-3 (about one Adam step, lr 1e-3).
The file has 61 training clips and the batch is 12, so each epoch ends on a one-clip batch: rank 1's
shard is empty there, which must still keep both ranks in step.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from mmckd.model.config import FitConfig, ModelConfig
from mmckd.model.synthetic import write_synthetic_features
from mmckd.model.training import fit

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
OPTIONS = ["--epochs", "3", "--batch-size", "12", "--d-model", "16", "--heads", "2", "--proj-dim", "8",
           "--dropout", "0", "--max-audio", "16", "--max-vision", "16", "--seeds", "1",
           "--compare", "dropout-baseline", "--threads", "1", "--no-progress"]  # fmt: skip
CONFIG = FitConfig(
    model=ModelConfig(d_model=16, heads=2, proj_dim=8, dropout=0.0, max_audio=16, max_vision=16),
    epochs=3,
    batch_size=12,
    seeds=(1,),
    compare=("dropout-baseline",),
)


def fit_nproc(features: Path, out: Path, nproc: int, env: dict | None = None, timeout: float = 300, options=OPTIONS):
    return subprocess.run(
        [sys.executable, "-m", "mmckd", "fit", str(features), "-o", str(out), *options, "--nproc", str(nproc)],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, **(env or {})}, timeout=timeout,
    )  # fmt: skip


@pytest.fixture(scope="module")
def features(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ddp") / "syn.h5"
    return write_synthetic_features(
        path, n=102, seed=3, shared=1.2, gain=0.6, missing={"text": 0.15, "audio": 0.15, "vision": 0.15}
    )


@pytest.fixture(scope="module")
def one_process(features, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one") / "run"
    fit(features, out, CONFIG, threads=1, progress=False)
    return out


def _history(run: Path, sub: str) -> list[dict]:
    return json.loads((run / sub / "seed_1" / "evaluation.json").read_text())["history"]


def test_two_processes_train_like_one_process_of_the_same_global_batch(features, one_process, tmp_path):
    out = tmp_path / "two"
    proc = fit_nproc(features, out, 2)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "rank 0 of 2 on cpu (gloo)" in proc.stderr
    assert proc.stdout.count("report:") == 1  # rank 0 alone reports
    one = json.loads((one_process / "run.json").read_text())
    two = json.loads((out / "run.json").read_text())
    assert two["fit_config"] == one["fit_config"] and two["status"] == "done"
    files = sorted(p.relative_to(one_process).as_posix() for p in one_process.rglob("*"))
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == files  # no checkpoints left
    for sub in ("seeds", "compare/dropout-baseline"):
        h1, h2 = _history(one_process, sub), _history(out, sub)
        assert len(h1) == len(h2) == 3
        for e1, e2 in zip(h1, h2):
            assert e2["loss"] == pytest.approx(e1["loss"], abs=1e-4)
            assert (e1["mvsc"] is None) == (e2["mvsc"] is None)
            if e1["mvsc"] is not None:
                assert e2["mvsc"] == pytest.approx(e1["mvsc"], abs=1e-4)
            assert e2["regression"] == pytest.approx(e1["regression"], abs=1e-4)
            assert e2["valid_mae"] == pytest.approx(e1["valid_mae"], abs=1e-4)
            assert e2["improved"] == e1["improved"]
        assert h1[-1]["loss"] < h1[0]["loss"]  # it trained
    for bundle in ("model", "compare/dropout-baseline/seed_1/model"):
        w1 = load_file(one_process / bundle / "weights.safetensors")
        w2 = load_file(out / bundle / "weights.safetensors")
        assert w1.keys() == w2.keys()
        worst = max(float(np.abs(w1[k] - w2[k]).max()) for k in w1)
        assert worst < 1e-3, worst
    m1 = json.loads((one_process / "metrics.json").read_text())
    m2 = json.loads((out / "metrics.json").read_text())
    assert m2["conditions"]["lav"]["test"]["MAE"] == pytest.approx(m1["conditions"]["lav"]["test"]["MAE"], abs=1e-3)


def test_a_rank_that_crashes_fails_the_whole_run_cleanly_and_the_run_resumes(features, one_process, tmp_path):
    """Rank 1 raises in epoch 2: the run stops with one clear last line; --resume then finishes it from the
    epoch-1 checkpoint rank 0 wrote, like the uninterrupted one-process run (main mode only: each mode
    trains on its own, so the compared one is left out to save time)."""
    out = tmp_path / "crash"
    options = [o for o in OPTIONS if o not in ("--compare", "dropout-baseline")]
    proc = fit_nproc(features, out, 2, {"MMCKD_TEST_FAIL_AT": "1:2"}, 240, options)  # no hang: bounded wait
    assert proc.returncode != 0
    assert "rank 1: failure injected at epoch 2" in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("mmckd fit: error: distributed training failed"), last
    assert not (out / "metrics.json").exists() and not (out / "model").exists()
    assert json.loads((out / "run.json").read_text())["status"] == "running"
    assert [p.name for p in (out / "checkpoints" / "online" / "seed_1").iterdir()] == ["step_000001"]
    proc = fit_nproc(features, out, 2, options=[*options, "--resume"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "resumed from checkpoint 1 (phase 0, epoch 1)" in proc.stderr
    w1 = load_file(one_process / "model" / "weights.safetensors")
    w2 = load_file(out / "model" / "weights.safetensors")
    assert max(float(np.abs(w1[k] - w2[k]).max()) for k in w1) < 1e-3
