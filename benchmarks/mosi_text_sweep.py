"""Settings chosen on dev: variants of the default fit on the real text-only MOSI file, dev split only.

Each variant is ``mmckd fit FILE --seeds 1,2,3 --threads 1`` with one setting changed; the table
reports the text student's dev (valid) metrics, mean ± std over the seeds. Test is not read here:
the default configuration is kept unless a variant is better on dev beyond the seed-to-seed spread.

    python benchmarks/mosi_text_sweep.py --features /tmp/fitbench/mosi_text.h5 [--workdir /tmp/sweep]

Runs already finished in --workdir (their metrics.json exists) are read, not trained again.
Writes docs/results/mosi_text_sweep.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {
    "default": [],
    "dropout 0.3": ["--dropout", "0.3"],
    "lr 5e-4": ["--lr", "0.0005"],
    "weight decay 1e-2": ["--weight-decay", "0.01"],
    "d_model 128": ["--d-model", "128"],
    "batch 32": ["--batch-size", "32"],
    "2 layers": ["--layers", "2"],
    "lambda 0.3": ["--lambda", "0.3"],
    "lambda 0.03": ["--lambda", "0.03"],
    "temperature 0.5": ["--temperature", "0.5"],
    "patience 15, 50 epochs": ["--patience", "15", "--epochs", "50"],
    "7-class positives": ["--class-scheme", "7class"],
}


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def run_variant(features: Path, workdir: Path, name: str, seeds: str) -> dict:
    out = workdir / slug(name)
    metrics = out / "metrics.json"
    if not metrics.exists():
        cmd = [sys.executable, "-m", "mmckd", "fit", str(features), "-o", str(out), "--seeds", seeds,
               "--threads", "1", "--no-progress", "--overwrite", *VARIANTS[name]]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if proc.returncode != 0:
            sys.exit(f"{name}: fit failed: {proc.stderr[-2000:]}")
    m = json.loads(metrics.read_text())["conditions"]["l"]
    return {"options": VARIANTS[name], "valid": m["valid"], "valid_std": m["valid_std"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", type=Path, required=True, help="text-only MOSI feature file")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/fitbench/mosi_text_sweep"))
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--parallel", type=int, default=2, help="fits at once (one torch thread each)")
    ap.add_argument("--json", type=Path, default=REPO / "docs" / "results" / "mosi_text_sweep.json")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(args.parallel) as pool:
        results = dict(zip(VARIANTS, pool.map(lambda n: run_variant(args.features, args.workdir, n, args.seeds),
                                              VARIANTS)))  # fmt: skip
    out = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "seeds": args.seeds,
           "variants": results}  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print("| variant | dev MAE | dev Corr | dev Acc-2 Non0 % | dev Acc-7 % |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        v, s = r["valid"], r["valid_std"]
        print(f"| {name} | {v['MAE']:.3f} ± {s['MAE']:.3f} | {v['Corr']:.3f} | {100 * v['Acc2_non0']:.1f} ± "
              f"{100 * s['Acc2_non0']:.1f} | {100 * v['Acc7']:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
