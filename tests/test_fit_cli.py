"""`mmckd fit` on the command line: a tiny run, errors as one line with exit status 2, resume checks."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from mmckd.cli.main import cli
from mmckd.model.synthetic import synthetic_clips, write_synthetic_features

TINY_ARGS = [
    "--d-model",
    "16",
    "--heads",
    "2",
    "--proj-dim",
    "8",
    "--max-audio",
    "12",
    "--max-vision",
    "12",
    "--batch-size",
    "16",
    "--threads",
    "1",
    "--no-progress",
]


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    return write_synthetic_features(d / "f.h5", n=40, seed=7, missing={"vision": 0.2})


@pytest.mark.slow
def test_fit_command_writes_a_run(features, tmp_path):
    out = tmp_path / "runs" / "a"
    r = CliRunner().invoke(
        cli, ["fit", str(features), "-o", str(out), "--epochs", "2", "--seeds", "3,4", "--no-mvsc", *TINY_ARGS]
    )
    assert r.exit_code == 0, r.output
    assert "test MAE" in r.output and str(out / "model") in r.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["mode"] == "no-mvsc" and m["seeds"] == [3, 4]
    assert m["fit_config"]["model"]["d_model"] == 16 and m["fit_config"]["epochs"] == 2
    assert (out / "seeds" / "seed_3" / "model" / "weights.safetensors").exists()
    assert (out / "seeds" / "seed_4" / "model" / "weights.safetensors").exists()
    # resuming a finished run with its own options is a no-op that rewrites the outputs
    r = CliRunner().invoke(cli, ["fit", str(features), "-o", str(out), "--resume", "--threads", "1"])
    assert r.exit_code == 0, r.output
    # an option that differs from the run is refused
    r = CliRunner().invoke(cli, ["fit", str(features), "-o", str(out), "--resume", "--lr", "0.5"])
    assert r.exit_code == 2 and "options differ" in r.output and "lr" in r.output


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    clips = synthetic_clips(n=20, seed=1)
    for c in clips:
        if c.split == "test":
            c.split = "train"
    path = write_synthetic_features(tmp_path / "notest.h5", clips=clips)
    r = CliRunner().invoke(cli, ["fit", str(path), "-o", str(tmp_path / "run"), *TINY_ARGS])
    assert r.exit_code == 2
    lines = [ln for ln in r.output.splitlines() if ln.startswith("mmckd fit: error:")]
    assert len(lines) == 1 and str(path) in lines[0] and "test" in lines[0]
    assert not (tmp_path / "run").exists()
    r = CliRunner().invoke(cli, ["fit", str(path), "-o", str(tmp_path / "run"), "--no-mvsc", "--dropout-baseline"])
    assert r.exit_code == 2 and "at most one" in r.output
    r = CliRunner().invoke(cli, ["fit", str(path), "-o", str(tmp_path / "run"), "--heads", "3"])
    assert r.exit_code == 2 and "multiple of heads" in r.output
