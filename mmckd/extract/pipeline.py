"""`mmckd extract`: a folder of media (and/or a labels file) in, one feature file out.

Work is split into jobs (one media clip, or a batch of text-only label rows) run by an executor
(`mmckd.extract.executors`): in-process, over local worker processes, or over the actors of a Ray
cluster, each worker loading its models once. Finished clips come back to this process and are handed
to the `FeatureFileWriter`, which stores each one crash-safely as it arrives, so a killed run resumes
where it stopped and a finished file is never redone.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmckd.extract.clip_extractor import ClipJob
from mmckd.extract.config import ExtractConfig
from mmckd.extract.executors import Executor, ExecutorError, make_executor
from mmckd.extract.labels import LabelRow, read_labels
from mmckd.extract.media import MEDIA_EXTENSIONS, ffmpeg_version
from mmckd.feature_file import Clip, FeatureFile, FeatureFileWriter, StoredClip, storable_text

log = logging.getLogger(__name__)

TEXT_BATCH = 32


class ExtractError(Exception):
    """The run cannot start (bad arguments, labels, output); the message says why."""


@dataclass
class ExtractSummary:
    output: Path
    total: int = 0
    skipped: int = 0
    extracted: int = 0
    failed: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)  # clips that failed in this run
    failures_stored: list[tuple[str, str]] = field(default_factory=list)  # every failed clip in the file
    retried: int = 0  # failed clips extracted again (retry_failed)
    labels_changes: str = ""  # what the labels file changed in stored clips, "" when nothing


# ----------------------------------------------------------------------------- discovery


def find_media(folder: str | Path) -> list[Path]:
    """Media files under folder, recursively, sorted; hidden files and folders skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ExtractError(f"{folder}: not a folder")
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and Path(name).suffix.lower() in MEDIA_EXTENSIONS:
                found.append(Path(root) / name)
    return found


def _relative(p: Path, root: Path | None) -> str | None:
    if root is None:
        return None
    try:
        return p.relative_to(root).as_posix()
    except ValueError:  # a file given beside the folder
        return None


def _media_string(p: Path, root: Path | None) -> str:
    """The media path as stored: under root as root was given (``mmckd extract .`` keeps ``./name``)."""
    rel = _relative(p, root)
    return os.path.join(str(root), rel) if rel is not None else str(p)


def plan_jobs(
    media: list[Path], root: Path | None, labels: list[LabelRow] | None, labels_path: str | Path | None = None
) -> list[ClipJob]:
    """Match media files to label rows. Unmatched media are unlabelled clips; rows without media are text-only.

    Ids are unique by construction: a row's id is its own (read_labels refuses duplicates); an unlabelled
    file gets its stem, else its relative path without, else with its extension, whichever is still free
    (bytes of a non-UTF-8 file name written as \\xNN). A row matching two files (a.mp4 and a.wav), or a file
    whose every candidate id is taken, is refused with ExtractError naming both."""
    where = f"{labels_path}" if labels_path is not None else "labels"
    keyed: dict[str, list[Path]] = {}
    stems: dict[str, list[Path]] = {}
    for p in media:
        rel = _relative(p, root)
        key = Path(rel).with_suffix("").as_posix() if rel is not None else p.stem
        keyed.setdefault(key, []).append(p)
        stems.setdefault(p.stem, []).append(p)
    jobs: list[ClipJob] = []
    owner: dict[str, str] = {}  # clip id -> what it belongs to, for messages
    used: set[Path] = set()
    for row in labels or []:
        match = None
        for key in row.media_keys():
            found = keyed.get(key) or (stems[key] if len(stems.get(key, ())) == 1 else [])
            if len(found) > 1:
                raise ExtractError(
                    f"{where}:{row.line or '?'}: row {row.id!r} matches {len(found)} media files, "
                    f"{_media_string(found[0], root)} and {_media_string(found[1], root)}: rename or remove one"
                )
            if found:
                match = found[0]
                break
        if match is not None:
            used.add(match)
        owner[row.id] = f"label row {where}:{row.line or '?'}"
        media_str = _media_string(match, root) if match is not None else None
        jobs.append(ClipJob(row.id, media_str, row.text, row.label, row.split))
    for p in media:
        if p in used:
            continue
        rel = _relative(p, root) or str(p)
        candidates = ([p.stem] if len(stems[p.stem]) == 1 else []) + [Path(rel).with_suffix("").as_posix(), rel]
        candidates = [storable_text(c) for c in candidates]
        cid = next((c for c in candidates if c not in owner), None)
        if cid is None:
            raise ExtractError(
                f"{_media_string(p, root)}: its clip id {candidates[-1]!r} is already the id of "
                f"{owner[candidates[-1]]}; rename one of them"
            )
        owner[cid] = f"media file {_media_string(p, root)}"
        jobs.append(ClipJob(cid, _media_string(p, root)))
    return jobs


