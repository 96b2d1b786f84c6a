"""Real CMU-MOSI, text only: the MM-CKD text student (default settings) against a ridge regression.

Both read the same feature file, made from the 2,195 real MOSI transcripts of ../shared/data:

    mmckd extract --labels ../shared/data/mosi/label.csv -o /tmp/fitbench/mosi_text.h5

  * MM-CKD: ``mmckd fit`` with default settings and seeds 1, 2, 3 (only the text student "l" can be
    trained on a text-only file); each seed keeps the epoch of its best valid (dev) MAE;
  * ridge: scikit-learn Ridge on the token features mean-pooled per clip (standardised with train
    statistics), trained on train, alpha chosen by dev MAE among 25 values in 1e-2..1e4, predictions
    clipped to [-3, 3] like the model's.

Nothing is chosen on test; test is reported once at the end. Metrics are MMSA's (mmckd.model.metrics).

    python benchmarks/mosi_text.py --features /tmp/fitbench/mosi_text.h5

Writes docs/results/mosi_text.json and prints a Markdown table (dev and test).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MMCKD_SHARED_DATA", REPO.parent / "shared" / "data"))
RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-2, 4, 25))
TABLE_METRICS = ("MAE", "Corr", "Acc2_has0", "F1_has0", "Acc2_non0", "F1_non0", "Acc5", "Acc7")


def pooled_text(features_path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X, y, split): per clip the mean of its valid text frames, its label, its split (train/valid/test;
    "dev" read as valid). Clips that are not usable for training (failed, unlabelled, no text) are left out."""
    from mmckd.feature_file import FeatureFile

    ff = FeatureFile(features_path)
    arr = ff.modality("text")
    lengths = np.diff(arr.offsets)
    counts = np.bincount(np.repeat(np.arange(len(ff)), lengths), weights=arr.mask, minlength=len(ff))
    frames = np.where(arr.mask[:, None], arr.features, 0.0).astype(np.float64)
    sums = np.zeros((len(ff), arr.dim))
    nonempty = lengths > 0  # reduceat over the clips that own rows (each runs to the next one's start)
    if nonempty.any():
        sums[nonempty] = np.add.reduceat(frames, arr.offsets[:-1][nonempty], axis=0)
    split = np.array([{"dev": "valid"}.get(s or "", s or "") for s in ff.splits], object)
    ok = np.array([s == "ok" for s in ff.status]) & np.isfinite(ff.labels) & (counts > 0) & (split != "")
    X = sums[ok] / counts[ok, None]
    return X, ff.labels[ok].astype(np.float64), split[ok]


def ridge_baseline(features_path: str | Path, alphas: tuple[float, ...] = RIDGE_ALPHAS) -> dict:
    """Ridge on mean-pooled text: {"alpha", "dev": metrics, "test": metrics, "dev_mae_by_alpha"}."""
    from sklearn.linear_model import Ridge

    from mmckd.model.metrics import regression_metrics

    X, y, split = pooled_text(features_path)
    tr, dv, te = (split == "train"), (split == "valid"), (split == "test")
    mu, sd = X[tr].mean(0), X[tr].std(0)
    sd[sd < 1e-8] = 1.0
    Z = (X - mu) / sd
    dev_mae = {}
    models = {}
    for a in alphas:
        model = Ridge(alpha=a).fit(Z[tr], y[tr])
        dev_mae[a] = float(np.mean(np.abs(np.clip(model.predict(Z[dv]), -3, 3) - y[dv])))
        models[a] = model
    best = min(dev_mae, key=dev_mae.get)
    model = models[best]
    return {
        "alpha": best,
        "dev": regression_metrics(np.clip(model.predict(Z[dv]), -3, 3), y[dv]),
        "test": regression_metrics(np.clip(model.predict(Z[te]), -3, 3), y[te]),
        "dev_mae_by_alpha": {f"{a:.4g}": v for a, v in dev_mae.items()},
        "clips": {"train": int(tr.sum()), "valid": int(dv.sum()), "test": int(te.sum())},
    }


