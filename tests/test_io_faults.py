"""Malformed bundles and write errors (issue 11, problem 8): exit 2 with one line instead of a traceback;
a full disk costs nothing but the write (one line naming the file, no temporary file left, the previous
file intact).

The disk-full tests use a real write error without mounting anything: the command runs in a real process
whose RLIMIT_FSIZE is below what it must write, so the kernel fails the write with EFBIG ("File too
large"), as it fails it with ENOSPC on a full disk; both reach mmckd as the same OSError."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mmckd.interop.synthetic import write_synthetic_mmsa
from mmckd.model.synthetic import write_synthetic_features

TINY = ["--d-model", "8", "--heads", "2", "--layers", "1", "--cross-layers", "1", "--proj-dim", "4", "--max-audio",
        "8", "--max-vision", "8", "--max-text", "8", "--batch-size", "8", "--threads", "1", "--no-progress",
        "--device", "cpu", "--seeds", "1", "--epochs", "1"]  # fmt: skip
TIMEOUT = 300


def _limit_file_size(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def _run(args, fsize: int | None = None, cwd=None):
    return subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT, cwd=cwd,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
                          preexec_fn=_limit_file_size(fsize) if fsize is not None else None)  # fmt: skip


def _mmckd(*args, fsize: int | None = None):
    return _run([sys.executable, "-m", "mmckd", *map(str, args)], fsize)


def _one_error_line(r, command: str) -> str:
    """The one error line of a command that failed with exit 2 (log lines of its progress may precede it)."""
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr
    errors = [ln for ln in lines if ln.startswith(f"mmckd {command}: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], r.stderr
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr, r.stderr
    return errors[0]


def _temporaries(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if ".tmp" in p.name or p.name.endswith(".old"))


def _fsize_works(tmp_path) -> bool:
    probe = tmp_path / "probe"
    r = _run([sys.executable, "-c", f"open({str(probe)!r}, 'wb').write(b'x' * 10000)"], fsize=1000)
    probe.unlink(missing_ok=True)
    return r.returncode != 0 and "File too large" in r.stderr


@pytest.fixture()
def efbig(tmp_path):
    if not _fsize_works(tmp_path):
        pytest.skip("RLIMIT_FSIZE does not make writes fail on this system (cannot simulate a full disk)")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real tiny run made by `mmckd fit` (its bundle is what the malformed variants are made from)."""
    d = tmp_path_factory.mktemp("faults")
    features = write_synthetic_features(d / "f.h5", n=40, seed=5)
    run = d / "run"
    r = _mmckd("fit", features, "-o", run, *TINY)
    assert r.returncode == 0, r.stderr
    return features, run


# --------------------------------------------------------------------------- malformed bundles


def _edit_meta(change):
    def apply(model: Path) -> None:
        meta = json.loads((model / "bundle.json").read_text())
        change(meta)
        (model / "bundle.json").write_text(json.dumps(meta))

    return apply


def _truncate(name: str, keep: float):
    def apply(model: Path) -> None:
        data = (model / name).read_bytes()
        (model / name).write_bytes(data[: int(len(data) * keep)])

    return apply


def _truncate_weights_and_update_hash(model: Path) -> None:
    from mmckd.file_digest import sha256_file

    _truncate("weights.safetensors", 0.6)(model)
    _edit_meta(lambda m: m.update(weights_sha256=sha256_file(model / "weights.safetensors")))(model)


BREAKAGES = {
    "bundle.json truncated": _truncate("bundle.json", 0.5),
    "bundle.json empty": _truncate("bundle.json", 0.0),
    "bundle.json a list": lambda m: (m / "bundle.json").write_text("[1, 2]"),
    "bundle.json binary": lambda m: (m / "bundle.json").write_bytes(b"\xff\xfe\x00garbage"),
    "model_config missing": _edit_meta(lambda m: m.pop("model_config")),
    "model_config a number": _edit_meta(lambda m: m.update(model_config=5)),
    "feature_dims a string": _edit_meta(lambda m: m.update(feature_dims="abc")),
    "feature dim not a number": _edit_meta(lambda m: m["feature_dims"].update(text="wide")),
    "subsets a number": _edit_meta(lambda m: m.update(subsets=7)),
    "normalisation a list": _edit_meta(lambda m: m.update(normalisation=[1])),
    "format_version a word": _edit_meta(lambda m: m.update(format_version="two")),
    "weights missing": lambda m: (m / "weights.safetensors").unlink(),
    "weights a folder": lambda m: ((m / "weights.safetensors").unlink(), (m / "weights.safetensors").mkdir()),
    "weights truncated": _truncate("weights.safetensors", 0.6),
    "weights truncated, hash updated": _truncate_weights_and_update_hash,
    "bundle.json missing": lambda m: (m / "bundle.json").unlink(),
}


@pytest.mark.slow
@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_malformed_bundle_is_exit_2_and_one_line(trained, tmp_path, breakage):
    _, run = trained
    bad = tmp_path / "bad"
    shutil.copytree(run / "model", bad / "model")
    BREAKAGES[breakage](bad / "model")
    r = _mmckd("predict", tmp_path / "clip.mp4", "--model", bad, "--text", "fine")
    line = _one_error_line(r, "predict")
    assert str(bad) in line


