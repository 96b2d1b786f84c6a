"""The feature file: layout round trip, crash-safe parts, resume, config guard, lock."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from mmckd.feature_file import (
    Clip,
    ConfigMismatchError,
    FeatureFile,
    FeatureFileError,
    FeatureFileWriter,
    Sequence,
    config_hash,
    write_feature_file,
)

DIMS = {"text": 4, "audio": 3, "vision": 2}
CONFIG = {"text": {"model": "x"}, "n": 1}


def make_clip(i: int, rng: np.random.Generator, text=True, audio=True, vision=True, status="ok") -> Clip:
    def seq(n, d, **kw):
        return Sequence(rng.normal(size=(n, d)), timestamps=np.arange(n) / 25.0, **kw)

    return Clip(
        id=f"clip{i:03d}",
        status=status,
        error=None if status == "ok" else "broken file",
        split=["train", "dev", "test"][i % 3],
        label=float(rng.uniform(-3, 3)) if i % 4 else None,
        transcript=f"words of clip {i} — ünïcode" if text else None,
        transcript_source="labels" if text else None,
        media=f"/data/clip{i}.mp4",
        duration=1.5 + i,
        text=seq(3 + i % 5, 4, tokens=[f"t{k}" for k in range(3 + i % 5)]) if text else None,
        audio=seq(10 + i, 3) if audio else None,
        vision=seq(8 + i, 2, mask=(np.arange(8 + i) % 3 != 0), confidence=np.linspace(0, 1, 8 + i)) if vision else None,
        missing_reason={}
        if (text and audio and vision)
        else {m: f"no {m}" for m, p in (("text", text), ("audio", audio), ("vision", vision)) if not p},
    )


def assert_same_clip(a: Clip, b: Clip) -> None:
    for f in ("id", "status", "error", "split", "transcript", "transcript_source", "media", "missing_reason"):
        assert getattr(a, f) == getattr(b, f), f
    assert (a.label is None and b.label is None) or a.label == pytest.approx(b.label)
    for m in ("text", "audio", "vision"):
        sa, sb = a.sequence(m), b.sequence(m)
        assert (sa is None) == (sb is None), m
        if sa is not None:
            np.testing.assert_array_equal(sa.features, sb.features)
            np.testing.assert_array_equal(sa.timestamps, sb.timestamps)
            np.testing.assert_array_equal(sa.mask, sb.mask)
            np.testing.assert_array_equal(sa.confidence, sb.confidence)
            assert sa.tokens == sb.tokens


def test_round_trip_through_parts_and_final_file(tmp_path):
    rng = np.random.default_rng(0)
    clips = [
        make_clip(i, rng, text=i != 2, audio=i != 3, vision=i % 2 == 0, status="failed" if i == 5 else "ok")
        for i in range(8)
    ]
    out = tmp_path / "f.h5"
    with FeatureFileWriter(out, CONFIG, DIMS, {"who": "test"}) as w:
        for c in reversed(clips):
            w.add(c)
        assert w.finalize() == 8
    assert not (tmp_path / "f.h5.parts").exists()
    ff = FeatureFile(out)
    assert ff.ids == sorted(c.id for c in clips)
    assert ff.config == CONFIG and ff.config_hash == config_hash(CONFIG)
    assert ff.provenance == {"who": "test"}
    assert ff.dims == DIMS
    for a, b in zip(sorted(clips, key=lambda c: c.id), ff.iter_clips()):
        assert_same_clip(a, b)
    v = ff.modality("vision")
    assert v.offsets[-1] == len(v.features) == sum(c.vision.frames for c in clips if c.vision is not None)
    assert list(v.present) == [c.vision is not None for c in clips]


def test_summary_matches_contents(tmp_path):
    rng = np.random.default_rng(1)
    clips = [make_clip(i, rng, vision=i != 1) for i in range(3)]
    write_feature_file(tmp_path / "f.h5", clips, CONFIG, DIMS)
    doc = FeatureFile(tmp_path / "f.h5").summary()
    assert doc["dims"] == DIMS and doc["config_hash"] == config_hash(CONFIG)
    c0 = doc["clips"][0]
    assert c0["modalities"]["audio"] == {"frames": 10}
    assert c0["modalities"]["vision"]["face_ratio"] == pytest.approx(np.mean(np.arange(8) % 3 != 0))
    assert doc["clips"][1]["modalities"]["vision"] is None


def test_resume_keeps_parts_and_appends_to_final_file(tmp_path):
    rng = np.random.default_rng(2)
    clips = [make_clip(i, rng) for i in range(6)]
    out = tmp_path / "f.h5"
    w = FeatureFileWriter(out, CONFIG, DIMS)
    w.add(clips[0])
    w.add(clips[1])
    w.close()  # "crash": never finalized
    assert not out.exists()
    with FeatureFileWriter(out, CONFIG, DIMS) as w:
        assert w.done_ids() == {"clip000", "clip001"}
        w.add(clips[2])
        w.finalize()
    with FeatureFileWriter(out, CONFIG, DIMS) as w:  # later run with more clips appends
        assert w.done_ids() == {"clip000", "clip001", "clip002"}
        for c in clips[3:]:
            w.add(c)
        w.finalize()
    ff = FeatureFile(out)
    assert ff.ids == [c.id for c in clips]
    for a, b in zip(clips, ff.iter_clips()):
        assert_same_clip(a, b)


def test_leftover_tmp_and_torn_parts_are_ignored(tmp_path):
    rng = np.random.default_rng(3)
    out = tmp_path / "f.h5"
    w = FeatureFileWriter(out, CONFIG, DIMS)
    w.add(make_clip(0, rng))
    w.close()
    parts = tmp_path / "f.h5.parts"
    (parts / "deadbeef.h5.tmp").write_bytes(b"half written")
    (parts / ".00000009-deadbeef.h5.12345.tmp").write_bytes(b"half written")  # atomic_output's temporary name
    (parts / "torn.h5").write_bytes(b"\x89HDF\r\n\x1a\n garbage")
    (tmp_path / "f.h5.tmp").write_bytes(b"half a final file")
    (tmp_path / ".f.h5.12345.tmp").write_bytes(b"half a final file")
    with FeatureFileWriter(out, CONFIG, DIMS) as w:
        assert w.done_ids() == {"clip000"}
        assert not list(parts.glob("*.tmp"))  # a rerun removes parts cut short before their rename
        w.finalize()
    assert FeatureFile(out).ids == ["clip000"]


def test_other_configuration_is_refused_unless_overwrite(tmp_path):
    rng = np.random.default_rng(4)
    out = tmp_path / "f.h5"
    write_feature_file(out, [make_clip(0, rng)], CONFIG, DIMS)
    before = out.read_bytes()
    other = {**CONFIG, "n": 2}
    with pytest.raises(ConfigMismatchError, match="another configuration"):
        FeatureFileWriter(out, other, DIMS)
    assert out.read_bytes() == before  # nothing touched
    with FeatureFileWriter(out, other, DIMS, overwrite=True) as w:
        assert w.done_ids() == set()
    assert not out.exists()


def test_parts_of_other_configuration_are_refused(tmp_path):
    out = tmp_path / "f.h5"
    w = FeatureFileWriter(out, CONFIG, DIMS)
    w.add(make_clip(0, np.random.default_rng(5)))
    w.close()
    with pytest.raises(ConfigMismatchError):
        FeatureFileWriter(out, {"other": True}, DIMS)


def test_second_writer_on_same_file_is_refused(tmp_path):
    out = tmp_path / "f.h5"
    with FeatureFileWriter(out, CONFIG, DIMS):
        with pytest.raises(FeatureFileError, match="another mmckd process"):
            FeatureFileWriter(out, CONFIG, DIMS)


def test_wrong_dim_is_refused(tmp_path):
    clip = make_clip(0, np.random.default_rng(6))
    with pytest.raises(FeatureFileError, match="dim"):
        write_feature_file(tmp_path / "f.h5", [clip], CONFIG, {**DIMS, "audio": 5})
    assert not (tmp_path / "f.h5").exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file left


def test_a_failed_rewrite_leaves_the_previous_file_and_no_temporary(tmp_path):
    rng = np.random.default_rng(7)
    out = tmp_path / "f.h5"
    write_feature_file(out, [make_clip(0, rng)], CONFIG, DIMS)
    before = out.read_bytes()
    with pytest.raises(FeatureFileError, match="dim"):  # fails after the new file was begun
        write_feature_file(out, [make_clip(1, rng)], CONFIG, {**DIMS, "audio": 5})
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["f.h5"]


@pytest.mark.parametrize("content", [b"", b"just text\n", None])
def test_reader_refuses_non_feature_files(tmp_path, content):
    p = tmp_path / "x.h5"
    if content is None:
        with h5py.File(p, "w") as h5:
            h5.create_dataset("a", data=[1, 2])
    else:
        p.write_bytes(content)
    with pytest.raises(FeatureFileError, match=str(p)):
        FeatureFile(p)


def test_sequence_validates_shapes():
    with pytest.raises(ValueError):
        Sequence(np.zeros(5))
    with pytest.raises(ValueError, match="timestamps"):
        Sequence(np.zeros((5, 2)), timestamps=np.zeros(4))
