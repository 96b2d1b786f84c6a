"""Modality subsets and inference routing: which network answers a clip with a given set of modalities.

A subset is named by letters in the order l (text), a (audio), v (vision): "lav" is the teacher,
"la", "lv", "av" the bimodal students and "l", "a", "v" the unimodal ones.
"""

from __future__ import annotations

from collections.abc import Iterable

from mmckd.modalities import MODALITIES

LETTERS = {"text": "l", "audio": "a", "vision": "v"}
SUBSETS = ("lav", "la", "lv", "av", "l", "a", "v")
TEACHER = "lav"


class NoUsableModalityError(ValueError):
    """A clip has no modality that any trained network can read."""


def subset_name(modalities: Iterable[str]) -> str:
    """The subset name of a set of modality names: {"vision", "text"} -> "lv"."""
    given = set(modalities)
    unknown = given - set(MODALITIES)
    if unknown:
        raise ValueError(f"unknown modalities {sorted(unknown)}; expected some of {MODALITIES}")
    return "".join(LETTERS[m] for m in MODALITIES if m in given)


def subset_modalities(subset: str) -> tuple[str, ...]:
    """The modality names of a subset: "lv" -> ("text", "vision")."""
    if subset not in SUBSETS:
        raise ValueError(f"unknown subset {subset!r}; expected one of {SUBSETS}")
    return tuple(m for m in MODALITIES if LETTERS[m] in subset)


def route(available: Iterable[str], trained: Iterable[str]) -> str:
    """The network that answers a clip whose usable modalities are ``available``.

    It is the trained network whose subset equals the available modalities; when that network was
    not trained (its modalities were absent from the training data), the trained network with the
    largest subset of the available modalities answers instead (ties: order of SUBSETS).
    Raises NoUsableModalityError when nothing is available or no trained network can read it.
    """
    have = subset_name(available)
    trained = tuple(trained)
    if not have:
        raise NoUsableModalityError("the clip has no usable modality (no text, no audio, no face in the video)")
    if have in trained:
        return have
    candidates = [s for s in SUBSETS if s in trained and set(s) <= set(have)]
    if not candidates:
        raise NoUsableModalityError(
            f"the clip has only {', '.join(subset_modalities(have))} and this model has no network for it "
            f"(trained networks: {', '.join(trained) or 'none'})"
        )
    return max(candidates, key=lambda s: (len(s), -SUBSETS.index(s)))
