"""`mmckd info`: what a feature file holds."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import click

from mmckd.feature_file import MODALITIES, FeatureFile, FeatureFileError


def render_summary(doc: dict) -> str:
    clips = doc["clips"]
    lines = [f"{doc['path']}", f"  config hash   {doc['config_hash']}   created {doc['created']}"]
    lines.append("  dims          " + "  ".join(f"{m} {doc['dims'][m]}" for m in MODALITIES))
    by_status = Counter(c["status"] for c in clips)
    lines.append(f"  clips         {len(clips)}  (" + ", ".join(f"{k} {v}" for k, v in sorted(by_status.items())) + ")")
    by_split = Counter(c["split"] or "-" for c in clips)
    lines.append("  splits        " + ", ".join(f"{k} {v}" for k, v in sorted(by_split.items())))
    labelled = sum(c["label"] is not None for c in clips)
    lines.append(f"  labelled      {labelled}")
    ok = [c for c in clips if c["status"] == "ok"]
    for m in MODALITIES:
        have = [c["modalities"][m] for c in ok if c["modalities"][m] is not None]
        frames = sum(h["frames"] for h in have)
        extra = ""
        if m == "vision" and have:
            extra = f", mean face ratio {sum(h['face_ratio'] for h in have) / len(have):.2f}"
        lines.append(f"  {m:<13} present in {len(have)}/{len(ok)} ok clips, {frames} frames{extra}")
    sources = Counter(c["transcript_source"] or "none" for c in ok)
    lines.append("  transcripts   " + ", ".join(f"{k} {v}" for k, v in sorted(sources.items())))
    failed = [c for c in clips if c["status"] == "failed"]
    if failed:
        lines.append("  failures:")
        lines += [f"    {c['id']}: {c['error']}" for c in failed]
    return "\n".join(lines)


@click.command()
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Machine-readable summary.")
def info(path, as_json):
    """Summarise a feature file (clips by status and split, modalities, dims, failures) or a model: a run or
    bundle folder, or "default" (the embedded model): what it was trained on, its networks, its metrics."""
    from mmckd.model_card import describe, is_bundle, render

    if path == "default" and not Path(path).exists():
        from mmckd import default_model

        path = str(default_model.PATH)
    if Path(path).is_dir() or is_bundle(path):
        try:
            doc = describe(path)
        except ValueError as e:
            click.echo(f"mmckd info: error: {e}", err=True)
            sys.exit(2)
        click.echo(json.dumps(doc, indent=2) if as_json else render(doc))
        return
    if not Path(path).exists():
        click.echo(f"mmckd info: error: {path}: no such file or folder", err=True)
        sys.exit(2)
    try:
        doc = FeatureFile(path).summary()
    except FeatureFileError as e:
        click.echo(f"mmckd info: error: {e}", err=True)
        sys.exit(2)
    click.echo(json.dumps(doc, indent=2) if as_json else render_summary(doc))
