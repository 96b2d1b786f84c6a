"""CMU-MultimodalSDK .csd imports: segments from the labels, folds, transcripts, training, refusals."""

from __future__ import annotations

import csv
import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from mmckd.cli.main import cli
from mmckd.feature_file import MODALITIES, FeatureFile
from mmckd.interop.csd import import_csd
from mmckd.interop.errors import InteropError
from mmckd.interop.folds import load_folds
from mmckd.interop.synthetic import write_csd, write_synthetic_csd

TINY_FIT = ["--epochs", "1", "--seeds", "1", "--d-model", "16", "--heads", "2", "--proj-dim", "8", "--max-audio",
            "12", "--max-vision", "12", "--batch-size", "16", "--threads", "1", "--no-progress"]  # fmt: skip
VIDEOS = [f"vid_{v:03d}{'xyz'[v % 3]}" for v in range(8)]
FOLDS = {"train": VIDEOS[:5], "valid": VIDEOS[5:6], "test": VIDEOS[6:]}


@pytest.fixture(scope="module")
def csd_sets(tmp_path_factory):
    d = tmp_path_factory.mktemp("csd")
    video = write_synthetic_csd(d / "video_level", videos=8, segments=4, seed=1)
    segment = write_synthetic_csd(d / "segment_level", videos=8, segments=4, seed=1, segment_level=True)
    folds = d / "folds.json"
    folds.write_text(json.dumps(FOLDS))
    return {"video": video, "segment": segment, "folds": folds, "dir": d}


def _args(files: dict, folds, out, words: bool = True) -> list[str]:
    args = ["import", "csd", "--text", str(files["text"]), "--audio", str(files["audio"]), "--vision",
            str(files["vision"]), "--labels", str(files["labels"]), "--folds", str(folds), "-o", str(out)]  # fmt: skip
    return args + (["--words", str(files["words"])] if words else [])


def test_video_level_sequences_import_and_train(csd_sets, tmp_path):
    out = tmp_path / "f.h5"
    r = CliRunner().invoke(cli, _args(csd_sets["video"], csd_sets["folds"], out))
    assert r.exit_code == 0, r.output
    ff = FeatureFile(out)
    assert len(ff) == 32 and ff.config["source"] == "csd" and ff.config_hash
    assert ff.ids[0] == "vid_000x[0]" and ff.dims == {"text": 8, "audio": 5, "vision": 6}
    with h5py.File(csd_sets["video"]["labels"], "r") as h5:
        labels = {v: h5[f"Opinion Segment Labels/data/{v}/features"][()][:, 0] for v in VIDEOS}
        seg_iv = {v: h5[f"Opinion Segment Labels/data/{v}/intervals"][()] for v in VIDEOS}
    with h5py.File(csd_sets["video"]["audio"], "r") as h5:
        audio_iv = {v: h5[f"COVAREP/data/{v}/intervals"][()] for v in VIDEOS}
        audio_x = {v: h5[f"COVAREP/data/{v}/features"][()] for v in VIDEOS}
    with h5py.File(csd_sets["video"]["words"], "r") as h5:
        words = {v: (h5[f"words/data/{v}/features"][()][:, 0], h5[f"words/data/{v}/intervals"][()]) for v in VIDEOS}
    a = ff.modality("audio")
    for j, cid in enumerate(ff.ids):
        vid, k = cid[:-3], int(cid[-2])
        split = next(s for s, vids in FOLDS.items() if vid in vids)
        assert ff.splits[j] == split and ff.labels[j] == pytest.approx(labels[vid][k])
        s, e = seg_iv[vid][k]
        sel = (audio_iv[vid][:, 0] < e) & (audio_iv[vid][:, 1] > s)
        assert np.array_equal(a.features[a.clip_rows(j)], audio_x[vid][sel])
        ts = a.timestamps[a.clip_rows(j)]
        assert ts.min() >= 0 and ts.max() <= e - s
        w, wiv = words[vid]
        said = [x.decode() for x, (ws, we) in zip(w, wiv) if ws < e and we > s and x != b"sp"]
        assert ff.transcripts[j] == " ".join(said) and "sp" not in ff.transcripts[j].split()
        assert ff.durations[j] == pytest.approx(e - s)
    run = tmp_path / "run"
    r = CliRunner().invoke(cli, ["fit", str(out), "-o", str(run), *TINY_FIT])
    assert r.exit_code == 0, r.output
    m = json.loads((run / "metrics.json").read_text())
    assert m["data"]["train"]["clips"] == 20 and m["data"]["valid"]["clips"] == 4 and m["data"]["test"]["clips"] == 8


