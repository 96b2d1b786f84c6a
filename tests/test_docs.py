"""The documentation names every feature dimension the extractors produce."""

from pathlib import Path

from mmckd.extract.audio import AUDIO_FEATURE_NAMES
from mmckd.extract.config import AudioConfig
from mmckd.extract.face_descriptors import DESCRIPTOR_NAMES

DOCS = Path(__file__).resolve().parents[1] / "docs" / "features.md"


def test_every_vision_dimension_is_documented_in_order():
    text = DOCS.read_text()
    for i, name in enumerate(DESCRIPTOR_NAMES):
        assert f"| {i} | `{name}` |" in text, name


def test_audio_dimensions_match_the_documented_layout():
    text = DOCS.read_text()
    assert len(AUDIO_FEATURE_NAMES) == AudioConfig().dim == 43
    assert AUDIO_FEATURE_NAMES[40:] == ("f0_hz", "voicing", "log_energy")
    for name in ("f0_hz", "voicing", "log_energy", "mel_00", "mel_39"):
        assert f"`{name}`" in text, name
