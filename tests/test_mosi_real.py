"""Real CMU-MOSI transcripts: the text student trained with default settings beats a ridge regression.

The feature file holds the 2,195 real MOSI transcripts (session fixture ``mosi_text_h5``). The student
is trained by ``fit`` with the default configuration (one seed); the baseline is ridge regression on
the same token features mean-pooled per clip, alpha chosen on dev (benchmarks/mosi_text.py, which
reports the full comparison over three seeds). Both are judged once on the test split.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _benchmark_module():
    """benchmarks/mosi_text.py (the ridge baseline lives there, with the benchmark that reports it)."""
    spec = importlib.util.spec_from_file_location("mosi_text_benchmark", REPO / "benchmarks" / "mosi_text.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def student_and_ridge(mosi_text_h5, tmp_path_factory):
    from mmckd.model.config import FitConfig
    from mmckd.model.training import fit

    # one thread: the same arithmetic (and result) on any machine, whatever its core count
    out = tmp_path_factory.mktemp("mosi_fit") / "run"
    result = fit(mosi_text_h5, out, FitConfig(seeds=(1,)), threads=1, progress=False)
    ridge = _benchmark_module().ridge_baseline(mosi_text_h5)
    return result.metrics, ridge


def test_only_the_text_student_is_trained_on_all_real_clips(student_and_ridge):
    metrics, ridge = student_and_ridge
    assert [s for s, c in metrics["conditions"].items() if c is not None] == ["l"]
    assert {k: v["clips"] for k, v in metrics["data"].items()} == ridge["clips"]
    assert sum(ridge["clips"].values()) == 2195
    assert metrics["conditions"]["l"]["test"]["n"] == ridge["clips"]["test"]


def test_text_student_beats_ridge_on_test(student_and_ridge):
    metrics, ridge = student_and_ridge
    student = metrics["conditions"]["l"]["test"]
    assert student["MAE"] < ridge["test"]["MAE"], (student, ridge["test"])
    assert student["Acc2_non0"] > ridge["test"]["Acc2_non0"], (student, ridge["test"])
