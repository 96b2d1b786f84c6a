"""The feature file's format: its name and version, the HDF5 layout, and the clips it holds in memory.

Layout (documented for users in docs/features.md)::

    /                         attrs: format="mmckd-features", format_version, config_json,
                              config_hash, provenance_json, created
    /clips/id                 (N,) str   clip ids, sorted
    /clips/status             (N,) str   "ok" | "failed"
    /clips/error              (N,) str   one-line reason, "" when ok
    /clips/split              (N,) str   "train" | "valid" | "dev" | "test" | ""
    /clips/label              (N,) f4    sentiment in [-3, 3], NaN when unlabelled
    /clips/transcript         (N,) str
    /clips/transcript_source  (N,) str   "labels" | "sidecar:srt" | "asr" | ... | ""
    /clips/media              (N,) str   media path as given, "" when none
    /clips/duration           (N,) f8    seconds, NaN when unknown
    /<modality>/              attrs: dim        modality in text, audio, vision
    /<modality>/features      (T, dim) f4  all clips' frames concatenated
    /<modality>/timestamps    (T,) f8    seconds from clip start (NaN when unknown)
    /<modality>/mask          (T,) bool  frame is valid (vision: a face was found)
    /<modality>/confidence    (T,) f4    per-frame confidence (vision: face detection score)
    /<modality>/offsets       (N+1,) i8  clip i owns rows offsets[i]:offsets[i+1]
    /<modality>/present       (N,) bool  modality usable for clip i
    /<modality>/missing_reason (N,) str  why not present ("" when present)
    /text/tokens              (T,) str   wordpiece tokens aligned with text rows
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmckd.modalities import MODALITIES

__all__ = [
    "CLIP_STR_FIELDS",
    "FORMAT",
    "FORMAT_VERSION",
    "MODALITIES",
    "SPLITS_VALID",
    "Clip",
    "ConfigMismatchError",
    "FeatureFileError",
    "Sequence",
    "clip_to_dict",
    "config_hash",
]

FORMAT = "mmckd-features"
FORMAT_VERSION = 1
SPLITS_VALID = ("valid", "dev")
# the string columns of /clips, each a field of Clip of the same name
CLIP_STR_FIELDS = ("id", "status", "error", "split", "transcript", "transcript_source", "media")


class FeatureFileError(Exception):
    """A feature file cannot be read or written; the message names the file and the reason."""


class ConfigMismatchError(FeatureFileError):
    """The output already holds features made with another configuration."""


def config_hash(config: dict) -> str:
    """Stable short hash of a JSON-able configuration (canonical JSON, sorted keys)."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass
class Sequence:
    """One modality of one clip: frames x dim features with per-frame time, validity and score."""

    features: np.ndarray
    timestamps: np.ndarray | None = None
    mask: np.ndarray | None = None
    confidence: np.ndarray | None = None
    tokens: list[str] | None = None

    def __post_init__(self) -> None:
        self.features = np.asarray(self.features, dtype=np.float32)
        if self.features.ndim != 2:
            raise ValueError(f"features must be 2-D (frames, dim), got shape {self.features.shape}")
        n = len(self.features)
        self.timestamps = _column(self.timestamps, n, np.float64, math.nan, "timestamps")
        self.mask = _column(self.mask, n, bool, True, "mask")
        self.confidence = _column(self.confidence, n, np.float32, 1.0, "confidence")
        if self.tokens is not None and len(self.tokens) != n:
            raise ValueError(f"{len(self.tokens)} tokens for {n} frames")

    @property
    def frames(self) -> int:
        return len(self.features)


def _column(values: Any, n: int, dtype: Any, fill: float | bool, name: str) -> np.ndarray:
    if values is None:
        return np.full(n, fill, dtype=dtype)
    arr = np.asarray(values, dtype=dtype).reshape(-1)
    if len(arr) != n:
        raise ValueError(f"{name} has {len(arr)} entries for {n} frames")
    return arr


@dataclass
class Clip:
    """Everything the file holds about one clip."""

    id: str
    status: str = "ok"
    error: str | None = None
    split: str | None = None
    label: float | None = None
    transcript: str | None = None
    transcript_source: str | None = None
    media: str | None = None
    duration: float | None = None
    text: Sequence | None = None
    audio: Sequence | None = None
    vision: Sequence | None = None
    missing_reason: dict[str, str] = field(default_factory=dict)

    def sequence(self, modality: str) -> Sequence | None:
        return getattr(self, modality)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m in MODALITIES if self.sequence(m) is not None)


def clip_to_dict(clip: Clip) -> dict:
    """A JSON-able view of a clip without its arrays (for logs and tests)."""
    d = dataclasses.asdict(clip)
    for m in MODALITIES:
        s = clip.sequence(m)
        d[m] = None if s is None else {"frames": s.frames}
    return d
