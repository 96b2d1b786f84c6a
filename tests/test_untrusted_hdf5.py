"""HDF5 inputs that would read other files (external storage, virtual datasets, external and soft links)
are refused before any data is read (issue 11, problem 6). Real files made with h5py, real commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from mmckd.feature_file import FeatureFile, FeatureFileError
from mmckd.hdf5_safety import UnsafeHDF5Error, check_self_contained
from mmckd.interop.synthetic import write_synthetic_csd

SECRET = np.full((4, 5), 1234.5, np.float32)  # what a crafted file would smuggle into the features


def _mmckd(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "mmckd", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip


def _secret_files(d):
    raw = d / "secret.bin"
    raw.write_bytes(SECRET.tobytes())
    with h5py.File(d / "secret.h5", "w") as h5:
        h5.create_dataset("x", data=SECRET)
    return raw, d / "secret.h5"


def _make_hostile(kind: str, h5: h5py.File, where: str, d) -> None:
    """Replace dataset `where` of an open file by one that reads another file."""
    raw, secret_h5 = _secret_files(d)
    del h5[where]
    if kind == "external storage":
        h5.create_dataset(where, shape=SECRET.shape, dtype="f4", external=[(str(raw), 0, SECRET.nbytes)])
    elif kind == "virtual dataset":
        layout = h5py.VirtualLayout(shape=SECRET.shape, dtype="f4")
        layout[:] = h5py.VirtualSource(str(secret_h5), "x", shape=SECRET.shape)
        h5.create_virtual_dataset(where, layout)
    elif kind == "external link":
        h5[where] = h5py.ExternalLink(str(secret_h5), "/x")
    elif kind == "soft link":
        h5.create_dataset(where + "_real", data=SECRET)
        h5[where] = h5py.SoftLink(where + "_real")
    else:
        raise AssertionError(kind)


KINDS = ["external storage", "virtual dataset", "external link", "soft link"]


@pytest.mark.parametrize("kind", KINDS)
def test_hostile_csd_is_refused_by_import(tmp_path, kind):
    files = write_synthetic_csd(tmp_path / "csd", videos=3, segments=2, seed=2)
    with h5py.File(files["audio"], "r") as h5:
        entry = sorted(h5["COVAREP/data"])[0]
    with h5py.File(files["audio"], "a") as h5:
        _make_hostile(kind, h5, f"COVAREP/data/{entry}/features", tmp_path)
        if kind != "soft link":  # h5py itself would read the other file: this is what used to get in
            assert np.array_equal(h5[f"COVAREP/data/{entry}/features"][()], SECRET)
    folds = tmp_path / "folds.json"
    folds.write_text(json.dumps({"train": ["vid_000x"], "valid": ["vid_001y"], "test": ["vid_002z"]}))
    out = tmp_path / "out.h5"
    r = _mmckd("import", "csd", "--text", files["text"], "--audio", files["audio"], "--vision", files["vision"],
               "--labels", files["labels"], "--folds", folds, "-o", out)  # fmt: skip
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mmckd import csd: error: "), r.stderr
    assert str(files["audio"]) in lines[0] and "refused" in lines[0] and kind.split()[0] in lines[0]
    assert not out.exists()


@pytest.fixture()
def feature_file(tmp_path):
    from mmckd.model.synthetic import write_synthetic_features

    return write_synthetic_features(tmp_path / "f.h5", n=12, seed=0)


@pytest.mark.parametrize("kind", KINDS)
def test_hostile_feature_file_is_refused_by_reader_and_export(tmp_path, feature_file, kind):
    with h5py.File(feature_file, "a") as h5:
        _make_hostile(kind, h5, "audio/confidence", tmp_path)
    with pytest.raises(FeatureFileError, match="refused"):
        FeatureFile(feature_file)
    out = tmp_path / "out.pkl"
    r = _mmckd("export", "mmsa", feature_file, "-o", out)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(feature_file) in lines[0] and "refused" in lines[0], r.stderr
    assert not out.exists()


def test_plain_files_pass_and_links_anywhere_are_found(tmp_path, feature_file):
    check_self_contained(feature_file)  # what mmckd writes is self-contained
    FeatureFile(feature_file)
    with h5py.File(feature_file, "a") as h5:
        h5.create_group("deep/er/still")
        h5["deep/er/still/link"] = h5py.ExternalLink("/etc/hostname", "/")  # a link nobody reads is still refused
    with pytest.raises(UnsafeHDF5Error, match=r"/deep/er/still/link is an external link -> /etc/hostname"):
        check_self_contained(feature_file)
