"""Long videos: `mmckd predict --segments` (utterances from Whisper's timestamps, voice activity or windows),
the timeline PNG, and `mmckd extract --segments`. The long video is made in the test from real clips: talk1,
talk2, talk4 (real talking heads) and the real MOSI clip Oz06ZWiO20M_6, concatenated with ffmpeg (~25 s)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmckd.segments import Segment, join_sentences, plan_segments, segment_id, split_long, windows
from mmckd.testing.clips import join_clips, media_seconds, strip_audio

REPO = Path(__file__).resolve().parents[1]
PARTS = ("videos/talk1.mp4", "videos/talk2.mp4", "videos/talk4.mp4", "mosi/Oz06ZWiO20M_6.mp4")


def _mmckd(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mmckd", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)},
    )


@pytest.fixture(scope="module")
def long_video(shared_data, tmp_path_factory) -> tuple[Path, list[float]]:
    """The four real clips, each scaled/padded to 640x480 at 25 fps, mono 44.1 kHz, concatenated; and the times
    (s) at which the 2nd, 3rd and 4th clip start."""
    d = tmp_path_factory.mktemp("long")
    out = join_clips([shared_data / part for part in PARTS], d / "long.mp4", preset="ultrafast")
    starts, t = [], 0.0
    for part in PARTS[:-1]:
        t += media_seconds(shared_data / part)
        starts.append(t)
    return out, starts


# -- pure functions -------------------------------------------------------------------------------------------------
def test_windows_split_and_ids():
    assert [(s.start, s.end) for s in windows(12.0, 5.0)] == [(0.0, 5.0), (5.0, 12.0)]  # 2 s tail joins
    assert [(s.start, s.end) for s in windows(13.0, 5.0)] == [(0.0, 5.0), (5.0, 10.0), (10.0, 13.0)]
    assert windows(0.0, 5.0) == []
    assert split_long(0.0, 45.0, 20.0) == [(0.0, 15.0), (15.0, 30.0), (30.0, 45.0)]
    assert split_long(2.0, 5.0, 20.0) == [(2.0, 5.0)]
    assert segment_id("review", 12.4, 17.853) == "review_12.40_17.85"


def test_join_sentences_joins_only_unfinished_sentences():
    segs = [
        Segment(0, 2, "And the heart of my district,", "asr"),
        Segment(2.1, 4, "where I grew up.", "asr"),
        Segment(4.0, 6, "It was good.", "asr"),
        Segment(8.0, 9, "Then", "asr"),
        Segment(9.2, 30, "more.", "asr"),
    ]
    out = join_sentences(segs, max_len=20.0)
    assert [(s.start, s.end, s.text) for s in out] == [
        (0, 4, "And the heart of my district, where I grew up."),
        (4.0, 6, "It was good."),
        (8.0, 9, "Then"),
        (9.2, 30, "more."),
    ]  # the last join would exceed max_len


# -- planning on the real long video --------------------------------------------------------------------------------
def test_asr_segments_follow_the_utterances(long_video):
    from mmckd.extract.asr import SpeechRecognizer

    path, starts = long_video
    plan = plan_segments(path, SpeechRecognizer())
    assert plan.method == "asr"
    segs = plan.segments
    assert len(segs) >= len(PARTS)
    assert all(s.text and s.source == "asr" for s in segs)
    assert all(b.start >= a.end - 1e-6 and b.start > a.start for a, b in zip(segs, segs[1:]))
    for t in starts:  # every real clip begins a segment (within Whisper's timing)
        assert min(abs(s.start - t) for s in segs) < 0.8, (t, [s.start for s in segs])


def test_vad_segments_without_asr(long_video):
    path, starts = long_video
    plan = plan_segments(path, None, max_segment=8.0)
    assert plan.method == "vad" and plan.no_text_reason == "no transcript (ASR off)"
    assert len(plan.segments) >= 3
    assert all(s.text is None and 0 < s.duration <= 8.0 + 1e-6 for s in plan.segments)
    assert plan.segments[-1].end <= media_seconds(path) + 0.05


def test_sidecar_cues_are_the_segments(long_video, tmp_path):
    path, _ = long_video
    video = tmp_path / "review.mp4"
    video.symlink_to(path)
    (tmp_path / "review.srt").write_text(
        "1\n00:00:00,500 --> 00:00:05,000\nI loved the opening.\n\n"
        "2\n00:00:06,000 --> 00:00:11,000\nThe middle dragged on\n\n"
        "3\n00:00:11,100 --> 00:00:16,000\nand the end was awful.\n"
    )
    plan = plan_segments(video, None)
    assert plan.method == "sidecar"
    assert [(s.start, s.end, s.text) for s in plan.segments] == [
        (0.5, 5.0, "I loved the opening."),
        (6.0, 16.0, "The middle dragged on and the end was awful."),
    ]


# -- mmckd predict --segments with the default model ----------------------------------------------------------------
@pytest.mark.slow
def test_predict_segments_with_timeline(long_video, tmp_path):
    path, starts = long_video
    png, table = tmp_path / "timeline.png", tmp_path / "segments.csv"
    out = _mmckd(
        ["predict", str(path), "--segments", "--json", "--timeline", str(png), "--output", str(table)], tmp_path
    )
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) >= len(PARTS)
    for r in rows:
        assert r["clip"] == str(path) and r["error"] is None
        assert r["network"] == "l" and r["transcript_source"] == "asr" and r["transcript"]
        assert -3 <= r["score"] <= 3 and r["polarity"] in ("positive", "negative", "neutral")
        assert 0 <= r["start"] < r["end"] <= media_seconds(path) + 0.05
    assert [r["start"] for r in rows] == sorted({r["start"] for r in rows})  # strictly increasing
    assert [r["segment"] for r in rows] == list(range(len(rows)))
    # the CSV holds the same rows
    with open(table) as f:
        table_rows = list(csv.DictReader(f))
    assert [float(t["start"]) for t in table_rows] == [r["start"] for r in rows]
    assert {"start", "end", "transcript", "score", "polarity", "network"} <= set(table_rows[0])
    # the PNG: a real image, wide enough for 25 s
    import matplotlib.image as mpimg

    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(png)
    assert img.shape[1] >= 1000 and img.shape[0] >= 400


def test_segments_without_speech_give_windows_and_the_reason(shared_data, tmp_path):
    silent = tmp_path / "silent.mp4"
    strip_audio(shared_data / "videos" / "talk4.mp4", silent)
    out = _mmckd(["predict", str(silent), "--segments", "--json", "--window", "3"], tmp_path)
    assert out.returncode == 1
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(r["start"], r["end"]) for r in rows] == [(0.0, 3.0), (3.0, round(media_seconds(silent), 3))]
    for r in rows:
        assert r["score"] is None and "the default model reads text; this clip has no speech" in r["error"]
        assert str(silent) in r["error"]
    assert "2 of 2 segments got no score" in out.stderr


def test_timeline_needs_segments_and_text_is_refused(tmp_path, long_video):
    path, _ = long_video
    out = _mmckd(["predict", str(path), "--timeline", str(tmp_path / "t.png")], tmp_path)
    assert out.returncode == 2 and "add --segments" in out.stderr
    out = _mmckd(["predict", str(path), "--segments", "--text", "hello"], tmp_path)
    assert out.returncode == 2 and "--text" in out.stderr


# -- mmckd extract --segments, and a multimodal model reading each segment's own audio and face -----------------
@pytest.fixture(scope="module")
def segment_features(long_video, tmp_path_factory) -> tuple[Path, Path]:
    """`mmckd extract long.mp4 --segments --labels ranges.csv`: utterance clips labelled by time range."""
    path, starts = long_video
    d = tmp_path_factory.mktemp("segfeat")
    ranges = d / "ranges.csv"
    bounds = [0.0, *starts, media_seconds(path)]
    rows = [("-1.0", "train"), ("1.5", "train"), ("0.5", "dev"), ("-2", "test")]
    ranges.write_text(
        "video_id,start,end,label,mode\n"
        + "".join(
            f"{path.stem},{a:.3f},{b:.3f},{lab},{mode}\n" for (a, b), (lab, mode) in zip(zip(bounds, bounds[1:]), rows)
        )
    )
    out = _mmckd(
        ["extract", str(path), "--segments", "--labels", str(ranges), "-o", str(d / "seg.h5"), "--no-progress"], d
    )
    assert out.returncode == 0, out.stderr
    return d / "seg.h5", ranges


@pytest.mark.slow
def test_extract_segments_stores_labelled_utterance_clips(segment_features, long_video):
    from mmckd.feature_file import FeatureFile

    features, _ = segment_features
    path, starts = long_video
    ff = FeatureFile(features)
    ids = list(ff.ids)
    assert len(ids) >= len(PARTS) and all(s == "ok" for s in ff.status)
    spans = sorted((float(i.split("_")[-2]), float(i.split("_")[-1]), i) for i in ids)
    assert all(i == f"{path.stem}_{a:.2f}_{b:.2f}" for a, b, i in spans)  # VIDEO_START_END
    by_id = dict(zip(ids, zip(ff.labels, ff.splits)))
    for a, b, i in spans:  # each utterance takes the label of the clip it lies in
        mid = (a + b) / 2
        k = sum(mid > t for t in starts)
        assert by_id[i] == ({0: (-1.0, "train"), 1: (1.5, "train"), 2: (0.5, "dev"), 3: (-2.0, "test")}[k])
    assert (features.parent / "seg.h5.segments" / "labels.csv").is_file()
    summary = FeatureFile(features).summary()
    sources = {c["transcript_source"] for c in summary["clips"]}
    assert sources == {"labels"}  # the words Whisper heard in each utterance
    assert all(c["modalities"]["vision"] is not None and c["modalities"]["audio"] is not None for c in summary["clips"])


@pytest.mark.slow
def test_predict_segments_with_a_multimodal_model(segment_features, long_video, tmp_path):
    features, _ = segment_features
    path, _ = long_video
    fit = _mmckd(
        ["fit", str(features), "-o", str(tmp_path / "run"), "--epochs", "2", "--seeds", "1", "--no-progress"], tmp_path
    )
    assert fit.returncode == 0, fit.stderr
    out = _mmckd(["predict", str(path), "--segments", "--json", "--asr", "--model", str(tmp_path / "run")], tmp_path)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) >= len(PARTS)
    assert all(r["network"] == "lav" and r["modalities"] == ["text", "audio", "vision"] for r in rows)
    assert [r["start"] for r in rows] == sorted({r["start"] for r in rows})


def test_unreadable_file_is_one_clear_line(long_video, tmp_path):
    path, _ = long_video
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 5])  # cut before the index
    out = _mmckd(["predict", str(broken), "--segments"], tmp_path)
    assert out.returncode == 1 and out.stdout.strip() == str(broken)
    errors = [line for line in out.stderr.splitlines() if line.startswith("mmckd predict: error:")]
    assert len(errors) == 1 and errors[0].startswith(f"mmckd predict: error: {broken}: cannot segment (not readable")
