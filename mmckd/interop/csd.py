"""CMU-MultimodalSDK computational sequences (``.csd``) to an mmckd feature file.

A ``.csd`` is HDF5: one root group named after the sequence, ``/<root>/data/<entry>/features`` (frames, dim)
and ``/<root>/data/<entry>/intervals`` (frames, 2) start/end seconds, plus ``/<root>/metadata`` (JSON strings).
An entry is a whole video (``video_id``) or, after the SDK's alignment to labels, one segment
(``video_id[k]``).

Clips are the segments of the labels sequence: a video-level labels entry gives one segment per row
(``video[k]`` = row k, its interval and its sentiment); a segment-level entry is one segment (the
sentiment is the mean of its rows). For each segment and modality, a segment-level entry of the same
id is taken whole; otherwise the rows of the video's entry whose interval overlaps the segment's are
taken (timestamps become seconds from the segment start). A modality without any row in a segment is
absent for that clip. NaN/inf values are replaced by 0 and counted.

Every file must know the same videos: a video that one file has and another lacks is refused with an
error naming both files (``intersect=True`` keeps only the videos every file has, with a warning).
Folds come from ``mmckd.interop.folds``; a segment whose video is in no fold is kept without a split
(``mmckd fit`` does not train on it) and counted in a note.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import h5py
import numpy as np

import mmckd
from mmckd.feature_file import MODALITIES, Clip, Sequence
from mmckd.hdf5_safety import check_self_contained
from mmckd.interop.errors import InteropError
from mmckd.interop.folds import Folds, load_folds
from mmckd.interop.output import output_for_import
from mmckd.interop.summary import TransferSummary

log = logging.getLogger(__name__)

_SEGMENT = re.compile(r"^(?P<video>.+)\[(?P<k>\d+)\]$")
SILENCE_WORDS = ("sp", "")


def video_of(entry_id: str) -> str:
    """The video id of an entry id: "abc[3]" -> "abc", "abc" -> "abc"."""
    m = _SEGMENT.match(entry_id)
    return m.group("video") if m else entry_id


def is_segment(entry_id: str) -> bool:
    return _SEGMENT.match(entry_id) is not None


class ComputationalSequence:
    """An open ``.csd`` file: its root name, metadata, entry ids; ``entry(id)`` reads one entry's arrays."""

    def __init__(self, path: str | os.PathLike, role: str) -> None:
        self.path, self.role = Path(path), role
        if not self.path.is_file():
            raise InteropError(f"{self.path}: no such file ({role} sequence)")
        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError as e:
            raise InteropError(f"{self.path}: not an HDF5 computational sequence ({e})") from None
        try:
            check_self_contained(self._h5, InteropError)  # before any data is read
        except InteropError:
            self.close()
            raise
        roots = [k for k in self._h5 if isinstance(self._h5[k], h5py.Group) and "data" in self._h5[k]]
        if len(roots) != 1:
            found = ", ".join(roots or list(self._h5.keys()))
            self.close()
            raise InteropError(
                f"{self.path}: a computational sequence has one root group holding data/; found "
                f"{len(roots)} ({found or 'none'})"
            )
        self.root = roots[0]
        self._data = self._h5[self.root]["data"]
        self.ids = sorted(self._data.keys())
        if not self.ids:
            self.close()
            raise InteropError(f"{self.path}: {self.root}/data holds no entry")
        self.metadata = self._read_metadata()

    def _read_metadata(self) -> dict:
        out: dict = {}
        group = self._h5[self.root].get("metadata")
        if group is None:
            return out
        out.update({k: _text(v) for k, v in group.attrs.items()})
        if isinstance(group, h5py.Group):
            for k, ds in group.items():
                if isinstance(ds, h5py.Dataset):
                    value = ds[()]
                    if isinstance(value, np.ndarray) and value.size == 1:
                        value = value.reshape(-1)[0]
                    out[k] = _text(value)
        return out

    def has(self, entry_id: str) -> bool:
        return entry_id in self._data

    @property
    def videos(self) -> set[str]:
        return {video_of(i) for i in self.ids}

    def entry(self, entry_id: str, words: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(features (n, dim) float32 - or (n,) str when words - , intervals (n, 2) float64) of one entry."""
        where = f"{self.path}: {self.root}/data/{entry_id}"
        g = self._data.get(entry_id)
        if not isinstance(g, h5py.Group) or "features" not in g or "intervals" not in g:
            raise InteropError(f"{where}: needs 'features' and 'intervals' datasets")
        feats, iv = g["features"][()], g["intervals"][()]
        if iv.ndim != 2 or iv.shape[1] != 2 or iv.dtype.kind not in "fiu":
            raise InteropError(f"{where}: intervals have shape {iv.shape} ({iv.dtype}); expected (frames, 2) seconds")
        if feats.ndim == 1:
            feats = feats[:, None]
        if feats.ndim != 2 or len(feats) != len(iv):
            raise InteropError(
                f"{where}: features have shape {feats.shape} for {len(iv)} intervals; expected ({len(iv)}, dim)"
            )
        iv = iv.astype(np.float64)
        if np.any(iv[:, 1] < iv[:, 0]) or not np.isfinite(iv).all():
            raise InteropError(f"{where}: an interval ends before it starts or is not finite")
        if words:
            if feats.dtype.kind not in "SUO":
                raise InteropError(f"{where}: a words sequence holds strings, found dtype {feats.dtype}")
            return np.array([_text(w) for w in feats[:, 0]], dtype=object), iv
        if feats.dtype.kind not in "fiub":
            hint = (
                " (these are words: pass this file as --words and a word-vector sequence as --text)"
                if (feats.dtype.kind in "SUO")
                else ""
            )
            raise InteropError(f"{where}: features have dtype {feats.dtype}; expected numbers{hint}")
        return feats.astype(np.float32, copy=False), iv

    def dim(self) -> int:
        """Feature dim of the sequence (from its first entry; every entry is checked when read)."""
        g = self._data[self.ids[0]]
        shape: tuple[int, ...] = g["features"].shape if "features" in g else ()
        return 1 if len(shape) == 1 else int(shape[1]) if len(shape) == 2 else 0

    def close(self) -> None:
        try:
            self._h5.close()
        except Exception:  # already closed
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        return json.dumps(value.tolist())
    return str(value)


def _check_videos(files: list[ComputationalSequence], intersect: bool) -> tuple[set[str], list[str]]:
    """The videos to import; refuses a video one file has and another lacks (unless intersect)."""
    notes = []
    common = set.intersection(*(f.videos for f in files))
    for a in files:
        extra = sorted(a.videos - common)
        if not extra:
            continue
        lacking = next(b for b in files if extra[0] not in b.videos)
        if not intersect:
            raise InteropError(
                f"{a.path}: video {extra[0]!r} is unknown in {lacking.path} ({lacking.role}); {len(extra)} of "
                f"{len(a.videos)} videos of this {a.role} sequence are missing elsewhere (pass --intersect to keep "
                "only videos every file has)"
            )
        notes.append(f"{a.path.name}: {len(extra)} videos missing in another file were left out (first {extra[0]!r})")
    if not common:
        raise InteropError("the .csd files have no video in common")
    return common, notes


def _segments(labels: ComputationalSequence, videos: set[str], column: int) -> list[tuple]:
    """(segment id, video id, start, end, sentiment) for every labelled segment of the chosen videos."""
    out = []
    for eid in labels.ids:
        vid = video_of(eid)
        if vid not in videos:
            continue
        feats, iv = labels.entry(eid)
        if feats.shape[1] <= column:
            raise InteropError(
                f"{labels.path}: {labels.root}/data/{eid}: labels have {feats.shape[1]} columns; --label-column is "
                f"{column}"
            )
        if is_segment(eid):
            if len(iv):
                out.append((eid, vid, float(iv[:, 0].min()), float(iv[:, 1].max()), float(np.mean(feats[:, column]))))
            continue
        for k in range(len(iv)):
            out.append((f"{vid}[{k}]", vid, float(iv[k, 0]), float(iv[k, 1]), float(feats[k, column])))
    return out


def _overlap(iv: np.ndarray, start: float, end: float) -> np.ndarray:
    if end > start:
        return (iv[:, 0] < end) & (iv[:, 1] > start)
    return (iv[:, 0] <= start) & (iv[:, 1] >= start)  # a zero-length segment takes the rows that contain it


def import_csd(
    text: str | os.PathLike,
    audio: str | os.PathLike,
    vision: str | os.PathLike,
    labels: str | os.PathLike,
    output: str | os.PathLike,
    folds: str | Folds,
    words: str | os.PathLike | None = None,
    label_column: int = 0,
    intersect: bool = False,
    overwrite: bool = False,
) -> TransferSummary:
    """Write the mmckd feature file ``output`` from four (or five, with ``words``) ``.csd`` files.

    folds: a fold spec for ``load_folds`` ("standard-mosi", "standard-mosei", a .json/.csv file) or
    Folds. label_column: which labels column is the sentiment (CMU-MOSEI's labels hold sentiment then
    six emotions: column 0). overwrite: replace an existing ``output`` (else refused); ``output`` is locked
    against ``mmckd extract`` and other imports meanwhile. Raises InteropError naming the file and the reason.
    """
    output = Path(output)
    with output_for_import(output, overwrite) as write:
        return _import_csd(text, audio, vision, labels, output, folds, words, label_column, intersect, write)


def _import_csd(text, audio, vision, labels, output: Path, folds, words, label_column, intersect, write):
    fold_map = folds if isinstance(folds, Folds) else load_folds(folds)
    roles = {"text": text, "audio": audio, "vision": vision}
    opened: list[ComputationalSequence] = []
    try:
        seqs = {}
        for role, p in (*roles.items(), ("labels", labels), *((("words", words),) if words is not None else ())):
            seqs[role] = ComputationalSequence(p, role)
            opened.append(seqs[role])
        videos, notes = _check_videos(opened, intersect)
        segments = _segments(seqs["labels"], videos, label_column)
        if not segments:
            raise InteropError(f"{seqs['labels'].path}: no labelled segment")
        seen: set[str] = set()
        for seg in segments:
            if seg[0] in seen:
                raise InteropError(f"{seqs['labels'].path}: segment {seg[0]!r} is labelled twice")
            seen.add(seg[0])
        dims = {m: seqs[m].dim() for m in MODALITIES}
        by_video: dict[str, list] = defaultdict(list)
        for seg in segments:
            by_video[seg[1]].append(seg)
        clips: list[Clip] = []
        nonfinite = {m: 0 for m in MODALITIES}
        absent = {m: 0 for m in MODALITIES}
        no_fold = 0
        for vid in sorted(by_video):
            cache: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}

            def rows_of(role: str, seg_id: str, start: float, end: float, as_words: bool = False, vid=vid, cache=cache):
                f = seqs[role]
                key = seg_id if f.has(seg_id) else vid
                if not f.has(key):
                    return None, None
                if (role, key) not in cache:
                    cache[(role, key)] = f.entry(key, words=as_words)
                feats, iv = cache[(role, key)]
                if key == seg_id:
                    return feats, iv
                sel = _overlap(iv, start, end)
                return feats[sel], iv[sel]

            for seg_id, _, start, end, label in by_video[vid]:
                sequences: dict[str, Any] = {}  # modality -> Sequence or None, Clip's keyword arguments
                reasons: dict[str, str] = {}
                for m in MODALITIES:
                    feats, iv = rows_of(m, seg_id, start, end)
                    if feats is None or len(feats) == 0:
                        sequences[m] = None
                        reasons[m] = f"csd: no {m} frames in this segment"
                        absent[m] += 1
                        continue
                    if feats.shape[1] != dims[m]:
                        raise InteropError(
                            f"{seqs[m].path}: entry of {seg_id} has dim {feats.shape[1]}, the sequence has {dims[m]}"
                        )
                    bad = ~np.isfinite(feats)
                    if bad.any():
                        feats = np.where(bad, 0.0, feats).astype(np.float32)
                        nonfinite[m] += int(bad.sum())
                    ts = np.maximum(iv[:, 0], start) - start
                    sequences[m] = Sequence(feats, timestamps=ts)
                transcript = None
                if words is not None:
                    w, _ = rows_of("words", seg_id, start, end, as_words=True)
                    if w is not None:
                        transcript = " ".join(x for x in w if x.strip() not in SILENCE_WORDS) or None
                split = fold_map.split_of(seg_id, vid)
                no_fold += split is None
                clips.append(
                    Clip(
                        id=seg_id,
                        split=split,
                        label=None if math.isnan(label) else label,
                        transcript=transcript,
                        transcript_source="csd" if transcript else None,
                        duration=end - start if end >= start else None,
                        missing_reason=reasons,
                        **sequences,
                    )
                )
        for m in MODALITIES:
            if nonfinite[m]:
                notes.append(f"{m}: {nonfinite[m]} NaN/inf values replaced by 0")
            if absent[m]:
                notes.append(f"{m}: absent in {absent[m]} segments (no frame overlaps them)")
        if no_fold:
            notes.append(f"{no_fold} segments are in no fold of {fold_map.source}: kept without a split")
        if not any(c.split for c in clips):
            raise InteropError(f"no segment's video is in the folds of {fold_map.source}; check the fold source")
        config = {
            "source": "csd",
            "dims": dims,
            "roots": {role: f.root for role, f in seqs.items()},
            "segments": "labels",
            "label_column": label_column,
            "folds": fold_map.name,
            "nonfinite": "replaced by 0",
        }
        provenance = {
            "tool": "mmckd import csd",
            "mmckd_version": mmckd.__version__,
            "files": {role: str(f.path.resolve()) for role, f in seqs.items()},
            "folds": fold_map.source,
            "metadata": {role: f.metadata for role, f in seqs.items()},
            "imported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "notes": notes,
        }
    finally:
        for f in opened:
            f.close()
    for note in notes:
        log.warning("%s", note)
    write(clips, config, dims, provenance)
    return TransferSummary.of_clips(Path(labels), output, clips, notes)
