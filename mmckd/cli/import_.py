"""`mmckd import`: other tools' feature files (MMSA pickles, CMU-MultimodalSDK .csd) into an mmckd feature file."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import click

from mmckd.feature_file import FeatureFileError


def _fail(command: str, message: str) -> NoReturn:
    click.echo(f"mmckd import {command}: error: {message}", err=True)
    sys.exit(2)


def _report(summary) -> None:
    click.echo(summary.line())  # notes went to stderr as warnings


@click.group(name="import")
def import_() -> None:
    """Import features made by other tools (MMSA pickles, CMU-MultimodalSDK .csd) into a feature file.

    The result works with `mmckd info` and `mmckd fit` like an extracted file.
    """


@import_.command()
@click.argument("pickle_file", metavar="FILE.pkl", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Feature file.")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists (else an existing file is refused).")
@click.option(
    "--bert-vocab",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="BERT vocab.txt: turn text_bert token ids into wordpieces.",
)
def mmsa(pickle_file: Path, output: Path, overwrite: bool, bert_vocab: Path | None) -> None:
    """Import MMSA's aligned_50.pkl / unaligned_50.pkl (train/valid/test splits, lengths -> masks).

    The pickle is read with an allow-list unpickler: only numpy arrays, lists, dicts, strings and
    numbers; a pickle that would call anything else is refused.
    """
    from mmckd.interop.errors import InteropError
    from mmckd.interop.mmsa import import_mmsa

    try:
        summary = import_mmsa(pickle_file, output, bert_vocab=bert_vocab, overwrite=overwrite)
    except (InteropError, FeatureFileError) as e:
        _fail("mmsa", str(e))
    _report(summary)


@import_.command()
@click.option(
    "--text",
    "text",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Text feature sequence (word vectors), .csd.",
)
@click.option(
    "--audio",
    "audio",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Audio feature sequence (e.g. COVAREP), .csd.",
)
@click.option(
    "--vision",
    "vision",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Vision feature sequence (e.g. FACET), .csd.",
)
@click.option(
    "--labels",
    "labels",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Sentiment labels per segment (e.g. Opinion Segment Labels), .csd.",
)
@click.option(
    "--folds",
    required=True,
    metavar="standard-mosi|standard-mosei|FILE",
    help="Train/valid/test folds: standard-mosi (from CMU-MOSI's label.csv), standard-mosei "
    "($MMCKD_MOSEI_FOLDS), or a .json {train,valid,test} / .csv (id or video_id, mode) file.",
)
@click.option(
    "--words", type=click.Path(dir_okay=False, path_type=Path), help="Timestamped words .csd: segment transcripts."
)
@click.option(
    "--label-column", default=0, show_default=True, type=click.IntRange(0), help="Labels column holding the sentiment."
)
@click.option("--intersect", is_flag=True, help="Keep only videos every file has (default: refuse a mismatch).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Feature file.")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists (else an existing file is refused).")
def csd(text, audio, vision, labels, folds, words, label_column, intersect, output, overwrite) -> None:  # fmt: skip
    """Import CMU-MultimodalSDK computational sequences: one clip per labelled segment."""
    from mmckd.interop.csd import import_csd
    from mmckd.interop.errors import InteropError

    try:
        summary = import_csd(text, audio, vision, labels, output, folds, words=words, label_column=label_column,
                             intersect=intersect, overwrite=overwrite)  # fmt: skip
    except (InteropError, FeatureFileError) as e:
        _fail("csd", str(e))
    _report(summary)
