"""benchmarks/reproduce_paper.sh end to end on a pickle with CMU-MOSI's exact MMSA layout, shapes and split sizes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mmckd.feature_file import FeatureFile
from mmckd.interop.synthetic import MOSI_SHAPES, MOSI_SPLITS, write_synthetic_mmsa

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "reproduce_paper.sh"
CONDITIONS = ("text + audio + vision", "text + audio", "text + vision", "audio + vision", "text", "audio", "vision")
# shrunk training so the whole run stays short on two CPU cores; the pipeline is the one a real run takes
QUICK = {
    "MMCKD_REPRO_EPOCHS": "1",
    "MMCKD_REPRO_SEEDS": "1",
    "MMCKD_REPRO_ARGS": "--d-model 16 --heads 2 --proj-dim 8 --max-text 24 --max-audio 16 --max-vision 16 "
    "--batch-size 128 --threads 1 --cra-blocks 2 --cra-layers 32,16 --diffusion-steps 10 --denoiser-width 32",
}


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        env=os.environ | {"MMCKD_PYTHON": sys.executable} | (env or {}),
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.slow
def test_reproduce_paper_on_a_mosi_shaped_pickle(tmp_path):
    pkl = write_synthetic_mmsa(tmp_path / "MOSI" / "unaligned_50.pkl", preset="mosi-unaligned", seed=0)
    out = tmp_path / "out"
    proc = _run(str(pkl), str(out), env=QUICK)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip().endswith("tables.md")

    ff = FeatureFile(out / "features.h5")
    counts = {s: ff.splits.count(s) for s in ("train", "valid", "test")}
    assert counts == MOSI_SPLITS and len(ff) == sum(MOSI_SPLITS.values())
    assert ff.dims == {m: shape[1] for m, shape in MOSI_SHAPES["unaligned"].items()}
    assert ff.config["variant"] == "unaligned" and ff.config["padded_lengths"] == {"text": 50, "audio": 375,
                                                                                     "vision": 500}  # fmt: skip

    metrics = json.loads((out / "run" / "metrics.json").read_text())
    assert metrics["mode"] == "online"
    assert sorted(metrics["compare"]) == [
        "diffusion-imputation", "dropout-baseline", "imputation", "no-mvsc", "offline-teacher"
    ]  # fmt: skip
    assert metrics["fit_config"]["epochs"] == 1

    tables = (out / "tables.md").read_text()
    t1, rest = tables.split("## Table 1")[1].split("## Table 2")
    t2, t3 = rest.split("## Table 3")
    header = next(ln for ln in t1.splitlines() if ln.startswith("| condition"))
    for title in ("MM-CKD MAE", "w/o MVSC MAE", "offline teacher Acc-2", "dropout baseline MAE"):
        assert title in header
    rows = [ln for ln in t1.splitlines() if ln.startswith("| ") and not ln.startswith("| condition")]
    assert [r.split(" | ")[0][2:] for r in rows] == list(CONDITIONS)
    cols = header.strip("|").split(" | ")
    mae = cols.index("MM-CKD MAE")
    for r in rows:
        cells = r.strip("| ").split(" | ")
        assert cells[1] == str(MOSI_SPLITS["test"])  # every test clip has every modality here
        assert re.fullmatch(r"\d+\.\d{3}", cells[mae]), r
        assert len(cells) == len(cols)
    mr_rows = [ln for ln in t2.splitlines() if re.match(r"\| 0\.\d \|", ln)]
    assert [r.split(" | ")[0][2:] for r in mr_rows] == [f"0.{i}" for i in range(8)]
    mr_header = next(ln for ln in t2.splitlines() if ln.startswith("| MR"))
    assert "w/o MVSC routed MAE" in mr_header and "MM-CKD zero-fill MAE" in mr_header
    cost_rows = [ln.strip("| ").split(" | ") for ln in t3.splitlines() if ln.startswith("| ") and "MFLOPs" not in ln]
    for title in ("MM-CKD", "imputation (MMIN-style)", "diffusion imputation (IMDer-style)"):
        assert len([r for r in cost_rows if r[0] == title]) == len(CONDITIONS), title
    assert all(float(r[3]) > 0 and r[6].endswith("x") for r in cost_rows)


def test_reproduce_paper_refuses_a_missing_pickle(tmp_path):
    proc = _run(str(tmp_path / "nope.pkl"), str(tmp_path / "out"))
    assert proc.returncode == 2 and "nope.pkl: no such file" in proc.stderr
    proc = _run()
    assert proc.returncode == 2 and "usage:" in proc.stderr
