"""Text features: the bundled BERT model offline, wordpiece rows, truncation, batching, model resolution."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest

from mmckd.extract.config import TextConfig
from mmckd.extract.errors import ModalityMissing
from mmckd.extract.text import TextEncoder, TextModelNotFound, resolve_text_model, transcript_is_empty


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # set by conftest: any download attempt would fail
    return TextEncoder(TextConfig())


def _mean_vector(encoder: TextEncoder, text: str) -> np.ndarray:
    v = encoder.encode(text).features.mean(0)
    return v / np.linalg.norm(v)


def test_default_model_loads_offline(encoder):
    assert encoder.dim == 384
    info = encoder.model_info
    assert info["name"] == "default" and info["hidden_size"] == 384
    assert Path(info["path"]) == Path(resolve_text_model("default"))
    assert (Path(info["path"]) / "config.json").is_file()
    assert len(info["sha256_of_weights"]) == 64


def test_token_rows_with_cls_and_sep(encoder):
    seq = encoder.encode("Anyhow it was really good")
    assert seq.tokens[0] == "[CLS]" and seq.tokens[-1] == "[SEP]"
    assert "good" in seq.tokens
    assert seq.features.shape == (len(seq.tokens), 384)
    assert np.isfinite(seq.features).all()
    assert np.isnan(seq.timestamps).all() and seq.mask.all()


def test_similar_sentences_are_closer(encoder):
    a = _mean_vector(encoder, "the movie was wonderful and i loved every minute of it")
    b = _mean_vector(encoder, "i really enjoyed this film it was great")
    c = _mean_vector(encoder, "the stock market closed lower on tuesday after bank earnings")
    assert a @ b > a @ c + 0.1


def test_max_tokens_truncates():
    enc = TextEncoder(TextConfig(max_tokens=8))
    seq = enc.encode("this is a rather long sentence that has many more than eight word pieces in it")
    assert seq.frames == 8 and seq.tokens[0] == "[CLS]" and seq.tokens[-1] == "[SEP]"
    assert seq.tokens[1:3] == ["this", "is"]


def test_batch_equals_single(encoder, shared_data):
    with open(shared_data / "mosi" / "label.csv", newline="") as f:
        texts = [row["text"] for row in csv.DictReader(f)]
    by_length = sorted(texts, key=len)
    # shortest, mixed, longest, and one beyond max_tokens (truncated)
    sample = by_length[:3] + texts[:12] + by_length[-3:] + [" ".join(by_length[-3:])]
    batch = encoder.encode_batch(sample)
    assert len(batch) == len(sample)
    for text, seq in zip(sample, batch):
        single = encoder.encode(text)
        assert seq.tokens == single.tokens
        np.testing.assert_allclose(seq.features, single.features, atol=1e-4)
    assert batch[-1].frames == TextConfig().max_tokens and batch[-1].tokens[-1] == "[SEP]"


def test_empty_transcript_is_missing(encoder):
    assert transcript_is_empty("  \n") and transcript_is_empty(None) and not transcript_is_empty(" ok ")
    with pytest.raises(ModalityMissing, match="empty transcript"):
        encoder.encode(" \t ")
    with pytest.raises(ModalityMissing, match="empty transcript"):
        encoder.encode_batch(["fine", ""])


def test_local_directory_model(encoder, tmp_path):
    folder = tmp_path / "my-bert"
    folder.mkdir()
    for f in Path(resolve_text_model("default")).iterdir():
        if f.is_file():
            (folder / f.name).symlink_to(f)
    assert resolve_text_model(str(folder)) == str(folder.resolve())
    local = TextEncoder(TextConfig(model=str(folder)))
    assert local.model_info["name"] == str(folder)
    assert local.model_info["sha256_of_weights"] == encoder.model_info["sha256_of_weights"]
    text = "it was really good"
    np.testing.assert_allclose(local.encode(text).features, encoder.encode(text).features, atol=1e-6)


def test_hub_name_resolves_from_local_cache_only(tmp_path):
    cache = tmp_path / "hub"
    snapshot = cache / "models--someone--tiny-bert" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (cache / "models--someone--tiny-bert" / "refs").mkdir()
    (cache / "models--someone--tiny-bert" / "refs" / "main").write_text("0" * 40)
    (snapshot / "config.json").symlink_to(Path(resolve_text_model("default")) / "config.json")
    assert Path(resolve_text_model("someone/tiny-bert", cache_dir=cache)) == snapshot
    with pytest.raises(TextModelNotFound, match="not in the local Hugging Face cache"):
        resolve_text_model("someone/not-there", cache_dir=cache)


def test_unknown_model_gives_clear_error(tmp_path):
    with pytest.raises(TextModelNotFound, match=r"'no-such-org/no-such-bert'.*never downloads"):
        TextEncoder(TextConfig(model="no-such-org/no-such-bert"))
    with pytest.raises(TextModelNotFound, match="not a valid hub model name"):
        resolve_text_model("not a model name!")
    with pytest.raises(TextModelNotFound, match="no config.json"):
        resolve_text_model(str(tmp_path))
