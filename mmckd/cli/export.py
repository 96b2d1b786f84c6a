"""`mmckd export`: an mmckd feature file out to other tools' layouts (MMSA pickles)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mmckd.feature_file import FeatureFileError


@click.group()
def export() -> None:
    """Export a feature file to other tools' layouts (MMSA)."""


@export.command()
@click.argument("features", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="MMSA .pkl file.")
@click.option("--text-len", type=click.IntRange(1), help="Padded text frames [longest clip].")
@click.option("--audio-len", type=click.IntRange(1), help="Padded audio frames [longest clip].")
@click.option("--vision-len", type=click.IntRange(1), help="Padded vision frames [longest clip].")
@click.option(
    "--bert-vocab",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="BERT vocab.txt: write the wordpieces' ids into text_bert (else 0).",
)
def mmsa(features: Path, output: Path, text_len, audio_len, vision_len, bert_vocab) -> None:
    """Write FEATURES in MMSA's pickle layout (train/valid/test, padded arrays, lengths, labels).

    Clips with a split and a label are written; only valid frames (mask True), padded with zeros.
    """
    from mmckd.interop.errors import InteropError
    from mmckd.interop.mmsa import export_mmsa

    try:
        summary = export_mmsa(
            features, output, {"text": text_len, "audio": audio_len, "vision": vision_len}, bert_vocab=bert_vocab
        )
    except (InteropError, FeatureFileError) as e:
        click.echo(f"mmckd export mmsa: error: {e}", err=True)
        sys.exit(2)
    click.echo(summary.line())  # notes went to stderr as warnings
