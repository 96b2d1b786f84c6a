"""`mmckd predict` and `mmckd.load(...).predict(...)` end to end, with a model trained here on the demo material.

The module fixture makes the demo clips (assets/make_demo.py), extracts them with the default extractor
configuration and fits a small model, so every prediction below runs the real extractors (ffmpeg,
MediaPipe, the BERT encoder) with the configuration stored in a real bundle.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

import mmckd
from mmckd.cli.main import cli
from mmckd.extract.config import ExtractConfig
from mmckd.feature_file import MODALITIES, config_hash
from mmckd.model.config import FitConfig, ModelConfig
from mmckd.predict import SEVEN_CLASSES, PredictionResult, Predictor
from mmckd.predict import load as load_predictor
from mmckd.testing.clips import strip_audio

REPO = Path(__file__).resolve().parents[1]
JSON_FIELDS = {
    "clip", "score", "polarity", "label7", "network", "modalities", "missing", "transcript", "transcript_source",
    "extract_seconds", "inference_seconds", "seconds", "error",
}  # fmt: skip
# small and quick, but the real feature dims and the real default extractor configuration
TEST_MODEL = ModelConfig(d_model=32, heads=2, proj_dim=16, max_audio=40, max_vision=40)
TEST_FIT = FitConfig(model=TEST_MODEL, epochs=12, patience=12, lr=3e-3, batch_size=32, seeds=(1,))
POSITIVE_TEXT = "i really enjoyed it, it was a wonderful and happy film"


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True, capture_output=True)


def _load_make_demo():
    spec = importlib.util.spec_from_file_location("make_demo", REPO / "assets" / "make_demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("demo")
    _load_make_demo().main(d)
    return d


@pytest.fixture(scope="module")
def run_dir(demo_dir, tmp_path_factory) -> Path:
    """A run folder trained on the demo clips' features (default extractor configuration)."""
    from mmckd.extract.pipeline import extract
    from mmckd.model.training import fit

    work = tmp_path_factory.mktemp("run")
    features = work / "features.h5"
    summary = extract(demo_dir / "clips", features, labels=demo_dir / "label.csv", workers=2, progress=False)
    assert summary.failed == 0
    fit(features, work / "run", TEST_FIT, progress=False)
    return work / "run"


@pytest.fixture(scope="module")
def predictor(run_dir) -> Predictor:
    p = mmckd.load(run_dir)
    yield p
    p.close()


