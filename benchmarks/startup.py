"""Start-up of `mmckd predict`: process start to the first score, before and after a change.

For each contender, `python -m mmckd predict CLIP --json ...` runs as a fresh process REPEATS times
(interleaved with the other contenders, so load on the shared machine hits all alike); measured from outside:

  * first score s: from spawning the process to its first JSON line on stdout (what a user waits);
  * clip s: what the clip itself costs: extract + inference seconds of the same clip predicted a second time
    in the same (now warm) process, as its JSON line reports them;
  * start-up s = first score - clip s: imports, bundle, extraction models and every one-off first-call cost.

A contender is the working tree ("after") or a git revision ("before": checked out into a temporary worktree
and put first on PYTHONPATH, same virtual environment). Reported: medians, and the 10-second-clip extraction
time for the issue's target (start-up no longer than extracting a 10 s clip).

    python benchmarks/startup.py --before d341f2e --repeats 3
    python benchmarks/startup.py --before d341f2e --model demo-out/run --asr   # a 7-network model

Writes docs/results/startup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MMCKD_SHARED_DATA", REPO.parent / "shared" / "data"))


def run_once(pythonpath: Path, args: list[str], cwd: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(pythonpath)}
    t0 = time.perf_counter()
    # the clip twice: the second, in the warm process, is what the clip itself costs
    proc = subprocess.Popen(
        [sys.executable, "-m", "mmckd", "predict", args[0], *args, "--json"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    first = time.perf_counter() - t0
    rest, err = proc.communicate(timeout=600)
    total = time.perf_counter() - t0
    if not line or not rest.strip():
        raise RuntimeError(f"no output from {args}: {err.strip().splitlines()[-3:]}")
    r, warm = json.loads(line), json.loads(rest.splitlines()[0])
    if r.get("error") or warm.get("error"):
        raise RuntimeError(f"{args}: {r['error'] or warm['error']}")
    clip = float(r["extract_seconds"]) + float(r["inference_seconds"])
    warm_clip = float(warm["extract_seconds"]) + float(warm["inference_seconds"])
    return {
        "first_score_s": first,
        "first_clip_s": clip,
        "clip_s": warm_clip,
        "startup_s": first - warm_clip,
        "process_s": total,
        "network": r["network"],
        "transcript_source": r["transcript_source"],
    }


def ten_second_clip(out: Path) -> Path:
    """talk1 + talk2 fitted to 720x720 at 25 fps, concatenated and cut at 10.0 s (as benchmarks/predict_latency.py)."""
    from mmckd.testing.clips import join_clips

    v = SHARED / "videos"
    return join_clips([v / "talk1.mp4", v / "talk2.mp4"], out, width=720, height=720, seconds=10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", help="git revision to compare against (checked out into a temporary worktree)")
    ap.add_argument("--clip", type=Path, default=SHARED / "videos" / "talk1.mp4")
    ap.add_argument("--model", default=str(REPO / "mmckd" / "default_model"), help="bundle both contenders read")
    ap.add_argument(
        "--yardstick-model",
        default=None,
        help="a model reading audio and vision, for the 10 s clip's extraction time [--model]",
    )
    ap.add_argument("--asr", action="store_true", help="pass --asr (the old code does not turn it on by itself)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, default=REPO / "docs" / "results" / "startup.json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mmckd-startup-"))
    contenders = {"after (working tree)": REPO}
    worktree = None
    if args.before:
        worktree = work / "before"
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", str(worktree), args.before],
            check=True,
            capture_output=True,
        )
        contenders = {f"before ({args.before})": worktree, **contenders}
    clip10 = ten_second_clip(work / "ten_seconds.mp4")
    predict_args = [str(args.clip), "--model", args.model] + (["--asr"] if args.asr else [])
    load_before = os.getloadavg()
    runs: dict[str, list[dict]] = {name: [] for name in contenders}
    ten: list[float] = []
    try:
        for _ in range(args.repeats):
            for name, path in contenders.items():
                runs[name].append(run_once(path, predict_args, work))
            # the target's yardstick: extracting a 10 s clip (all modalities, transcript given) in a warm process
            r = run_once(
                REPO, [str(clip10), "--model", args.yardstick_model or args.model, "--text", "a ten second clip"], work
            )
            ten.append(r["clip_s"])
    finally:
        if worktree is not None:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)], capture_output=True
            )
        shutil.rmtree(work, ignore_errors=True)
    med = {
        name: {k: statistics.median(r[k] for r in rs) for k in ("first_score_s", "first_clip_s", "clip_s", "startup_s")}
        | {"network": rs[0]["network"], "transcript_source": rs[0]["transcript_source"]}
        for name, rs in runs.items()
    }
    out = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cores": len(os.sched_getaffinity(0)),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "command": " ".join(["benchmarks/startup.py", *sys.argv[1:]]),
        "predict_args": predict_args,
        "median": med,
        "runs": runs,
        "ten_second_clip_extract_s": statistics.median(ten),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(
        f"\n{out['date']}, {out['cores']} cores, load {load_before[0]:.2f} -> {out['loadavg_after'][0]:.2f}; "
        f"{args.repeats} runs each, medians; clip {args.clip.name}\n"
    )
    print("| contender | network | first score s | clip s | start-up s |\n|---|---|---:|---:|---:|")
    for name, m in med.items():
        print(
            f"| {name} | {m['network']} ({m['transcript_source']}) | {m['first_score_s']:.2f} | {m['clip_s']:.2f} "
            f"| **{m['startup_s']:.2f}** |"
        )
    print(
        f"\nextracting a 10 s clip (all modalities the model reads, transcript given): "
        f"{out['ten_second_clip_extract_s']:.2f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
