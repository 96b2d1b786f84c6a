"""Reading feature files: ``FeatureFile`` (cheap to open, arrays read on demand) and ``ModalityArrays``."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from mmckd.feature_file.layout import strings
from mmckd.feature_file.schema import (
    CLIP_STR_FIELDS,
    FORMAT,
    FORMAT_VERSION,
    MODALITIES,
    Clip,
    FeatureFileError,
    Sequence,
)
from mmckd.hdf5_safety import check_self_contained


@dataclass
class ModalityArrays:
    """One modality for all clips, as loaded in one read: rows of clip i are offsets[i]:offsets[i+1]."""

    name: str
    dim: int
    features: np.ndarray
    timestamps: np.ndarray
    mask: np.ndarray
    confidence: np.ndarray
    offsets: np.ndarray
    present: np.ndarray
    missing_reason: list[str]

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def clip_rows(self, i: int) -> slice:
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))


class FeatureFile:
    """Read access to a feature file. Cheap to open; arrays are read on demand and cached."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FeatureFileError(f"{self.path}: no such file")
        try:
            with h5py.File(self.path, "r") as h5:
                check_self_contained(h5, FeatureFileError)  # no external/virtual storage or links: before any read
                self._attrs: dict[str, Any] = {
                    k: (v.decode() if isinstance(v, bytes) else v) for k, v in h5.attrs.items()
                }
                is_part = "format" not in self._attrs and "clips" in h5
                if not is_part and self._attrs.get("format") != FORMAT:
                    raise FeatureFileError(f"{self.path}: not an mmckd feature file (no format={FORMAT} attribute)")
                if not is_part and int(self._attrs.get("format_version", -1)) > FORMAT_VERSION:
                    raise FeatureFileError(
                        f"{self.path}: format version {self._attrs['format_version']} is newer than this mmckd reads "
                        f"({FORMAT_VERSION})"
                    )
                self.dims = {m: int(h5[m].attrs["dim"]) for m in MODALITIES}
                self._clip_columns = {name: strings(h5["clips"][name]) for name in CLIP_STR_FIELDS}
                self.labels = h5["clips/label"][()].astype(np.float32)
                self.durations = h5["clips/duration"][()]
                self.present = {m: h5[m]["present"][()].astype(bool) for m in MODALITIES}
                self._lengths = {m: np.diff(h5[m]["offsets"][()]) for m in MODALITIES}
        except FeatureFileError:
            raise
        except (OSError, KeyError) as e:
            raise FeatureFileError(f"{self.path}: not a readable mmckd feature file ({e})") from None
        self._cache: dict[str, ModalityArrays] = {}

    # clip-level columns
    @property
    def ids(self) -> list[str]:
        return self._clip_columns["id"]

    @property
    def status(self) -> list[str]:
        return self._clip_columns["status"]

    @property
    def errors(self) -> list[str | None]:
        return [e or None for e in self._clip_columns["error"]]

    @property
    def splits(self) -> list[str | None]:
        return [s or None for s in self._clip_columns["split"]]

    @property
    def transcripts(self) -> list[str | None]:
        return [s or None for s in self._clip_columns["transcript"]]

    @property
    def transcript_sources(self) -> list[str | None]:
        return [s or None for s in self._clip_columns["transcript_source"]]

    @property
    def media(self) -> list[str | None]:
        return [s or None for s in self._clip_columns["media"]]

    def __len__(self) -> int:
        return len(self.ids)

    def lengths(self, modality: str) -> np.ndarray:
        return self._lengths[modality]

    # file-level metadata
    @property
    def config(self) -> dict:
        return json.loads(self._attrs.get("config_json", "{}"))

    @property
    def config_hash(self) -> str | None:
        return self._attrs.get("config_hash")

    @property
    def provenance(self) -> dict:
        return json.loads(self._attrs.get("provenance_json", "{}"))

    @property
    def created(self) -> str | None:
        return self._attrs.get("created")

    def modality(self, name: str) -> ModalityArrays:
        """All frames of one modality, in one read per dataset."""
        if name not in MODALITIES:
            raise KeyError(f"unknown modality {name!r}; expected one of {MODALITIES}")
        if name not in self._cache:
            with h5py.File(self.path, "r") as h5:
                g = h5[name]
                self._cache[name] = ModalityArrays(
                    name=name,
                    dim=int(g.attrs["dim"]),
                    features=g["features"][()],
                    timestamps=g["timestamps"][()],
                    mask=g["mask"][()].astype(bool),
                    confidence=g["confidence"][()],
                    offsets=g["offsets"][()],
                    present=g["present"][()].astype(bool),
                    missing_reason=strings(g["missing_reason"]),
                )
        return self._cache[name]

    def tokens(self) -> list[str]:
        with h5py.File(self.path, "r") as h5:
            return strings(h5["text/tokens"])

    def iter_clips(self) -> Iterator[Clip]:
        arrays = {m: self.modality(m) for m in MODALITIES}
        tokens = self.tokens()
        for i, cid in enumerate(self.ids):
            seqs: dict[str, Sequence | None] = {}
            reasons = {}
            for m, a in arrays.items():
                if not a.present[i]:
                    seqs[m] = None
                    if a.missing_reason[i]:
                        reasons[m] = a.missing_reason[i]
                    continue
                r = a.clip_rows(i)
                seqs[m] = Sequence(
                    features=a.features[r],
                    timestamps=a.timestamps[r],
                    mask=a.mask[r],
                    confidence=a.confidence[r],
                    tokens=tokens[r] if m == "text" else None,
                )
            label = float(self.labels[i])
            duration = float(self.durations[i])
            yield Clip(
                id=cid,
                status=self.status[i],
                error=self.errors[i],
                split=self.splits[i],
                label=None if math.isnan(label) else label,
                transcript=self.transcripts[i],
                transcript_source=self.transcript_sources[i],
                media=self.media[i],
                duration=None if math.isnan(duration) else duration,
                missing_reason=reasons,
                text=seqs["text"],
                audio=seqs["audio"],
                vision=seqs["vision"],
            )

    def summary(self) -> dict:
        """The `mmckd info --json` document."""
        vision: ModalityArrays | None = None
        clips = []
        for i, cid in enumerate(self.ids):
            mods: dict[str, dict | None] = {}
            for m in MODALITIES:
                if not self.present[m][i]:
                    mods[m] = None
                    continue
                entry: dict[str, int | float] = {"frames": int(self._lengths[m][i])}
                if m == "vision":
                    if vision is None:
                        vision = self.modality("vision")
                    rows = vision.mask[vision.clip_rows(i)]
                    entry["face_ratio"] = float(rows.mean()) if len(rows) else 0.0
                mods[m] = entry
            label = float(self.labels[i])
            clips.append(
                {
                    "id": cid,
                    "status": self.status[i],
                    "error": self.errors[i],
                    "split": self.splits[i],
                    "label": None if math.isnan(label) else label,
                    "transcript_source": self.transcript_sources[i],
                    "modalities": mods,
                }
            )
        return {
            "path": str(self.path),
            "format_version": int(self._attrs.get("format_version", 0)),
            "config_hash": self.config_hash,
            "config": self.config,
            "provenance": self.provenance,
            "created": self.created,
            "dims": dict(self.dims),
            "clips": clips,
        }
