"""The transformers-free BERT path (mmckd.extract.bert_lite) gives the features transformers gives: the same
wordpieces and bit-identical last hidden states, on the real CMU-MOSI transcripts (and a few hard strings)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from mmckd.extract.config import TextConfig
from mmckd.extract.text import TextEncoder, resolve_text_model

HARD = ["Héllo   WORLD, naïve café!", "a " * 300, "x", "I'd like to do better at that.", "中文 and emoji 🙂 text"]


@pytest.fixture(scope="module")
def encoders():
    import os

    lite = TextEncoder(TextConfig())
    before = os.environ.get("MMCKD_TEXT_BACKEND")
    os.environ["MMCKD_TEXT_BACKEND"] = "transformers"
    try:
        reference = TextEncoder(TextConfig())
    finally:
        if before is None:
            os.environ.pop("MMCKD_TEXT_BACKEND")
        else:
            os.environ["MMCKD_TEXT_BACKEND"] = before
    assert lite.model_info["backend"] == "mmckd.extract.bert_lite"
    assert reference.model_info["backend"] == "transformers"
    return lite, reference


def _compare(lite, reference, texts):
    a, b = lite.encode_batch(texts), reference.encode_batch(texts)
    for x, y in zip(a, b):
        assert x.tokens == y.tokens
        assert x.features.shape == y.features.shape and x.features.dtype == y.features.dtype
        np.testing.assert_array_equal(x.features, y.features)  # the same operations in the same order


def test_lite_matches_transformers_on_hard_strings(encoders):
    lite, reference = encoders
    _compare(lite, reference, HARD)
    assert len(lite.encode("a " * 300).tokens) == 128  # truncated, [SEP] kept last
    assert lite.encode("a " * 300).tokens[-1] == "[SEP]"
    assert lite.dim == reference.dim == 384 and lite.max_tokens == reference.max_tokens


@pytest.mark.slow
def test_lite_matches_transformers_on_mosi(encoders, shared_data):
    lite, reference = encoders
    with open(shared_data / "mosi" / "label.csv", newline="") as f:
        texts = [row["text"] for row in csv.DictReader(f)][::7]  # 314 real transcripts
    _compare(lite, reference, texts)


def test_other_models_fall_back_to_transformers(tmp_path):
    from mmckd.extract.bert_lite import load_lite

    assert load_lite(tmp_path, 128) is None  # no files
    folder = resolve_text_model("default")
    assert load_lite(folder, 128) is not None
