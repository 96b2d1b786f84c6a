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

Parts are named by a counter (``00000001-<random>.h5``), so no part can overwrite another, and the merge
reads them in the order they were written: a clip stored again (``--retry-failed``, a re-extraction)
replaces its earlier record. The merge streams: it copies a window of clips at a time from the sources
into preallocated datasets, so its memory does not grow with the size of the file.

Storing never stops a run: a clip that HDF5 cannot hold (an id or text that is not valid UTF-8, a NUL
character, features of the wrong width) is stored as a failed clip whose error says why.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from mmckd.hdf5_safety import check_self_contained
from mmckd.modalities import MODALITIES

FORMAT = "mmckd-features"
FORMAT_VERSION = 1
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


_PART_NAME = re.compile(r"^(\d{8})-[0-9a-f]+\.h5$")


def _part_order(path: Path) -> tuple[int, str]:
    """Parts sort in the order they were written (counter names); parts of older versions come first."""
    m = _PART_NAME.match(path.name)
    return (int(m.group(1)) if m else 0, path.name)


def storable_text(text: str) -> str:
    """text as HDF5 can hold it: bytes of a non-UTF-8 file name (surrogate escapes) as \\xNN, NUL as \\x00."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text.replace("\x00", "\\x00")


def _text_problem(what: str, text: str | None) -> str | None:
    if not text:
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return f"{what} is not valid UTF-8 ({storable_text(text)[:80]!r})"
    if "\x00" in text:
        return f"{what} contains a NUL character"
    return None


def unstorable_reason(clip: Clip, dims: dict[str, int]) -> str | None:
    """Why the file cannot hold clip as it is (None when it can)."""
    fields = [
        ("clip id", clip.id),
        ("media path", clip.media),
        ("transcript", clip.transcript),
        ("transcript source", clip.transcript_source),
        ("error", clip.error),
        ("split", clip.split),
    ]
    fields += [(f"{m} missing reason", r) for m, r in clip.missing_reason.items()]
    for what, text in fields:
        problem = _text_problem(what, text)
        if problem:
            return problem
    if clip.label is not None and not isinstance(clip.label, (int, float, np.floating, np.integer)):
        return f"label {clip.label!r} is not a number"
    for m in MODALITIES:
        s = clip.sequence(m)
        if s is None:
            continue
        if s.features.shape[1] != dims[m]:
            return f"{m} features have dim {s.features.shape[1]}, the file has {dims[m]}"
        for t in s.tokens or ():
            problem = _text_problem("a text token", t)
            if problem:
                return problem
    return None


def failed_stand_in(clip: Clip, reason: str) -> Clip:
    """The failed clip stored in place of one the file cannot hold (every string made storable)."""

    def safe(text):
        return None if text is None else storable_text(text)

    label = clip.label if isinstance(clip.label, (int, float)) and math.isfinite(clip.label) else None
    return Clip(
        id=safe(clip.id),
        status="failed",
        error=f"cannot be stored: {reason}",
        split=safe(clip.split),
        label=label,
        media=safe(clip.media),
        duration=clip.duration,
    )


def _storable_alone(clip: Clip, dims: dict[str, int]) -> Clip:
    """clip if HDF5 takes it (tried in an in-memory file), else its failed stand-in with HDF5's reason."""
    try:
        with h5py.File(f"probe-{uuid.uuid4().hex}.h5", "w", driver="core", backing_store=False) as h5:
            _write_clips(h5, [clip], dims)
    except (ValueError, TypeError, UnicodeError, FeatureFileError) as e:
        return failed_stand_in(clip, " ".join(str(e).split())[:200])
    return clip


@dataclass(frozen=True)
class StoredClip:
    """What the writer knows about a stored clip without reading its arrays."""

    status: str
    label: float | None
    split: str | None
    transcript: str | None
    transcript_source: str | None