def test_malformed_bundle_is_a_bundle_error_in_python(trained, tmp_path):
    from mmckd.model.bundle import BundleError, load_bundle

    _, run = trained
    bad = tmp_path / "model"
    shutil.copytree(run / "model", bad)
    _edit_meta(lambda m: m.update(feature_dims={"text": None}))(bad)
    with pytest.raises(BundleError) as err:
        load_bundle(bad)
    assert str(bad / "bundle.json") in str(err.value) and "\n" not in str(err.value)
    load_bundle(run)  # the original loads


# --------------------------------------------------------------------------- disk full


def test_export_on_a_full_disk_keeps_the_previous_file(trained, tmp_path, efbig):
    features, _ = trained
    out = tmp_path / "out" / "mmsa.pkl"
    out.parent.mkdir()
    out.write_bytes(b"previous export")
    r = _mmckd("export", "mmsa", features, "-o", out, fsize=4096)
    line = _one_error_line(r, "export mmsa")
    assert str(out) in line and "File too large" in line
    assert out.read_bytes() == b"previous export" and _temporaries(out.parent) == []


def test_import_on_a_full_disk_keeps_the_previous_file(tmp_path, efbig):
    pkl = write_synthetic_mmsa(tmp_path / "a.pkl")
    out = tmp_path / "out" / "f.h5"
    out.parent.mkdir()
    out.write_bytes(b"previous features")
    r = _mmckd("import", "mmsa", pkl, "-o", out, "--overwrite", fsize=8192)
    line = _one_error_line(r, "import mmsa")
    assert str(out) in line and "File too large" in line
    assert out.read_bytes() == b"previous features"
    assert sorted(p.name for p in out.parent.iterdir()) == ["f.h5", "f.h5.lock"]


@pytest.mark.slow
def test_fit_on_a_full_disk_is_one_line_and_leaves_no_temporary(trained, tmp_path, efbig):
    features, _ = trained
    run = tmp_path / "run"
    r = _mmckd("fit", features, "-o", run, *TINY, fsize=16384)
    line = _one_error_line(r, "fit")
    assert str(run) in line and "File too large" in line
    assert _temporaries(run) == []


_SCRIPT = """
import json, sys
from pathlib import Path
from mmckd.atomic_write import WriteError, atomic_output
from mmckd.model.checkpoint import write_json_atomic
folder = Path(sys.argv[1])
try:
    write_json_atomic(folder / "metrics.json", {"values": list(range(100000))})
except WriteError as e:
    print("json:", e)
try:
    with atomic_output(folder / "model") as tmp:
        tmp.mkdir()
        (tmp / "bundle.json").write_text("{}")
        (tmp / "weights.safetensors").write_bytes(b"w" * 100000)
except WriteError as e:
    print("folder:", e)
"""


def test_metrics_and_bundle_folders_survive_a_full_disk(tmp_path, efbig):
    (tmp_path / "metrics.json").write_text('{"old": 1}')
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights.safetensors").write_bytes(b"old weights")
    r = _run([sys.executable, "-c", textwrap.dedent(_SCRIPT), str(tmp_path)], fsize=50000)
    assert r.returncode == 0, r.stderr
    assert f"json: {tmp_path / 'metrics.json'}: cannot write (File too large)" in r.stdout
    assert f"folder: {tmp_path / 'model'}: cannot write (File too large)" in r.stdout
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"old": 1}
    assert (tmp_path / "model" / "weights.safetensors").read_bytes() == b"old weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "model"]


# --------------------------------------------------------------------------- a device that is full: /dev/full


@pytest.fixture()
def dev_full(tmp_path):
    """A symlink in tmp_path to /dev/full: code that wrongly replaced its output by renaming a file over it
    would replace this symlink, never the device itself."""
    full = Path("/dev/full")
    if not full.is_char_device():
        pytest.skip("/dev/full is not available here (Linux gives ENOSPC on every write to it)")
    link = tmp_path / "full"
    link.symlink_to(full)
    return link


def test_export_to_a_full_device_is_one_line_and_the_device_is_not_replaced(trained, dev_full):
    features, _ = trained
    line = _one_error_line(_mmckd("export", "mmsa", features, "-o", dev_full), "export mmsa")
    assert line.endswith(f"{dev_full}: cannot write (No space left on device)")
    assert dev_full.is_symlink() and dev_full.is_char_device()


def test_predict_table_on_a_full_device_is_one_line(shared_data, dev_full, tmp_path):
    clip = shared_data / "mosi" / "03bSnISJMiM_1.wav"
    if not clip.exists():
        pytest.skip(f"{clip} not found")
    r = _run(
        [
            sys.executable,
            "-m",
            "mmckd",
            "predict",
            str(clip),
            "--text",
            "what a great movie",
            "--no-asr",
            "--output",
            str(dev_full),
        ],
        cwd=tmp_path,
    )  # fmt: skip  (cwd: no runs/ here, the default model)
    line = _one_error_line(r, "predict")
    assert line.endswith(f"{dev_full}: cannot write (No space left on device)")
    assert dev_full.is_symlink() and dev_full.is_char_device()
    assert "score" in r.stdout  # the prediction itself was made and printed
