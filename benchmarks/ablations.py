"""Ablations of MM-CKD: online (the method) vs --no-mvsc vs --offline-teacher vs the dropout baseline.

One ``fit`` run per data set with ``compare`` (the same as
``mmckd fit FILE -o RUN --compare no-mvsc,offline-teacher,dropout-baseline --seeds 1,2,3``): every mode
is trained on the same file with the same seeds and default settings otherwise, and judged on

  * the 7 conditions (test clips having the condition's modalities, each answered by its network;
    the dropout baseline answers all of them with one network and zero-filled inputs);
  * the random-missing protocol (each modality of each test clip dropped with probability MR):
    routed (each clip to the network of what it kept) and the teacher reading zero-filled inputs.

Data:
  * synthetic (default): mmckd.model.synthetic clips where each modality carries its own part of the
    label plus a shared part, with frame noise, and a realistic share of clips lacking a modality
    (text 5 %, audio 10 %, vision 20 %: no face found);
  * --real FILE: the text-only real MOSI file; only the text condition exists there, the teacher and
    the other students cannot be trained, so offline-teacher falls back to online and the dropout
    baseline to one text network without MVSC (the run then compares online with no-mvsc only).

    python benchmarks/ablations.py --seeds 1,2,3 [--real /tmp/fitbench/mosi_text.h5]

Writes docs/results/ablations.json (runs of earlier invocations stay in it, each with its date and
command) and prints Markdown tables (mean ± std over seeds, test split).
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

REPO = Path(__file__).resolve().parents[1]
MODES = ("online", "no-mvsc", "offline-teacher", "dropout-baseline")
SUBSETS = ("lav", "la", "lv", "av", "l", "a", "v")
SYNTHETIC = {  # short sequences keep 12 trainings (4 modes x 3 seeds) within ~30 CPU minutes
    "n": 1200,
    "dims": {"text": 32, "audio": 16, "vision": 16},
    "lengths": {"text": (5, 20), "audio": (10, 40), "vision": (10, 40)},
    "missing": {"text": 0.05, "audio": 0.10, "vision": 0.20},
    "noise": 6.0,
    "gain": 0.6,
    "shared": 1.2,
    "no_face_ratio": 0.2,
    "seed": 0,
}


def _pm(mean: dict | None, std: dict | None, key: str, pct: bool = False) -> str:
    if not mean or mean.get(key) is None:
        return "—"
    scale, digits = (100.0, 1) if pct else (1.0, 3)
    s = f"{mean[key] * scale:.{digits}f}"
    if std and std.get(key) is not None:
        s += f" ± {std[key] * scale:.{digits}f}"
    return s


def summarise(metrics: dict) -> dict:
    """{mode: {"conditions": {subset: {test, test_std}}, "missing_rate": {...}}} from metrics.json."""
    out = {metrics["mode"]: {"conditions": metrics["conditions"], "missing_rate": metrics["missing_rate"]}}
    for mode, agg in metrics["compare"].items():
        out[mode] = {"conditions": agg["conditions"], "missing_rate": agg["missing_rate"]}
    return out


def print_tables(title: str, table: dict, subsets: tuple[str, ...]) -> None:
    """The conditions table, and (when more than one condition exists) the missing-rate table."""
    modes = list(table)
    print(f"\n### {title}: conditions, test MAE (lower is better) / Acc2 non0 %\n")
    print("| condition | " + " | ".join(modes) + " |")
    print("|---|" + "---|" * len(modes))
    for s in subsets:
        cells = []
        for mode in modes:
            c = table[mode]["conditions"].get(s)
            if c is None:
                cells.append("—")
                continue
            cells.append(f"{_pm(c['test'], c['test_std'], 'MAE')} / {_pm(c['test'], c['test_std'], 'Acc2_non0', True)}")
        n = next((table[m]["conditions"][s]["test"]["n"] for m in modes if table[m]["conditions"].get(s)), "—")
        print(f"| {s} (n {n}) | " + " | ".join(cells) + " |")
    if len(subsets) == 1:
        return  # one modality: nothing can go missing, every rate gives the same table row
    rates = list(table[modes[0]]["missing_rate"])
    print(f"\n### {title}: random missing rate, test MAE — routed / teacher zero-fill\n")
    print("| MR | " + " | ".join(modes) + " |")
    print("|---|" + "---|" * len(modes))
    for r in rates:
        cells = []
        for mode in modes:
            e = table[mode]["missing_rate"][r]
            routed = _pm(e["routed"], e["routed_std"], "MAE")
            zero = _pm(e["teacher_zero_fill"], e["teacher_zero_fill_std"], "MAE")
            cells.append(f"{routed} / {zero}")
        print(f"| {r} | " + " | ".join(cells) + " |")


def run(features: Path, out_dir: Path, modes: tuple[str, ...], seeds: tuple[int, ...], threads: int | None) -> dict:
    from mmckd.model.config import FitConfig
    from mmckd.model.training import fit

    cfg = FitConfig(mode=modes[0], compare=modes[1:], seeds=seeds)
    t0 = time.perf_counter()
    result = fit(features, out_dir, cfg, threads=threads, overwrite=True, progress=False)
    seconds = time.perf_counter() - t0
    m = result.metrics
    return {
        "features": str(features),
        "data": m["data"],
        "seconds": seconds,
        "epochs_run": {
            mode: {s: e["epochs_run"] for s, e in (m if mode == m["mode"] else m["compare"][mode])["per_seed"].items()}
            for mode in modes
        },
        "table": summarise(m),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--clips", type=int, default=SYNTHETIC["n"], help="synthetic clips")
    ap.add_argument("--no-synthetic", action="store_true")
    ap.add_argument("--real", type=Path, default=None, help="text-only MOSI feature file")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "fitbench" / "ablations")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=REPO / "docs" / "results" / "ablations.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from mmckd.model.synthetic import write_synthetic_features
    from mmckd.model.training import default_threads

    seeds = tuple(int(s) for s in args.seeds.split(","))
    args.workdir.mkdir(parents=True, exist_ok=True)
    earlier = json.loads(args.json.read_text()).get("runs", {}) if args.json.exists() else {}
    out = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cores": len(os.sched_getaffinity(0)), "platform": platform.platform(), "device": "cpu"},
        "threads": args.threads or default_threads(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "seeds": list(seeds),
        "runs": {},
    }
    if not args.no_synthetic:
        params = dict(SYNTHETIC, n=args.clips)
        path = write_synthetic_features(args.workdir / "synthetic.h5", **params)
        load = os.getloadavg()
        r = run(path, args.workdir / "synthetic_run", MODES, seeds, args.threads)
        r["synthetic_params"] = params
        r["loadavg_before"], r["loadavg_after"] = load, os.getloadavg()
        out["runs"]["synthetic"] = r
    if args.real is not None:
        load = os.getloadavg()
        r = run(args.real, args.workdir / "real_run", ("online", "no-mvsc"), seeds, args.threads)
        r["loadavg_before"], r["loadavg_after"] = load, os.getloadavg()
        out["runs"]["mosi_text"] = r
    for r in out["runs"].values():
        r["date"], r["command"] = out["date"], out["command"]
    ran = out["runs"]
    out["runs"] = earlier | ran  # runs of earlier invocations (e.g. --no-synthetic --real) are kept
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(f"\n{out['date']}, {out['machine']['cores']} cores (CPU), torch threads {out['threads']}, seeds {args.seeds}")
    for name, r in ran.items():
        print(
            f"\n{name}: {r['seconds']:.0f} s, load average {r['loadavg_before'][0]:.2f} -> "
            f"{r['loadavg_after'][0]:.2f}; clips {r['data']}"
        )
        subsets = SUBSETS if name == "synthetic" else ("l",)
        print_tables(name, r["table"], subsets)


if __name__ == "__main__":
    main()
