"""Paper-style Markdown tables from a `mmckd fit` run's metrics.json (used by reproduce_paper.sh).

    python benchmarks/paper_tables.py runs/NAME/metrics.json [--title TITLE] > tables.md

Table 1: the seven modality conditions (test): MM-CKD's MAE, Corr, Acc-2, F1, Acc-7, with the MAE and
Acc-2 of each compared mode (ablations) beside it. Table 2: random missing modalities at each missing
rate (test): MM-CKD routed and teacher zero-fill, with each compared mode's routed MAE and Acc-2 beside.
Table 3: inference cost per mode and condition (parameters, FLOPs and CPU ms per clip of the network
that answers) beside its test MAE and Acc-2, and each mode's cost relative to MM-CKD's routed network.
Acc-2/F1 are the non-zero (negative vs positive) variants; Acc/F1 in %. Mean ± std over seeds when
the run has several. Reads JSON only.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

CONDITIONS = ("lav", "la", "lv", "av", "l", "a", "v")
NAMES = {"l": "text", "a": "audio", "v": "vision"}
MODE_TITLES = {
    "online": "MM-CKD",
    "no-mvsc": "w/o MVSC",
    "offline-teacher": "offline teacher",
    "dropout-baseline": "dropout baseline",
    "imputation": "imputation (MMIN-style)",
    "diffusion-imputation": "diffusion imputation (IMDer-style)",
}
MAIN_METRICS = (("MAE", "MAE", False), ("Corr", "Corr", False), ("Acc2_non0", "Acc-2", True),
                ("F1_non0", "F1", True), ("Acc7", "Acc-7", True))  # fmt: skip
SIDE_METRICS = (("MAE", "MAE", False), ("Acc2_non0", "Acc-2", True))


def fmt(entry: dict | None, std: dict | None, key: str, percent: bool) -> str:
    value = None if entry is None else entry.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    scale, digits = (100.0, 1) if percent else (1.0, 3)
    text = f"{value * scale:.{digits}f}"
    s = None if std is None else std.get(key)
    if s is not None:
        text += f" ± {s * scale:.{digits}f}"
    return text


def condition_name(subset: str) -> str:
    return " + ".join(NAMES[c] for c in subset)


def _test(agg: dict, subset: str, multi: bool) -> tuple[dict | None, dict | None]:
    entry = agg["conditions"].get(subset)
    if entry is None:
        return None, None
    return entry.get("test"), entry.get("test_std") if multi else None


def tables(metrics: dict, title: str | None = None) -> str:
    main_mode = metrics["mode"]
    multi = len(metrics["seeds"]) > 1
    compared = dict(metrics.get("compare") or {})
    mode_title = MODE_TITLES.get(main_mode, main_mode)
    order = [m for m in MODE_TITLES if m in compared] + sorted(m for m in compared if m not in MODE_TITLES)
    side = [(MODE_TITLES.get(m, m), compared[m]) for m in order]
    data = metrics.get("data", {})
    lines = [f"# {title or 'MM-CKD reproduction'}", ""]
    lines.append(
        f"Features `{metrics['features']['path']}` (dims {metrics['features']['dims']}); test clips "
        f"{data.get('test', {}).get('clips', '—')}; seeds {metrics['seeds']}; "
        f"epochs {metrics['fit_config']['epochs']}."
        + (" Mean ± std over seeds." if multi else "")
        + " Acc-2 and F1: negative vs positive on non-zero labels; Acc and F1 in %."
    )
    lines += ["", "## Table 1: modality conditions (test)", ""]
    head = ["condition", "n"] + [f"{mode_title} {h}" for _, h, _ in MAIN_METRICS]
    head += [f"{t} {h}" for t, _ in side for _, h, _ in SIDE_METRICS]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in CONDITIONS:
        m, sd = _test(metrics, s, multi)
        cells = [condition_name(s), str(m["n"]) if m else "—"]
        cells += [fmt(m, sd, k, p) for k, _, p in MAIN_METRICS]
        for _, agg in side:
            cm, csd = _test(agg, s, multi)
            cells += [fmt(cm, csd, k, p) for k, _, p in SIDE_METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Table 2: random missing modalities (test)", ""]
    lines.append(
        "Each modality of each test clip is dropped with probability MR (at least one kept). Routed: the "
        "network trained for the kept modalities answers; zero-fill: the teacher reads zeros for the dropped ones."
    )
    lines.append("")
    head = ["MR", f"{mode_title} routed MAE", f"{mode_title} routed Acc-2", f"{mode_title} routed F1",
            f"{mode_title} zero-fill MAE", f"{mode_title} zero-fill Acc-2"]  # fmt: skip
    head += [f"{t} routed {h}" for t, _ in side for _, h, _ in SIDE_METRICS]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rate, entry in metrics["missing_rate"].items():
        r, rs = entry["routed"], entry.get("routed_std") if multi else None
        z, zs = entry["teacher_zero_fill"], entry.get("teacher_zero_fill_std") if multi else None
        cells = [rate, fmt(r, rs, "MAE", False), fmt(r, rs, "Acc2_non0", True), fmt(r, rs, "F1_non0", True),
                 fmt(z, zs, "MAE", False), fmt(z, zs, "Acc2_non0", True)]  # fmt: skip
        for _, agg in side:
            ce = agg["missing_rate"].get(rate) or {}
            cr, crs = ce.get("routed"), ce.get("routed_std") if multi else None
            cells += [fmt(cr, crs, k, p) for k, _, p in SIDE_METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    cost = metrics.get("cost") or {}
    if cost:
        lines += ["", "## Table 3: accuracy against inference cost (test)", ""]
        lines.append(
            "Per condition, the network that answers (MM-CKD: the routed network; imputation modes: imputation and "
            "the full network): parameters, FLOPs of one clip, CPU ms per clip at batch 1 and 64, and the FLOPs "
            f"relative to {mode_title}'s."
        )
        lines.append("")
        head = ["mode", "condition", "params", "MFLOPs", "ms b1", "ms b64", f"FLOPs / {mode_title}", "MAE", "Acc-2"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        aggs = {main_mode: metrics, **compared}
        for mode in [main_mode, *order]:
            for s in CONDITIONS:
                c = (cost.get(mode) or {}).get(s)
                if c is None:
                    continue
                base = (cost.get(main_mode) or {}).get(s)
                m, sd = _test(aggs[mode], s, multi)
                ratio = f"{c['flops'] / base['flops']:.1f}x" if base and base["flops"] else "—"
                lines.append(
                    f"| {MODE_TITLES.get(mode, mode)} | {condition_name(s)} | {c['params']:,} | "
                    f"{c['flops'] / 1e6:.3f} | "
                    f"{c['ms_per_clip_b1']:.2f} | {c['ms_per_clip_b64']:.3f} | {ratio} | {fmt(m, sd, 'MAE', False)} | "
                    f"{fmt(m, sd, 'Acc2_non0', True)} |"
                )
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("metrics", type=Path, help="metrics.json of a mmckd fit run")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    try:
        metrics = json.loads(args.metrics.read_text())
    except (OSError, ValueError) as e:
        print(f"paper_tables: error: {args.metrics}: unreadable ({e})", file=sys.stderr)
        return 2
    sys.stdout.write(tables(metrics, args.title))
    return 0


if __name__ == "__main__":
    sys.exit(main())