def test_segment_level_entries_give_the_same_clips(csd_sets, tmp_path):
    """The SDK's aligned files (entries video[k]) and the raw video-level files give identical clips."""
    a_out, b_out = tmp_path / "video.h5", tmp_path / "segment.h5"
    import_csd(**{m: csd_sets["video"][m] for m in (*MODALITIES, "labels", "words")}, output=a_out,
               folds=csd_sets["folds"])  # fmt: skip
    import_csd(**{m: csd_sets["segment"][m] for m in (*MODALITIES, "labels", "words")}, output=b_out,
               folds=csd_sets["folds"])  # fmt: skip
    a, b = FeatureFile(a_out), FeatureFile(b_out)
    assert a.ids == b.ids and a.splits == b.splits and np.array_equal(a.labels, b.labels)
    assert a.transcripts == b.transcripts
    for m in MODALITIES:
        assert np.array_equal(a.modality(m).features, b.modality(m).features)
        assert np.array_equal(a.modality(m).offsets, b.modality(m).offsets)


def test_fold_sources(csd_sets, tmp_path, monkeypatch):
    files = csd_sets["video"]
    # a CSV fold file with MMSA-style clip ids <video>_<clip>: the video is the id without its clip number
    table = tmp_path / "label.csv"
    with open(table, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text", "label", "mode"])
        for split, vids in (("train", VIDEOS[:6]), ("dev", VIDEOS[6:7]), ("test", VIDEOS[7:])):
            for v in vids:
                w.writerow([f"{v}_1", "x", 0.0, split])
    out = tmp_path / "f.h5"
    import_csd(files["text"], files["audio"], files["vision"], files["labels"], out, folds=str(table))
    ff = FeatureFile(out)
    assert {ff.splits[j] for j, c in enumerate(ff.ids) if c.startswith(VIDEOS[6])} == {"valid"}
    assert sum(s == "train" for s in ff.splits) == 24
    # videos in no fold are kept without a split, with a note
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"train": VIDEOS[:4], "valid": VIDEOS[4:5], "test": VIDEOS[5:7]}))
    s = import_csd(
        files["text"], files["audio"], files["vision"], files["labels"], out, folds=str(partial), overwrite=True
    )  # the same output again: an existing file is replaced only when asked
    assert any("4 segments are in no fold" in n for n in s.notes)
    assert sum(sp is None for sp in FeatureFile(out).splits) == 4
    # standard-mosei cannot be had offline: a clear error saying what to do
    monkeypatch.delenv("MMCKD_MOSEI_FOLDS", raising=False)
    with pytest.raises(InteropError, match="standard-mosei folds are not shipped.*--folds FILE"):
        load_folds("standard-mosei")
    monkeypatch.setenv("MMCKD_MOSEI_FOLDS", str(csd_sets["folds"]))
    assert load_folds("standard-mosei").split_of("x[0]", VIDEOS[6]) == "test"
    # standard-mosi without a label.csv anywhere
    monkeypatch.setenv("MMCKD_MOSI_LABELS", str(tmp_path / "none.csv"))
    monkeypatch.setenv("MMCKD_SHARED_DATA", str(tmp_path / "none"))
    monkeypatch.setattr("mmckd.interop.folds._checkout_mosi_labels", lambda: tmp_path / "none" / "label.csv")
    with pytest.raises(InteropError, match="standard-mosi folds need CMU-MOSI's label.csv"):
        load_folds("standard-mosi")
    monkeypatch.undo()
    r = CliRunner().invoke(cli, _args(files, tmp_path / "missing.json", tmp_path / "g.h5", words=False))
    assert r.exit_code == 2 and "not standard-mosi, standard-mosei or an existing .json/.csv file" in r.output
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": VIDEOS[:2], "holdout": VIDEOS[2:]}))
    with pytest.raises(InteropError, match="fold 'holdout' is not train, valid"):
        load_folds(str(bad))
    twice = tmp_path / "twice.json"
    twice.write_text(json.dumps({"train": VIDEOS[:2], "test": VIDEOS[1:3]}))
    with pytest.raises(InteropError, match="is in two folds"):
        load_folds(str(twice))


