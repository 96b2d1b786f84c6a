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
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from mmckd.extract.clip_extractor import ClipJob
from mmckd.extract.config import ExtractConfig
from mmckd.extract.executors import Executor, ExecutorError, make_executor
from mmckd.extract.labels import LabelRow, read_labels
from mmckd.extract.media import MEDIA_EXTENSIONS, ffmpeg_version
from mmckd.feature_file import Clip, FeatureFileWriter

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
    failures: list[tuple[str, str]] = field(default_factory=list)


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


def plan_jobs(media: list[Path], root: Path | None, labels: list[LabelRow] | None) -> list[ClipJob]:
    """Match media files to label rows. Unmatched media are unlabelled clips; rows without media are text-only."""
    keyed: dict[str, Path] = {}
    stems: dict[str, list[Path]] = {}
    for p in media:
        rel = p.relative_to(root).with_suffix("").as_posix() if root else p.stem
        keyed.setdefault(rel, p)
        stems.setdefault(p.stem, []).append(p)
    jobs: list[ClipJob] = []
    used: set[Path] = set()
    for row in labels or []:
        match = None
        for key in row.media_keys():
            match = keyed.get(key) or (stems[key][0] if len(stems.get(key, ())) == 1 else None)
            if match is not None:
                break
        if match is not None:
            used.add(match)
        jobs.append(ClipJob(row.id, str(match) if match else None, row.text, row.label, row.split))
    taken = {j.id for j in jobs}
    for p in media:
        if p in used:
            continue
        cid = p.stem if len(stems[p.stem]) == 1 else (p.relative_to(root).with_suffix("").as_posix() if root else str(p))
        if cid in taken:
            cid = p.relative_to(root).as_posix() if root else str(p)
        taken.add(cid)
        jobs.append(ClipJob(cid, str(p)))
    return jobs


def text_dim(config: ExtractConfig) -> int:
    """Hidden size of the text model, read from its config.json (no need to load transformers here)."""
    from mmckd.extract.text import resolve_text_model

    path = Path(resolve_text_model(config.text.model)) / "config.json"
    try:
        return int(json.loads(path.read_text())["hidden_size"])
    except (OSError, ValueError, KeyError) as e:
        raise ExtractError(f"{path}: cannot read the text model's hidden size ({e})") from None


def feature_dims(config: ExtractConfig) -> dict[str, int]:
    from mmckd.extract.vision import DESCRIPTOR_NAMES

    return {"text": text_dim(config), "audio": config.audio.dim, "vision": len(DESCRIPTOR_NAMES)}


def provenance(config: ExtractConfig) -> dict:
    from mmckd.extract.text import resolve_text_model

    versions = {}
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
) -> ExtractSummary:
    """Extract every clip of folder (and/or labels) into output. Resumes; never redoes stored clips.

    executor: "local" (workers processes on this machine; None means 1), "ray" (Ray actors; workers
    None means as many as the cluster's CPUs allow), or an executor object such as
    ``RayExecutor(address="auto", gpus_per_worker=1)`` (its own workers setting then applies).
    Whichever runs the clips, this process writes the file, so the result is the same.
    """
    config = config or ExtractConfig()
    runner = resolve_executor(executor, workers)
    if folder is None and labels is None and not files:
        raise ExtractError("nothing to extract: give a folder of media and/or --labels")
    root = Path(folder) if folder is not None else None
    media = find_media(root) if root is not None else []
    media += [Path(f) for f in files or ()]
    rows = read_labels(labels) if labels is not None else None
    jobs = plan_jobs(media, root, rows)
    if not jobs:
        raise ExtractError(f"{folder}: no media files ({', '.join(MEDIA_EXTENSIONS)}) found")
    started = time.perf_counter()
    summary = ExtractSummary(Path(output), total=len(jobs))
    with FeatureFileWriter(output, config.to_dict(), feature_dims(config), provenance(config), overwrite) as writer:
        done = writer.done_ids()
        todo = [j for j in jobs if j.id not in done]
        summary.skipped = len(jobs) - len(todo)
        if summary.skipped:
            log.info("%s: %d of %d clips already stored, %d to do", output, summary.skipped, len(jobs), len(todo))
        if not todo and not writer.pending_parts:
            log.info("%s: complete, nothing to do", output)
            summary.seconds = time.perf_counter() - started
            return summary
        bar = _progress(len(todo), progress)
        try:
            with closing(runner.run(_batches(todo), config)) as results:
                for clips in results:
                    for clip in clips:
                        writer.add(clip)
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
    log.info(
        "%s: %d clips stored (%d extracted now, %d failed) in %.1f s",
        output, n, summary.extracted, summary.failed, summary.seconds,
    )  # fmt: skip
    return summary


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total, unit="clip", desc="extract", file=sys.stderr, disable=not enabled, dynamic_ncols=True,
        smoothing=0.1, mininterval=0.5,
    )  # fmt: skip


def config_json(config: ExtractConfig) -> str:
    return json.dumps(config.to_dict(), sort_keys=True, indent=2)
