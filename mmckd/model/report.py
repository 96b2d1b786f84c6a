"""The human-readable side of a run: report.md and its PNG plots (matplotlib, Agg backend).

Everything here reads metrics.json's content and the per-seed training histories; nothing is
computed that is not already in metrics.json.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mmckd.atomic_write import atomic_output, write_text_atomic  # noqa: E402
from mmckd.model.metrics import format_metric  # noqa: E402
from mmckd.model.networks import NETWORK_ROLES  # noqa: E402
from mmckd.model.routing import SUBSETS, subset_modalities  # noqa: E402

CURVES = "training_curves.png"
ROBUSTNESS = "robustness.png"
COST = "cost.png"
_TABLE_METRICS = (
    ("MAE", False),
    ("Corr", False),
    ("Acc2_has0", True),
    ("F1_has0", True),
    ("Acc2_non0", True),
    ("F1_non0", True),
    ("Acc5", True),
    ("Acc7", True),
)


def _cell(m: dict | None, std: dict | None, key: str, percent: bool) -> str:
    if m is None:
        return "—"
    s = std.get(key) if std else None
    return format_metric(m.get(key), s, percent)


def _condition_rows(agg: dict, split: str, multi_seed: bool) -> list[str]:
    head = "| condition | network | n | " + " | ".join(k for k, _ in _TABLE_METRICS) + " |"
    rows = [head, "|" + "---|" * (3 + len(_TABLE_METRICS))]
    for s in SUBSETS:
        entry = agg["conditions"].get(s)
        label = "+".join(subset_modalities(s))
        if entry is None:
            rows.append(f"| {label} | — | — | " + " | ".join("—" for _ in _TABLE_METRICS) + " |")
            continue
        m, std = entry.get(split), entry.get(f"{split}_std") if multi_seed else None
        n = m["n"] if m else 0
        cells = [_cell(m, std, k, p) for k, p in _TABLE_METRICS]
        rows.append(f"| {label} | {NETWORK_ROLES[s]} ({s}) | {n} | " + " | ".join(cells) + " |")
    return rows


def _missing_rows(agg: dict, multi_seed: bool) -> list[str]:
    keys = (("MAE", False), ("Corr", False), ("Acc2_non0", True), ("F1_non0", True), ("Acc7", True))
    head = (
        "| MR | routed n | "
        + " | ".join(f"routed {k}" for k, _ in keys)
        + " | "
        + " | ".join(f"teacher zero-fill {k}" for k, _ in keys)
        + " |"
    )
    rows = [head, "|" + "---|" * (2 + 2 * len(keys))]
    for rate, entry in agg["missing_rate"].items():
        r, rs = entry["routed"], entry.get("routed_std") if multi_seed else None
        t, ts = entry["teacher_zero_fill"], entry.get("teacher_zero_fill_std") if multi_seed else None
        rows.append(
            f"| {rate} | {r['n'] if r else 0} | "
            + " | ".join(_cell(r, rs, k, p) for k, p in keys)
            + " | "
            + " | ".join(_cell(t, ts, k, p) for k, p in keys)
            + " |"
        )
    return rows


def plot_curves(path: Path, histories: dict[int, list[dict]], title: str) -> None:
    """Training loss and per-network valid MAE against epoch, one line style per seed."""
    fig, (ax_loss, ax_mae) = plt.subplots(1, 2, figsize=(11, 4))
    styles = ["-", "--", ":", "-."]
    colours = {s: f"C{i}" for i, s in enumerate(SUBSETS)}
    for k, (seed, hist) in enumerate(histories.items()):
        ls = styles[k % len(styles)]
        xs = list(range(1, len(hist) + 1))
        ax_loss.plot(xs, [h["loss"] for h in hist], ls, color="k", label=f"seed {seed}")
        nets = sorted({s for h in hist for s in h["valid_mae"]}, key=SUBSETS.index)
        for s in nets:
            pts = [(x, h["valid_mae"][s]) for x, h in zip(xs, hist) if s in h["valid_mae"]]
            ax_mae.plot([p[0] for p in pts], [p[1] for p in pts], ls, color=colours[s], label=s if k == 0 else None)
    ax_loss.set(title="training loss", xlabel="epoch", ylabel="loss")
    ax_mae.set(title="valid MAE per condition", xlabel="epoch", ylabel="MAE")
    ax_loss.legend(fontsize=8)
    ax_mae.legend(fontsize=8, ncol=2)
    fig.suptitle(title)
    fig.tight_layout()
    _save_figure(fig, path)


def plot_robustness(path: Path, metrics: dict) -> None:
    """Test MAE and Acc-2 (non0) against missing rate: routed vs teacher zero-fill (and compared modes)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    series = [(metrics["mode"], metrics)] + list(metrics.get("compare", {}).items())
    for ax, key, ylabel in ((axes[0], "MAE", "MAE (lower is better)"), (axes[1], "Acc2_non0", "Acc-2 non0")):
        for i, (mode, agg) in enumerate(series):
            rates = [float(r) for r in agg["missing_rate"]]
            for kind, ls in (("routed", "-o"), ("teacher_zero_fill", "--s")):
                vals = [(e[kind] or {}).get(key) for e in agg["missing_rate"].values()]
                if all(v is None for v in vals) or (kind == "teacher_zero_fill" and mode in _SINGLE_NETWORK_MODES):
                    continue
                ax.plot(
                    rates,
                    [float("nan") if v is None else v for v in vals],
                    ls,
                    color=f"C{i}",
                    label=f"{mode}: {kind.replace('_', ' ')}",
                    markersize=4,
                )
        ax.set(xlabel="missing rate", ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("robustness to random missing modalities (test)")
    fig.tight_layout()
    _save_figure(fig, path)


_SINGLE_NETWORK_MODES = ("dropout-baseline", "imputation", "diffusion-imputation")


def _cost_points(metrics: dict) -> list[tuple[str, str, dict, dict | None]]:
    """(mode, condition, cost entry, test metrics) of every mode and condition with a cost."""
    aggs = {metrics["mode"]: metrics, **metrics.get("compare", {})}
    out = []
    for mode, per_cond in metrics.get("cost", {}).items():
        for cond, cost in per_cond.items():
            out.append((mode, cond, cost, ((aggs[mode]["conditions"].get(cond) or {}).get("test"))))
    return out


def _cost_rows(metrics: dict) -> list[str]:
    rows = [
        "| mode | condition | params | MFLOPs / clip | ms / clip (batch 1) | ms / clip (batch 64) "
        "| test MAE | test Acc-2 non0 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode, cond, cost, test in _cost_points(metrics):
        rows.append(
            f"| {mode} | {'+'.join(subset_modalities(cond))} | {cost['params']:,} | {cost['flops'] / 1e6:.3f} | "
            f"{cost['ms_per_clip_b1']:.2f} | {cost['ms_per_clip_b64']:.3f} | "
            f"{format_metric((test or {}).get('MAE'))} | {format_metric((test or {}).get('Acc2_non0'), percent=True)} |"
        )
    return rows


def plot_cost(path: Path, metrics: dict) -> None:
    """Test MAE against FLOPs per clip (log axis): one point per mode and condition."""
    points = _cost_points(metrics)
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    modes = list(dict.fromkeys(p[0] for p in points))
    for i, mode in enumerate(modes):
        xs, ys, labels = [], [], []
        for m, cond, cost, test in points:
            if m == mode and test and test.get("MAE") is not None:
                xs.append(max(cost["flops"], 1))
                ys.append(test["MAE"])
                labels.append(cond)
        ax.scatter(xs, ys, color=f"C{i}", label=mode, s=28)
        for x, y, lab in zip(xs, ys, labels):
            ax.annotate(lab, (x, y), fontsize=7, xytext=(3, 2), textcoords="offset points", color=f"C{i}")
    ax.set_xscale("log")
    ax.set(xlabel="FLOPs per clip (log)", ylabel="test MAE (lower is better)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.suptitle("accuracy against inference cost, per mode and condition")
    fig.tight_layout()
    _save_figure(fig, path)


def write_report(out_dir: Path, metrics: dict, histories: dict[str, dict[int, list[dict]]]) -> Path:
    """Write report.md and the two plots into out_dir; returns the report path."""
    out_dir = Path(out_dir)
    plot_curves(out_dir / CURVES, histories[metrics["mode"]], f"{metrics['mode']} training")
    plot_robustness(out_dir / ROBUSTNESS, metrics)
    cfg = metrics["fit_config"]
    multi = len(metrics["seeds"]) > 1
    lines = [
        f"# mmckd fit: {metrics['mode']}",
        "",
        f"- features: `{metrics['features']['path']}` (extractor config hash `{metrics['features']['config_hash']}`, "
        f"dims {metrics['features']['dims']})",
        f"- mmckd {metrics['mmckd_version']}; seeds {metrics['seeds']}; best seed {metrics['best_seed']} "
        f"(its bundle is `model/`; every seed's bundle is in `seeds/seed_N/model/`)",
        f"- model: d_model {cfg['model']['d_model']}, layers {cfg['model']['layers']}, cross layers "
        f"{cfg['model']['cross_layers']}, heads {cfg['model']['heads']}; epochs {cfg['epochs']} (patience "
        f"{cfg['patience']}), batch {cfg['batch_size']}, lr {cfg['lr']}, weight decay {cfg['weight_decay']}, "
        f"lambda {cfg['lambda_mvsc']}, temperature {cfg['temperature']}, classes {cfg['class_scheme']} "
        f"(neutral band {cfg['neutral_band']}), {cfg['regression_loss']} loss",
        f"- total time {metrics['seconds']:.0f} s",
        "",
        "## Data",
        "",
        "| split | clips | text | audio | vision |",
        "|---|---|---|---|---|",
    ]
    for split, v in metrics["data"].items():
        lines.append(f"| {split} | {v['clips']} | {v['text']} | {v['audio']} | {v['vision']} |")
    for split in ("test", "valid"):
        lines += ["", f"## Conditions ({split})", ""]
        if split == "test":
            lines.append(
                "Each condition is scored on the clips that have its modalities, the others withheld, "
                "answered by the network trained for it. Acc/F1 in %." + (" Mean ± std over seeds." if multi else "")
            )
            lines.append("")
        lines += _condition_rows(metrics, split, multi)
    nulls = {s: r for s, r in metrics["null_reasons"].items() if metrics["conditions"].get(s) is None}
    if nulls:
        lines += ["", "Conditions without a network:"]
        lines += [f"- {'+'.join(subset_modalities(s))}: {r}" for s, r in nulls.items()]
    lines += [
        "",
        "## Random missing modalities (test)",
        "",
        "Each modality of each test clip is dropped with probability MR (at least one kept; fixed seed "
        f"{cfg['eval_seed']}). *Routed*: each clip answered by the network of what it kept (clips whose kept "
        "modalities no trained network reads are left out; n says how many were scored). *Teacher zero-fill*: "
        "the teacher reads every clip with zeros for the dropped modalities (— when no teacher was trained).",
        "",
        *_missing_rows(metrics, multi),
        "",
        f"![robustness]({ROBUSTNESS})",
        "",
        "## Seeds",
        "",
        "| seed | epochs | selection score (mean valid MAE) | " + " | ".join(f"test MAE {s}" for s in SUBSETS) + " |",
        "|" + "---|" * (3 + len(SUBSETS)),
    ]
    for seed, e in metrics["per_seed"].items():
        maes = [format_metric(((e["conditions"].get(s) or {}).get("test") or {}).get("MAE")) for s in SUBSETS]
        lines.append(
            f"| {seed} | {e['epochs_run']} | {format_metric(e['selection_score'])} | " + " | ".join(maes) + " |"
        )
    if metrics.get("compare"):
        modes = [metrics["mode"], *metrics["compare"]]
        aggs = [metrics, *metrics["compare"].values()]
        lines += [
            "",
            "## Compared modes (test MAE / Acc-2 non0 %)",
            "",
            "| condition | " + " | ".join(modes) + " |",
            "|" + "---|" * (1 + len(modes)),
        ]
        for s in SUBSETS:
            cells = []
            for agg in aggs:
                entry = (agg["conditions"].get(s) or {}).get("test")
                cells.append(
                    "—"
                    if entry is None
                    else f"{format_metric(entry['MAE'])} / {format_metric(entry['Acc2_non0'], percent=True)}"
                )
            lines.append(f"| {'+'.join(subset_modalities(s))} | " + " | ".join(cells) + " |")
        lines += ["", "| MR | " + " | ".join(f"{m} routed MAE" for m in modes) + " |", "|" + "---|" * (1 + len(modes))]
        for rate in metrics["missing_rate"]:
            cells = [format_metric((agg["missing_rate"][rate]["routed"] or {}).get("MAE")) for agg in aggs]
            lines.append(f"| {rate} | " + " | ".join(cells) + " |")
    if metrics.get("routing"):
        lines += [
            "",
            "## Validated routing (best seed)",
            "",
            "Each condition is answered by the network, among those reading only its modalities, with the best "
            "valid MAE:",
            "",
            "| condition | network |",
            "|---|---|",
        ]
        lines += [f"| {'+'.join(subset_modalities(c))} | {n} |" for c, n in metrics["routing"].items()]
    if metrics.get("cost"):
        plot_cost(out_dir / COST, metrics)
        lines += [
            "",
            "## Accuracy against inference cost",
            "",
            "Per mode and condition, the network that answers (best seed): its parameters, FLOPs of one clip "
            "(torch.utils.flop_counter), CPU milliseconds per clip at batch 1 and 64 (median, this machine), and "
            "its test metrics (mean over seeds).",
            "",
            *_cost_rows(metrics),
            "",
            f"![accuracy against cost]({COST})",
        ]
    lines += ["", "## Training", "", f"![training curves]({CURVES})", ""]
    path = out_dir / "report.md"
    write_text_atomic(path, "\n".join(lines))
    return path


def _save_figure(fig, path: Path) -> None:
    """Save a PNG atomically (an I/O error is a WriteError naming path; the previous plot is kept)."""
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)
