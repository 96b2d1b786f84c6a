"""Training end to end on synthetic feature files: learning, run folder, bundle, resume, modes, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mmckd.feature_file import Clip, FeatureFile
from mmckd.model.bundle import BundleError, load_bundle
from mmckd.model.config import FitConfig, ModelConfig
from mmckd.model.data import DataError, load_prepared
from mmckd.model.evaluation import clips_with
from mmckd.model.metrics import METRIC_NAMES, regression_metrics
from mmckd.model.routing import SUBSETS, NoUsableModalityError
from mmckd.model.synthetic import synthetic_clips, write_synthetic_features
from mmckd.model.training import RunError, SeedTrainer, fit

TINY = ModelConfig(d_model=32, heads=2, proj_dim=16, dropout=0.05, max_audio=16, max_vision=16)
RATES = ("0.0", "0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7")


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


# --------------------------------------------------------------------------- the learning task


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """A task where each modality carries part of the label, some clips lacking a modality; one run."""
    d = tmp_path_factory.mktemp("task")
    path = write_synthetic_features(
        d / "task.h5",
        n=200,
        seed=0,
        shared=1.2,
        gain=0.6,
        noise=0.5,
        missing={"text": 0.1, "audio": 0.1, "vision": 0.1},
    )
    cfg = FitConfig(model=TINY, epochs=12, lr=3e-3, patience=30)
    result = fit(path, d / "run", cfg, threads=1, progress=False)
    return path, result


def test_training_lowers_the_loss(task):
    _, result = task
    history = _read(result.out_dir / "seeds" / "seed_1" / "evaluation.json")["history"]
    assert len(history) == 12
    assert history[-1]["loss"] < 0.8 * history[0]["loss"]
    assert all(h["mvsc"] is not None for h in history)


def test_students_beat_the_mean_and_teacher_beats_unimodal(task):
    path, result = task
    data = load_prepared(path, TINY)
    train_mean = float(data.labels[data.indices("train")].mean())
    valid = {s: result.metrics["conditions"][s]["valid"]["MAE"] for s in SUBSETS}
    for s in SUBSETS:
        idx = clips_with(data, "valid", s)
        mean_mae = float(np.abs(data.labels[idx] - train_mean).mean())
        assert valid[s] < mean_mae, f"{s}: valid MAE {valid[s]:.3f} not below predicting the mean ({mean_mae:.3f})"
    for s in ("l", "a", "v"):
        assert valid["lav"] < valid[s], f"teacher {valid['lav']:.3f} not better than {s} {valid[s]:.3f}"


def test_run_folder_and_metrics(task):
    _, result = task
    out = result.out_dir
    for name in (
        "model/weights.safetensors",
        "model/bundle.json",
        "metrics.json",
        "report.md",
        "run.json",
        "training_curves.png",
        "robustness.png",
        "seeds/seed_1/model/bundle.json",
    ):
        assert (out / name).is_file(), name
    for png in ("training_curves.png", "robustness.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "checkpoints").exists()  # removed once the run is done
    assert not [p for p in out.rglob("*") if p.suffix in (".pt", ".pth", ".pkl", ".pickle", ".bin")]
    m = _read(out / "metrics.json")
    assert m["seeds"] == [1] and set(m["per_seed"]) == {"1"}
    assert set(m["conditions"]) == set(SUBSETS)
    for s in SUBSETS:
        for split in ("valid", "test"):
            assert set(METRIC_NAMES) | {"n"} <= set(m["conditions"][s][split])
    assert list(m["missing_rate"]) == list(RATES)
    data = load_prepared(result.out_dir.parent / "task.h5", TINY)
    n_test = len(data.indices("test"))
    for entry in m["missing_rate"].values():
        assert entry["routed"]["n"] == n_test and entry["teacher_zero_fill"]["n"] == n_test
    # dropping modalities hurts: the routed MAE at 0.7 is worse than at 0.0
    assert m["missing_rate"]["0.7"]["routed"]["MAE"] > m["missing_rate"]["0.0"]["routed"]["MAE"]
    b = _read(out / "model" / "bundle.json")
    for key in (
        "model_config",
        "feature_dims",
        "max_lengths",
        "normalisation",
        "subsets",
        "extractor_config",
        "extractor_config_hash",
        "provenance",
        "mmckd_version",
        "weights_sha256",
    ):
        assert key in b
    assert b["subsets"] == list(SUBSETS)
    assert b["extractor_config_hash"] == FeatureFile(result.out_dir.parent / "task.h5").config_hash
    report = (out / "report.md").read_text()
    assert "teacher (lav)" in report and "robustness.png" in report


def _test_clips(path: Path) -> list[Clip]:
    return [c for c in FeatureFile(path).iter_clips() if c.split == "test"]


def test_bundle_predictions_reproduce_the_run_metrics(task):
    path, result = task
    b = load_bundle(result.out_dir)
    assert b.available_subsets == SUBSETS
    assert b.extractor_config_hash == FeatureFile(path).config_hash
    full = [c for c in _test_clips(path) if len(c.modalities) == 3]
    preds = [b.predict(c) for c in full]
    assert {p.network for p in preds} == {"lav"} and all(p.modalities == ("text", "audio", "vision") for p in preds)
    got = regression_metrics([p.score for p in preds], [c.label for c in full])
    assert got["MAE"] == pytest.approx(result.metrics["conditions"]["lav"]["test"]["MAE"], abs=1e-5)
    # text only (audio and vision withheld) is the text student's condition
    text = [c for c in _test_clips(path) if c.text is not None]
    for c in text:
        c.audio = c.vision = None
    preds = [b.predict(c) for c in text]
    assert {p.network for p in preds} == {"l"}
    got = regression_metrics([p.score for p in preds], [c.label for c in text])
    assert got["MAE"] == pytest.approx(result.metrics["conditions"]["l"]["test"]["MAE"], abs=1e-5)
    assert all(-3 <= p.score <= 3 for p in preds)


def test_bundle_routing_on_clips(task):
    path, result = task
    b = load_bundle(result.out_dir / "model")
    clip = next(c for c in _test_clips(path) if len(c.modalities) == 3)
    clip.vision.mask[:] = False  # no face in any frame: vision counts as absent
    assert b.predict(clip).network == "la"
    clip.text = None
    assert b.predict(clip).modalities == ("audio",)
    clip.audio = None
    with pytest.raises(NoUsableModalityError, match=clip.id):
        b.predict(clip)
    wrong = Clip(id="w", text=type(clip.vision)(np.zeros((3, 7), np.float32)))
    with pytest.raises(BundleError, match="dim 7"):
        b.predict(wrong)


def test_bundle_round_trip_and_tampering(task, tmp_path):
    path, result = task
    seed_bundle = load_bundle(result.out_dir / "seeds" / "seed_1" / "model")
    main = load_bundle(result.out_dir)
    clips = _test_clips(path)[:8]
    assert [seed_bundle.predict(c).score for c in clips] == [main.predict(c).score for c in clips]
    copy = tmp_path / "model"
    shutil.copytree(result.out_dir / "model", copy)
    weights = copy / "weights.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-3] ^= 0x01
    weights.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(copy)
    with pytest.raises(BundleError, match="no model bundle"):
        load_bundle(tmp_path / "nowhere")


# --------------------------------------------------------------------------- small runs


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("small")
    return write_synthetic_features(
        d / "small.h5", n=60, seed=1, shared=1.0, gain=0.5, missing={"audio": 0.15, "vision": 0.15}
    )


SMALL = FitConfig(
    model=ModelConfig(d_model=16, heads=2, proj_dim=8, max_audio=12, max_vision=12),
    epochs=3,
    batch_size=16,
    seeds=(1, 2),
)


class _Crash(Exception):
    pass


@pytest.mark.slow
def test_resume_after_a_crash_finishes_the_run_identically(small_file, tmp_path):
    reference = fit(small_file, tmp_path / "reference", SMALL, threads=1, progress=False)

    def crash(entry):
        if entry.seed == 2 and entry.epoch == 2:
            raise _Crash("simulated crash")

    run = tmp_path / "crashed"
    with pytest.raises(_Crash):
        fit(small_file, run, SMALL, threads=1, progress=False, epoch_callback=crash)
    assert not (run / "metrics.json").exists()
    assert (run / "seeds" / "seed_1" / "evaluation.json").exists()
    assert list((run / "checkpoints" / "online" / "seed_2").glob("step_*/state.safetensors"))
    seed1_stamp = (run / "seeds" / "seed_1" / "evaluation.json").stat().st_mtime_ns

    epochs_after = []
    resumed = fit(
        small_file,
        run,
        None,
        resume=True,
        threads=1,
        progress=False,
        epoch_callback=lambda e: epochs_after.append((e.seed, e.epoch)),
    )
    assert epochs_after == [(2, 3)]  # seed 1 kept, seed 2 continued after its last checkpoint
    assert (run / "seeds" / "seed_1" / "evaluation.json").stat().st_mtime_ns == seed1_stamp
    assert (run / "model" / "bundle.json").exists() and (run / "report.md").exists()
    for seed in ("1", "2"):
        for s in SUBSETS:
            a = reference.metrics["per_seed"][seed]["conditions"][s]["test"]["MAE"]
            b = resumed.metrics["per_seed"][seed]["conditions"][s]["test"]["MAE"]
            assert b == pytest.approx(a, abs=1e-6), (seed, s)
    assert _read(run / "run.json")["status"] == "done"


def test_run_folder_conflicts_are_refused_before_training(small_file, tmp_path):
    run = tmp_path / "run"
    fit(small_file, run, FitConfig(model=SMALL.model, epochs=1, batch_size=16), threads=1, progress=False)
    stamp = (run / "metrics.json").stat().st_mtime_ns
    with pytest.raises(RunError, match="already holds a run"):
        fit(small_file, run, FitConfig(model=SMALL.model, epochs=1, batch_size=16), threads=1)
    with pytest.raises(RunError, match="options differ.*lr"):
        fit(small_file, run, FitConfig(model=SMALL.model, epochs=1, batch_size=16, lr=0.01), resume=True, threads=1)
    # the same clips extracted with another configuration: another config hash
    other = write_synthetic_features(tmp_path / "other.h5", clips=synthetic_clips(n=60, seed=1), config={"other": 1})
    with pytest.raises(RunError, match="extractor configuration"):
        fit(other, run, None, resume=True, threads=1)
    assert (run / "metrics.json").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_compared_modes(small_file, tmp_path):
    cfg = FitConfig(
        model=SMALL.model,
        epochs=3,
        teacher_epochs=2,
        batch_size=16,
        compare=("offline-teacher", "no-mvsc", "dropout-baseline"),
    )
    result = fit(small_file, tmp_path / "run", cfg, threads=1, progress=False)
    m = result.metrics
    assert set(m["compare"]) == {"offline-teacher", "no-mvsc", "dropout-baseline"}
    for mode, agg in m["compare"].items():
        assert all(agg["conditions"][s] is not None for s in SUBSETS), mode
        assert list(agg["missing_rate"]) == list(RATES)
    offline = _read(tmp_path / "run" / "compare" / "offline-teacher" / "seed_1" / "evaluation.json")["history"]
    phases = [h["phase"] for h in offline]
    assert phases == ["teacher", "teacher", "students", "students", "students"]
    frozen = [h["valid_mae"]["lav"] for h in offline if h["phase"] == "students"]
    assert max(frozen) - min(frozen) < 1e-9  # the teacher is frozen while students distil
    assert all(h["mvsc"] is not None for h in offline if h["phase"] == "teacher")  # it learns its views too
    assert all(h["mvsc"] is not None for h in offline if h["phase"] == "students")
    no_mvsc = _read(tmp_path / "run" / "compare" / "no-mvsc" / "seed_1" / "evaluation.json")["history"]
    assert all(h["mvsc"] is None for h in no_mvsc)
    dropout = load_bundle(tmp_path / "run" / "compare" / "dropout-baseline" / "seed_1")
    assert dropout.kind == "dropout-baseline" and dropout.available_subsets == SUBSETS
    clip = next(c for c in FeatureFile(small_file).iter_clips() if c.text is not None)
    clip.audio = clip.vision = None
    pred = dropout.predict(clip)
    assert pred.network == "lav" and pred.modalities == ("text",)
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Compared modes" in report and "dropout-baseline" in report


def test_text_only_file_trains_only_the_text_network(tmp_path):
    clips = synthetic_clips(n=50, seed=4, missing={"audio": 1.0, "vision": 1.0})
    path = write_synthetic_features(tmp_path / "text.h5", clips=clips, dims={"text": 16, "audio": 8, "vision": 10})
    result = fit(
        path, tmp_path / "run", FitConfig(model=SMALL.model, epochs=2, batch_size=16), threads=1, progress=False
    )
    m = result.metrics
    assert [s for s in SUBSETS if m["conditions"][s] is not None] == ["l"]
    assert m["null_reasons"]["a"] == "no training clip has audio"
    n_test = sum(c.split == "test" for c in clips)
    for entry in m["missing_rate"].values():
        assert entry["routed"]["n"] == n_test and entry["teacher_zero_fill"] is None
    assert "no training clip has text+audio+vision" in (tmp_path / "run" / "report.md").read_text()
    b = load_bundle(tmp_path / "run")
    assert b.available_subsets == ("l",)
    assert b.predict(clips[0]).network == "l"  # text alone


def test_networks_train_on_the_clips_that_have_their_modalities(small_file):
    data = load_prepared(small_file, SMALL.model)
    trainer = SeedTrainer(data, SMALL, 1, Path("/nonexistent"), torch.device("cpu"))
    a = int(np.flatnonzero((data.present == [True, True, False]).all(1))[0])
    b = int(np.flatnonzero(data.present.all(1))[0])
    _, terms = trainer.batch_loss(trainer.phases[0], np.array([a]))
    assert {k for k in terms if k.startswith("regression/")} == {"regression/la", "regression/l", "regression/a"}
    assert "mvsc" in terms
    _, terms = trainer.batch_loss(trainer.phases[0], np.array([a, b]))
    assert {k for k in terms if k.startswith("regression/")} == {f"regression/{s}" for s in SUBSETS}


def test_bad_feature_files_fail_before_training(tmp_path):
    clips = synthetic_clips(n=20, seed=2)
    for c in clips:
        c.label = None
    path = write_synthetic_features(tmp_path / "nolabels.h5", clips=clips)
    with pytest.raises(DataError, match="no clip has a sentiment label"):
        fit(path, tmp_path / "run", SMALL, threads=1)
    assert not (tmp_path / "run").exists()
    with pytest.raises(DataError, match="no such file"):
        fit(tmp_path / "missing.h5", tmp_path / "run", SMALL, threads=1)