def _row(name: str, m: dict, std: dict | None = None) -> str:
    cells = []
    for k in TABLE_METRICS:
        v = m.get(k)
        pct = k not in ("MAE", "Corr")
        s = "—" if v is None else (f"{100 * v:.1f}" if pct else f"{v:.3f}")
        if std is not None and std.get(k) is not None and v is not None:
            s += f" ± {100 * std[k]:.1f}" if pct else f" ± {std[k]:.3f}"
        cells.append(s)
    return f"| {name} | " + " | ".join(cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", type=Path, required=True, help="text-only MOSI feature file (extracted if absent)")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--out-dir", type=Path, default=None, help="fit run folder [a temporary one]")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=REPO / "docs" / "results" / "mosi_text.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from mmckd.model.config import FitConfig
    from mmckd.model.training import default_threads, fit

    load_before = os.getloadavg()
    if not args.features.exists():
        from mmckd.extract.pipeline import extract

        t0 = time.perf_counter()
        extract(None, args.features, labels=SHARED / "mosi" / "label.csv", progress=False)
        print(f"extracted {args.features} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    seeds = tuple(int(s) for s in args.seeds.split(","))
    out_dir = args.out_dir or Path(tempfile.mkdtemp(prefix="mmckd-mosi-text-")) / "run"
    t0 = time.perf_counter()
    result = fit(args.features, out_dir, FitConfig(seeds=seeds), threads=args.threads, overwrite=True, progress=False)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ridge = ridge_baseline(args.features)
    ridge_s = time.perf_counter() - t0
    m = result.metrics
    student = m["conditions"]["l"]
    best = m["per_seed"][str(m["best_seed"])]["conditions"]["l"]
    out = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cores": len(os.sched_getaffinity(0)), "platform": platform.platform(), "device": "cpu"},
        "threads": args.threads or default_threads(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "features": str(args.features),
        "features_config_hash": m["features"]["config_hash"],
        "dims": m["features"]["dims"],
        "data": m["data"],
        "seeds": list(seeds),
        "fit_seconds": fit_s,
        "ridge_seconds": ridge_s,
        "mmckd_text_student": {
            "dev": student["valid"],
            "dev_std": student["valid_std"],
            "test": student["test"],
            "test_std": student["test_std"],
            "per_seed": {s: e["conditions"]["l"] for s, e in m["per_seed"].items()},
            "epochs_run": {s: e["epochs_run"] for s, e in m["per_seed"].items()},
            "best_epoch": {s: e["best_epoch"] for s, e in m["per_seed"].items()},
            "best_seed_by_dev": m["best_seed"],
            "best_seed_test": best["test"],
        },
        "ridge": ridge,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")

    header = "| model | " + " | ".join(TABLE_METRICS) + " |\n|---|" + "---|" * len(TABLE_METRICS)
    print(
        f"\n{out['date']}, {out['machine']['cores']} cores (CPU), torch threads {out['threads']}, "
        f"load average {load_before[0]:.2f} -> {out['loadavg_after'][0]:.2f}; fit {fit_s:.0f} s for "
        f"{len(seeds)} seeds\n"
    )
    for split in ("dev", "test"):
        print(f"{split} ({ridge['clips']['valid' if split == 'dev' else 'test']} clips)\n\n{header}")
        print(
            _row(
                f"MM-CKD text student, seeds {args.seeds} (mean ± std)",
                student["valid" if split == "dev" else "test"],
                student["valid_std" if split == "dev" else "test_std"],
            )
        )
        seed_m = best["valid" if split == "dev" else "test"]
        print(_row(f"MM-CKD text student, seed {m['best_seed']} (best dev)", seed_m))
        print(_row(f"ridge, mean-pooled tokens (alpha {ridge['alpha']:.3g}, chosen on dev)", ridge[split]))
        print()


if __name__ == "__main__":
    main()
