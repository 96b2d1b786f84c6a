"""Locks (issue 11, problem 7): two real `mmckd fit` processes on one run folder, and `mmckd import` onto a
file that exists or that a real `mmckd extract` is writing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmckd.interop.synthetic import write_synthetic_mmsa
from mmckd.model.synthetic import write_synthetic_features

TINY = ["--d-model", "8", "--heads", "2", "--layers", "1", "--cross-layers", "1", "--proj-dim", "4", "--max-audio",
        "8", "--max-vision", "8", "--max-text", "8", "--batch-size", "8", "--threads", "1", "--no-progress",
        "--device", "cpu", "--seeds", "1"]  # fmt: skip
TIMEOUT = 300  # no command may hang a test run: every wait is bounded


def _env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _mmckd(*args):
    return subprocess.run([sys.executable, "-m", "mmckd", *map(str, args)], capture_output=True, text=True,
                          timeout=TIMEOUT, env=_env())  # fmt: skip


def _start(*args, log):
    return subprocess.Popen([sys.executable, "-m", "mmckd", *map(str, args)], stdout=log, stderr=subprocess.STDOUT,
                            env=_env(), start_new_session=True)  # fmt: skip


def _wait_for(predicate, proc, what):
    """Poll until predicate() holds (bounded; fails if proc ends first)."""
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        assert proc.poll() is None, f"the first process ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=TIMEOUT)


def _error_line(r, command):
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"mmckd {command}: error: "), r.stderr
    return lines[0]


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    return write_synthetic_features(tmp_path_factory.mktemp("lock") / "f.h5", n=48, seed=3)


@pytest.mark.slow
def test_second_fit_and_overwrite_are_refused_while_the_first_runs_then_a_dead_lock_is_taken_over(features, tmp_path):
    run = tmp_path / "run"
    with open(tmp_path / "first.log", "w") as log:
        first = _start("fit", features, "-o", run, "--epochs", "100000", "--patience", "100000", *TINY, log=log)
    try:
        # the first fit holds the lock and has started its run (run.json written)
        _wait_for(lambda: (run / "run.json").exists(), first, "the first fit started training")
        assert (run / ".lock").read_text().strip() == str(first.pid)
        before = sorted(p.name for p in run.iterdir())

        line = _error_line(_mmckd("fit", features, "-o", run, "--epochs", "1", *TINY), "fit")
        assert str(run) in line and f"another mmckd process (pid {first.pid})" in line
        line = _error_line(_mmckd("fit", features, "-o", run, "--epochs", "1", "--overwrite", *TINY), "fit")
        assert f"pid {first.pid}" in line
        line = _error_line(_mmckd("fit", features, "-o", run, "--resume", "--threads", "1"), "fit")
        assert f"pid {first.pid}" in line
        # nothing of the first run was touched, and it is still training
        assert first.poll() is None and (run / "run.json").exists()
        assert set(before) <= {p.name for p in run.iterdir()}
    finally:
        _stop(first)  # kill -9: the lock file stays, with the dead process's pid in it
    assert (run / ".lock").read_text().strip() == str(first.pid)
    r = _mmckd("fit", features, "-o", run, "--epochs", "1", "--overwrite", *TINY)
    assert r.returncode == 0, r.stderr
    assert f"took over the lock of process {first.pid}" in r.stderr
    assert (run / "model" / "bundle.json").exists() and (run / ".lock").read_text() == ""


def test_import_refuses_an_existing_output_without_overwrite(tmp_path):
    pkl = write_synthetic_mmsa(tmp_path / "a.pkl")
    out = tmp_path / "f.h5"
    out.write_bytes(b"precious")
    line = _error_line(_mmckd("import", "mmsa", pkl, "-o", out), "import mmsa")
    assert str(out) in line and "--overwrite" in line
    assert out.read_bytes() == b"precious"
    r = _mmckd("import", "mmsa", pkl, "-o", out, "--overwrite")
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"


def test_import_respects_the_lock_of_a_running_extract(tmp_path):
    if not Path("/proc/locks").exists():
        pytest.skip("/proc/locks is needed to see when the extraction holds its lock")
    # a real `mmckd extract` writing out.h5 (text-only clips from a labels file; it holds out.h5.lock while
    # it loads its models and runs)
    labels = tmp_path / "labels.csv"
    labels.write_text("id,text,label,mode\n" + "".join(f"c{i},clip number {i} is fine,0.5,train\n" for i in range(400)))
    out = tmp_path / "out.h5"
    pkl = write_synthetic_mmsa(tmp_path / "a.pkl")
    with open(tmp_path / "extract.log", "w") as log:
        extract = _start("extract", "--labels", labels, "-o", out, "--no-progress", log=log)
    try:
        lock = tmp_path / "out.h5.lock"
        _wait_for(lambda: lock.exists() and _locked(lock), extract, "extract took its lock")
        os.killpg(extract.pid, signal.SIGSTOP)  # keep it mid-run, holding its lock, for as long as this takes
        line = _error_line(_mmckd("import", "mmsa", pkl, "-o", out, "--overwrite"), "import mmsa")
        assert str(out) in line and "another mmckd process" in line
        assert not out.exists()
    finally:
        _stop(extract)
    # the extraction died (kill -9): its lock went with it, and an import may now replace what it left
    r = _mmckd("import", "mmsa", pkl, "-o", out, "--overwrite")
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "out.h5.parts").exists()


def _locked(lock) -> bool:
    """Whether some process holds an flock on the file `lock` (read from /proc/locks: probing with a lock of
    our own could make the extraction find it taken)."""
    inode = os.stat(lock).st_ino
    with open("/proc/locks") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 5 and fields[1] == "FLOCK" and fields[5].rsplit(":", 1)[-1] == str(inode):
                return True
    return False
