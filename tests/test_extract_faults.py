"""Faults and hostile input during `mmckd extract` (issue 11, problems 1-5, 9, 10), with real processes and files.

Worker deaths are real: a test-only hook (MMCKD_TEST_KILL_CLIP) makes the worker extracting a named clip
SIGKILL itself, as the OOM killer or a segfault would. ffmpeg, ffprobe and HDF5 are the real ones. Every
subprocess has a timeout, so nothing here can hang the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest

from mmckd.extract import media
from mmckd.extract.errors import MediaError
from mmckd.extract.executors import HANG_ENV, KILL_ENV, KILL_ONCE_ENV
from mmckd.extract.labels import LabelsError, read_labels
from mmckd.extract.pipeline import ExtractError, extract, find_media, plan_jobs
from mmckd.extract.transcript import read_sidecar
from mmckd.feature_file import Clip, FeatureFile, FeatureFileWriter, Sequence

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 600  # seconds for any one command: a hang fails the test instead of stalling the suite


def run_cli(*args: str, cwd: Path = REPO, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    for name in (KILL_ENV, KILL_ONCE_ENV, HANG_ENV):
        if env is None or name not in env:
            full_env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "mmckd", *args], capture_output=True, text=True, cwd=cwd,
                          env=full_env, timeout=TIMEOUT)  # fmt: skip


def info(path: Path) -> dict[str, dict]:
    proc = run_cli("info", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    return {c["id"]: c for c in json.loads(proc.stdout)["clips"]}


def tone(path: Path, seconds: float = 1.0, freq: int = 300) -> Path:
    """A short real WAV file (ffmpeg's sine source); `file:` so that any name is written as a file."""
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"sine=frequency={freq}:duration={seconds}", "-ar", "16000", "file:" + str(path)],
                   check=True, timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip
    return path


@pytest.fixture(scope="module")
def tone_wav(tmp_path_factory) -> Path:
    return tone(tmp_path_factory.mktemp("tone") / "tone.wav")


def clip_folder(d: Path, tone_wav: Path, names=("a", "b", "crash")) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for n in names:
        (d / f"{n}.wav").write_bytes(tone_wav.read_bytes())
    (d / "label.csv").write_text(
        "id,text,label,mode\nt1,a lovely film,2,train\nt2,a dreadful film,-2,train\nt3,it was fine,0,test\n"
    )
    return d


