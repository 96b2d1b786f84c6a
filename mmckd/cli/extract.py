"""`mmckd extract`: media folder (and/or labels file) in, one feature file out."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mmckd.cli.config_options import config_file_option, config_options, given_overrides
from mmckd.cli.segment_options import segment_options
from mmckd.config_fields import ConfigError, merge_dicts, read_config_file
from mmckd.extract.config import ExtractConfig
from mmckd.extract.executors import EXECUTORS, ExecutorError, LocalExecutor, RayExecutor
from mmckd.extract.labels import LabelsError
from mmckd.extract.pipeline import ExtractError
from mmckd.extract.pipeline import extract as run_extract
from mmckd.feature_file import FeatureFileError


@click.command()
@click.argument("folder", required=False, type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Feature file.")
@click.option("--labels", type=click.Path(path_type=Path), help="label.csv (id,text,label,mode or MMSA layout).")
@click.option(
    "--workers",
    default=None,
    type=click.IntRange(1),
    help="Worker processes (local) or actors (ray) [local: 1; ray: as the cluster's CPUs or GPUs allow].",
)
@click.option(
    "--executor",
    type=click.Choice(EXECUTORS),
    default="local",
    show_default=True,
    help="Where clips are extracted: local processes or a Ray cluster (needs mmckd[ray]).",
)
@click.option("--ray-address", default=None, help='Ray cluster to join ("auto" or HOST:PORT) [start a local one].')
@click.option(
    "--ray-cpus-per-worker",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="CPUs each Ray actor reserves (also its torch and ffmpeg threads).",
)
@click.option(
    "--ray-gpus-per-worker",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="GPUs each Ray actor reserves; > 0 runs the text model on CUDA.",
)
@click.option("--overwrite", is_flag=True, help="Replace an output made with another configuration.")
@click.option("--retry-failed", is_flag=True, help="Extract the clips stored as failed again.")
@click.option(
    "--media-timeout",
    default=None,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds an ffprobe/ffmpeg call may go without progress before it is stopped and the clip "
    "fails [600, or MMCKD_MEDIA_TIMEOUT].",
)
@click.option(
    "--clip-timeout",
    default=None,
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds a local worker may take per clip; past it the worker is stopped, the clip tried once "
    "more, then stored failed [no limit].",
)
@config_file_option(
    "Extractor settings: a JSON file (an ExtractConfig dict, or a model's bundle.json to extract as it was "
    "trained) or a feature file (.h5) to extract as it was made; options given here win."
)
@config_options(ExtractConfig)
@click.option("--progress/--no-progress", default=True, help="Progress bar on stderr.")
@click.option(
    "--segments",
    is_flag=True,
    help="Cut FOLDER (a long media file, or a folder of them) into utterance clips VIDEO_START_END "
    "(Whisper segments; voice activity or windows without speech) and extract those; --labels then "
    "gives labels by time range: video_id,start,end,label,mode.",
)
@segment_options
@click.option(
    "--clips-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="With --segments: where the utterance clips and their labels.csv go [OUTPUT.segments/].",
)
def extract(
    folder,
    output,
    labels,
    workers,
    executor,
    ray_address,
    ray_cpus_per_worker,
    ray_gpus_per_worker,
    overwrite,
    retry_failed,
    media_timeout,
    clip_timeout,
    config_file,
    progress,
    segments,
    window,
    max_segment,
    clips_dir,
    **options,
):
    """Extract text, audio and vision features of every clip in FOLDER into one HDF5 file.

    Resumable: run the same command again after a crash and it continues where it stopped.
    With --executor ray the clips run on Ray actors; this process still writes the file.
    """
    try:
        config = ExtractConfig().merged(
            merge_dicts(_config_file_overrides(config_file), given_overrides(ExtractConfig, options))
        )
    except ConfigError as e:
        click.echo(f"mmckd extract: error: {e}", err=True)
        sys.exit(2)
    if folder is not None and folder.is_file() and not segments:
        click.echo(
            f"mmckd extract: error: {folder}: a file, not a folder (give its folder, or --segments to cut a "
            "long file into utterance clips)",
            err=True,
        )
        sys.exit(2)
    if segments:  # a thin layer: cut utterance clips, then the ordinary pipeline below extracts them
        from mmckd.extract.pipeline import find_media
        from mmckd.segments import prepare_segments

        if folder is None:
            click.echo("mmckd extract: error: --segments needs a media file or a folder of them", err=True)
            sys.exit(2)
        try:
            media = [folder] if folder.is_file() else find_media(folder)
            folder, labels = prepare_segments(
                media, output, labels=labels, config=config, window=window, max_segment=max_segment, clips_dir=clips_dir
            )
        except (ExtractError, LabelsError) as e:
            click.echo(f"mmckd extract: error: {e}", err=True)
            sys.exit(2)
    try:
        if executor == "ray":
            if clip_timeout is not None:
                raise ExtractError("--clip-timeout applies to local workers (Ray tasks: use Ray's own limits)")
            runner = RayExecutor(
                workers=workers,
                address=ray_address,
                cpus_per_worker=ray_cpus_per_worker,
                gpus_per_worker=ray_gpus_per_worker,
                media_timeout=media_timeout,
            )
        else:
            if ray_address is not None or ray_gpus_per_worker > 0:
                raise ExtractError("--ray-address and --ray-gpus-per-worker need --executor ray")
            runner = LocalExecutor(workers or 1, media_timeout=media_timeout, clip_timeout=clip_timeout)
        s = run_extract(
            folder,
            output,
            labels=labels,
            config=config,
            overwrite=overwrite,
            progress=progress,
            executor=runner,
            retry_failed=retry_failed,
        )
    except (ExtractError, ExecutorError, LabelsError, FeatureFileError) as e:
        click.echo(f"mmckd extract: error: {e}", err=True)
        sys.exit(2)
    click.echo(
        f"{s.output}: {s.total} clips ({s.skipped} already stored, {s.extracted} extracted now, "
        f"{s.failed} failed) in {s.seconds:.1f} s"
    )
    if s.labels_changes:
        click.echo(f"labels applied to stored clips: {s.labels_changes}")
    if s.failures_stored:
        click.echo(failure_report(s.failures_stored, s.output))


def failure_report(failures: list[tuple[str, str]], output: Path, shown: int = 20) -> str:
    """The failed clips of a file, one a line (at most shown), and how to extract them again."""
    lines = [f"{len(failures)} failed clip(s) in {output}:"]
    lines += [f"  {cid}: {reason}" for cid, reason in failures[:shown]]
    if len(failures) > shown:
        lines.append(f"  ... and {len(failures) - shown} more (mmckd info {output})")
    lines.append("to extract them again, run the same command with --retry-failed")
    return "\n".join(lines)


def _config_file_overrides(path: Path | None) -> dict:
    """The extractor settings of --config: a feature file's stored configuration, or a JSON file's."""
    if path is None:
        return {}
    if path.suffix.lower() in (".h5", ".hdf5"):
        from mmckd.feature_file import FeatureFile

        try:
            stored = FeatureFile(path).config
        except FeatureFileError as e:
            raise ConfigError(str(e)) from None
        if stored.get("source") in ("mmsa", "csd"):
            raise ConfigError(
                f"{path}: features imported from {stored['source']}, which mmckd cannot compute from media"
            )
        return ExtractConfig.overrides_in(stored, str(path))
    return ExtractConfig.overrides_in(read_config_file(path), str(path))
