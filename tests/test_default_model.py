"""The embedded default model (mmckd/default_model/): shipped in the repository, used when no model is given and
there is no run under runs/, answering real clips from their transcript (real Whisper ASR), refusing clearly
when a clip has no speech, and describing itself (`mmckd info default`, `mmckd predict --about`)."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import mmckd
from mmckd import default_model
from mmckd.model_card import describe

REPO = Path(__file__).resolve().parents[1]
MMCKD = [sys.executable, "-m", "mmckd"]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*MMCKD, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)},
    )


def test_bundle_is_in_the_repository_small_and_text_only():
    assert default_model.available()
    files = {p.name: p.stat().st_size for p in default_model.PATH.iterdir() if p.is_file()}
    assert {"bundle.json", "weights.safetensors"} <= set(files)
    assert files["bundle.json"] + files["weights.safetensors"] < 3_000_000
    from mmckd.model.bundle import load_bundle

    bundle = load_bundle(default_model.PATH)  # format, sha256 of the weights, weights fit the configuration
    assert bundle.available_subsets == ("l",)
    card = bundle.meta["card"]
    assert card["trained_on"]["splits"] == {"train": 1281, "dev": 229, "test": 685}
    assert card["metrics"]["test"]["n"] == 685 and card["metrics"]["ridge_baseline"]["test"]["n"] == 685
    for m in (card["metrics"]["test"], card["metrics"]["ridge_baseline"]["test"]):
        assert 0 < m["MAE"] < 1.5 and 0.5 < m["Acc2_non0"] <= 1
    # no path of the machine that built it
    assert "/work/" not in json.dumps(bundle.meta["provenance"])


def test_bundle_is_package_data():
    """A non-editable install (wheel) carries the bundle: pyproject declares both files as package data."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    declared = pyproject["tool"]["setuptools"]["package-data"]["mmckd.default_model"]
    assert set(declared) >= {"bundle.json", "weights.safetensors"}
    assert (default_model.PATH / "__init__.py").is_file()  # a package, so packages.find includes it
    tracked = subprocess.run(["git", "ls-files", "mmckd/default_model"], cwd=REPO, capture_output=True, text=True)
    if tracked.returncode == 0 and tracked.stdout.strip():
        assert {"mmckd/default_model/bundle.json", "mmckd/default_model/weights.safetensors"} <= set(
            tracked.stdout.split()
        )


def test_info_and_about_describe_the_model(tmp_path):
    out = _run(["info", "default"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "CMU-MOSI" in out.stdout and "networks      l (text)" in out.stdout
    assert "test (l)" in out.stdout and "test (ridge baseline)" in out.stdout
    about = _run(["predict", "--about", "--json"], tmp_path)
    assert about.returncode == 0, about.stderr
    doc = json.loads(about.stdout)
    assert doc["networks"] == {"l": "text"} and doc["reads"] == ["text"]
    assert doc["metrics"]["test"]["l"]["MAE"] == describe(default_model.PATH)["metrics"]["test"]["l"]["MAE"]


def test_load_without_runs_uses_the_default_model(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)  # no runs/ here
    with caplog.at_level("WARNING", logger="mmckd.predict"):
        p = mmckd.load()
    try:
        assert p.is_default and p.path == default_model.PATH
        assert p.reads == {"text"}
        assert p.config.transcript.asr  # a text-only model transcribes by itself
        assert "embedded default model" in caplog.text
    finally:
        p.close()


def test_predict_real_clip_without_model(shared_data, tmp_path):
    """The issue's check: `mmckd predict talk1.mp4` with no --model and no runs/ scores it from its speech."""
    out = _run(["predict", str(shared_data / "videos" / "talk1.mp4"), "--json"], tmp_path)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["network"] == "l" and r["modalities"] == ["text"] and r["transcript_source"] == "asr"
    assert "help" in r["transcript"].lower()  # "My biggest weakness is asking for help ..."
    assert -3 <= r["score"] <= 3 and r["error"] is None
    assert "embedded default model" in out.stderr
    assert "not read by this model" in r["missing"]["vision"]


def test_real_mosi_utterance_sentiment(shared_data, tmp_path):
    """A real MOSI utterance, audio only ("anyhow it was really good", label +2.4): ASR then a positive score;
    the same file with a negative transcript given scores below it."""
    wav = shared_data / "mosi" / "03bSnISJMiM_1.wav"
    p = mmckd.load("default")
    try:
        r = p.predict(wav)
        assert r.ok, r.error
        assert r.transcript_source == "asr" and "good" in r.transcript.lower()
        assert r.score > 0.5 and r.polarity == "positive"
        worse = p.predict(wav, text="honestly it was a boring and awful movie")
        assert worse.ok and worse.score < 0
    finally:
        p.close()


def test_clip_without_speech_gets_the_clear_reason(shared_data, tmp_path):
    from mmckd.testing.clips import strip_audio

    silent = strip_audio(shared_data / "videos" / "talk2.mp4", tmp_path / "talk2_noaudio.mp4")
    out = _run(["predict", str(silent)], tmp_path)
    assert out.returncode == 1
    assert "the default model reads text; this clip has no speech" in out.stdout
    assert "(it has no audio track)" in out.stdout
    lines = [line for line in out.stderr.splitlines() if "train a model on your labelled videos" in line]
    assert len(lines) == 1 and lines[0].startswith(f"mmckd predict: {silent}: the default model reads text")