# ----------------------------------------------------------------------------- 1. worker death


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_worker_killed_on_a_clip_costs_that_clip_only(tmp_path, tone_wav, workers):
    """SIGKILL of the worker on `crash` (media) and on `t2` (in a batch of three text rows): each is run again
    in a fresh worker, dies again and is stored failed with the reason; every other clip is stored and the run
    ends by itself, also with --workers 1 (the driver never runs a clip itself)."""
    d = clip_folder(tmp_path / "in", tone_wav)
    out = tmp_path / "out.h5"
    proc = run_cli("extract", str(d), "--labels", str(d / "label.csv"), "-o", str(out), "--workers", workers,
                   "--no-progress", env={KILL_ENV: "crash,t2"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    clips = info(out)
    assert sorted(clips) == ["a", "b", "crash", "t1", "t2", "t3"]
    for cid in ("crash", "t2"):
        assert clips[cid]["status"] == "failed"
        assert "worker died: signal 9 (SIGKILL)" in clips[cid]["error"] and "twice" in clips[cid]["error"]
    assert all(clips[c]["status"] == "ok" for c in ("a", "b", "t1", "t3"))
    assert clips["t1"]["modalities"]["text"] is not None and clips["a"]["modalities"]["audio"] is not None
    assert "6 extracted now, 2 failed" in proc.stdout
    assert "crash: worker died" in proc.stdout and "--retry-failed" in proc.stdout
    assert not out.with_name(out.name + ".parts").exists()


# ----------------------------------------------------------------------------- 3. retrying failed clips


@pytest.mark.slow
def test_failed_clips_are_kept_then_retried_with_retry_failed(tmp_path, tone_wav):
    d = clip_folder(tmp_path / "in", tone_wav, names=("a", "flaky"))
    (d / "label.csv").unlink()
    out = tmp_path / "out.h5"
    args = ("extract", str(d), "-o", str(out), "--no-progress")
    proc = run_cli(*args, env={KILL_ENV: "flaky"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert info(out)["flaky"]["status"] == "failed"

    proc = run_cli(*args)  # a plain rerun keeps the failure, and says so and how to retry
    assert proc.returncode == 0 and "0 extracted now" in proc.stdout
    assert "1 failed clip(s)" in proc.stdout and "flaky: worker died" in proc.stdout
    assert "run the same command with --retry-failed" in proc.stdout

    # the fault is transient now: the first try still dies, the retry in a fresh worker succeeds
    marks = tmp_path / "marks"
    marks.mkdir()
    proc = run_cli(*args, "--retry-failed", env={KILL_ENV: "flaky", KILL_ONCE_ENV: str(marks)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 already stored, 1 extracted now, 0 failed" in proc.stdout
    assert "died: signal 9" in proc.stderr  # it really died once
    ff = FeatureFile(out)
    assert ff.ids == ["a", "flaky"] and ff.status == ["ok", "ok"]
    assert "failed clip" not in proc.stdout


# ----------------------------------------------------------------------------- 2. storing never crashes


def _seq(n: int, d: int, tokens=None) -> Sequence:
    return Sequence(np.ones((n, d)), tokens=tokens)


DIMS = {"text": 4, "audio": 3, "vision": 2}


def test_a_clip_hdf5_cannot_hold_fails_alone_and_its_batch_is_stored(tmp_path):
    """A surrogate-escaped id (a file name that is not UTF-8) and a NUL in a transcript made every flush of
    their batch raise, on every rerun; now each is stored failed with the reason, beside the other 62."""
    out = tmp_path / "f.h5"
    bad_id = os.fsdecode(b"caf\xe9")
    clips = [Clip(id=f"c{i:02d}", audio=_seq(5, 3), transcript="fine", text=_seq(2, 4, ["a", "b"])) for i in range(62)]
    clips.insert(10, Clip(id=bad_id, audio=_seq(5, 3), media=bad_id + ".wav"))
    clips.insert(30, Clip(id="nul", transcript="bad\x00text", text=_seq(2, 4, ["bad", "text"])))
    with FeatureFileWriter(out, {"c": 1}, DIMS) as w:
        stored = [w.add(c) for c in clips]
        assert len(list(w.parts_dir.glob("*.h5"))) == 1  # the batch of 64 was flushed
        w.finalize()
    ff = FeatureFile(out)
    assert len(ff) == 64
    by_id = {c.id: c for c in ff.iter_clips()}
    assert by_id["caf\\xe9"].status == "failed" and "clip id is not valid UTF-8" in by_id["caf\\xe9"].error
    assert by_id["caf\\xe9"].media == "caf\\xe9.wav"
    assert by_id["nul"].status == "failed" and "transcript contains a NUL" in by_id["nul"].error
    assert sum(c.status == "ok" for c in by_id.values()) == 62
    assert [s.status for s in stored].count("failed") == 2


@pytest.mark.slow
def test_non_utf8_file_name_and_nul_sidecar_do_not_stop_the_run(tmp_path, tone_wav):
    d = tmp_path / "in"
    d.mkdir()
    (d / "good.wav").write_bytes(tone_wav.read_bytes())
    raw = os.fsencode(str(d)) + b"/caf\xe9.wav"
    with open(raw, "wb") as f:
        f.write(tone_wav.read_bytes())
    (d / "utf16.wav").write_bytes(tone_wav.read_bytes())
    (d / "utf16.txt").write_bytes("hello\x00world".encode("utf-16"))  # BOM + a NUL character
    out = tmp_path / "out.h5"
    proc = run_cli("extract", str(d), "-o", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    clips = info(out)
    assert sorted(clips) == ["caf\\xe9", "good", "utf16"]
    assert clips["caf\\xe9"]["status"] == "ok" and clips["caf\\xe9"]["modalities"]["audio"] is not None
    assert clips["utf16"]["status"] == "ok" and clips["utf16"]["modalities"]["text"] is None
    missing = {c.id: c.missing_reason for c in FeatureFile(out).iter_clips()}
    assert "NUL" in missing["utf16"]["text"] and "utf16.txt" in missing["utf16"]["text"]
    with pytest.raises(ValueError, match="NUL"):
        read_sidecar(d / "utf16.txt")


# ----------------------------------------------------------------------------- 4. labels


@pytest.mark.slow
def test_changed_labels_are_applied_on_resume(tmp_path):
    labels = tmp_path / "label.csv"
    labels.write_text("id,text,label,mode\nr1,a good film,1.5,Train\nr2,a bad film,-1,DEV\nr3,so so,0,test\n")
    out = tmp_path / "out.h5"
    extract(None, out, labels=labels, progress=False)
    ff = FeatureFile(out)
    assert ff.splits == ["train", "dev", "test"]  # split names normalised
    text_before = ff.modality("text")
    labels.write_text("id,text,label,mode\nr1,a good film,-0.5,test\nr2,a bad film,-1,valid\nr3,so so so,0,test\n")
    mtime = out.stat().st_mtime_ns
    s = extract(None, out, labels=labels, progress=False)
    assert out.stat().st_mtime_ns != mtime
    assert "2 clip(s) get a new label or split" in s.labels_changes and "extracted again" in s.labels_changes
    ff = FeatureFile(out)
    assert ff.labels.tolist() == [-0.5, -1.0, 0.0] and ff.splits == ["test", "valid", "test"]
    assert ff.transcripts == ["a good film", "a bad film", "so so so"]
    text = ff.modality("text")
    assert (text.lengths()[:2] == text_before.lengths()[:2]).all() and text.lengths()[2] > text_before.lengths()[2]
    s = extract(None, out, labels=labels, progress=False)  # unchanged labels: nothing to do
    assert s.extracted == 0 and s.labels_changes == ""


@pytest.mark.parametrize(
    "row, message",
    [("r2,b,3.5,train", r":3: label '3.5' is outside \[-3, 3\]"), ("r2,b,-4,train", "outside"),
     ("r2,b,1,training", r":3: unknown split 'training'")],
)  # fmt: skip
def test_bad_label_values_are_refused_naming_file_and_row(tmp_path, row, message):
    labels = tmp_path / "label.csv"
    labels.write_text(f"id,text,label,mode\nr1,a,1,train\n{row}\n")
    with pytest.raises(LabelsError, match=message):
        read_labels(labels)
    proc = run_cli("extract", "--labels", str(labels), "-o", str(tmp_path / "o.h5"), "--no-progress")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert str(labels) in proc.stderr and not (tmp_path / "o.h5").exists()


# ----------------------------------------------------------------------------- 5. external processes


@pytest.mark.slow
def test_file_names_ffmpeg_would_read_as_protocols_or_options(tmp_path, tone_wav):
    d = tmp_path / "in"
    d.mkdir()
    for name in ("pipe:0.wav", "-i.wav", "http:x.wav", "plain.wav"):
        (d / name).write_bytes(tone_wav.read_bytes())
    os.mkfifo(d / "fifo.wav")  # a named pipe: opening it would block ffprobe forever
    out = tmp_path / "out.h5"
    proc = run_cli("extract", ".", "-o", str(out), "--no-progress", cwd=d)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ff = FeatureFile(out)
    assert ff.ids == ["-i", "fifo", "http:x", "pipe:0", "plain"]
    assert ff.media == ["./-i.wav", "./fifo.wav", "./http:x.wav", "./pipe:0.wav", "./plain.wav"]
    status = dict(zip(ff.ids, zip(ff.status, ff.errors)))
    assert status["fifo"] == ("failed", "./fifo.wav: not a regular file")
    a = ff.modality("audio")
    for cid in ("-i", "http:x", "pipe:0"):
        i = ff.ids.index(cid)
        assert status[cid][0] == "ok" and ff.present["audio"][i] and a.lengths()[i] == 25, cid


def test_ffprobe_and_ffmpeg_that_hang_are_stopped(tmp_path, monkeypatch):
    fifo = tmp_path / "stuck.wav"
    os.mkfifo(fifo)  # no writer: ffprobe and ffmpeg block opening it
    monkeypatch.setattr(media, "timeout_s", 1.0)
    with pytest.raises(MediaError, match=r"ffprobe gave no answer within 1 s \(stopped\)"):
        media.ffprobe_json(media.ffmpeg_input(fifo), str(fifo))
    with pytest.raises(MediaError, match=r"ffmpeg produced nothing for 1 s \(stopped\)"):
        list(media.iter_audio(media.MediaInfo(str(fifo), None, True, False), 16000, 4000))


# ----------------------------------------------------------------------------- 9. ids and part files


def test_ids_are_unique_or_refused_naming_both_files(tmp_path):
    root = tmp_path / "v"
    root.mkdir()
    for name in ("a.mp4", "a.wav"):
        (root / name).write_bytes(b"x")
    media_files = find_media(root)
    labels = tmp_path / "label.csv"
    labels.write_text("id,text,label,mode\na,x,1,train\n")
    with pytest.raises(ExtractError, match=r"label.csv:2: row 'a' matches 2 media files, .*a.mp4 and .*a.wav"):
        plan_jobs(media_files, root, read_labels(labels), labels)
    labels.write_text("id,text,label,mode\na.wav,x,1,train\n")
    with pytest.raises(ExtractError, match=r"a.wav: its clip id 'a.wav' is already the id of label row .*:2"):
        plan_jobs(media_files, root, read_labels(labels), labels)
    jobs = plan_jobs(media_files, root, None)  # no labels: a and a.wav
    assert sorted(j.id for j in jobs) == ["a", "a.wav"]


def test_parts_never_overwrite_each_other(tmp_path):
    """Parts used to be named after their first clip: a clip stored again first in a later part (a retry)
    replaced the earlier part and the rest of its clips."""
    out = tmp_path / "f.h5"
    with FeatureFileWriter(out, {"c": 1}, DIMS, flush_clips=2) as w:
        w.add(Clip(id="a", status="failed", error="flaky"))
        w.add(Clip(id="b", audio=_seq(3, 3)))
        w.add(Clip(id="a", audio=_seq(4, 3)))  # the retry, first in the next part
        w.add(Clip(id="c", audio=_seq(5, 3)))
    with FeatureFileWriter(out, {"c": 1}, DIMS) as w:  # a resume sees both parts, the later record of a wins
        assert len(list(w.parts_dir.glob("*.h5"))) == 2 and w.failed_ids() == set()
        assert w.finalize() == 3
    ff = FeatureFile(out)
    assert ff.ids == ["a", "b", "c"] and ff.status == ["ok"] * 3
    assert ff.lengths("audio").tolist() == [4, 3, 5]


# ----------------------------------------------------------------------------- 10. streaming merge


def _big_clip(i: int, rng) -> Clip:
    return Clip(
        id=f"clip{i:05d}",
        split="train",
        label=0.5,
        transcript=f"words {i}",
        transcript_source="labels",
        text=Sequence(rng.standard_normal((16, 64)), tokens=[f"t{k}" for k in range(16)]),
        audio=Sequence(rng.standard_normal((100, 43))),
        vision=Sequence(rng.standard_normal((100, 19))),
    )


def test_resume_merge_memory_does_not_grow_with_the_file(tmp_path):
    """Resuming onto a file of 2,000 clips (about 58 MB of features) and adding one clip: the merge used to load
    the whole file (peak above the data size); it now streams, holding a few windows of clips."""
    dims = {"text": 64, "audio": 43, "vision": 19}
    rng = np.random.default_rng(0)
    out = tmp_path / "big.h5"
    with FeatureFileWriter(out, {"c": 1}, dims, flush_clips=500) as w:
        for i in range(0, 4000, 2):
            w.add(_big_clip(i, rng))
        w.finalize()
    data_bytes = sum(FeatureFile(out).modality(m).features.nbytes for m in dims)
    assert data_bytes > 50e6
    with FeatureFileWriter(out, {"c": 1}, dims) as w:
        w.add(_big_clip(1, rng))
        tracemalloc.start()
        try:
            assert w.finalize() == 2001
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    print(f"merge peak {peak / 1e6:.1f} MB for {data_bytes / 1e6:.1f} MB of features")
    assert peak < data_bytes / 4, (peak, data_bytes)
    ff = FeatureFile(out)
    assert ff.ids[:3] == ["clip00000", "clip00001", "clip00002"] and len(set(ff.ids)) == 2001
    with h5py.File(out) as h5:
        assert h5["text/tokens"][16 * 1 : 16 * 1 + 2].tolist() == [b"t0", b"t1"]
    clip1 = next(c for c in ff.iter_clips() if c.id == "clip00001")
    assert clip1.audio.frames == 100 and clip1.transcript == "words 1"


# ----------------------------------------------------------------------------- 1. worker death on Ray

try:
    import ray
except ImportError:
    ray = None


@pytest.mark.slow
@pytest.mark.skipif(ray is None, reason="ray is not installed (optional extra: pip install 'mmckd[ray]')")
def test_ray_clip_whose_actor_dies_three_times_is_stored_failed(tmp_path, tone_wav):
    """The same fault on Ray actors: the lost batch of text rows is retried one clip per batch in fresh actors;
    the clip that kills its actor every time is stored failed after 3 attempts, with the local wording."""
    from mmckd.extract.executors import RayExecutor

    d = clip_folder(tmp_path / "in", tone_wav, names=("a",))
    executor = RayExecutor(workers=1, init_options={"num_cpus": 1, "log_to_driver": False,
                                                    "runtime_env": {"env_vars": {KILL_ENV: "t2"}}})  # fmt: skip
    out = tmp_path / "ray.h5"
    s = extract(d, out, labels=d / "label.csv", executor=executor, progress=False)
    ff = FeatureFile(out)
    status = dict(zip(ff.ids, zip(ff.status, ff.errors)))
    assert ff.ids == ["a", "t1", "t2", "t3"]
    assert status["t2"][0] == "failed" and status["t2"][1].startswith("worker died: ") and "3 times" in status["t2"][1]
    assert all(status[c][0] == "ok" for c in ("a", "t1", "t3"))
    assert executor.stats.worker_deaths == 3 and executor.stats.abandoned_batches == 1
    assert s.failed == 1 and s.failures_stored == [("t2", status["t2"][1])]


@pytest.mark.slow
def test_a_worker_stuck_on_a_clip_is_stopped_at_the_clip_timeout(tmp_path, tone_wav):
    """A worker that never returns (MMCKD_TEST_HANG_CLIP: it sleeps forever, as a deadlock in native code
    would look) is killed at --clip-timeout, tried once more, then its clip is stored failed; the run ends."""
    d = clip_folder(tmp_path / "in", tone_wav, names=("a", "stuck"))
    (d / "label.csv").unlink()
    out = tmp_path / "out.h5"
    proc = run_cli("extract", str(d), "-o", str(out), "--no-progress", "--clip-timeout", "5",
                   env={HANG_ENV: "stuck"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    clips = info(out)
    assert clips["a"]["status"] == "ok" and clips["stuck"]["status"] == "failed"
    assert "worker stopped: no result within the clip timeout (5 s a clip)" in clips["stuck"]["error"]
