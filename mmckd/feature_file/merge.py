"""The streaming merge: feature files and parts merged into one feature file, sorted by clip id.

It copies a window of clips at a time from the sources into preallocated datasets, so its memory does not
grow with the size of the file (benchmarks/merge_memory.py). A later source's record of a clip replaces an
earlier one's.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from mmckd.feature_file.layout import STR, decoded, feature_chunk_rows, new_h5_file, strings, write_attrs
from mmckd.feature_file.schema import CLIP_STR_FIELDS, MODALITIES, FeatureFileError

MERGE_WINDOW = 64  # clips read at once from one source
MERGE_BLOCK = 64  # clips written at once
MERGE_CACHE = 8  # sources with a window in memory at once (one window each: sources are read in id order)

Relabel = dict[str, tuple[float | None, str | None]]  # clip id -> its new (label, split)


class _MergeSource:
    """An open feature file or part: ids and offsets in memory, arrays read a window of clips at a time."""

    def __init__(self, path: Path, dims: dict[str, int]) -> None:
        self.path = path
        self.h5 = h5py.File(path, "r")
        self.ids = strings(self.h5["clips/id"])
        self.offsets = {m: self.h5[m]["offsets"][()] for m in MODALITIES}
        for m in MODALITIES:
            if int(self.h5[m].attrs["dim"]) != dims[m]:
                raise FeatureFileError(f"{path}: {m} dim {int(self.h5[m].attrs['dim'])}, expected {dims[m]}")

    def window(self, a: int) -> dict[str, Any]:
        b = min(len(self.ids), a + MERGE_WINDOW)
        g = self.h5["clips"]
        w: dict[str, Any] = {"start": a, "label": g["label"][a:b], "duration": g["duration"][a:b]}
        for name in CLIP_STR_FIELDS:
            w[name] = decoded(g[name][a:b])
        for m in MODALITIES:
            mg, off = self.h5[m], self.offsets[m]
            r0, r1 = int(off[a]), int(off[b])
            w[m] = {
                "rel": off[a : b + 1] - r0,
                "features": mg["features"][r0:r1],
                "timestamps": mg["timestamps"][r0:r1],
                "mask": mg["mask"][r0:r1],
                "confidence": mg["confidence"][r0:r1],
                "present": mg["present"][a:b],
                "missing_reason": decoded(mg["missing_reason"][a:b]),
            }
            if m == "text":
                w[m]["tokens"] = decoded(mg["tokens"][r0:r1])
        return w

    def close(self) -> None:
        self.h5.close()


def merge_feature_files(
    sources: list[Path],
    path: Path,
    config: dict,
    provenance: dict,
    dims: dict[str, int],
    relabel: Relabel | None = None,
) -> int:
    """Write the clips of sources (a later source's record of an id wins) sorted by id into path, atomically.

    Streams: ids and offsets are indexed up front, then clips are copied a block at a time, read a
    window at a time (at most MERGE_CACHE windows held), so memory does not grow with the data."""
    relabel = relabel or {}
    opened: list[_MergeSource] = []
    try:
        for p in sources:
            opened.append(_MergeSource(Path(p), dims))
        where: dict[str, tuple[int, int]] = {}
        for s, src in enumerate(opened):
            for i, cid in enumerate(src.ids):
                where[cid] = (s, i)
        order = sorted(where)
        n = len(order)
        src_of = np.fromiter((where[c][0] for c in order), np.int64, n)
        idx_of = np.fromiter((where[c][1] for c in order), np.int64, n)
        del where
        out_offsets = {}
        for m in MODALITIES:
            lengths = np.zeros(n, np.int64)
            for s, src in enumerate(opened):
                sel = src_of == s
                lengths[sel] = np.diff(src.offsets[m])[idx_of[sel]]
            out_offsets[m] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        with new_h5_file(Path(path)) as h5:
            write_attrs(h5, config, provenance)
            out = _create_merged(h5, n, dims, out_offsets)
            cache: OrderedDict[int, dict[str, Any]] = OrderedDict()  # source -> its current window

            def window(s: int, i: int) -> dict[str, Any]:
                w = cache.get(s)
                if w is None or not w["start"] <= i < w["start"] + MERGE_WINDOW:
                    cache[s] = w = opened[s].window(i)
                    if len(cache) > MERGE_CACHE:
                        cache.popitem(last=False)
                cache.move_to_end(s)
                return w

            for p0 in range(0, n, MERGE_BLOCK):
                p1 = min(n, p0 + MERGE_BLOCK)
                picks = []
                for k in range(p0, p1):
                    s, i = int(src_of[k]), int(idx_of[k])
                    w = window(s, i)
                    picks.append((w, i - w["start"]))
                _write_block(out, p0, p1, picks, out_offsets, relabel)
    finally:
        for src in opened:
            src.close()
    return n


def _create_merged(h5: h5py.File, n: int, dims: dict[str, int], offsets: dict[str, np.ndarray]) -> dict[str, Any]:
    g = h5.create_group("clips")
    out = {"clips": g}
    for name in CLIP_STR_FIELDS:
        g.create_dataset(name, shape=(n,), dtype=STR)
    g.create_dataset("label", shape=(n,), dtype=np.float32)
    g.create_dataset("duration", shape=(n,), dtype=np.float64)
    for m in MODALITIES:
        dim, rows = dims[m], int(offsets[m][-1])
        mg = h5.create_group(m)
        mg.attrs["dim"] = dim
        chunk_rows = feature_chunk_rows(rows, dim)
        mg.create_dataset("features", shape=(rows, dim), dtype=np.float32, chunks=(chunk_rows, dim) if rows else None)
        mg.create_dataset("timestamps", shape=(rows,), dtype=np.float64)
        mg.create_dataset("mask", shape=(rows,), dtype=bool)
        mg.create_dataset("confidence", shape=(rows,), dtype=np.float32)
        mg.create_dataset("offsets", data=offsets[m])
        mg.create_dataset("present", shape=(n,), dtype=bool)
        mg.create_dataset("missing_reason", shape=(n,), dtype=STR)
        if m == "text":
            mg.create_dataset("tokens", shape=(rows,), dtype=STR)
        out[m] = mg
    return out


def _write_block(
    out: dict[str, Any],
    p0: int,
    p1: int,
    picks: list[tuple[dict[str, Any], int]],
    offsets: dict[str, np.ndarray],
    relabel: Relabel,
) -> None:
    g = out["clips"]
    ids = [w["id"][j] for w, j in picks]
    for name in CLIP_STR_FIELDS:
        values = [w[name][j] for w, j in picks]
        if name == "split":
            values = [relabel[c][1] or "" if c in relabel else v for c, v in zip(ids, values)]
        g[name][p0:p1] = np.array(values, dtype=object)
    labels = np.array([w["label"][j] for w, j in picks], np.float32)
    for k, c in enumerate(ids):
        if c in relabel:
            label = relabel[c][0]
            labels[k] = np.nan if label is None else label
    g["label"][p0:p1] = labels
    g["duration"][p0:p1] = np.array([w["duration"][j] for w, j in picks], np.float64)
    for m in MODALITIES:
        mg = out[m]
        r0, r1 = int(offsets[m][p0]), int(offsets[m][p1])
        mg["present"][p0:p1] = np.array([w[m]["present"][j] for w, j in picks], bool)
        mg["missing_reason"][p0:p1] = np.array([w[m]["missing_reason"][j] for w, j in picks], dtype=object)
        if r1 == r0:
            continue
        rows = [(w[m], int(w[m]["rel"][j]), int(w[m]["rel"][j + 1])) for w, j in picks]
        for name in ("features", "timestamps", "mask", "confidence"):
            mg[name][r0:r1] = np.concatenate([wm[name][a:b] for wm, a, b in rows])
        if m == "text":
            mg["tokens"][r0:r1] = np.array([t for wm, a, b in rows for t in wm["tokens"][a:b]], dtype=object)
