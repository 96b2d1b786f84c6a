"""Shared fixtures. Real data lives in ../shared/data (beside the repository); tests using it skip
with a reason when it is absent (a user's fresh clone has none)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MMCKD_SHARED_DATA", REPO.parent / "shared" / "data"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "README.md").exists():
        pytest.skip(f"real data not found at {SHARED_DATA} (set MMCKD_SHARED_DATA to its folder)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def real_videos(shared_data) -> list[Path]:
    return sorted((shared_data / "videos").glob("*.mp4")) + [shared_data / "mosi" / "Oz06ZWiO20M_6.mp4"]


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    """A few synthetic clips made once per session: speech over a face, no audio, no face, audio only."""
    from mmckd.testing.clips import audio_only, make_clip

    d = tmp_path_factory.mktemp("synthetic")
    make_clip(d / "face_speech.mp4", "This was a truly wonderful and happy day.")
    make_clip(d / "face_silent.mp4", None, audio=False, seconds=2.0)
    make_clip(d / "noface_speech.mp4", "Nothing to see here, just a voice.", picture="blank")
    audio_only(d / "face_speech.mp4", d / "speech_only.wav")
    return d


@pytest.fixture(scope="session")
def mosi_text_h5(shared_data, tmp_path_factory) -> Path:
    """The 2,195-clip CMU-MOSI text-only feature file, extracted from label.csv alone (once per session)."""
    from mmckd.extract.pipeline import extract

    out = tmp_path_factory.mktemp("mosi") / "mosi_text.h5"
    extract(None, out, labels=shared_data / "mosi" / "label.csv", progress=False)
    return out
