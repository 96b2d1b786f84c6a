"""The two small steps of `make demo` that are not mmckd commands: making the prediction inputs and the table.

python -m mmckd.demo inputs assets/demo/heldout/happy.mp4 demo-out/inputs
    writes the held-out clip three ways: as it is (with its sidecar transcript), with its audio track
    stripped (sidecar kept: text + vision), and its audio alone as a WAV (no sidecar: audio, plus
    text when `mmckd predict --asr` transcribes it); prints the three paths.
python -m mmckd.demo table demo-out/predictions.csv
    prints the rows of a `mmckd predict --output` CSV side by side, one column per clip.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
from pathlib import Path

from mmckd.testing.clips import audio_only, strip_audio

# (column title, file-name suffix, extension, keeps the sidecar transcript)
VARIANTS = (
    ("all modalities", "", ".mp4", True),
    ("audio stripped", "_noaudio", ".mp4", True),
    ("audio only", "_audio", ".wav", False),
)
TABLE_ROWS = (
    ("file", "clip"),
    ("network", "network"),
    ("modalities", "modalities"),
    ("transcript", "transcript_source"),
    ("score", "score"),
    ("polarity", "polarity"),
    ("7-class", "label7"),
    ("seconds", "seconds"),
    ("error", "error"),
)


def make_inputs(clip: Path, out: Path) -> list[Path]:
    """The three demo inputs made from one clip with a sidecar transcript (see module docstring)."""
    sidecar = clip.with_suffix(".txt")
    if not clip.is_file():
        raise FileNotFoundError(f"{clip}: no such clip (make it with: python assets/make_demo.py assets/demo)")
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for _title, suffix, ext, keep_sidecar in VARIANTS:
        dst = out / f"{clip.stem}{suffix}{ext}"
        if not suffix:
            shutil.copyfile(clip, dst)
        elif ext == ".wav":
            audio_only(clip, dst)
        else:
            strip_audio(clip, dst)
        if keep_sidecar and sidecar.is_file():
            shutil.copyfile(sidecar, dst.with_suffix(".txt"))
        else:
            dst.with_suffix(".txt").unlink(missing_ok=True)
        paths.append(dst)
    return paths


def _title(clip: str) -> str:
    """The column title of a demo input (its variant), else the file name."""
    path = Path(clip)
    for title, suffix, ext, _ in sorted(VARIANTS, key=lambda v: -len(v[1])):
        if path.suffix == ext and path.stem.endswith(suffix):
            return title
    return path.name


def _cell(key: str, row: dict) -> str:
    value = row.get(key) or ""
    if key == "clip":
        return Path(value).name
    if key == "network" and value == "lav":
        return "lav (teacher)"
    if key == "score" and value:
        return f"{float(value):+.2f}"
    if key == "seconds":
        return f"{float(row['extract_seconds'] or 0) + float(row['inference_seconds'] or 0):.2f}"
    if key == "transcript_source" and value:
        text = row.get("transcript") or ""
        return f'{value}: "{text[:24]}{"…" if len(text) > 24 else ""}"'
    return value or "—"


def format_table(rows: list[dict]) -> str:
    """A `mmckd predict --output` CSV's rows side by side: one column per clip, one line per field."""
    keys = [(name, key) for name, key in TABLE_ROWS if key != "error" or any(r.get("error") for r in rows)]
    columns = [[""] + [name for name, _ in keys]]
    columns += [[_title(r["clip"])] + [_cell(key, r) for _, key in keys] for r in rows]
    widths = [max(len(c) for c in col) for col in columns]
    lines = []
    for i in range(len(columns[0])):
        lines.append("  ".join(col[i].ljust(w) for col, w in zip(columns, widths)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmckd.demo", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p_in = sub.add_parser("inputs", help="make the three prediction inputs from the held-out clip")
    p_in.add_argument("clip", type=Path)
    p_in.add_argument("out", type=Path)
    p_tab = sub.add_parser("table", help="print a predictions CSV side by side")
    p_tab.add_argument("csv", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.step == "inputs":
            for path in make_inputs(args.clip, args.out):
                print(path)
        else:
            with open(args.csv, newline="") as f:
                rows = list(csv.DictReader(f))
            if not rows:
                raise ValueError(f"{args.csv}: no predictions in it")
            print(format_table(rows))
    except (OSError, ValueError, RuntimeError) as e:
        print(f"mmckd.demo: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