def text_dim(config: ExtractConfig) -> int:
    """Hidden size of the text model, read from its config.json (no need to load transformers here)."""
    from mmckd.extract.text_model_files import resolve_text_model

    path = Path(resolve_text_model(config.text.model)) / "config.json"
    try:
        return int(json.loads(path.read_text())["hidden_size"])
    except (OSError, ValueError, KeyError) as e:
        raise ExtractError(f"{path}: cannot read the text model's hidden size ({e})") from None


def feature_dims(config: ExtractConfig) -> dict[str, int]:
    from mmckd.extract.face_descriptors import DESCRIPTOR_NAMES

    return {"text": text_dim(config), "audio": config.audio.dim, "vision": len(DESCRIPTOR_NAMES)}


def provenance(config: ExtractConfig) -> dict:
    from mmckd.extract.text_model_files import resolve_text_model

    versions: dict[str, str | None] = {}
    for pkg in ("mmckd", "torch", "torchaudio", "transformers", "mediapipe", "numpy", "h5py", "faster-whisper"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "source": "mmckd extract",
        "versions": versions,
        "ffmpeg": ffmpeg_version(),
        "python": platform.python_version(),
        "text_model_path": resolve_text_model(config.text.model),
    }


# ----------------------------------------------------------------------------- workers


def _batches(jobs: list[ClipJob]) -> list[list[ClipJob]]:
    """Media clips one per batch; text-only rows TEXT_BATCH at a time (their BERT pass is batched)."""
    out, text_only = [], []
    for job in jobs:
        if job.media is None:
            text_only.append(job)
            if len(text_only) == TEXT_BATCH:
                out.append(text_only)
                text_only = []
        else:
            out.append([job])
    if text_only:
        out.append(text_only)
    return out


def resolve_executor(executor: str | Executor, workers: int | None) -> Executor:
    """The executor object for a name ("local", "ray") or the given object; ExtractError when unusable."""
    try:
        ex = make_executor(executor, workers) if isinstance(executor, str) else executor
        ex.check()
    except ExecutorError as e:
        raise ExtractError(str(e)) from None
    return ex


# ----------------------------------------------------------------------------- the run


def _same_label(a: float | None, b: float | None) -> bool:
    """Equal as the file stores labels (float32)."""
    if a is None or b is None:
        return a is None and b is None
    return bool(np.float32(a) == np.float32(b))


def _labels_text(text: str | None) -> str | None:
    """A label row's text as the stored transcript would hold it (see transcript.find_transcript)."""
    return " ".join(text.split()) if text is not None and text.strip() else None


def labels_changes(jobs: list[ClipJob], stored: dict[str, StoredClip]):
    """What the labels file now says differently about clips already stored.

    Returns (relabel, redo): relabel maps id -> (label, split) for stored clips whose label or split
    changed (applied in place); redo maps id -> why for stored clips whose transcript came from (or now
    comes from) the labels' text and whose text changed (re-extracted: the text features depend on it)."""
    relabel: dict[str, tuple[float | None, str | None]] = {}
    redo: dict[str, str] = {}
    for job in jobs:
        r = stored.get(job.id)
        if r is None:
            continue
        have = r.transcript if r.transcript_source == "labels" else None
        if r.status == "ok" and _labels_text(job.text) != have:
            redo[job.id] = "text changed"
        elif not _same_label(job.label, r.label) or (job.split or None) != (r.split or None):
            relabel[job.id] = (job.label, job.split)
    return relabel, redo


def _describe_changes(relabel: dict, redo: dict, stored: dict[str, StoredClip]) -> str:
    parts = []
    if relabel:
        cid = next(iter(relabel))
        r = stored[cid]
        parts.append(
            f"{len(relabel)} clip(s) get a new label or split (e.g. {cid!r}: label {r.label} -> {relabel[cid][0]}, "
            f"split {r.split} -> {relabel[cid][1]})"
        )
    if redo:
        parts.append(f"{len(redo)} clip(s) are extracted again for a changed text (e.g. {next(iter(redo))!r})")
    return "; ".join(parts)


