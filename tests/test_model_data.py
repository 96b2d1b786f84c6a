"""Feature file -> model inputs: cutting, masks, train-only normalisation, batches, and bad input errors."""

from __future__ import annotations

import numpy as np
import pytest

from mmckd.feature_file import Clip, Sequence, write_feature_file
from mmckd.model.config import ModelConfig
from mmckd.model.data import DataError, cut_sequence, load_prepared, prepare_clip
from mmckd.model.synthetic import synthetic_clips, write_synthetic_features

DIMS = {"text": 4, "audio": 3, "vision": 2}
CFG = ModelConfig(d_model=8, heads=2, max_text=5, max_audio=4, max_vision=3)


def _clip(i, split, label=0.5, offset=0.0, vision_mask=None, text=True, audio=True, vision=True, nan=False):
    rng = np.random.default_rng(i)
    t = rng.normal(size=(6, 4)) + offset
    if nan:
        t[2, 1] = np.nan
    v = rng.normal(size=(4, 2)) + offset
    return Clip(
        id=f"c{i:03d}",
        split=split,
        label=label,
        text=Sequence(t) if text else None,
        audio=Sequence(rng.normal(size=(9, 3)) + offset) if audio else None,
        vision=Sequence(v, mask=vision_mask) if vision else None,
    )


def _write(path, clips):
    write_feature_file(path, clips, {"test": "data"}, DIMS)
    return path


def test_cut_sequence_pools_into_equal_bins_or_truncates():
    x = np.arange(10, dtype=np.float32)[:, None]
    pooled = cut_sequence(x, None, 5, "pool")
    assert pooled[:, 0].tolist() == [0.5, 2.5, 4.5, 6.5, 8.5]
    assert cut_sequence(x, None, 4, "truncate")[:, 0].tolist() == [0, 1, 2, 3]
    assert cut_sequence(x, None, 20, "pool").shape == (10, 1)
    mask = np.array([True, False] * 5)
    assert cut_sequence(x, mask, 20, "pool")[:, 0].tolist() == [0, 2, 4, 6, 8]


def test_masked_frames_are_dropped_and_all_masked_vision_is_absent(tmp_path):
    nan_rows = np.array([True, False, True, False])
    clips = [_clip(i, s) for i, s in enumerate(["train"] * 4 + ["valid", "test"])]
    clips[0].vision.features[~nan_rows] = np.nan  # garbage under mask False must be ignored
    clips[0].vision.mask = nan_rows
    clips[1].vision.mask = np.zeros(4, bool)  # no face at all: vision absent
    data = load_prepared(_write(tmp_path / "f.h5", clips), CFG)
    assert data.present[0].tolist() == [True, True, True]
    assert data.present[1].tolist() == [True, True, False]
    v0 = data.rows["vision"][data.offsets["vision"][0] : data.offsets["vision"][1]]
    assert v0.shape == (2, 2) and np.isfinite(v0).all()
    # audio (9 frames) pooled to 4, text (6) to 5
    assert np.diff(data.offsets["audio"]).tolist() == [4] * 6
    assert np.diff(data.offsets["text"]).tolist() == [5] * 6


def test_normalisation_uses_training_clips_only(tmp_path):
    clips = [_clip(i, "train") for i in range(6)] + [_clip(10, "valid", offset=50.0), _clip(11, "test", offset=-80.0)]
    data = load_prepared(_write(tmp_path / "f.h5", clips), CFG)
    train = data.indices("train")
    rows = np.concatenate([data.rows["audio"][data.offsets["audio"][i] : data.offsets["audio"][i + 1]] for i in train])
    assert np.allclose(rows.mean(0), 0, atol=1e-5) and np.allclose(rows.std(0), 1, atol=1e-4)
    assert abs(data.normaliser.mean["audio"]).max() < 5  # valid/test offsets did not leak into the statistics
    assert data.rows["audio"][data.offsets["audio"][data.indices("valid")[0]]].min() > 5


def test_dev_split_is_valid_and_batch_zero_fills_absent_modalities(tmp_path):
    clips = [_clip(i, "train") for i in range(4)] + [_clip(5, "dev", audio=False), _clip(6, "test")]
    data = load_prepared(_write(tmp_path / "f.h5", clips), CFG)
    v = data.indices("valid")
    assert len(v) == 1 and data.ids[v[0]] == "c005"
    batch = data.batch(np.array([0, v[0]]))
    assert batch.present.tolist() == [[True, True, True], [True, False, True]]
    assert batch.mask["audio"][1].tolist() == [True, False, False, False]  # one zero frame, marked valid
    assert float(batch.x["audio"][1].abs().sum()) == 0.0
    keep = np.array([[True, False, True], [True, True, True]])
    withheld = data.batch(np.array([0, v[0]]), keep)
    assert withheld.present[0].tolist() == [True, False, True]


def test_prepare_clip_matches_training_preparation(tmp_path):
    clips = synthetic_clips(n=30, dims=DIMS, seed=3)
    path = write_synthetic_features(tmp_path / "s.h5", clips=clips)
    data = load_prepared(path, CFG)
    for k in (0, 7, 20):
        c = next(c for c in clips if c.id == data.ids[k])
        prepared = prepare_clip({m: c.sequence(m) for m in DIMS}, CFG, data.normaliser)
        expected = data.sequences(k)
        for m in DIMS:
            assert (prepared[m] is None) == (expected[m] is None)
            if expected[m] is not None:
                np.testing.assert_allclose(prepared[m], expected[m], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "case, message",
    [
        ("no_labels", "no clip has a sentiment label"),
        ("no_test", "split 'test' has no usable labelled clip"),
        ("no_valid", r"split 'valid \(or dev\)'"),
        ("nan", "clip c001 has non-finite"),
        ("label_range", "outside \\[-3, 3\\]"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path, case, message):
    splits = ["train", "train", "valid", "test"]
    clips = [_clip(i, s) for i, s in enumerate(splits)]
    if case == "no_labels":
        for c in clips:
            c.label = None
    elif case == "no_test":
        clips[3].split = "train"
    elif case == "no_valid":
        clips[2].split = None
    elif case == "nan":
        clips[1] = _clip(1, "train", nan=True)
    elif case == "label_range":
        clips[0].label = 4.5
    path = _write(tmp_path / f"{case}.h5", clips)
    with pytest.raises(DataError, match=message) as info:
        load_prepared(path, CFG)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_not_a_feature_file(tmp_path):
    bad = tmp_path / "x.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(DataError, match="x.h5"):
        load_prepared(bad, CFG)
