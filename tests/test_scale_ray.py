"""`mmckd extract --executor ray`: the same feature file as the local executor, also when workers die.

A local Ray instance (2 CPUs) runs the real extractors on a few synthetic clips and text-only label
rows; the result is compared clip by clip (ids, statuses, errors, transcripts, every array) with the
file the local executor writes for the same input (features to float32 rounding: see assert_same_content).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmckd.extract.pipeline import ExtractError, extract
from mmckd.feature_file import FeatureFile

REPO = Path(__file__).resolve().parents[1]

try:
    import ray
except ImportError:
    ray = None
needs_ray = pytest.mark.skipif(ray is None, reason="ray is not installed (optional extra: pip install 'mmckd[ray]')")


@pytest.fixture(scope="module")
def clip_folder(synthetic_dir, tmp_path_factory) -> Path:
    """Six media files (two symlinked copies of the speech clip) and six label rows, five of them text-only."""
    d = tmp_path_factory.mktemp("ray_clips")
    for f in synthetic_dir.iterdir():
        if f.suffix in (".mp4", ".wav"):
            os.symlink(f, d / f.name)
    for k in (2, 3):
        os.symlink(synthetic_dir / "face_speech.mp4", d / f"face_speech_{k}.mp4")
    rows = "".join(f"row{i},sentence number {i} is {'good' if i % 2 else 'bad'},{i / 4 - 0.5},test\n" for i in range(5))
    (d / "label.csv").write_text("id,text,label,mode\nface_speech,a happy day,2.0,train\n" + rows)
    return d


@pytest.fixture(scope="module")
def local_file(clip_folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "local.h5"
    extract(clip_folder, out, labels=clip_folder / "label.csv", progress=False)
    return out


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def assert_same_content(a_path: Path, b_path: Path) -> None:
    a, b = FeatureFile(a_path), FeatureFile(b_path)
    assert a.ids == b.ids
    assert a.status == b.status and a.errors == b.errors
    assert a.transcripts == b.transcripts and a.transcript_sources == b.transcript_sources
    assert a.splits == b.splits and a.config_hash == b.config_hash
    np.testing.assert_array_equal(a.labels, b.labels)
    for ca, cb in zip(a.iter_clips(), b.iter_clips()):
        assert ca.missing_reason == cb.missing_reason, ca.id
        assert ca.duration == cb.duration, ca.id
        for m in ("text", "audio", "vision"):
            sa, sb = ca.sequence(m), cb.sequence(m)
            assert (sa is None) == (sb is None), (ca.id, m)
            if sa is None:
                continue
            for field in ("timestamps", "mask"):
                np.testing.assert_array_equal(getattr(sa, field), getattr(sb, field), err_msg=f"{ca.id} {m} {field}")
            # torch's CPU kernels may round differently with another thread count (the local run uses all
            # cores in one process, each Ray actor one core): same values to float32 noise
            for field in ("features", "confidence"):
                np.testing.assert_allclose(
                    getattr(sa, field), getattr(sb, field), rtol=0, atol=1e-5, err_msg=f"{ca.id} {m} {field}"
                )
            assert sa.tokens == sb.tokens


def test_without_ray_the_executor_names_the_extra(monkeypatch, clip_folder, tmp_path):
    from click.testing import CliRunner

    from mmckd.cli.extract import extract as extract_cmd

    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without the extra has: import fails
    with pytest.raises(ExtractError, match=r"pip install 'mmckd\[ray\]'"):
        extract(clip_folder, tmp_path / "x.h5", labels=clip_folder / "label.csv", executor="ray", progress=False)
    result = CliRunner().invoke(extract_cmd, [str(clip_folder), "-o", str(tmp_path / "y.h5"), "--executor", "ray"])
    assert result.exit_code == 2
    assert "needs the optional extra: pip install 'mmckd[ray]'" in result.output
    assert not (tmp_path / "x.h5").exists() and not (tmp_path / "y.h5").exists()


@pytest.mark.slow
@needs_ray
def test_cli_on_a_running_cluster_writes_what_the_local_executor_writes(ray_cluster, clip_folder, local_file, tmp_path):
    out = tmp_path / "ray.h5"
    proc = subprocess.run(
        [sys.executable, "-m", "mmckd", "extract", str(clip_folder), "--labels", str(clip_folder / "label.csv"),
         "-o", str(out), "--executor", "ray", "--ray-address", ray_cluster, "--no-progress"],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "11 clips (0 already stored, 11 extracted now, 0 failed)" in proc.stdout
    assert "ray: 2 workers" in proc.stderr
    assert_same_content(local_file, out)
    assert not out.with_name(out.name + ".parts").exists()


@pytest.mark.slow
@needs_ray
def test_workers_killed_mid_run_still_give_every_clip_exactly_once(ray_cluster, clip_folder, local_file, tmp_path):
    from mmckd.extract.executors import RayExecutor

    executor = RayExecutor(workers=2)
    arrived: list[str] = []
    killed: list[str] = []

    def on_clip(clip):
        arrived.append(clip.id)
        if len(arrived) == 1:  # worker 0 still holds queued batches: SIGKILL its process (a crash)
            os.kill(executor.pids[0], signal.SIGKILL)
            killed.append("sigkill")
        elif len(arrived) == 3:  # and stop worker 1 through Ray
            ray.kill(executor.actors[1], no_restart=False)
            killed.append("ray.kill")

    out = tmp_path / "killed.h5"
    summary = extract(
        clip_folder, out, labels=clip_folder / "label.csv", executor=executor, on_clip=on_clip, progress=False
    )
    assert killed == ["sigkill", "ray.kill"]
    assert executor.stats.worker_deaths == 2
    assert executor.stats.retried_batches >= 2 and executor.stats.abandoned_batches == 0
    assert sorted(arrived) == sorted(set(arrived)) == sorted(FeatureFile(local_file).ids)
    assert summary.extracted == len(arrived) and summary.failed == 0
    assert_same_content(local_file, out)
    assert executor.actors == []  # the run's actors are gone
