"""`mmckd extract`: media folder (and/or labels file) in, one feature file out."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mmckd.extract.config import AudioConfig, ExtractConfig, TextConfig, TranscriptConfig, VisionConfig
from mmckd.extract.labels import LabelsError
from mmckd.extract.pipeline import ExtractError, extract as run_extract
from mmckd.feature_file import FeatureFileError

_V, _A, _T = VisionConfig(), AudioConfig(), TextConfig()


@click.command()
@click.argument("folder", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Feature file.")
@click.option("--labels", type=click.Path(path_type=Path), help="label.csv (id,text,label,mode or MMSA layout).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1), help="Worker processes.")
@click.option("--overwrite", is_flag=True, help="Replace an output made with another configuration.")
@click.option("--fps", default=_V.fps, show_default=True, type=click.FloatRange(min=0.1), help="Vision frame rate.")
@click.option("--max-side", default=_V.max_side, show_default=True, type=click.IntRange(64), help="Frame long side.")
@click.option("--text-model", default=_T.model, show_default=True, help='"default" or a BERT dir or cached hub name.')
@click.option("--max-tokens", default=_T.max_tokens, show_default=True, type=click.IntRange(2))
@click.option("--audio-frame-rate", default=_A.frame_rate, show_default=True, type=click.FloatRange(min=1))
@click.option("--asr/--no-asr", default=False, show_default=True, help="Transcribe speech when no transcript is given.")
@click.option("--asr-model", default="default", show_default=True, help='"default" (Whisper tiny.en) or a model dir.')
@click.option("--progress/--no-progress", default=True, help="Progress bar on stderr.")
def extract(folder, output, labels, workers, overwrite, fps, max_side, text_model, max_tokens, audio_frame_rate, asr,
            asr_model, progress):
    """Extract text, audio and vision features of every clip in FOLDER into one HDF5 file.

    Resumable: run the same command again after a crash and it continues where it stopped.
    """
    config = ExtractConfig(
        text=TextConfig(model=text_model, max_tokens=max_tokens),
        audio=AudioConfig(frame_rate=audio_frame_rate),
        vision=VisionConfig(fps=fps, max_side=max_side),
        transcript=TranscriptConfig(asr=asr, asr_model=asr_model),
    )
    try:
        s = run_extract(folder, output, labels=labels, config=config, workers=workers, overwrite=overwrite,
                        progress=progress)
    except (ExtractError, LabelsError, FeatureFileError) as e:
        click.echo(f"mmckd extract: error: {e}", err=True)
        sys.exit(2)
    click.echo(
        f"{s.output}: {s.total} clips ({s.skipped} already stored, {s.extracted} extracted now, "
        f"{s.failed} failed) in {s.seconds:.1f} s"
    )
