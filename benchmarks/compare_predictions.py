"""Paired comparison of models from saved out-of-fold predictions of ``benchmarks/real_trimodal.py --save-preds``.

    python benchmarks/compare_predictions.py A.npz:online B.npz:online [C.npz:no-mvsc ...]

The first model is compared with each of the others: per condition and for the mean over the 7
conditions, the difference of seed-mean MAE and Acc-2 (non0) with a 95 % cluster-bootstrap interval over
videos (the same clips and folds in every file; the files must come from the same data and folds).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_trimodal import SUBSETS, paired_interval, paired_mean_interval, seed_mean_metrics  # noqa: E402


def load(spec: str):
    path, _, model = spec.rpartition(":")
    z = np.load(path)
    preds = {s: z[f"{model}|c|{s}"] for s in SUBSETS}
    return preds, z["labels"], z["videos"], z["ids"]


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    base, labels, videos, ids = load(argv[0])
    mean = {k: np.mean([seed_mean_metrics(base[s], labels)[k] for s in SUBSETS]) for k in ("MAE", "Acc2_non0")}
    print(f"{argv[0]}: mean over conditions MAE {mean['MAE']:.3f}, Acc-2 {100 * mean['Acc2_non0']:.1f}")
    for spec in argv[1:]:
        other, labels2, _, ids2 = load(spec)
        if not np.array_equal(ids, ids2) or not np.allclose(labels, labels2):
            print(f"{spec}: other clips or labels; not comparable", file=sys.stderr)
            return 2
        print(f"\n{argv[0]} - {spec} (MAE: negative is better for the first; Acc-2: positive)")
        for s in SUBSETS:
            d = paired_interval(base[s], other[s], labels, videos, n_boot=1000)
            print(
                f"  {s:>4}: MAE {d['MAE']['diff']:+.3f} [{d['MAE']['lo']:+.3f}, {d['MAE']['hi']:+.3f}]  "
                f"Acc-2 {100 * d['Acc2_non0']['diff']:+.1f} "
                f"[{100 * d['Acc2_non0']['lo']:+.1f}, {100 * d['Acc2_non0']['hi']:+.1f}]"
            )
        d = paired_mean_interval(base, other, labels, videos, n_boot=500)
        print(
            f"  mean: MAE {d['MAE']['diff']:+.3f} [{d['MAE']['lo']:+.3f}, {d['MAE']['hi']:+.3f}]  "
            f"Acc-2 {100 * d['Acc2_non0']['diff']:+.1f} "
            f"[{100 * d['Acc2_non0']['lo']:+.1f}, {100 * d['Acc2_non0']['hi']:+.1f}]"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
