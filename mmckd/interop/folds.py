"""Train/valid/test folds for imports that do not carry their own splits (CMU-MultimodalSDK ``.csd`` files).

A fold source maps video ids (or segment ids) to "train", "valid" or "test":

* ``standard-mosi``: the standard CMU-MOSI folds, read from CMU-MOSI's ``label.csv`` as MMSA distributes
  it (columns ``id,text,label,mode`` with ids ``<video>_<clip>``, or ``video_id,clip_id,...,mode``).
  mmckd ships no copy; it is looked up at ``$MMCKD_MOSI_LABELS``, then ``$MMCKD_SHARED_DATA/mosi/label.csv``,
  then ``../shared/data/mosi/label.csv`` beside a source checkout;
* ``standard-mosei``: the standard CMU-MOSEI folds, which mmckd cannot provide offline: set
  ``$MMCKD_MOSEI_FOLDS`` to a fold file (below) or pass the file itself;
* a JSON file ``{"train": [...], "valid": [...], "test": [...]}`` ("dev" is read as "valid") of video ids
  or segment ids (``video[3]``);
* a CSV file with a ``mode`` (or ``split``) column and a ``video_id`` or ``id`` column.

A segment takes the fold of its own id when listed, else the fold of its video.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from mmckd.interop.errors import InteropError

STANDARD = ("standard-mosi", "standard-mosei")
_SPLIT_NAMES = {"train": "train", "valid": "valid", "dev": "valid", "val": "valid", "test": "test"}
_CLIP_SUFFIX = re.compile(r"^(?P<video>.+?)(?:\$_\$|_)(?P<clip>\d+)$")


@dataclass
class Folds:
    """id -> split ("train" | "valid" | "test") of videos and/or segments; name: "standard-mosi",
    "standard-mosei" or the fold file's name; source: where it was read (full path)."""

    split_by_id: dict[str, str]
    source: str
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or Path(self.source).name

    def split_of(self, segment_id: str, video_id: str) -> str | None:
        return self.split_by_id.get(segment_id) or self.split_by_id.get(video_id)

    def counts(self) -> dict[str, int]:
        out = {"train": 0, "valid": 0, "test": 0}
        for s in self.split_by_id.values():
            out[s] += 1
        return out


def _add(mapping: dict[str, str], key: str, split: str, source: Path) -> None:
    old = mapping.get(key)
    if old is not None and old != split:
        raise InteropError(f"{source}: {key!r} is in two folds ({old} and {split})")
    mapping[key] = split


def _split_name(value: str, source: Path, where: str) -> str:
    name = _SPLIT_NAMES.get(str(value).strip().lower())
    if name is None:
        raise InteropError(f"{source}: {where}: fold {value!r} is not train, valid (dev) or test")
    return name


def read_fold_json(path: Path) -> Folds:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise InteropError(f"{path}: not a readable JSON fold file ({e})") from None
    if not isinstance(doc, dict) or not doc:
        raise InteropError(f'{path}: a fold file is a JSON object {{"train": [...], "valid": [...], "test": [...]}}')
    mapping: dict[str, str] = {}
    for key, ids in doc.items():
        split = _split_name(key, path, "key")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise InteropError(f"{path}: fold {key!r} must be a list of id strings")
        for i in ids:
            _add(mapping, i, split, path)
    return Folds(mapping, str(path))


def read_fold_csv(path: Path) -> Folds:
    """Folds of a label table: per row its video (``video_id`` column, else ``id`` without its clip suffix)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InteropError(f"{path}: not a readable CSV fold file ({e})") from None
    if not rows:
        raise InteropError(f"{path}: no rows")
    cols = set(rows[0])
    mode_col = "mode" if "mode" in cols else "split" if "split" in cols else None
    if mode_col is None or not cols & {"video_id", "id"}:
        raise InteropError(f"{path}: a CSV fold file needs a mode (or split) column and a video_id or id column")
    mapping: dict[str, str] = {}
    for n, row in enumerate(rows, start=2):
        split = _split_name(row[mode_col], path, f"line {n}")
        if row.get("video_id"):
            _add(mapping, row["video_id"].strip(), split, path)
            continue
        cid = row["id"].strip()
        m = _CLIP_SUFFIX.match(cid)
        _add(mapping, m.group("video") if m else cid, split, path)
    return Folds(mapping, str(path))


def _checkout_mosi_labels() -> Path:
    """../shared/data/mosi/label.csv beside the source checkout that holds this mmckd/."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mosi" / "label.csv"


def _standard_mosi_labels() -> tuple[Path | None, list[Path]]:
    candidates = []
    if os.environ.get("MMCKD_MOSI_LABELS"):
        candidates.append(Path(os.environ["MMCKD_MOSI_LABELS"]))
    if os.environ.get("MMCKD_SHARED_DATA"):
        candidates.append(Path(os.environ["MMCKD_SHARED_DATA"]) / "mosi" / "label.csv")
    candidates.append(_checkout_mosi_labels())
    for c in candidates:
        if c.is_file():
            return c, candidates
    return None, candidates


def load_folds(spec: str) -> Folds:
    """The folds named by spec: "standard-mosi", "standard-mosei" or a .json/.csv file (module docstring)."""
    if spec == "standard-mosi":
        found, looked = _standard_mosi_labels()
        if found is None:
            raise InteropError(
                "standard-mosi folds need CMU-MOSI's label.csv (id,text,label,mode, as MMSA distributes it); none "
                f"found at {', '.join(map(str, looked))}: set MMCKD_MOSI_LABELS=PATH or pass --folds label.csv"
            )
        folds = read_fold_csv(found)
        return Folds(folds.split_by_id, f"standard-mosi ({found})", "standard-mosi")
    if spec == "standard-mosei":
        env = os.environ.get("MMCKD_MOSEI_FOLDS")
        if not env:
            raise InteropError(
                "standard-mosei folds are not shipped with mmckd and cannot be fetched offline: write them as JSON "
                '{"train": [video ids], "valid": [...], "test": [...]} and pass --folds FILE '
                "(or set MMCKD_MOSEI_FOLDS=FILE)"
            )
        if env in STANDARD:
            raise InteropError(f"MMCKD_MOSEI_FOLDS={env}: must name a .json or .csv fold file")
        folds = load_folds(env)
        return Folds(folds.split_by_id, f"standard-mosei ({env})", "standard-mosei")
    path = Path(spec)
    if not path.is_file():
        raise InteropError(f"--folds {spec}: not standard-mosi, standard-mosei or an existing .json/.csv file")
    if path.suffix.lower() == ".json":
        return read_fold_json(path)
    if path.suffix.lower() == ".csv":
        return read_fold_csv(path)
    raise InteropError(f"{path}: a fold file is .json or .csv")
