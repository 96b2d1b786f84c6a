"""The --window / --max-segment options that `mmckd predict --segments` and `mmckd extract --segments` share."""

from __future__ import annotations

import click


def segment_options(command):
    """Add --window and --max-segment (see mmckd.segments.plan_segments) to a click command."""
    command = click.option(
        "--max-segment",
        default=20.0,
        show_default=True,
        type=click.FloatRange(min=1.0),
        help="With --segments: longest voice-activity segment (s) before it is cut.",
    )(command)
    return click.option(
        "--window",
        default=5.0,
        show_default=True,
        type=click.FloatRange(min=0.5),
        help="With --segments: window length (s) where there is no speech to segment by.",
    )(command)