def _stored_records(h5: h5py.File) -> dict[str, StoredClip]:
    g = h5["clips"]
    cols = {name: _strings(g[name]) for name in ("id", "status", "split", "transcript", "transcript_source")}
    labels = g["label"][()]
    return {
        cid: StoredClip(cols["status"][i], None if math.isnan(labels[i]) else float(labels[i]),
                        cols["split"][i] or None, cols["transcript"][i] or None, cols["transcript_source"][i] or None)
        for i, cid in enumerate(cols["id"])
    }  # fmt: skip


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

        def cat(attr, dtype, width=None, live=live):
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
        _write_strings(
            mg, "missing_reason", [c.missing_reason.get(m, "") if s is None else "" for s, c in zip(seqs, clips)]
        )
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

    ``done_ids`` tells which clips are already stored (final file and parts), ``stored`` what is known
    of each (status, label, split, transcript); ``add`` stores one finished clip (a later record of the
    same id replaces the earlier one); ``relabel`` changes stored labels and splits; ``finalize``
    merges everything into the final file.
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
        self.stored: dict[str, StoredClip] = {}
        self._final_ids: set[str] = set()
        if self.path.exists():
            FeatureFile(self.path)  # validates the file (format, version) with a clear error
            with h5py.File(self.path, "r") as h5:
                self.stored = _stored_records(h5)
            self._final_ids = set(self.stored)
        self._relabel: dict[str, tuple[float | None, str | None]] = {}
        self._next_part = 1
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

    def _parts(self) -> list[Path]:
        return sorted(self.parts_dir.glob("*.h5"), key=_part_order)

    def _scan_parts(self) -> dict[str, Path]:
        for p in self.parts_dir.glob("*.tmp"):
            p.unlink(missing_ok=True)
        ids = {}
        for p in self._parts():
            try:
                with h5py.File(p, "r") as h5:
                    records = _stored_records(h5)
            except Exception:  # a part cut short by a crash before its rename cannot exist; be safe anyway
                p.unlink(missing_ok=True)
                continue
            ids.update((cid, p) for cid in records)
            self.stored.update(records)  # a later part's record of a clip replaces an earlier one
            self._next_part = max(self._next_part, _part_order(p)[0] + 1)
        return ids

    def done_ids(self) -> set[str]:
        return set(self.stored)

    def failed_ids(self) -> set[str]:
        """Clips whose latest stored record is failed."""
        return {cid for cid, r in self.stored.items() if r.status == "failed"}

    @property
    def pending_parts(self) -> int:
        return len(self._part_ids) + len(self._buffer) + len(self._relabel)

    def add(self, clip: Clip) -> Clip:
        """Store a finished clip; returns what is stored (a failed stand-in when the file cannot hold clip).

        Clips are buffered and written as one part every ``flush_clips`` clips or ``flush_seconds``
        seconds, whichever comes first, so a crash loses at most that much work. A clip stored before is
        replaced by this record when the file is finalized."""
        if clip.status not in ("ok", "failed"):
            raise ValueError(f"status must be ok or failed, got {clip.status!r}")
        # the media path and messages are for people: stored with odd bytes escaped; data must be storable
        if any(_text_problem("", t) for t in (clip.media, clip.error, *clip.missing_reason.values())):
            clip = dataclasses.replace(
                clip, media=clip.media and storable_text(clip.media), error=clip.error and storable_text(clip.error),
                missing_reason={m: storable_text(r) for m, r in clip.missing_reason.items()},
            )  # fmt: skip
        problem = unstorable_reason(clip, self.dims)
        if problem is not None:
            clip = failed_stand_in(clip, problem)
        if not self._buffer:
            self._buffer_since = time.monotonic()
        self._buffer.append(clip)
        self.stored[clip.id] = StoredClip(clip.status, clip.label, clip.split, clip.transcript, clip.transcript_source)
        self._relabel.pop(clip.id, None)
        if len(self._buffer) >= self.flush_clips or time.monotonic() - self._buffer_since >= self.flush_seconds:
            self.flush()
        return clip

    def relabel(self, changes: dict[str, tuple[float | None, str | None]]) -> None:
        """Set the label and split of stored clips (applied by ``finalize``)."""
        for cid, (label, split) in changes.items():
            if cid not in self.stored:
                raise KeyError(cid)
            self._relabel[cid] = (label, split)
            r = self.stored[cid]
            self.stored[cid] = dataclasses.replace(r, label=label, split=split)

    def flush(self) -> None:
        """Write the buffered clips as one new part (under a temporary name, then renamed)."""
        if not self._buffer:
            return
        part = self.parts_dir / f"{self._next_part:08d}-{uuid.uuid4().hex[:8]}.h5"
        self._buffer.sort(key=lambda c: c.id)  # sorted like the final file: the merge reads it in one pass
        try:
            with _atomic_h5(part) as h5:
                _write_clips(h5, self._buffer, self.dims)
        except (ValueError, TypeError, UnicodeError, FeatureFileError):
            # something the checks in add() did not foresee: each clip HDF5 refuses becomes a failed one
            self._buffer = [_storable_alone(c, self.dims) for c in self._buffer]
            with _atomic_h5(part) as h5:
                _write_clips(h5, self._buffer, self.dims)
        self._next_part += 1
        self._part_ids.update((c.id, part) for c in self._buffer)
        self._buffer = []

    def finalize(self) -> int:
        """Merge the final file and all parts into a new final file. Returns the number of clips."""
        self.flush()
        if not self._part_ids and not self._relabel and self.path.exists():
            self._cleanup_parts()
            return len(self._final_ids)
        sources = ([self.path] if self.path.exists() else []) + self._parts()
        n = merge_feature_files(sources, self.path, self.config, self.provenance, self.dims, self._relabel)
        self._final_ids = set(self.stored)
        self._part_ids = {}
        self._relabel = {}
        self._cleanup_parts()
        return n

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


