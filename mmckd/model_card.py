"""What a model bundle is: `mmckd info MODEL` and `mmckd predict --about`.

Reads bundle.json only (no torch, no weights): the networks, the modalities they read, the data the model was
trained on, the fit settings and its metrics: the "card" written by benchmarks/train_default_model.py for the
embedded default model, else the run's metrics.json when the bundle sits in a run folder (run/model/).
"""

from __future__ import annotations

import json
from pathlib import Path

NETWORK_READS = {
    "lav": "text+audio+vision (teacher)",
    "la": "text+audio",
    "lv": "text+vision",
    "av": "audio+vision",
    "l": "text",
    "a": "audio",
    "v": "vision",
}
SHOWN = ("MAE", "Corr", "Acc2_non0", "F1_non0", "Acc7")


def bundle_folder(path: str | Path) -> Path:
    """The bundle folder of a path (the folder, its bundle.json, or a run folder holding model/);
    ValueError naming the path when there is none."""
    path = Path(path)
    if path.name == "bundle.json" and path.is_file():
        return path.parent
    for folder in (path, path / "model"):
        if (folder / "bundle.json").is_file():
            return folder
    raise ValueError(f"{path}: no model bundle here (expected bundle.json in it or in its model/ folder)")


def is_bundle(path: str | Path) -> bool:
    try:
        bundle_folder(path)
        return True
    except ValueError:
        return False


def describe(path: str | Path) -> dict:
    """A JSON-able description of the bundle at path (see the module docstring)."""
    folder = bundle_folder(path)
    try:
        meta = json.loads((folder / "bundle.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{folder / 'bundle.json'}: unreadable ({e})") from None
    if meta.get("format") != "mmckd-model":
        raise ValueError(f"{folder / 'bundle.json'}: not an mmckd model bundle")
    weights = folder / "weights.safetensors"
    card = meta.get("card")
    subsets = list(meta.get("subsets", []))
    prov = meta.get("provenance", {})
    doc = {
        "path": str(folder),
        "name": card["name"] if card else None,
        "summary": card.get("summary") if card else None,
        "kind": meta.get("kind"),
        "mode": meta.get("mode"),
        "networks": {s: NETWORK_READS.get(s, s) for s in subsets},
        "reads": sorted({m for s in subsets for m in NETWORK_READS.get(s, "").split(" ")[0].split("+") if m}),
        "feature_dims": meta.get("feature_dims"),
        "text_model": (meta.get("extractor_config") or {}).get("text", {}).get("model"),
        "weights_bytes": weights.stat().st_size if weights.exists() else None,
        "mmckd_version": meta.get("mmckd_version"),
        "trained_on": card["trained_on"]
        if card
        else {
            "features": prov.get("features_path"),
            "clips": prov.get("features_clips"),
            "created": prov.get("features_created"),
            "source": prov.get("source") or (prov.get("extractor_provenance") or {}).get("source"),
        },
        "seed": meta.get("seed"),
        "best_valid_mae": meta.get("best_valid_mae"),
        "metrics": None,
    }
    if card:
        doc["metrics"] = {
            "test": {"l" if subsets == ["l"] else "model": card["metrics"].get("test")},
            "dev": {"l" if subsets == ["l"] else "model": card["metrics"].get("dev")},
            "ridge_baseline_test": card["metrics"].get("ridge_baseline", {}).get("test"),
        }
        doc["built"] = card.get("built")
        doc["selection"] = card.get("selection")
    else:
        run_metrics = folder.parent / "metrics.json"
        if folder.name == "model" and run_metrics.is_file():
            try:
                m = json.loads(run_metrics.read_text())
                conds = m.get("conditions", {})
                seed_entry = (m.get("per_seed") or {}).get(str(meta.get("seed")))
                if seed_entry:  # this bundle is one seed's: its own metrics, not the mean over seeds
                    conds = seed_entry.get("conditions", conds)
                doc["metrics"] = {
                    "test": {s: (conds.get(s) or {}).get("test") for s in subsets if conds.get(s)},
                    "dev": {s: (conds.get(s) or {}).get("valid") for s in subsets if conds.get(s)},
                    "seeds": m.get("seeds"),
                }
            except (OSError, json.JSONDecodeError):
                pass
    return doc


def _metric_row(name: str, m: dict | None) -> str:
    if not m:
        return f"    {name:<22} -"
    cells = []
    for k in SHOWN:
        v = m.get(k)
        cells.append("-" if v is None else (f"{v:.3f}" if k in ("MAE", "Corr") else f"{100 * v:.1f}"))
    return f"    {name:<22} " + "  ".join(f"{c:>8}" for c in cells)


def render(doc: dict) -> str:
    lines = [doc["path"]]
    if doc.get("name"):
        lines.append(f"  {doc['name']}: {doc.get('summary') or ''}")
    lines.append(f"  kind          {doc['kind']} ({doc.get('mode') or '-'}), mmckd {doc.get('mmckd_version')}")
    lines.append("  networks      " + ", ".join(f"{s} ({r})" for s, r in doc["networks"].items()))
    lines.append(f"  reads         {', '.join(doc['reads'])}; text model {doc.get('text_model')}")
    if doc.get("weights_bytes") is not None:
        lines.append(f"  weights       {doc['weights_bytes'] / 1e3:.0f} kB")
    t = doc.get("trained_on") or {}
    if "data" in t:
        sp = ", ".join(f"{k} {v}" for k, v in (t.get("splits") or {}).items())
        lines.append(f"  trained on    {t['data']}")
        lines.append(
            f"                {t.get('labels_file')}; {t.get('clips')} clips ({sp}); "
            f"modalities {', '.join(t.get('modalities', []))}"
        )
        lines.append(f"                {t.get('text_encoder')}")
    else:
        lines.append(
            f"  trained on    {t.get('features') or '?'} ({t.get('clips') or '?'} clips, made {t.get('created')})"
        )
    if doc.get("selection"):
        lines.append(f"  selection     {doc['selection']}")
    m = doc.get("metrics")
    if m:
        lines.append(
            f"  metrics{'':<20} " + "  ".join(f"{k:>8}" for k in ("MAE", "Corr", "Acc2non0", "F1non0", "Acc7"))
        )
        for split in ("test", "dev"):
            for net, vals in (m.get(split) or {}).items():
                lines.append(_metric_row(f"{split} ({net})", vals))
        if m.get("ridge_baseline_test"):
            lines.append(_metric_row("test (ridge baseline)", m["ridge_baseline_test"]))
    else:
        lines.append("  metrics       none stored with this bundle")
    if doc.get("built"):
        b = doc["built"]
        lines.append(
            f"  built         {b.get('date')} by `{b.get('command')}` (commit {str(b.get('git_commit'))[:10]})"
        )
    return "\n".join(lines)
