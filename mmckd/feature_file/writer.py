"""Writing feature files: ``FeatureFileWriter`` (crash-safe, resumable) and ``write_feature_file`` (in one go).

Crash safety: the writer never edits the final file in place. Finished clips are written in small
batches (a few seconds of work at most) to part files in ``<file>.parts/`` (each written under a
temporary name, then renamed: ``mmckd.atomic_write.atomic_output``), and ``finalize`` merges the
existing final file (if any) with the parts into a new file written the same way, renamed over
``<file>``. A kill at any moment leaves either the old final file or the new one, plus parts that a
rerun picks up. A lock file keeps two writers off the same output.

Parts are named by a counter (``00000001-<random>.h5``), so no part can overwrite another, and the merge
reads them in the order they were written: a clip stored again (``--retry-failed``, a re-extraction)
replaces its earlier record.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import math
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import h5py

from mmckd.feature_file.layout import new_h5_file, strings, write_attrs, write_clips
from mmckd.feature_file.merge import merge_feature_files
from mmckd.feature_file.reader import FeatureFile
from mmckd.feature_file.schema import MODALITIES, Clip, ConfigMismatchError, FeatureFileError, config_hash
from mmckd.feature_file.storable import failed_stand_in, storable_text, text_problem, unstorable_reason

_PART_NAME = re.compile(r"^(\d{8})-[0-9a-f]+\.h5$")


def _part_order(path: Path) -> tuple[int, str]:
    """Parts sort in the order they were written (counter names); parts of older versions come first."""
    m = _PART_NAME.match(path.name)
    return (int(m.group(1)) if m else 0, path.name)


def _storable_alone(clip: Clip, dims: dict[str, int]) -> Clip:
    """clip if HDF5 takes it (tried in an in-memory file), else its failed stand-in with HDF5's reason."""
    try:
        with h5py.File(f"probe-{uuid.uuid4().hex}.h5", "w", driver="core", backing_store=False) as h5:
            write_clips(h5, [clip], dims)
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
    cols = {name: strings(g[name]) for name in ("id", "status", "split", "transcript", "transcript_source")}
    labels = g["label"][()]
    return {
        cid: StoredClip(cols["status"][i], None if math.isnan(labels[i]) else float(labels[i]),
                        cols["split"][i] or None, cols["transcript"][i] or None, cols["transcript_source"][i] or None)
        for i, cid in enumerate(cols["id"])
    }  # fmt: skip


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
        self._lock_fd: int | None = os.open(self.path.with_name(self.path.name + ".lock"), os.O_CREAT | os.O_RDWR)
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
        for p in self.parts_dir.glob("*.tmp"):  # a part cut short before its rename (hidden names included)
            p.unlink(missing_ok=True)
        ids: dict[str, Path] = {}
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
        if any(text_problem("", t) for t in (clip.media, clip.error, *clip.missing_reason.values())):
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
            with new_h5_file(part) as h5:
                write_clips(h5, self._buffer, self.dims)
        except (ValueError, TypeError, UnicodeError, FeatureFileError):
            # something the checks in add() did not foresee: each clip HDF5 refuses becomes a failed one
            self._buffer = [_storable_alone(c, self.dims) for c in self._buffer]
            with new_h5_file(part) as h5:
                write_clips(h5, self._buffer, self.dims)
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

    def __enter__(self) -> FeatureFileWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def write_feature_file(
    path: str | os.PathLike,
    clips: Iterable[Clip],
    config: dict,
    dims: dict[str, int],
    provenance: dict | None = None,
) -> int:
    """Write a complete feature file in one go (importers, tests). Replaces any existing file."""
    path = Path(path)
    ordered = sorted(clips, key=lambda c: c.id)
    ids = [c.id for c in ordered]
    if len(set(ids)) != len(ids):
        raise FeatureFileError(f"{path}: duplicate clip ids")
    with new_h5_file(path) as h5:
        write_attrs(h5, config, provenance or {})
        write_clips(h5, ordered, {m: int(dims[m]) for m in MODALITIES})
    return len(ordered)
