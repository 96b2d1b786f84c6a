"""`mmckd predict`: clips in, sentiment scores out, whatever modalities each clip has."""

from __future__ import annotations

import csv
import json
import logging
import sys
from pathlib import Path

import click

from mmckd.predict import PredictError, expand_inputs, load

log = logging.getLogger(__name__)

CSV_FIELDS = ("clip", "score", "polarity", "label7", "network", "modalities", "transcript_source", "transcript",
              "extract_seconds", "inference_seconds", "error")


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
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--model", "model_path", type=click.Path(path_type=Path), help="Run folder (default: latest in runs/).")
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
def predict(inputs, model_path, text, asr, as_json, output):
    """Predict the sentiment score in [-3, 3] of each clip (files or folders of media).

    Each clip is answered by the network for the modalities it really has: text (from --text, a sidecar
    CLIP.txt/.srt/.vtt, or --asr), audio (an audio track), vision (a face found). Exit status 1 when a
    clip failed (the others are still predicted), 2 when prediction cannot start.
    """
    try:
        predictor = load(model_path, asr=asr)
    except PredictError as e:
        click.echo(f"mmckd predict: error: {e}", err=True)
        sys.exit(2)
    files = expand_inputs(inputs)
    if not files:
        click.echo("mmckd predict: error: no media files in the given inputs", err=True)
        sys.exit(2)
    try:
        seconds = predictor.load_extractors()
    except PredictError as e:
        click.echo(f"mmckd predict: error: {e}", err=True)
        sys.exit(2)
    log.info("model %s and extraction models loaded (extraction models %.1f s)", predictor.path, seconds)
    results = []
    for r in predictor.predict_many(files, text=text):
        results.append(r)
        click.echo(json.dumps(r.to_dict()) if as_json else _line(r))
        if not r.ok and not as_json:
            click.echo(f"mmckd predict: {r.clip}: {r.error}", err=True)
    if output:
        with open(output, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
            w.writeheader()
            for r in results:
                d = r.to_dict()
                d["modalities"] = "+".join(r.modalities)
                w.writerow({k: d.get(k) for k in CSV_FIELDS})
    failed = sum(not r.ok for r in results)
    if failed:
        click.echo(f"mmckd predict: {failed} of {len(results)} clips failed", err=True)
        sys.exit(1)