def extract(
    folder: str | Path | None,
    output: str | Path,
    labels: str | Path | None = None,
    config: ExtractConfig | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    files: Iterable[str | Path] | None = None,
    on_clip: Callable[[Clip], None] | None = None,
    executor: str | Executor = "local",
    retry_failed: bool = False,
) -> ExtractSummary:
    """Extract every clip of folder (and/or labels) into output. Resumes; never redoes stored clips.

    executor: "local" (workers processes on this machine; None means 1), "ray" (Ray actors; workers
    None means as many as the cluster's CPUs allow), or an executor object such as
    ``RayExecutor(address="auto", gpus_per_worker=1)`` (its own workers setting then applies).
    Whichever runs the clips, this process writes the file, so the result is the same.

    On resume the labels file is applied to the stored clips: a changed label or split is updated in
    place, a changed text re-extracts the clip. retry_failed: extract the stored failed clips again.
    """
    config = config or ExtractConfig()
    runner = resolve_executor(executor, workers)
    if folder is None and labels is None and not files:
        raise ExtractError("nothing to extract: give a folder of media and/or --labels")
    root = Path(folder) if folder is not None else None
    media = find_media(root) if root is not None else []
    media += [Path(f) for f in files or ()]
    rows = read_labels(labels) if labels is not None else None
    jobs = plan_jobs(media, root, rows, labels)
    if not jobs:
        raise ExtractError(f"{folder}: no media files ({', '.join(MEDIA_EXTENSIONS)}) found")
    started = time.perf_counter()
    summary = ExtractSummary(Path(output), total=len(jobs))
    with FeatureFileWriter(output, config.to_dict(), feature_dims(config), provenance(config), overwrite) as writer:
        done = writer.done_ids()
        relabel, redo = labels_changes(jobs, writer.stored) if rows is not None else ({}, {})
        if relabel or redo:
            summary.labels_changes = _describe_changes(relabel, redo, writer.stored)
            log.warning("%s: %s changed since the file was made: %s", output, labels, summary.labels_changes)
            writer.relabel(relabel)
        retry = writer.failed_ids() if retry_failed else set()
        todo = [j for j in jobs if j.id not in done or j.id in redo or j.id in retry]
        summary.retried = sum(j.id in retry for j in todo)
        summary.skipped = len(jobs) - len(todo)
        if summary.skipped:
            log.info("%s: %d of %d clips already stored, %d to do", output, summary.skipped, len(jobs), len(todo))
        if not todo and not writer.pending_parts:
            log.info("%s: complete, nothing to do", output)
            summary.seconds = time.perf_counter() - started
            writer.close()
            summary.failures_stored = stored_failures(output)
            return summary
        bar = _progress(len(todo), progress)
        try:
            with closing(runner.run(_batches(todo), config)) as results:
                for clips in results:
                    for clip in clips:
                        clip = writer.add(clip)
                        summary.extracted += 1
                        if clip.status == "failed":
                            summary.failed += 1
                            summary.failures.append((clip.id, clip.error or ""))
                            log.warning("%s: failed: %s", clip.id, clip.error)
                        if on_clip is not None:
                            on_clip(clip)
                    bar.update(len(clips))
        except ExecutorError as e:
            raise ExtractError(f"{output}: {e}") from None
        finally:
            bar.close()
        n = writer.finalize()
    summary.seconds = time.perf_counter() - started
    summary.failures_stored = stored_failures(output)
    log.info(
        "%s: %d clips stored (%d extracted now, %d failed) in %.1f s",
        output, n, summary.extracted, summary.failed, summary.seconds,
    )  # fmt: skip
    return summary


def stored_failures(path: str | Path) -> list[tuple[str, str]]:
    """(id, reason) of every failed clip in a feature file."""
    if not Path(path).exists():
        return []
    ff = FeatureFile(path)
    return [(cid, err or "") for cid, st, err in zip(ff.ids, ff.status, ff.errors) if st == "failed"]


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total, unit="clip", desc="extract", file=sys.stderr, disable=not enabled, dynamic_ncols=True,
        smoothing=0.1, mininterval=0.5,
    )  # fmt: skip


def config_json(config: ExtractConfig) -> str:
    return json.dumps(config.to_dict(), sort_keys=True, indent=2)
