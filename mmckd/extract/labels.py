"""Label files: the MMSA layout (video_id,clip_id,text,label,mode) and the flat layout (id,text,label,mode)."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

MMSA_COLUMNS = ("video_id", "clip_id", "text", "label", "mode")
FLAT_COLUMNS = ("id", "text", "label", "mode")
LABEL_RANGE = (-3.0, 3.0)
SPLITS = ("train", "valid", "dev", "test")  # in any case; "valid" and "dev" are both the validation split


def normalise_split(value: str | None) -> str | None:
    """ "Train" -> "train", "DEV" -> "dev", "" -> None; ValueError for a name that is not a split."""
    if value is None or not value.strip():
        return None
    name = value.strip().lower()
    if name not in SPLITS:
        raise ValueError(f"unknown split {value.strip()!r} (use {', '.join(SPLITS)}, in any case)")
    return name


class LabelsError(ValueError):
    """The labels file cannot be used; the message names the file (and row) and the reason."""


@dataclass(frozen=True)
class LabelRow:
    id: str
    text: str | None
    label: float | None
    split: str | None
    video_id: str | None = None
    clip_id: str | None = None
    line: int | None = field(default=None, compare=False)  # row's line in the labels file

    def media_keys(self) -> tuple[str, ...]:
        """Relative media paths (without extension) that belong to this row."""
        keys = [self.id]
        if self.video_id is not None and self.clip_id is not None:
            keys.append(f"{self.video_id}/{self.clip_id}")
        return tuple(keys)


def read_labels(path: str | Path) -> list[LabelRow]:
    """Read a labels CSV in either layout; LabelsError (naming file and row) on a missing column, a label that
    is not a number in [-3, 3], a split name other than train/valid/dev/test (any case) or a duplicate id."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = tuple(c.strip() for c in (reader.fieldnames or ()))
            reader.fieldnames = list(columns)
            if set(MMSA_COLUMNS) <= set(columns):
                layout = "mmsa"
            elif set(FLAT_COLUMNS) <= set(columns):
                layout = "flat"
            else:
                need_flat = sorted(set(FLAT_COLUMNS) - set(columns))
                raise LabelsError(
                    f"{path}: missing column(s) {', '.join(need_flat)} (need id,text,label,mode or "
                    f"video_id,clip_id,text,label,mode; found {','.join(columns) or 'nothing'})"
                )
            rows: list[LabelRow] = []
            seen: set[str] = set()
            for lineno, rec in enumerate(reader, start=2):
                rows.append(_parse_row(path, lineno, rec, layout))
                if rows[-1].id in seen:
                    raise LabelsError(f"{path}:{lineno}: duplicate clip id {rows[-1].id!r}")
                seen.add(rows[-1].id)
    except FileNotFoundError:
        raise LabelsError(f"{path}: no such labels file") from None
    except UnicodeDecodeError as e:
        raise LabelsError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
        raise LabelsError(f"{path}: malformed CSV ({e})") from None
    if not rows:
        raise LabelsError(f"{path}: no rows")
    return rows


def _parse_row(path: Path, lineno: int, rec: dict, layout: str) -> LabelRow:
    def get(name: str) -> str:
        value = rec.get(name)
        return "" if value is None else value.strip()

    video_id: str | None
    clip_id: str | None
    if layout == "mmsa":
        video_id, clip_id = get("video_id"), get("clip_id")
        if not video_id or not clip_id:
            raise LabelsError(f"{path}:{lineno}: empty video_id or clip_id")
        clip = f"{video_id}_{clip_id}"
    else:
        video_id = clip_id = None
        clip = get("id")
        if not clip:
            raise LabelsError(f"{path}:{lineno}: empty id")
    raw = get("label")
    label: float | None = None
    if raw != "":
        try:
            label = float(raw)
        except ValueError:
            raise LabelsError(f"{path}:{lineno}: label {raw!r} is not a number") from None
        if not math.isfinite(label):
            raise LabelsError(f"{path}:{lineno}: label {raw!r} is not finite")
        if not LABEL_RANGE[0] <= label <= LABEL_RANGE[1]:
            raise LabelsError(f"{path}:{lineno}: label {raw!r} is outside [{LABEL_RANGE[0]:g}, {LABEL_RANGE[1]:g}]")
    text = get("text") or None
    try:
        split = normalise_split(get("mode"))
    except ValueError as e:
        raise LabelsError(f"{path}:{lineno}: {e}") from None
    return LabelRow(clip, text, label, split, video_id, clip_id, lineno)