# --------------------------------------------------------------------------- streaming merge

MERGE_WINDOW = 64  # clips read at once from one source
MERGE_BLOCK = 64  # clips written at once
MERGE_CACHE = 8  # sources with a window in memory at once (one window each: sources are read in id order)


class _MergeSource:
    """An open feature file or part: ids and offsets in memory, arrays read a window of clips at a time."""

    def __init__(self, path: Path, dims: dict[str, int]) -> None:
        self.path = path
        self.h5 = h5py.File(path, "r")
        self.ids = _strings(self.h5["clips/id"])
        self.offsets = {m: self.h5[m]["offsets"][()] for m in MODALITIES}
        for m in MODALITIES:
            if int(self.h5[m].attrs["dim"]) != dims[m]:
                raise FeatureFileError(f"{path}: {m} dim {int(self.h5[m].attrs['dim'])}, expected {dims[m]}")

    def window(self, a: int) -> dict:
        b = min(len(self.ids), a + MERGE_WINDOW)
        g = self.h5["clips"]
        w: dict = {"start": a, "label": g["label"][a:b], "duration": g["duration"][a:b]}
        for name in _CLIP_STR_FIELDS:
            w[name] = _decoded(g[name][a:b])
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
                "missing_reason": _decoded(mg["missing_reason"][a:b]),
            }
            if m == "text":
                w[m]["tokens"] = _decoded(mg["tokens"][r0:r1])
        return w

    def close(self) -> None:
        self.h5.close()


def merge_feature_files(
    sources: list[Path],
    path: Path,
    config: dict,
    provenance: dict,
    dims: dict[str, int],
    relabel: dict[str, tuple[float | None, str | None]] | None = None,
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
        with _atomic_h5(path) as h5:
            _write_attrs(h5, config, provenance)
            out = _create_merged(h5, n, dims, out_offsets)
            cache: OrderedDict[int, dict] = OrderedDict()  # source -> its current window

            def window(s: int, i: int) -> dict:
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


def _create_merged(h5: h5py.File, n: int, dims: dict[str, int], offsets: dict[str, np.ndarray]) -> dict:
    g = h5.create_group("clips")
    out = {"clips": g}
    for name in _CLIP_STR_FIELDS:
        g.create_dataset(name, shape=(n,), dtype=_STR)
    g.create_dataset("label", shape=(n,), dtype=np.float32)
    g.create_dataset("duration", shape=(n,), dtype=np.float64)
    for m in MODALITIES:
        dim, rows = dims[m], int(offsets[m][-1])
        mg = h5.create_group(m)
        mg.attrs["dim"] = dim
        chunk_rows = max(1, min(rows, max(1, 2**18 // max(dim, 1))))
        mg.create_dataset("features", shape=(rows, dim), dtype=np.float32, chunks=(chunk_rows, dim) if rows else None)
        mg.create_dataset("timestamps", shape=(rows,), dtype=np.float64)
        mg.create_dataset("mask", shape=(rows,), dtype=bool)
        mg.create_dataset("confidence", shape=(rows,), dtype=np.float32)
        mg.create_dataset("offsets", data=offsets[m])
        mg.create_dataset("present", shape=(n,), dtype=bool)
        mg.create_dataset("missing_reason", shape=(n,), dtype=_STR)
        if m == "text":
            mg.create_dataset("tokens", shape=(rows,), dtype=_STR)
        out[m] = mg
    return out


def _write_block(out: dict, p0: int, p1: int, picks: list, offsets: dict, relabel: dict) -> None:
    g = out["clips"]
    ids = [w["id"][j] for w, j in picks]
    for name in _CLIP_STR_FIELDS:
        values = [w[name][j] for w, j in picks]
        if name == "split":
            values = [relabel[c][1] or "" if c in relabel else v for c, v in zip(ids, values)]
        g[name][p0:p1] = np.array(values, dtype=object)
    labels = np.array([w["label"][j] for w, j in picks], np.float32)
    for k, c in enumerate(ids):
        if c in relabel:
            labels[k] = np.nan if relabel[c][0] is None else relabel[c][0]
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


def _decoded(values) -> list[str]:
    return [s.decode() if isinstance(s, bytes) else str(s) for s in values]


def _strings(ds) -> list[str]:
    return _decoded(ds[()])


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
