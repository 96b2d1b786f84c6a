"""The datasets of the layout (see ``schema``) written and read: shared by the writer, the merge and the reader.

Every new HDF5 file (a part, a merged or a complete feature file) is opened through ``new_h5_file``: it is
written under a temporary name and renamed over its destination by ``mmckd.atomic_write.atomic_output``.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from mmckd.atomic_write import atomic_output
from mmckd.feature_file.schema import (
    CLIP_STR_FIELDS,
    FORMAT,
    FORMAT_VERSION,
    MODALITIES,
    Clip,
    FeatureFileError,
    config_hash,
)

STR = h5py.string_dtype(encoding="utf-8")


@contextlib.contextmanager
def new_h5_file(path: Path) -> Iterator[h5py.File]:
    """An HDF5 file for writing that appears at path only when complete (fsynced and renamed); on any error
    path is untouched, the temporary file removed, and an I/O error raised as WriteError."""
    with atomic_output(path) as tmp:
        with h5py.File(tmp, "w") as h5:
            yield h5


def write_strings(group: h5py.Group, name: str, values: list[str]) -> None:
    group.create_dataset(name, data=np.array(values, dtype=object), dtype=STR)


def write_clips(h5: h5py.File, clips: list[Clip], dims: dict[str, int]) -> None:
    """Write clips in the concatenated layout (used for parts and the final file alike)."""
    g = h5.create_group("clips")
    for name in CLIP_STR_FIELDS:
        write_strings(g, name, [getattr(c, name) or "" for c in clips])
    g.create_dataset("label", data=np.array([np.nan if c.label is None else c.label for c in clips], np.float32))
    g.create_dataset(
        "duration", data=np.array([np.nan if c.duration is None else c.duration for c in clips], np.float64)
    )
    for m in MODALITIES:
        seqs = [c.sequence(m) for c in clips]
        dim = dims[m]
        for s, c in zip(seqs, clips):
            if s is not None and s.features.shape[1] != dim:
                raise FeatureFileError(f"clip {c.id}: {m} features have dim {s.features.shape[1]}, file has {dim}")
        lengths = np.array([0 if s is None else s.frames for s in seqs], np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        present = [s is not None for s in seqs]
        mg = h5.create_group(m)
        mg.attrs["dim"] = dim
        live = [s for s in seqs if s is not None]

        def cat(attr: str, dtype: Any, width: int | None = None, live: list = live) -> np.ndarray:
            parts = [getattr(s, attr) for s in live]
            if not parts:
                shape = (0, width) if width is not None else (0,)
                return np.zeros(shape, dtype)
            return np.concatenate(parts).astype(dtype, copy=False)

        chunk_rows = feature_chunk_rows(int(offsets[-1]), dim)
        mg.create_dataset(
            "features", data=cat("features", np.float32, dim), chunks=(chunk_rows, dim) if offsets[-1] else None
        )
        mg.create_dataset("timestamps", data=cat("timestamps", np.float64))
        mg.create_dataset("mask", data=cat("mask", bool))
        mg.create_dataset("confidence", data=cat("confidence", np.float32))
        mg.create_dataset("offsets", data=offsets)
        mg.create_dataset("present", data=np.array(present, bool))
        write_strings(
            mg, "missing_reason", [c.missing_reason.get(m, "") if s is None else "" for s, c in zip(seqs, clips)]
        )
        if m == "text":
            tokens = [t for s in live for t in (s.tokens or [""] * s.frames)]
            write_strings(mg, "tokens", tokens)


def feature_chunk_rows(rows: int, dim: int) -> int:
    """Rows per chunk of a features dataset: about 256 K values, never more than the rows."""
    return max(1, min(rows, max(1, 2**18 // max(dim, 1))))


def write_attrs(h5: h5py.File, config: dict, provenance: dict) -> None:
    h5.attrs["format"] = FORMAT
    h5.attrs["format_version"] = FORMAT_VERSION
    h5.attrs["config_json"] = json.dumps(config, sort_keys=True)
    h5.attrs["config_hash"] = config_hash(config)
    h5.attrs["provenance_json"] = json.dumps(provenance, sort_keys=True)
    h5.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def decoded(values: Iterable[Any]) -> list[str]:
    """HDF5 strings (bytes or str) as str."""
    return [s.decode() if isinstance(s, bytes) else str(s) for s in values]


def strings(ds: h5py.Dataset) -> list[str]:
    """A whole string dataset as a list of str."""
    return decoded(ds[()])
