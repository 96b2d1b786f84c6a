"""MM-CKD on real trimodal data: speaker-independent cross-validation of every fit mode and a ridge baseline.

Data: ``../shared/data/mosi-poria/dev.pkl`` (real CMU-MOSI utterances of 19 videos, one text/audio/vision
vector each, MMSA layout), imported with ``mmckd.interop.mmsa``. Its own splits are ignored.

Protocol (every decision of issue 10 is made here, never on a test split):
  * folds: the 19 videos are dealt into K folds (default 5) by size, so each fold holds ~100 clips; fold k is
    the test fold, fold k+1 the valid fold (early stopping, validated routing), the other K-2 folds train.
    No video is in two parts of one fold: every speaker is unseen by the model that scores it.
  * every mode (``--modes``) and seed (``--seeds``) trains once per fold with ``SeedTrainer`` (what
    ``mmckd fit`` runs), default settings unless ``--set`` overrides them; its out-of-fold predictions of all
    500 clips are scored per condition (the 7 modality subsets, every clip having all three modalities) and
    under the random-missing protocol (missing rates 0-0.7, the same draw for every model);
  * ridge: per modality subset, a ridge regression on the concatenated normalised vectors, its penalty chosen
    on the valid fold; under random missing, each clip is answered by the ridge of what it kept;
  * metrics over the pooled out-of-fold predictions (per seed, then mean ± std over seeds); paired differences
    between two models with a 95 % interval from a cluster bootstrap over videos (2,000 resamples; both
    models' seed-averaged metrics on the same resampled videos).

    python benchmarks/real_trimodal.py --jobs 2              # defaults: all modes, seeds 1,2,3, 5 folds
    python benchmarks/real_trimodal.py --modes online,no-mvsc --set lambda_mvsc=0.5 --tag lambda0.5
    python benchmarks/real_trimodal.py --features poria.h5 --save-preds run.npz ...   # an imported file; keep
                                                             # the out-of-fold predictions for compare_predictions.py

Besides each routed mode, the same trained networks are also scored with validated routing ("MODE+validated").

Writes docs/results/real_trimodal.json (entries of earlier invocations stay, keyed by --tag) and prints
Markdown tables.
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
DEFAULT_PKL = REPO.parent / "shared" / "data" / "mosi-poria" / "dev.pkl"
RESULTS = REPO / "docs" / "results" / "real_trimodal.json"
SUBSETS = ("lav", "la", "lv", "av", "l", "a", "v")
MAIN_METRICS = ("MAE", "Acc2_non0", "F1_non0", "Corr", "Acc7")


def video_of(clip_id: str) -> str:
    for sep in ("$_$", "_"):
        if sep in clip_id:
            return clip_id.rsplit(sep, 1)[0]
    return clip_id


def make_folds(ids: list[str], k: int) -> list[dict[str, str]]:
    """K fold assignments {clip id: train|valid|test}: videos dealt by size (largest first) to the fold with
    the fewest clips; fold i tests on part i and validates on part i+1."""
    counts: dict[str, int] = {}
    for i in ids:
        counts[video_of(i)] = counts.get(video_of(i), 0) + 1
    parts: list[list[str]] = [[] for _ in range(k)]
    sizes = [0] * k
    for video in sorted(counts, key=lambda v: (-counts[v], v)):
        j = int(np.argmin(sizes))
        parts[j].append(video)
        sizes[j] += counts[video]
    part_of = {v: j for j, vs in enumerate(parts) for v in vs}
    folds = []
    for f in range(k):
        split = {}
        for i in ids:
            j = part_of[video_of(i)]
            split[i] = "test" if j == f else "valid" if j == (f + 1) % k else "train"
        folds.append(split)
    return folds


# --------------------------------------------------------------------------- ridge


def _ridge_fit(x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    xb = np.hstack([x, np.ones((len(x), 1))])
    reg = alpha * np.eye(xb.shape[1])
    reg[-1, -1] = 0.0
    return np.linalg.solve(xb.T @ xb + reg, xb.T @ y)


def _ridge_predict(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.clip(np.hstack([x, np.ones((len(x), 1))]) @ w, -3, 3)


def ridge_predictions(data, subsets=SUBSETS, alphas=(0.1, 1, 10, 100, 1000, 10000)) -> dict[str, np.ndarray]:
    """Test predictions of a ridge per subset (alpha chosen on the valid MAE), on data.indices('test')."""
    from mmckd.model.routing import subset_modalities

    def feats(idx, subset):
        return np.hstack([np.stack([data.rows[m][data.offsets[m][i]] for i in idx]) for m in subset_modalities(subset)])

    tr, va, te = (data.indices(s) for s in ("train", "valid", "test"))
    out = {}
    for s in subsets:
        xtr, xva, xte = feats(tr, s), feats(va, s), feats(te, s)
        best = min(
            alphas,
            key=lambda a: np.mean(np.abs(_ridge_predict(_ridge_fit(xtr, data.labels[tr], a), xva) - data.labels[va])),
        )
        out[s] = _ridge_predict(_ridge_fit(xtr, data.labels[tr], best), xte)
    return out


# --------------------------------------------------------------------------- metrics and intervals


def seed_mean_metrics(preds: np.ndarray, labels: np.ndarray, rows: np.ndarray | None = None) -> dict:
    """preds (seeds, N): the mean over seeds of each metric on the clips rows (default all)."""
    from mmckd.model.metrics import regression_metrics

    rows = np.arange(preds.shape[1]) if rows is None else rows
    per = [regression_metrics(p[rows], labels[rows]) for p in preds]
    return {k: float(np.mean([m[k] for m in per if m[k] is not None])) for k in MAIN_METRICS}


def summary(preds: np.ndarray, labels: np.ndarray) -> dict:
    from mmckd.model.metrics import regression_metrics

    per = [regression_metrics(p, labels) for p in preds]
    return {
        k: {"mean": float(np.mean([m[k] for m in per])), "std": float(np.std([m[k] for m in per]))}
        for k in MAIN_METRICS
    }


def paired_interval(
    a: np.ndarray, b: np.ndarray, labels: np.ndarray, videos: np.ndarray, n_boot: int = 2000, seed: int = 0
) -> dict:
    """Difference a - b of seed-mean metrics with a 95 % cluster-bootstrap interval over videos."""
    rng = np.random.default_rng(seed)
    uniq = np.unique(videos)
    members = {v: np.flatnonzero(videos == v) for v in uniq}
    point_a, point_b = seed_mean_metrics(a, labels), seed_mean_metrics(b, labels)
    draws = {k: [] for k in MAIN_METRICS}
    for _ in range(n_boot):
        rows = np.concatenate([members[v] for v in rng.choice(uniq, len(uniq))])
        ma, mb = seed_mean_metrics(a, labels, rows), seed_mean_metrics(b, labels, rows)
        for k in MAIN_METRICS:
            draws[k].append(ma[k] - mb[k])
    return {
        k: {
            "diff": point_a[k] - point_b[k],
            "lo": float(np.percentile(draws[k], 2.5)),
            "hi": float(np.percentile(draws[k], 97.5)),
        }
        for k in MAIN_METRICS
    }


def paired_mean_interval(
    a: dict, b: dict, labels, videos, conditions=SUBSETS, n_boot: int = 2000, seed: int = 0
) -> dict:
    """Like paired_interval for the mean over conditions: a, b map condition -> (seeds, N) predictions."""
    rng = np.random.default_rng(seed)
    uniq = np.unique(videos)
    members = {v: np.flatnonzero(videos == v) for v in uniq}

    def mean_diff(rows):
        ds = [
            {
                k: seed_mean_metrics(a[c], labels, rows)[k] - seed_mean_metrics(b[c], labels, rows)[k]
                for k in ("MAE", "Acc2_non0")
            }
            for c in conditions
        ]
        return {k: float(np.mean([d[k] for d in ds])) for k in ("MAE", "Acc2_non0")}

    point = mean_diff(np.arange(len(labels)))
    draws = [mean_diff(np.concatenate([members[v] for v in rng.choice(uniq, len(uniq))])) for _ in range(n_boot)]
    return {
        k: {
            "diff": point[k],
            "lo": float(np.percentile([d[k] for d in draws], 2.5)),
            "hi": float(np.percentile([d[k] for d in draws], 97.5)),
        }
        for k in ("MAE", "Acc2_non0")
    }


# --------------------------------------------------------------------------- training


def train_and_predict(data, cfg, mode: str, seed: int, rates, eval_seed: int) -> dict:
    """One mode, one seed, one fold: {"conditions": {subset: test preds}, "missing": {rate: preds}, "routing": ...}."""
    import torch

    from mmckd.model.evaluation import condition_predictions, validated_routing
    from mmckd.model.missing import drop_modalities
    from mmckd.model.training import SeedTrainer

    trainer = SeedTrainer(data, cfg.for_mode(mode), seed, None, torch.device("cpu"))  # no checkpoints
    trainer.run()
    pred = trainer.predictor
    te = data.indices("test")
    out = {"conditions": {}, "missing": {}, "epochs": len(trainer.history)}
    for s in SUBSETS:
        idx, p = condition_predictions(pred, data, "test", s)
        assert np.array_equal(idx, te), "every clip of this data set has all three modalities"
        out["conditions"][s] = p
    for r in rates:
        keep = drop_modalities(data.present[te], r, eval_seed)
        p, _ = pred.predict_rows(data, te, keep)
        out["missing"][r] = p
    out["routing"] = dict(pred.routing)
    if not pred.single_network and not pred.routing:  # the same networks, validated routing (no retraining)
        pred.set_routing(validated_routing(pred, data))
        out["validated"] = {"routing": dict(pred.routing), "conditions": {}, "missing": {}}
        for s in SUBSETS:
            out["validated"]["conditions"][s] = condition_predictions(pred, data, "test", s)[1]
        for r in rates:
            keep = drop_modalities(data.present[te], r, eval_seed)
            out["validated"]["missing"][r] = pred.predict_rows(data, te, keep)[0]
        pred.set_routing({})
    return out


def _task(job) -> tuple[dict, float]:
    """One (fold, mode, seed) training in a worker process: its test predictions and seconds."""
    import torch

    from mmckd.model.config import FitConfig
    from mmckd.model.data import load_prepared

    torch.set_num_threads(1)
    h5, cfg_dict, split, mode, seed, rates = job
    cfg = FitConfig.from_dict(cfg_dict)
    t0 = time.time()
    data = load_prepared(h5, cfg.model, splits=split)
    res = train_and_predict(data, cfg, mode, seed, rates, cfg.eval_seed)
    return res, time.time() - t0


def ridge_missing(data, ridge_test: dict[str, np.ndarray], rates, eval_seed: int) -> dict:
    from mmckd.model.missing import drop_modalities
    from mmckd.model.routing import MODALITIES, subset_name

    te = data.indices("test")
    out = {}
    for r in rates:
        keep = drop_modalities(data.present[te], r, eval_seed)
        names = [subset_name(m for j, m in enumerate(MODALITIES) if k[j]) for k in keep]
        out[r] = np.array([ridge_test[n][i] for i, n in enumerate(names)], np.float32)
    return out


def parse_overrides(items: list[str]):
    from mmckd.model.config import FitConfig, ModelConfig

    fit_fields = set(FitConfig.__dataclass_fields__)
    model_fields = set(ModelConfig.__dataclass_fields__)
    fit_over, model_over = {}, {}
    for item in items:
        key, _, raw = item.partition("=")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        if key in model_fields:
            model_over[key] = value
        elif key in fit_fields:
            fit_over[key] = value
        else:
            raise SystemExit(f"--set {key}: not a FitConfig or ModelConfig field")
    return fit_over, model_over


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pkl", type=Path, default=DEFAULT_PKL)
    ap.add_argument("--features", type=Path, help="an mmckd feature file instead of --pkl (e.g. its import)")
    ap.add_argument("--results", type=Path, default=RESULTS, help="JSON file the entry is added to")
    ap.add_argument("--save-preds", type=Path, help="also write the out-of-fold predictions here (.npz)")
    ap.add_argument(
        "--modes", default="online,no-mvsc,offline-teacher,dropout-baseline,imputation,diffusion-imputation"
    )
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--set", action="append", default=[], help="FIELD=VALUE override of FitConfig/ModelConfig")
    ap.add_argument("--tag", default="defaults")
    ap.add_argument("--compare", default="", help="pairs A:B for paired intervals (default: online against the rest)")
    ap.add_argument("--no-save", action="store_true")
    ap.add_argument("--jobs", type=int, default=1, help="trainings in parallel (worker processes, 1 thread each)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.features is None and not args.pkl.exists():
        print(f"skipped: {args.pkl} not found (the real trimodal MOSI features of ../shared/data)", file=sys.stderr)
        return
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    import dataclasses

    import torch

    from mmckd.model.config import FitConfig
    from mmckd.model.data import load_prepared

    torch.set_num_threads(1)
    if args.features is None:
        from mmckd.interop.mmsa import import_mmsa
    modes = [m for m in args.modes.split(",") if m]
    seeds = [int(s) for s in args.seeds.split(",")]
    fit_over, model_over = parse_overrides(args.set)
    base = FitConfig()
    cfg = dataclasses.replace(base, model=dataclasses.replace(base.model, **model_over), **fit_over)
    rates = cfg.missing_rates
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        h5 = args.features
        if h5 is None:
            h5 = tmp / "poria.h5"
            import_mmsa(args.pkl, h5)
        data0 = load_prepared(h5, cfg.model)
        ids = list(data0.ids)
        labels = np.asarray(data0.labels, np.float64)
        videos = np.array([video_of(i) for i in ids])
        n = len(ids)
        preds = {
            m: {
                "conditions": {s: np.full((len(seeds), n), np.nan) for s in SUBSETS},
                "missing": {r: np.full((len(seeds), n), np.nan) for r in rates},
            }
            for m in modes
        }
        preds["ridge"] = {
            "conditions": {s: np.full((1, n), np.nan) for s in SUBSETS},
            "missing": {r: np.full((1, n), np.nan) for r in rates},
        }
        for m in list(modes):
            if m in ("online", "no-mvsc", "offline-teacher"):
                preds[f"{m}+validated"] = {
                    "conditions": {s: np.full((len(seeds), n), np.nan) for s in SUBSETS},
                    "missing": {r: np.full((len(seeds), n), np.nan) for r in rates},
                }
        routing: dict = {m: [] for m in modes}
        epochs: dict = {m: [] for m in modes}
        pos = {i: k for k, i in enumerate(ids)}
        folds = make_folds(ids, args.folds)
        fold_rows = []
        for split in folds:
            data = load_prepared(h5, cfg.model, splits=split)
            rows = np.array([pos[data.ids[i]] for i in data.indices("test")])
            fold_rows.append(rows)
            r_test = ridge_predictions(data)
            for s in SUBSETS:
                preds["ridge"]["conditions"][s][0, rows] = r_test[s]
            for r, p in ridge_missing(data, r_test, rates, cfg.eval_seed).items():
                preds["ridge"]["missing"][r][0, rows] = p
        # the slowest modes first, so the workers finish together
        order = sorted(modes, key=lambda m: m != "diffusion-imputation")
        tasks = [(f, m, k, seed) for m in order for f in range(len(folds)) for k, seed in enumerate(seeds)]
        jobs = [(str(h5), cfg.to_dict(), folds[f], m, seed, rates) for f, m, k, seed in tasks]
        if args.jobs > 1:
            from concurrent.futures import ProcessPoolExecutor

            pool = ProcessPoolExecutor(args.jobs)
            results = pool.map(_task, jobs)
        else:
            results = map(_task, jobs)
        for (f, m, k, seed), (res, seconds) in zip(tasks, results):
            rows = fold_rows[f]
            for s in SUBSETS:
                preds[m]["conditions"][s][k, rows] = res["conditions"][s]
            for r in rates:
                preds[m]["missing"][r][k, rows] = res["missing"][r]
            if "validated" in res:
                v = res["validated"]
                for s in SUBSETS:
                    preds[f"{m}+validated"]["conditions"][s][k, rows] = v["conditions"][s]
                for r in rates:
                    preds[f"{m}+validated"]["missing"][r][k, rows] = v["missing"][r]
                routing[m].append(v["routing"])
            epochs[m].append(res["epochs"])
            print(
                f"fold {f} {m} seed {seed}: {seconds:.1f} s, lav MAE "
                f"{np.mean(np.abs(res['conditions']['lav'] - labels[rows])):.3f}",
                file=sys.stderr,
            )
    models = [*modes, *(f"{m}+validated" for m in modes if f"{m}+validated" in preds), "ridge"]
    if args.save_preds:
        flat = {f"{m}|c|{s}": preds[m]["conditions"][s] for m in models for s in SUBSETS}
        flat |= {f"{m}|r|{r}": preds[m]["missing"][r] for m in models for r in rates}
        np.savez_compressed(args.save_preds, labels=labels, videos=videos, ids=np.array(ids), **flat)
    table = {
        m: {
            "conditions": {s: summary(preds[m]["conditions"][s], labels) for s in SUBSETS},
            "missing": {str(r): summary(preds[m]["missing"][r], labels) for r in rates},
        }
        for m in models
    }
    for m in models:
        table[m]["mean_over_conditions"] = {
            k: float(np.mean([table[m]["conditions"][s][k]["mean"] for s in SUBSETS])) for k in MAIN_METRICS
        }
    pairs = [tuple(p.split(":")) for p in args.compare.split(",") if p] or [
        (modes[0], m) for m in models if m != modes[0]
    ]
    intervals = {}
    for a, b in pairs:
        intervals[f"{a} - {b}"] = {
            s: paired_interval(preds[a]["conditions"][s], preds[b]["conditions"][s], labels, videos) for s in SUBSETS
        }
        intervals[f"{a} - {b}"]["mean"] = paired_mean_interval(
            preds[a]["conditions"], preds[b]["conditions"], labels, videos, n_boot=500
        )
    # teacher vs best student (within the first mode)
    first = modes[0]
    best_student = min(("la", "lv", "av", "l", "a", "v"), key=lambda s: table[first]["conditions"][s]["MAE"]["mean"])
    intervals[f"{first}: lav - {best_student}"] = {
        "lav": paired_interval(
            preds[first]["conditions"]["lav"], preds[first]["conditions"][best_student], labels, videos
        )
    }
    entry = {
        "tag": args.tag,
        "command": "python benchmarks/real_trimodal.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads 1",
        "seconds": time.time() - started,
        "clips": n,
        "videos": int(len(np.unique(videos))),
        "folds": args.folds,
        "seeds": seeds,
        "fit_config": cfg.to_dict(),
        "table": table,
        "intervals": intervals,
        "validated_routing": {m: routing[m] for m in modes if any(routing[m])},
        "epochs_run": {m: epochs[m] for m in modes},
    }
    print_tables(entry, models)
    if not args.no_save:
        doc = json.loads(args.results.read_text()) if args.results.exists() else {}
        doc[args.tag] = entry
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"\nwritten: {args.results} [{args.tag}]", file=sys.stderr)


def print_tables(entry: dict, models: list[str]) -> None:
    t = entry["table"]
    print(
        f"\n### {entry['tag']}: {entry['folds']}-fold speaker-independent CV, seeds {entry['seeds']}, "
        f"{entry['clips']} clips ({entry['seconds']:.0f} s)\n"
    )
    print("MAE (lower is better) / Acc-2 non0 %, mean ± std over seeds\n")
    print("| condition | " + " | ".join(models) + " |")
    print("|---|" + "---|" * len(models))
    for s in [*SUBSETS, "mean"]:
        cells = []
        for m in models:
            if s == "mean":
                mm = t[m]["mean_over_conditions"]
                cells.append(f"**{mm['MAE']:.3f} / {100 * mm['Acc2_non0']:.1f}**")
            else:
                c = t[m]["conditions"][s]
                cells.append(
                    f"{c['MAE']['mean']:.3f}±{c['MAE']['std']:.3f} / "
                    f"{100 * c['Acc2_non0']['mean']:.1f}±{100 * c['Acc2_non0']['std']:.1f}"
                )
        print(f"| {s} | " + " | ".join(cells) + " |")
    print("\nRandom missing (routed), MAE / Acc-2 non0 %\n")
    print("| MR | " + " | ".join(models) + " |")
    print("|---|" + "---|" * len(models))
    for r in t[models[0]]["missing"]:
        print(
            f"| {r} | "
            + " | ".join(
                f"{t[m]['missing'][r]['MAE']['mean']:.3f} / {100 * t[m]['missing'][r]['Acc2_non0']['mean']:.1f}"
                for m in models
            )
            + " |"
        )
    print("\nPaired differences (a - b), 95 % cluster-bootstrap interval over videos: MAE, Acc-2 non0\n")
    for name, per in entry["intervals"].items():
        cells = []
        for s, d in per.items():
            cells.append(
                f"{s}: {d['MAE']['diff']:+.3f} [{d['MAE']['lo']:+.3f}, {d['MAE']['hi']:+.3f}] / "
                f"{100 * d['Acc2_non0']['diff']:+.1f} "
                f"[{100 * d['Acc2_non0']['lo']:+.1f}, {100 * d['Acc2_non0']['hi']:+.1f}]"
            )
        print(f"- {name}: " + "; ".join(cells))


if __name__ == "__main__":
    main()