@pytest.fixture(scope="module")
def variants(shared_data, tmp_path_factory) -> dict[str, Path]:
    """One real talking head (talk2, first 3 s) with speech, face and a sidecar transcript, and copies of it
    that each lack one modality: audio stripped, face covered (a black box over the whole frame), no sidecar."""
    d = tmp_path_factory.mktemp("variants")
    base = d / "base.mp4"
    _ffmpeg("-i", str(shared_data / "videos" / "talk2.mp4"), "-t", "3", "-c:v", "libx264", "-preset", "veryfast",
            "-c:a", "aac", str(base))  # fmt: skip
    strip_audio(base, d / "noaudio.mp4")
    _ffmpeg("-i", str(base), "-vf", "drawbox=x=0:y=0:w=iw:h=ih:color=black:t=fill", "-c:v", "libx264",
            "-preset", "veryfast", "-c:a", "copy", str(d / "covered.mp4"))  # fmt: skip
    shutil.copyfile(base, d / "notext.mp4")
    for name in ("base", "noaudio", "covered"):
        (d / f"{name}.txt").write_text(POSITIVE_TEXT + "\n")
    # a corrupt file: the first 40% of a real mp4 (cut before its index)
    data = base.read_bytes()
    (d / "corrupt.mp4").write_bytes(data[: len(data) * 2 // 5])
    return {p.stem: p for p in d.glob("*.mp4")}


def _check_result(r: PredictionResult, modalities: tuple[str, ...], network: str) -> None:
    assert r.ok, r.error
    assert r.modalities == modalities and r.network == network
    assert -3.0 <= r.score <= 3.0 and math.isfinite(r.score)
    assert r.polarity == ("positive" if r.score > 0 else "negative" if r.score < 0 else "neutral")
    assert r.label7 == SEVEN_CLASSES[int(min(3, max(-3, round(r.score)))) + 3]
    assert set(r.missing) == set(MODALITIES) - set(modalities)
    assert r.extract_seconds > 0 and r.inference_seconds > 0


# -- the bundle ----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_bundle_holds_the_default_extractor_configuration(run_dir, predictor):
    meta = json.loads((run_dir / "model" / "bundle.json").read_text())
    assert meta["extractor_config"] == ExtractConfig().to_dict()
    assert meta["extractor_config_hash"] == config_hash(ExtractConfig().to_dict())
    assert predictor.config == ExtractConfig()
    assert set(predictor.bundle.available_subsets) == {"lav", "la", "lv", "av", "l", "a", "v"}


@pytest.mark.slow
def test_demo_model_reads_the_held_out_clip_and_its_text(predictor, demo_dir):
    happy = demo_dir / "heldout" / "happy.mp4"
    r = predictor.predict(happy)  # its sidecar happy.txt gives the text
    _check_result(r, ("text", "audio", "vision"), "lav")
    assert r.transcript_source == "sidecar:txt"
    assert r.score > 0
    sad = predictor.predict(happy, text="i hated this movie, it was terrible and boring")
    _check_result(sad, ("text", "audio", "vision"), "lav")
    assert sad.score < 0


# -- real media ----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_real_videos_are_predicted_with_audio_and_vision(predictor, real_videos):
    results = list(predictor.predict_many(real_videos))
    for path, r in zip(real_videos, results):
        assert r.clip == str(path)
        _check_result(r, ("audio", "vision"), "av")  # no sidecar, ASR off in the bundle: no text
        assert r.transcript is None and "no transcript" in r.missing["text"]


@pytest.mark.slow
def test_real_audio_only_file(predictor, shared_data):
    wav = shared_data / "mosi" / "03bSnISJMiM_1.wav"
    r = predictor.predict(wav)
    _check_result(r, ("audio",), "a")
    assert "no video stream" in r.missing["vision"]
    r = predictor.predict(wav, text="anyhow it was really good")
    _check_result(r, ("text", "audio"), "la")
    assert r.transcript_source == "given" and r.transcript == "anyhow it was really good"


@pytest.mark.slow
def test_asr_gives_the_audio_only_file_its_text(run_dir, shared_data):
    p = load_predictor(run_dir, asr=True)
    try:
        r = p.predict(shared_data / "mosi" / "03bSnISJMiM_1.wav")
    finally:
        p.close()
    _check_result(r, ("text", "audio"), "la")
    assert r.transcript_source == "asr" and "good" in r.transcript.lower()


# -- the same clip with one modality gone ---------------------------------------------------------------------------
@pytest.mark.slow
def test_each_missing_modality_routes_to_its_student(predictor, variants):
    full = predictor.predict(variants["base"])
    _check_result(full, ("text", "audio", "vision"), "lav")
    assert full.transcript_source == "sidecar:txt" and full.transcript == POSITIVE_TEXT

    no_audio = predictor.predict(variants["noaudio"])
    _check_result(no_audio, ("text", "vision"), "lv")
    assert no_audio.missing["audio"] == "no audio track"

    covered = predictor.predict(variants["covered"])
    _check_result(covered, ("text", "audio"), "la")
    assert covered.missing["vision"].startswith("no face found")

    no_text = predictor.predict(variants["notext"])
    _check_result(no_text, ("audio", "vision"), "av")
    assert no_text.transcript is None and "no transcript" in no_text.missing["text"]

    given = predictor.predict(variants["notext"], text="this was terrible and boring")
    _check_result(given, ("text", "audio", "vision"), "lav")
    assert given.transcript_source == "given" and given.transcript == "this was terrible and boring"
    # --text wins over the sidecar
    override = predictor.predict(variants["base"], text="this was terrible and boring")
    assert override.transcript_source == "given" and override.transcript == "this was terrible and boring"
    assert override.score == pytest.approx(given.score, abs=1e-5)


# -- the command ---------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_batch_with_a_corrupt_clip_json_and_csv(run_dir, variants, shared_data, tmp_path):
    inputs = [variants["base"], variants["corrupt"], shared_data / "mosi" / "03bSnISJMiM_1.wav"]
    out_csv = tmp_path / "preds.csv"
    r = CliRunner().invoke(
        cli, ["predict", *map(str, inputs), "--model", str(run_dir), "--json", "--output", str(out_csv)]
    )
    assert r.exit_code == 1, r.output
    objects = [json.loads(line) for line in r.stdout.splitlines()]
    assert [o["clip"] for o in objects] == [str(p) for p in inputs]
    for o in objects:
        assert set(o) == JSON_FIELDS
    ok, bad, wav = objects
    assert ok["error"] is None and ok["network"] == "lav" and ok["modalities"] == ["text", "audio", "vision"]
    assert wav["error"] is None and wav["network"] == "a" and wav["modalities"] == ["audio"]
    assert "no video stream" in wav["missing"]["vision"]
    assert bad["score"] is None and bad["network"] is None
    assert str(variants["corrupt"]) in bad["error"] and "\n" not in bad["error"]
    assert "1 of 3 clips failed" in r.stderr

    with open(out_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["clip"] for row in rows] == [str(p) for p in inputs]
    assert rows[0]["modalities"] == "text+audio+vision" and float(rows[0]["score"]) == pytest.approx(ok["score"])
    assert rows[1]["error"] == bad["error"] and rows[1]["score"] == ""
    assert rows[2]["network"] == "a"


@pytest.mark.slow
def test_human_output_and_folder_input(run_dir, variants, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copyfile(variants["noaudio"], folder / "clip.mp4")
    r = CliRunner().invoke(cli, ["predict", str(folder), "--model", str(run_dir), "--text", POSITIVE_TEXT])
    assert r.exit_code == 0, r.output
    assert str(folder / "clip.mp4") in r.stdout and "(network lv)" in r.stdout
    assert "missing audio: no audio track" in r.stdout and f'"{POSITIVE_TEXT}" (given)' in r.stdout


# -- refusals ------------------------------------------------------------------------------------------------------
def _copy_bundle(run_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(run_dir / "model", dst)
    return dst


def _refused(model: Path | None, clip: Path) -> str:
    """Run `mmckd predict` (with --model when given) and return its error message, checked to be one line."""
    r = CliRunner().invoke(cli, ["predict", str(clip)] + (["--model", str(model)] if model else []))
    assert r.exit_code == 2, r.output
    assert r.stdout == ""
    errors = [line for line in r.stderr.splitlines() if line.startswith("mmckd predict: error: ")]
    assert len(errors) == 1 and r.stderr.rstrip("\n").endswith(errors[0]), r.stderr
    return errors[0]


@pytest.mark.slow
@pytest.mark.parametrize("change", ["edited", "unknown-field", "dropped-field"])
def test_bundle_of_another_feature_configuration_is_refused(run_dir, variants, tmp_path, change):
    bundle = _copy_bundle(run_dir, tmp_path)
    meta = json.loads((bundle / "bundle.json").read_text())
    if change == "edited":  # the configuration no longer matches its hash
        meta["extractor_config"]["audio"]["n_mels"] = 64
    elif change == "unknown-field":  # a newer mmckd's option, consistently hashed
        meta["extractor_config"]["vision"]["landmark_model"] = "v2"
        meta["extractor_config_hash"] = config_hash(meta["extractor_config"])
    else:  # an option this mmckd has and the bundle's mmckd had not, consistently hashed
        del meta["extractor_config"]["audio"]["silence_dbfs"]
        meta["extractor_config_hash"] = config_hash(meta["extractor_config"])
    (bundle / "bundle.json").write_text(json.dumps(meta))
    message = _refused(bundle, variants["base"])
    assert str(bundle) in message
    expected = {"edited": "does not match its stored hash", "unknown-field": "landmark_model",
                "dropped-field": "another mmckd version"}[change]  # fmt: skip
    assert expected in message


@pytest.mark.slow
def test_tampered_weights_are_refused(run_dir, variants, tmp_path):
    bundle = _copy_bundle(run_dir, tmp_path)
    weights = bundle / "weights.safetensors"
    state = load_file(str(weights))
    name = sorted(state)[0]
    state[name] = state[name] + 0.01
    save_file(state, str(weights))
    message = _refused(bundle, variants["base"])
    assert str(weights) in message and "sha256" in message


def test_no_model_falls_back_to_the_default_model(variants, tmp_path, monkeypatch, caplog):
    """No --model and no runs/: the embedded default model answers (tests/test_default_model.py covers it)
    and says so; a --model folder without a bundle is still refused in one line."""
    monkeypatch.chdir(tmp_path)
    with caplog.at_level("WARNING", logger="mmckd.predict"):
        r = CliRunner().invoke(cli, ["predict", str(variants["base"])])
    assert r.exit_code == 0, r.output
    assert "network l" in r.stdout and "embedded default model" in caplog.text
    from mmckd.predict import PredictError, latest_run

    with pytest.raises(PredictError, match="no trained model under runs/: train one with `mmckd fit"):
        latest_run()
    (tmp_path / "empty").mkdir()
    message = _refused(tmp_path / "empty", variants["base"])
    assert "no model bundle here" in message


# -- the Python API ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_load_finds_the_latest_run_and_returns_typed_results(run_dir, variants, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    shutil.copytree(run_dir / "model", runs / "mine" / "model")
    monkeypatch.chdir(tmp_path)
    model = mmckd.load()
    try:
        assert isinstance(model, Predictor) and model.path == Path("runs/mine/model")
        r = model.predict(variants["noaudio"])
    finally:
        model.close()
    assert isinstance(r, PredictionResult)
    _check_result(r, ("text", "vision"), "lv")
    d = r.to_dict()
    assert set(d) == JSON_FIELDS and json.loads(json.dumps(d)) == d
    assert d["seconds"] == pytest.approx(r.extract_seconds + r.inference_seconds, abs=1e-3)
