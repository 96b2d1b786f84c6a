"""`mmckd predict`: clips in, sentiment scores out, whatever modalities each clip has."""

from __future__ import annotations

import csv
import json
import logging
import sys
from pathlib import Path

import click

from mmckd.cli.segment_options import segment_options
from mmckd.predict import PredictError, expand_inputs, load_for

log = logging.getLogger(__name__)

CSV_FIELDS = (
    "clip",
    "score",
    "polarity",
    "label7",
    "network",
    "modalities",
    "transcript_source",
    "transcript",
    "extract_seconds",
    "inference_seconds",
    "error",
)
SEGMENT_CSV_FIELDS = (
    "clip",
    "segment",
    "start",
    "end",
    "transcript",
    "score",
    "polarity",
    "label7",
    "network",
    "modalities",
    "transcript_source",
    "segmentation",
    "extract_seconds",
    "inference_seconds",
    "error",
)


def _segment_line(r) -> str:
    span = f"{r.start:7.2f} -{r.end:7.2f} s"
    text = f'"{r.transcript}"' if r.transcript else "(no transcript)"
    if not r.ok:
        return f"  {span}  error: {r.error}"
    return f"  {span}  {r.score:+.2f} {r.polarity:<8} {r.network:<3}  {text}"


def _timeline_path(timeline: Path, clip: Path, several: bool) -> Path:
    return timeline.with_name(f"{timeline.stem}-{clip.stem}{timeline.suffix or '.png'}") if several else timeline


def _line(r) -> str:
    if not r.ok:
        return f"{r.clip}: error: {r.error}"
    mods = "+".join(r.modalities)
    missing = "; ".join(f"{m}: {why}" for m, why in r.missing.items())
    text = f'"{r.transcript}" ({r.transcript_source})' if r.transcript else "none"
    return (
        f"{r.clip}\n"
        f"  score {r.score:+.2f}  {r.polarity}, {r.label7}\n"
        f"  used  {mods} (network {r.network})" + (f"; missing {missing}" if missing else "") + "\n"
        f"  transcript {text}\n"
        f"  time  {r.seconds:.2f} s (extract {r.extract_seconds:.2f} s, inference {r.inference_seconds * 1000:.1f} ms)"
    )