def test_standard_mosi_folds_from_the_real_label_csv(shared_data, tmp_path, monkeypatch):
    """Real CMU-MOSI video ids: each imported segment lands in its video's official fold."""
    table = shared_data / "mosi" / "label.csv"
    modes = {}
    with open(table, newline="") as f:
        for row in csv.DictReader(f):
            modes[row["id"].rsplit("_", 1)[0]] = {"dev": "valid"}.get(row["mode"], row["mode"])
    chosen = [next(v for v in sorted(modes) if modes[v] == s) for s in ("train", "valid", "test")]
    chosen.append(next(v for v in sorted(modes) if "_" in v and v not in chosen))  # an id with an underscore
    d = tmp_path / "real_ids"
    files = write_synthetic_csd(d, videos=len(chosen), segments=2, seed=3)
    renamed = {}
    for role, p in files.items():
        with h5py.File(p, "r") as h5:
            root = next(iter(h5))
            entries = {chosen[i]: (h5[f"{root}/data/{v}/features"][()], h5[f"{root}/data/{v}/intervals"][()])
                       for i, v in enumerate(sorted(h5[f"{root}/data"]))}  # fmt: skip
        renamed[role] = write_csd(d / f"real_{role}.csd", root, entries)
    monkeypatch.setenv("MMCKD_MOSI_LABELS", str(table))
    out = tmp_path / "f.h5"
    s = import_csd(renamed["text"], renamed["audio"], renamed["vision"], renamed["labels"], out, "standard-mosi")
    ff = FeatureFile(out)
    assert s.clips == 8 and ff.config["folds"].startswith("standard-mosi")
    for j, cid in enumerate(ff.ids):
        assert ff.splits[j] == modes[cid.rsplit("[", 1)[0]]


def test_unknown_video_in_one_modality_is_refused(csd_sets, tmp_path):
    files = dict(csd_sets["video"])
    with h5py.File(files["vision"], "r") as h5:
        entries = {v: (h5[f"FACET 4.2/data/{v}/features"][()], h5[f"FACET 4.2/data/{v}/intervals"][()]) for v in VIDEOS}
    entries["stranger01"] = entries[VIDEOS[0]]
    files["vision"] = write_csd(tmp_path / "vision_extra.csd", "FACET 4.2", entries)
    out = tmp_path / "f.h5"
    r = CliRunner().invoke(cli, _args(files, csd_sets["folds"], out, words=False))
    assert r.exit_code == 2
    lines = [ln for ln in r.output.splitlines() if ln.startswith("mmckd import csd: error:")]
    assert len(lines) == 1 and "vision_extra.csd" in lines[0] and "'stranger01' is unknown in" in lines[0]
    assert "text.csd" in lines[0] and "--intersect" in lines[0]
    assert not out.exists()
    # --intersect keeps the common videos and says what it left out
    r = CliRunner().invoke(cli, [*_args(files, csd_sets["folds"], out, words=False), "--intersect"])
    assert r.exit_code == 0, r.output
    assert len(FeatureFile(out)) == 32
    s = import_csd(files["text"], files["audio"], files["vision"], files["labels"], out, csd_sets["folds"],
                   intersect=True, overwrite=True)  # fmt: skip
    assert any("vision_extra.csd: 1 videos missing in another file were left out" in n for n in s.notes)


def test_malformed_sequences_are_refused(csd_sets, tmp_path):
    files = dict(csd_sets["video"])

    def attempt(**override):
        f = files | override
        with pytest.raises(InteropError) as err:
            import_csd(f["text"], f["audio"], f["vision"], f["labels"], tmp_path / "f.h5", folds=csd_sets["folds"])
        msg = str(err.value)
        assert "\n" not in msg
        return msg

    msg = attempt(text=files["words"])
    assert "words.csd" in msg and "pass this file as --words" in msg
    not_h5 = tmp_path / "audio.csd"
    not_h5.write_text("COVAREP but not HDF5")
    assert "not an HDF5 computational sequence" in attempt(audio=not_h5)
    rows = tmp_path / "rows.csd"
    write_csd(rows, "COVAREP", {v: (np.zeros((5, 5), np.float32), np.zeros((4, 2))) for v in VIDEOS})
    msg = attempt(audio=rows)
    assert "rows.csd" in msg and "features have shape (5, 5) for 4 intervals" in msg
    dims = tmp_path / "dims.csd"
    write_csd(
        dims,
        "COVAREP",
        {
            v: (
                np.zeros((40, 5 if v != VIDEOS[3] else 4), np.float32),
                np.stack([np.arange(40) * 0.5, np.arange(40) * 0.5 + 0.5], 1),
            )
            for v in VIDEOS
        },
    )
    assert "has dim 4, the sequence has 5" in attempt(audio=dims)
    assert "no such file" in attempt(labels=tmp_path / "nope.csd")
    two_roots = tmp_path / "two.csd"
    with h5py.File(two_roots, "w") as h5:
        h5.create_group("a/data")
        h5.create_group("b/data")
    assert "one root group holding data/" in attempt(vision=two_roots)
