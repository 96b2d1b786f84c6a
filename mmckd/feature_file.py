"""The mmckd feature file: the one module that owns the HDF5 layout (writer and reader).

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

Crash safety: the writer never edits the final file in place. Finished clips are written in small
batches (a few seconds of work at most) to part files in ``<file>.parts/`` (written under a temporary
name, then renamed), and
``finalize`` merges the existing final file (if any) with the parts into ``<file>.tmp`` and renames
it over ``<file>``. A kill at any moment leaves either the old final file or the new one, plus parts
that a rerun picks up. A lock file keeps two writers off the same output.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import h5py
import numpy as np

from mmckd.hdf5_safety import check_self_contained

FORMAT = "mmckd-features"
FORMAT_VERSION = 1
MODALITIES = ("text", "audio", "vision")
SPLITS_VALID = ("valid", "dev")

_STR = h5py.string_dtype(encoding="utf-8")
_CLIP_STR_FIELDS = ("id", "status", "error", "split", "transcript", "transcript_source", "media")


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


def _column(values, n: int, dtype, fill, name: str) -> np.ndarray:
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


# --------------------------------------------------------------------------- writing


def _safe_part_name(clip_id: str) -> str:
    return hashlib.sha1(clip_id.encode()).hexdigest() + ".h5"


def _write_strings(group: h5py.Group, name: str, values: list[str]) -> None:
    group.create_dataset(name, data=np.array(values, dtype=object), dtype=_STR)


def _write_clips(h5: h5py.File, clips: list[Clip], dims: dict[str, int]) -> None:
    """Write clips in the concatenated layout (used for parts and the final file alike)."""
    g = h5.create_group("clips")
    for name in _CLIP_STR_FIELDS:
        _write_strings(g, name, [getattr(c, name) or "" for c in clips])
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

        def cat(attr, dtype, width=None):
            parts = [getattr(s, attr) for s in live]
            if not parts:
                shape = (0, width) if width is not None else (0,)
                return np.zeros(shape, dtype)
            return np.concatenate(parts).astype(dtype, copy=False)

        chunk_rows = max(1, min(int(offsets[-1]), max(1, 2**18 // max(dim, 1))))
        mg.create_dataset(
            "features", data=cat("features", np.float32, dim), chunks=(chunk_rows, dim) if offsets[-1] else None
        )
        mg.create_dataset("timestamps", data=cat("timestamps", np.float64))
        mg.create_dataset("mask", data=cat("mask", bool))
        mg.create_dataset("confidence", data=cat("confidence", np.float32))
        mg.create_dataset("offsets", data=offsets)
        mg.create_dataset("present", data=np.array(present, bool))
        _write_strings(mg, "missing_reason", [c.missing_reason.get(m, "") if s is None else "" for s, c in zip(seqs, clips)])
        if m == "text":
            tokens = [t for s in live for t in (s.tokens or [""] * s.frames)]
            _write_strings(mg, "tokens", tokens)


def _write_attrs(h5: h5py.File, config: dict, provenance: dict) -> None:
    h5.attrs["format"] = FORMAT
    h5.attrs["format_version"] = FORMAT_VERSION
    h5.attrs["config_json"] = json.dumps(config, sort_keys=True)
    h5.attrs["config_hash"] = config_hash(config)
    h5.attrs["provenance_json"] = json.dumps(provenance, sort_keys=True)
    h5.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _atomic_h5(path: Path):
    """Context manager: an h5py.File written at path.tmp, fsynced and renamed to path on success."""

    class _Ctx:
        def __enter__(self):
            self.tmp = path.with_name(path.name + ".tmp")
            self.h5 = h5py.File(self.tmp, "w")
            return self.h5

        def __exit__(self, exc_type, exc, tb):
            self.h5.close()
            if exc_type is not None:
                self.tmp.unlink(missing_ok=True)
                return False
            with open(self.tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(self.tmp, path)
            return False

    return _Ctx()


class FeatureFileWriter:
    """Appends clips to a feature file, crash-safely and resumably (see module docstring).

    ``done_ids`` tells which clips are already stored (final file and parts); ``add`` stores one
    finished clip; ``finalize`` merges everything into the final file.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        config: dict,
        dims: dict[str, int],
        provenance: dict | None = None,
        overwrite: bool = False,
        flush_clips: int = 64,
        flush_seconds: float = 10.0,
    ) -> None:
        self.path = Path(path)
        self.flush_clips, self.flush_seconds = flush_clips, flush_seconds
        self._buffer: list[Clip] = []
        self._buffer_since = 0.0
        self.config = config
        self.hash = config_hash(config)
        self.dims = {m: int(dims[m]) for m in MODALITIES}
        self.provenance = provenance or {}
        self.parts_dir = self.path.with_name(self.path.name + ".parts")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_CREAT | os.O_RDWR)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise FeatureFileError(f"{self.path}: another mmckd process is writing this file") from None
        if overwrite:
            self.path.unlink(missing_ok=True)
            shutil.rmtree(self.parts_dir, ignore_errors=True)
        self._check_existing()
        self.parts_dir.mkdir(exist_ok=True)
        (self.parts_dir / "config.json").write_text(json.dumps({"config": config, "config_hash": self.hash}))
        self._final_ids = set(FeatureFile(self.path).ids) if self.path.exists() else set()
        self._part_ids = self._scan_parts()

    def _check_existing(self) -> None:
        found = None
        if self.path.exists():
            found = FeatureFile(self.path).config_hash
        elif (self.parts_dir / "config.json").exists():
            found = json.loads((self.parts_dir / "config.json").read_text())["config_hash"]
        if found is not None and found != self.hash:
            self.close()
            raise ConfigMismatchError(
                f"{self.path}: holds features made with another configuration (hash {found}, now {self.hash}); "
                "use another output file or --overwrite"
            )

    def _scan_parts(self) -> dict[str, Path]:
        ids = {}
        for p in sorted(self.parts_dir.glob("*.h5")):
            try:
                with h5py.File(p, "r") as h5:
                    ids.update((cid, p) for cid in _strings(h5["clips/id"]))
            except Exception:  # a part cut short by a crash before its rename cannot exist; be safe anyway
                p.unlink(missing_ok=True)
        for p in self.parts_dir.glob("*.tmp"):
            p.unlink(missing_ok=True)
        return ids

    def done_ids(self) -> set[str]:
        return self._final_ids | set(self._part_ids) | {c.id for c in self._buffer}

    @property
    def pending_parts(self) -> int:
        return len(self._part_ids) + len(self._buffer)

    def add(self, clip: Clip) -> None:
        """Store a finished clip. Clips are buffered and written as one part every ``flush_clips`` clips or
        ``flush_seconds`` seconds, whichever comes first, so a crash loses at most that much work."""
        if clip.status not in ("ok", "failed"):
            raise ValueError(f"status must be ok or failed, got {clip.status!r}")
        if not self._buffer:
            self._buffer_since = time.monotonic()
        self._buffer.append(clip)
        if len(self._buffer) >= self.flush_clips or time.monotonic() - self._buffer_since >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write the buffered clips as one part (under a temporary name, then renamed)."""
        if not self._buffer:
            return
        part = self.parts_dir / _safe_part_name(self._buffer[0].id)
        with _atomic_h5(part) as h5:
            _write_clips(h5, self._buffer, self.dims)
        self._part_ids.update((c.id, part) for c in self._buffer)
        self._buffer = []

    def finalize(self) -> int:
        """Merge the final file and all parts into a new final file. Returns the number of clips."""
        self.flush()
        if not self._part_ids and self.path.exists():
            self._cleanup_parts()
            return len(self._final_ids)
        clips: dict[str, Clip] = {}
        if self.path.exists():
            clips.update((c.id, c) for c in FeatureFile(self.path).iter_clips())
        for p in sorted(set(self._part_ids.values())):
            clips.update((c.id, c) for c in FeatureFile(p).iter_clips())
        ordered = [clips[k] for k in sorted(clips)]
        with _atomic_h5(self.path) as h5:
            _write_attrs(h5, self.config, self.provenance)
            _write_clips(h5, ordered, self.dims)
        self._final_ids = set(clips)
        self._part_ids = {}
        self._cleanup_parts()
        return len(ordered)

    def _cleanup_parts(self) -> None:
        shutil.rmtree(self.parts_dir, ignore_errors=True)

    def close(self) -> None:
        """Write any buffered clips (also when the run is interrupted) and release the lock."""
        if self._lock_fd is not None and self._buffer and self.parts_dir.exists():
            self.flush()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_feature_file(path, clips: Iterable[Clip], config: dict, dims: dict[str, int], provenance=None) -> int:
    """Write a complete feature file in one go (importers, tests). Replaces any existing file."""
    path = Path(path)
    ordered = sorted(clips, key=lambda c: c.id)
    ids = [c.id for c in ordered]
    if len(set(ids)) != len(ids):
        raise FeatureFileError(f"{path}: duplicate clip ids")
    with _atomic_h5(path) as h5:
        _write_attrs(h5, config, provenance or {})
        _write_clips(h5, ordered, {m: int(dims[m]) for m in MODALITIES})
    return len(ordered)


# --------------------------------------------------------------------------- reading


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


def _strings(ds) -> list[str]:
    return [s.decode() if isinstance(s, bytes) else str(s) for s in ds[()]]


class FeatureFile:
    """Read access to a feature file. Cheap to open; arrays are read on demand and cached."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FeatureFileError(f"{self.path}: no such file")
        try:
            with h5py.File(self.path, "r") as h5:
                check_self_contained(h5, FeatureFileError)  # no external/virtual storage or links: before any read
                self._attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in h5.attrs.items()}
                is_part = "format" not in self._attrs and "clips" in h5
                if not is_part and self._attrs.get("format") != FORMAT:
                    raise FeatureFileError(f"{self.path}: not an mmckd feature file (no format={FORMAT} attribute)")
                if not is_part and int(self._attrs.get("format_version", -1)) > FORMAT_VERSION:
                    raise FeatureFileError(
                        f"{self.path}: format version {self._attrs['format_version']} is newer than this mmckd reads "
                        f"({FORMAT_VERSION})"
                    )
                self.dims = {m: int(h5[m].attrs["dim"]) for m in MODALITIES}
                self._clip_columns = {name: _strings(h5["clips"][name]) for name in _CLIP_STR_FIELDS}
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
                    missing_reason=_strings(g["missing_reason"]),
                )
        return self._cache[name]

    def tokens(self) -> list[str]:
        with h5py.File(self.path, "r") as h5:
            return _strings(h5["text/tokens"])

    def iter_clips(self) -> Iterator[Clip]:
        arrays = {m: self.modality(m) for m in MODALITIES}
        tokens = self.tokens()
        for i, cid in enumerate(self.ids):
            seqs = {}
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
                **seqs,
            )

    def summary(self) -> dict:
        """The `mmckd info --json` document."""
        vision_mask = None
        clips = []
        for i, cid in enumerate(self.ids):
            mods = {}
            for m in MODALITIES:
                if not self.present[m][i]:
                    mods[m] = None
                    continue
                entry = {"frames": int(self._lengths[m][i])}
                if m == "vision":
                    if vision_mask is None:
                        vision_mask = self.modality("vision")
                    rows = vision_mask.mask[vision_mask.clip_rows(i)]
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


def clip_to_dict(clip: Clip) -> dict:
    """A JSON-able view of a clip without its arrays (for logs and tests)."""
    d = dataclasses.asdict(clip)
    for m in MODALITIES:
        d[m] = None if clip.sequence(m) is None else {"frames": clip.sequence(m).frames}
    return d
