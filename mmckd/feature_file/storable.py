"""What a feature file can hold, and what is stored instead of a clip it cannot.

Storing never stops a run: a clip that HDF5 cannot hold (an id or text that is not valid UTF-8, a NUL
character, features of the wrong width) is stored as a failed clip whose error says why.
"""

from __future__ import annotations

import math

import numpy as np

from mmckd.feature_file.schema import MODALITIES, Clip


def storable_text(text: str) -> str:
    """text as HDF5 can hold it: bytes of a non-UTF-8 file name (surrogate escapes) as \\xNN, NUL as \\x00."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text.replace("\x00", "\\x00")


def text_problem(what: str, text: str | None) -> str | None:
    """Why HDF5 cannot hold text (not valid UTF-8, a NUL character), None when it can."""
    if not text:
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return f"{what} is not valid UTF-8 ({storable_text(text)[:80]!r})"
    if "\x00" in text:
        return f"{what} contains a NUL character"
    return None


def unstorable_reason(clip: Clip, dims: dict[str, int]) -> str | None:
    """Why the file cannot hold clip as it is (None when it can)."""
    fields = [
        ("clip id", clip.id),
        ("media path", clip.media),
        ("transcript", clip.transcript),
        ("transcript source", clip.transcript_source),
        ("error", clip.error),
        ("split", clip.split),
    ]
    fields += [(f"{m} missing reason", r) for m, r in clip.missing_reason.items()]
    for what, text in fields:
        problem = text_problem(what, text)
        if problem:
            return problem
    if clip.label is not None and not isinstance(clip.label, (int, float, np.floating, np.integer)):
        return f"label {clip.label!r} is not a number"
    for m in MODALITIES:
        s = clip.sequence(m)
        if s is None:
            continue
        if s.features.shape[1] != dims[m]:
            return f"{m} features have dim {s.features.shape[1]}, the file has {dims[m]}"
        for t in s.tokens or ():
            problem = text_problem("a text token", t)
            if problem:
                return problem
    return None


def failed_stand_in(clip: Clip, reason: str) -> Clip:
    """The failed clip stored in place of one the file cannot hold (every string made storable)."""

    def safe(text: str | None) -> str | None:
        return None if text is None else storable_text(text)

    label = clip.label if isinstance(clip.label, (int, float)) and math.isfinite(clip.label) else None
    return Clip(
        id=storable_text(clip.id),
        status="failed",
        error=f"cannot be stored: {reason}",
        split=safe(clip.split),
        label=label,
        media=safe(clip.media),
        duration=clip.duration,
    )