@click.command()
@click.argument("inputs", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--model",
    "model_path",
    type=click.Path(path_type=Path),
    help='Run or bundle folder, or "default" (the embedded model) [latest run in runs/, else "default"].',
)
@click.option("--text", help="Transcript to use (instead of a sidecar file or ASR).")
@click.option(
    "--asr/--no-asr",
    default=None,
    help="Transcribe clips without a transcript (--text or sidecar) with offline Whisper [the model's setting].",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One JSON object per clip (JSON Lines) on stdout: clip, score, polarity, label7, network, modalities, "
    "missing, transcript, transcript_source, extract_seconds, inference_seconds, seconds, error.",
)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="Also write a CSV table.")
@click.option(
    "--segments",
    is_flag=True,
    help="Score each utterance of a long file: one row per segment with start, end (s), transcript, score, "
    "polarity, network (Whisper segments; voice activity or fixed windows without speech).",
)
@segment_options
@click.option(
    "--timeline",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --segments: draw the scores over time with transcript snippets into this PNG "
    "(several inputs: FILE-CLIP.png each).",
)
@click.option("--about", is_flag=True, help="Print what the model was trained on, its networks and metrics; exit.")
def predict(inputs, model_path, text, asr, as_json, output, segments, window, max_segment, timeline, about):
    """Predict the sentiment score in [-3, 3] of each clip (files or folders of media).

    Each clip is answered by the network for the modalities it really has: text (from --text, a sidecar
    CLIP.txt/.srt/.vtt, or --asr), audio (an audio track), vision (a face found). Exit status 1 when a
    clip failed (the others are still predicted), 2 when prediction cannot start.
    """
    if about:
        from mmckd.model_card import describe, render
        from mmckd.predict import resolve_model

        try:
            folder, _ = resolve_model(model_path)
            doc = describe(folder)
        except (PredictError, ValueError) as e:
            click.echo(f"mmckd predict: error: {e}", err=True)
            sys.exit(2)
        click.echo(json.dumps(doc, indent=2) if as_json else render(doc))
        return
    if not inputs:
        click.echo("mmckd predict: error: give one or more media files or folders (or --about)", err=True)
        sys.exit(2)
    if timeline and not segments:
        click.echo("mmckd predict: error: --timeline draws segments: add --segments", err=True)
        sys.exit(2)
    if segments and text is not None:
        click.echo(
            "mmckd predict: error: --text gives one transcript for a whole clip; with --segments the words "
            "come from ASR or an .srt/.vtt sidecar",
            err=True,
        )
        sys.exit(2)
    files = expand_inputs(inputs)
    if not files:
        click.echo("mmckd predict: error: no media files in the given inputs", err=True)
        sys.exit(2)
    try:  # the model and extraction models load while the first file is already being transcribed
        predictor, seconds = load_for(files, model_path, asr=asr, text=text, segments=segments)
    except PredictError as e:
        click.echo(f"mmckd predict: error: {e}", err=True)
        sys.exit(2)
    log.info("model %s and extraction models loaded in %.1f s", predictor.path, seconds)
    if segments:
        _predict_segments(predictor, files, as_json, output, window, max_segment, timeline)
        return
    results = []
    for r in predictor.predict_many(files, text=text):
        results.append(r)
        click.echo(json.dumps(r.to_dict()) if as_json else _line(r))
        if not r.ok and not as_json:
            click.echo(f"mmckd predict: {r.error if r.error.startswith(r.clip) else f'{r.clip}: {r.error}'}", err=True)
    if output:
        _write_csv(output, CSV_FIELDS, results)
    failed = sum(not r.ok for r in results)
    if failed:
        click.echo(f"mmckd predict: {failed} of {len(results)} clips failed", err=True)
        sys.exit(1)


def _predict_segments(predictor, files, as_json, output, window, max_segment, timeline) -> None:
    from mmckd.predict import SegmentResult

    rows: list[SegmentResult] = []
    failed_files = 0
    for path in files:
        try:
            found = []
            if not as_json:
                click.echo(f"{path}")
            for r in predictor.predict_segments(path, window=window, max_segment=max_segment):
                found.append(r)
                click.echo(json.dumps(r.to_dict()) if as_json else _segment_line(r))
        except PredictError as e:
            failed_files += 1
            click.echo(f"mmckd predict: error: {e}", err=True)
            continue
        rows += found
        if timeline and found:
            from mmckd.timeline import draw_timeline

            target = _timeline_path(timeline, path, len(files) > 1)
            try:
                log.info("timeline written to %s", draw_timeline(found, target, title=str(path)))
            except (OSError, ValueError) as e:
                failed_files += 1
                click.echo(
                    f"mmckd predict: error: {target}: cannot write the timeline ({' '.join(str(e).split())})", err=True
                )
    if output:
        _write_csv(output, SEGMENT_CSV_FIELDS, rows)
    failed = sum(not r.ok for r in rows)
    if failed or failed_files:
        parts = [f"{failed} of {len(rows)} segments got no score"] if rows else []
        if failed_files:
            parts.append(f"{failed_files} of {len(files)} files failed")
        click.echo("mmckd predict: " + "; ".join(parts), err=True)
        sys.exit(1)


def _write_csv(output: Path, fields, results) -> None:
    """The --output table, written atomically: a full disk is one line naming it (exit 2), the previous file
    intact and no temporary file left."""
    from mmckd.atomic_write import WriteError, atomic_output

    try:
        with atomic_output(output) as tmp:
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=fields)
                w.writeheader()
                for r in results:
                    d = r.to_dict()
                    d["modalities"] = "+".join(r.modalities)
                    w.writerow({k: d.get(k) for k in fields})
    except WriteError as e:
        click.echo(f"mmckd predict: error: {e}", err=True)
        sys.exit(2)
