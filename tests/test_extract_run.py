"""`mmckd extract` end to end on real files: good clips beside bad ones, resume after kill -9, no redo."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmckd.extract.config import ExtractConfig, TranscriptConfig
from mmckd.extract.pipeline import extract
from mmckd.extract.text import resolve_text_model
from mmckd.feature_file import FeatureFile

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mmckd", *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=timeout
    )


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory, synthetic_dir, shared_data) -> Path:
    """Good clips beside every kind of bad input, and a labels file with a row that has no media."""
    d = tmp_path_factory.mktemp("mixed")
    talk = shared_data / "videos" / "talk2.mp4"
    (d / "real").mkdir()
    shutil.copy(talk, d / "real" / "talk2.mp4")
    (d / "real" / "talk2.txt").write_text("hello there, this is a sidecar transcript\n")
    shutil.copy(synthetic_dir / "face_speech.mp4", d / "good.mp4")
    shutil.copy(synthetic_dir / "face_speech.mp4", d / "émotion_ünï 日本.mp4")
    shutil.copy(synthetic_dir / "face_silent.mp4", d / "no_audio.mp4")
    shutil.copy(synthetic_dir / "noface_speech.mp4", d / "no_face.mp4")
    shutil.copy(synthetic_dir / "speech_only.wav", d / "audio_only.wav")
    (d / "empty.mp4").write_bytes(b"")
    data = talk.read_bytes()
    (d / "truncated.mp4").write_bytes(data[: len(data) * 4 // 10])
    (d / "not_a_video.mp4").write_text("this is a text file, not a video\n")
    (d / "label.csv").write_text(
        "id,text,label,mode\n"
        "good,what a great and lovely film,2.0,train\n"
        "no_audio,i did not like it at all,-2.0,train\n"
        "text_only_row,a row whose media file does not exist,0.5,test\n"
    )
    return d


@pytest.fixture(scope="module")
def mixed_run(mixed_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "features.h5"
    proc = run_cli(
        "extract",
        str(mixed_folder),
        "--labels",
        str(mixed_folder / "label.csv"),
        "-o",
        str(out),
        "--workers",
        "2",
        "--no-progress",
    )
    assert proc.returncode == 0, proc.stderr
    info = run_cli("info", str(out), "--json")
    assert info.returncode == 0, info.stderr
    return out, {c["id"]: c for c in json.loads(info.stdout)["clips"]}, proc


def test_bad_inputs_fail_alone_with_a_reason(mixed_run):
    _, clips, _ = mixed_run
    for cid, reason in [("empty", "empty file"), ("truncated", "moov atom not found"), ("not_a_video", "Invalid data")]:
        assert clips[cid]["status"] == "failed", cid
        assert reason in clips[cid]["error"], clips[cid]["error"]
        assert "\n" not in clips[cid]["error"]
    assert sum(c["status"] == "failed" for c in clips.values()) == 3


def test_good_clips_have_the_right_modalities(mixed_run):
    _, clips, _ = mixed_run
    assert len(clips) == 10
    m = {
        cid: {k for k, v in c["modalities"].items() if v is not None} for cid, c in clips.items() if c["status"] == "ok"
    }
    assert m["good"] == {"text", "audio", "vision"}
    assert clips["good"]["transcript_source"] == "labels" and clips["good"]["label"] == 2.0
    assert m["talk2"] == {"text", "audio", "vision"}
    assert clips["talk2"]["transcript_source"] == "sidecar:txt"
    assert clips["talk2"]["modalities"]["vision"]["face_ratio"] > 0.8
    assert m["no_audio"] == {"text", "vision"}
    assert m["no_face"] == {"audio"}  # no transcript source for it: text missing too
    assert m["audio_only"] == {"audio"}
    assert m["text_only_row"] == {"text"} and clips["text_only_row"]["split"] == "test"
    assert m["émotion_ünï 日本"] == {"audio", "vision"}


def test_missing_modalities_record_why(mixed_run):
    out, _, _ = mixed_run
    ff = FeatureFile(out)
    reasons = {c.id: c.missing_reason for c in ff.iter_clips()}
    assert "no audio track" in reasons["no_audio"]["audio"]
    assert "no face" in reasons["no_face"]["vision"]
    assert "audio-only" in reasons["audio_only"]["vision"]
    assert reasons["text_only_row"]["audio"] == "no media file"


def test_rerun_on_finished_file_does_no_work(mixed_run, mixed_folder):
    out, _, _ = mixed_run
    mtime = out.stat().st_mtime_ns
    proc = run_cli(
        "extract", str(mixed_folder), "--labels", str(mixed_folder / "label.csv"), "-o", str(out), "--no-progress"
    )
    assert proc.returncode == 0, proc.stderr
    assert "0 extracted now" in proc.stdout
    assert out.stat().st_mtime_ns == mtime


def test_other_configuration_is_refused_then_overwritten(mixed_run, mixed_folder, tmp_path):
    out = tmp_path / "f.h5"
    shutil.copy(mixed_run[0], out)
    before = out.read_bytes()
    proc = run_cli("extract", str(mixed_folder / "real"), "-o", str(out), "--fps", "10", "--no-progress")
    assert proc.returncode == 2
    assert "another configuration" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert out.read_bytes() == before
    proc = run_cli("extract", str(mixed_folder / "real"), "-o", str(out), "--fps", "10", "--overwrite", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    ff = FeatureFile(out)
    assert ff.ids == ["talk2"] and ff.config["vision"]["fps"] == 10


@pytest.mark.slow
def test_real_videos_have_face_audio_and_text(real_videos, tmp_path):
    folder = tmp_path / "v"
    folder.mkdir()
    pytest.importorskip("faster_whisper", reason="ASR needs the optional extra mmckd[asr]")
    for v in real_videos:
        os.symlink(v, folder / v.name)
    out = tmp_path / "real.h5"
    s = extract(folder, out, progress=False, config=ExtractConfig(transcript=TranscriptConfig(asr=True)))
    assert s.failed == 0
    ff = FeatureFile(out)
    assert len(ff) == len(real_videos)
    vocab = set((Path(resolve_text_model("default")) / "vocab.txt").read_text().split())
    for transcript, source in zip(ff.transcripts, ff.transcript_sources):
        words = [w.strip(".,!?'\"").lower() for w in transcript.split()]
        assert source == "asr" and len(words) >= 5
        assert sum(w in vocab for w in words) >= 0.8 * len(words), transcript
    vis = ff.modality("vision")
    aud = ff.modality("audio")
    for i, cid in enumerate(ff.ids):
        assert ff.present["text"][i] and ff.present["audio"][i] and ff.present["vision"][i], cid
        rows = vis.clip_rows(i)
        assert vis.mask[rows].mean() > 0.8, cid
        # frames at 25 fps over the whole clip: none dropped
        assert abs(len(vis.features[rows]) - ff.durations[i] * 25) <= 3, cid
        assert abs(len(aud.features[aud.clip_rows(i)]) - ff.durations[i] * 25) <= 3, cid


@pytest.mark.slow
def test_mosi_text_only_from_labels_alone(mosi_text_h5):
    ff = FeatureFile(mosi_text_h5)
    assert len(ff) == 2195
    assert set(ff.status) == {"ok"}
    assert ff.present["text"].all() and not ff.present["audio"].any() and not ff.present["vision"].any()
    from collections import Counter

    assert Counter(ff.splits) == {"train": 1281, "dev": 229, "test": 685}
    assert ff.dims["text"] == 384


def _parts(out: Path) -> int:
    d = out.with_name(out.name + ".parts")
    return len(list(d.glob("*.h5"))) if d.exists() else 0


@pytest.mark.slow
def test_kill_minus_nine_then_resume_gives_every_clip_once(tmp_path, shared_data):
    """Kill a real extraction process three times mid-run; the reruns finish it and match a clean run."""
    labels = tmp_path / "label.csv"
    lines = (shared_data / "mosi" / "label.csv").read_text().splitlines()
    labels.write_text("\n".join(lines[:401]) + "\n")  # 400 transcripts
    out = tmp_path / "killed.h5"
    args = [sys.executable, "-m", "mmckd", "extract", "--labels", str(labels), "-o", str(out), "--no-progress"]
    kills = 0
    for target in (1, 2, 4):  # part files of up to 64 clips
        proc = subprocess.Popen(
            args,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        deadline = time.monotonic() + 300
        while _parts(out) < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 2, "the runs finished before they could be killed"
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    clean = tmp_path / "clean.h5"
    extract(None, clean, labels=labels, progress=False)
    a, b = FeatureFile(out), FeatureFile(clean)
    assert a.ids == b.ids and len(set(a.ids)) == 400
    ta, tb = a.modality("text"), b.modality("text")
    assert (ta.offsets == tb.offsets).all()
    assert abs(ta.features - tb.features).max() < 1e-4
    assert not out.with_name(out.name + ".parts").exists()
