"""The embedded default model: a text-only MM-CKD student trained on the real CMU-MOSI transcripts.

Its bundle (``weights.safetensors`` + ``bundle.json``, with a "card" saying what it was trained on and its
MOSI test metrics) lies in this folder and ships with the package. ``mmckd predict`` and ``mmckd.load()``
use it when no model is given and there is no run under ``runs/``. Rebuild it with ``make default-model``
(benchmarks/train_default_model.py).
"""

from __future__ import annotations

from pathlib import Path

PATH = Path(__file__).resolve().parent
NAME = "default"  # what --model / mmckd.load() / mmckd info accept to mean this model


def available() -> bool:
    return (PATH / "bundle.json").is_file() and (PATH / "weights.safetensors").is_file()
