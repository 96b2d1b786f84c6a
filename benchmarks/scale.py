"""Scale-out on one machine: extraction with 1 and 2 local workers and with Ray, training with 1 and 2 processes.

Extraction: the real clips of ../shared/data (three talking heads and the MOSI clip), each used --copies
times (symlinks, a sidecar transcript each), extracted by a fresh `mmckd extract` process per run:
``--workers 1``, ``--workers 2`` and ``--executor ray --workers 2`` (a local Ray instance with the
machine's CPUs, started and stopped by the command). Wall time of the whole process (start-up, model
loading, Ray start included); rounds interleaved, median reported. Ray's fixed start/stop cost is
measured alone beside it.

Training: a synthetic feature file of CMU-MOSI's shapes (benchmarks/fit_speed.py's writer: 2,199
clips, text 50x768, audio 375x5, vision 500x20, all modalities), ``mmckd fit --epochs E`` with the
default model, in 1 process (1 thread, then 2 threads) and in 2 processes (``--nproc 2``, 1 thread
each). Seconds per epoch are read from the run's history (training steps + valid evaluation +
checkpoint), the first epoch left out as warm-up.

Driver ceiling: what the one process that writes the file (whatever the executor) can take in,
measured with clips of a 7 s talking head's shapes (text 16x384, audio 175x43, vision 175x19):
`FeatureFileWriter.add` (with its part files every 64 clips), the final merge, and a pickle round
trip of a clip (what a Ray result costs to move, short of the network).

The 1-minute load average is recorded before every measurement: the machine may be shared.

    python benchmarks/scale.py --rounds 2 --copies 2 --epochs 3
    python benchmarks/scale.py --skip extract --skip fit      # driver ceiling only (keeps the other results)

Writes docs/results/scale.json (parts not run are kept from the previous file) and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MMCKD = [sys.executable, "-m", "mmckd"]

sys.path.insert(0, str(REPO / "benchmarks"))
from extract_throughput import clip_folder  # noqa: E402  (the same real clips and sidecars)


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def run(args: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(args[:6])} ... failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall


# --------------------------------------------------------------------------- extraction


def bench_extract(scratch: Path, copies: int, rounds: int, env: dict) -> dict:
    folder = scratch / "clips"
    files, video_s = clip_folder(folder, copies)
    contenders = {
        "local --workers 1": ["--workers", "1"],
        "local --workers 2": ["--workers", "2"],
        "ray --workers 2 (local instance, 2 CPUs)": ["--executor", "ray", "--workers", "2"],
    }
    runs: dict[str, list[dict]] = {k: [] for k in contenders}
    ray_start: list[dict] = []
    ray_probe = [sys.executable, "-c",
                 "import ray; ray.init(include_dashboard=False, log_to_driver=False); ray.shutdown()"]  # fmt: skip
    for r in range(rounds):
        for name, extra in contenders.items():
            out = scratch / f"out_{r}_{len(runs[name])}_{abs(hash(name))}.h5"
            load = load1()
            wall = run([*MMCKD, "extract", str(folder), "-o", str(out), "--no-progress", *extra], env)
            runs[name].append({"wall_s": round(wall, 2), "load1_before": load})
            print(f"round {r + 1}: {name}: {wall:.1f} s ({video_s / wall:.2f}x real time), load {load}",
                  file=sys.stderr)  # fmt: skip
        load = load1()
        ray_start.append({"wall_s": round(run(ray_probe, env), 2), "load1_before": load})
    result = {"clips": len(files), "video_seconds": round(video_s, 2), "rounds": rounds, "contenders": {}}
    for name, vals in runs.items():
        wall = statistics.median(v["wall_s"] for v in vals)
        result["contenders"][name] = {
            "runs": vals, "median_wall_s": round(wall, 2), "clips_per_s": round(len(files) / wall, 3),
            "x_real_time": round(video_s / wall, 2),
        }  # fmt: skip
    result["ray_start_stop_s"] = {"runs": ray_start, "median": statistics.median(v["wall_s"] for v in ray_start)}
    return result


# --------------------------------------------------------------------------- the driver


def bench_driver(scratch: Path, clips_n: int = 2000) -> dict:
    import pickle

    import numpy as np

    from mmckd.feature_file import Clip, FeatureFileWriter, Sequence

    rng = np.random.default_rng(0)

    def seq(frames: int, dim: int) -> Sequence:
        return Sequence(features=rng.standard_normal((frames, dim), dtype=np.float32),
                        timestamps=np.arange(frames) / 25.0, mask=np.ones(frames, bool))  # fmt: skip

    clips = [
        Clip(id=f"clip{i:06d}", split="train", label=0.5, transcript="a sentence", transcript_source="labels",
             media=f"/data/clip{i:06d}.mp4", duration=7.0, text=seq(16, 384), audio=seq(175, 43), vision=seq(175, 19))
        for i in range(clips_n)
    ]  # fmt: skip
    load = load1()
    path = scratch / "driver.h5"
    t0 = time.perf_counter()
    with FeatureFileWriter(path, {"bench": 1}, {"text": 384, "audio": 43, "vision": 19}) as writer:
        for c in clips:
            writer.add(c)
        writer.flush()
        t1 = time.perf_counter()
        writer.finalize()
    t2 = time.perf_counter()
    t3 = time.perf_counter()
    for c in clips[:500]:
        pickle.loads(pickle.dumps(c, protocol=5))
    pickle_s = (time.perf_counter() - t3) / 500
    return {
        "clips": clips_n, "file_mib": round(path.stat().st_size / 2**20, 1),
        "bytes_per_clip": int(len(pickle.dumps(clips[0], protocol=5))),
        "add_clips_per_s": round(clips_n / (t1 - t0)), "merge_s": round(t2 - t1, 2),
        "merge_clips_per_s": round(clips_n / (t2 - t1)), "pickle_round_trip_ms": round(1000 * pickle_s, 3),
        "load1_before": load,
    }  # fmt: skip


# --------------------------------------------------------------------------- training


def bench_fit(scratch: Path, epochs: int, env: dict) -> dict:
    from fit_speed import SHAPES, write_shaped_file

    path = scratch / "mosi_shaped.h5"
    write_shaped_file(path, SHAPES["mosi"])
    contenders = {
        "1 process, 1 thread": ["--threads", "1"],
        "1 process, 2 threads": ["--threads", "2"],
        "2 processes (--nproc 2), 1 thread each": ["--threads", "1", "--nproc", "2"],
    }
    out: dict = {"file": "synthetic CMU-MOSI shapes (fit_speed.py)", "epochs": epochs, "contenders": {}}
    for name, extra in contenders.items():
        run_dir = scratch / f"run_{len(out['contenders'])}"
        load = load1()
        wall = run([*MMCKD, "fit", str(path), "-o", str(run_dir), "--epochs", str(epochs), "--seeds", "1",
                    "--patience", str(epochs + 1), "--no-progress", *extra], env)  # fmt: skip
        history = json.loads((run_dir / "seeds" / "seed_1" / "evaluation.json").read_text())["history"]
        per_epoch = [round(h["seconds"], 2) for h in history]
        steady = per_epoch[1:] or per_epoch
        out["contenders"][name] = {
            "epoch_s": per_epoch, "mean_epoch_s_after_first": round(statistics.mean(steady), 2),
            "whole_run_wall_s": round(wall, 1), "load1_before": load, "load1_after": load1(),
        }  # fmt: skip
        print(f"fit {name}: epochs {per_epoch} s, whole run {wall:.0f} s, load {load}", file=sys.stderr)
        shutil.rmtree(run_dir, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--copies", type=int, default=2, help="times each real clip is used")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--skip", choices=("extract", "fit", "driver"), action="append", default=[])
    ap.add_argument("--json", type=Path, default=REPO / "docs" / "results" / "scale.json")
    args = ap.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    scratch = Path(tempfile.mkdtemp(prefix="mmckd-scale-"))
    previous = json.loads(args.json.read_text()) if args.json.exists() else {}
    result = {
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }
    try:
        import ray

        result["ray"] = ray.__version__
    except ImportError:
        args.skip.append("extract")
        print("ray not installed (pip install 'mmckd[ray]'): extraction part skipped", file=sys.stderr)
    try:
        if "extract" not in args.skip:
            result["extract"] = bench_extract(scratch, args.copies, args.rounds, env)
        if "fit" not in args.skip:
            result["fit"] = bench_fit(scratch, args.epochs, env)
        if "driver" not in args.skip:
            result["driver"] = bench_driver(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    stamp = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}  # fmt: skip
    for part in ("extract", "fit", "driver"):
        if part in result:
            result[part].update(stamp)  # each part keeps its own date when later runs skip it
    for part in ("extract", "fit", "driver"):
        if part not in result and part in previous:
            result[part] = previous[part]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    if "extract" in result:
        e = result["extract"]
        base = e["contenders"]["local --workers 1"]["median_wall_s"]
        print(f"\nExtraction: {e['clips']} clips, {e['video_seconds']} s of video, median of {e['rounds']} rounds\n")
        print("| executor | wall s | clips/s | x real time | speed-up | load avg (1 min) before each round |")
        print("|---|---|---|---|---|---|")
        for name, v in e["contenders"].items():
            loads = ", ".join(str(r["load1_before"]) for r in v["runs"])
            print(f"| {name} | {v['median_wall_s']} | {v['clips_per_s']} | {v['x_real_time']} | "
                  f"{base / v['median_wall_s']:.2f}x | {loads} |")  # fmt: skip
        print(f"\nRay start + stop alone: {e['ray_start_stop_s']['median']} s")
    if "fit" in result:
        f = result["fit"]
        base = f["contenders"]["1 process, 1 thread"]["mean_epoch_s_after_first"]
        print(f"\nTraining: {f['file']}, {f['epochs']} epochs, default model\n")
        print("| processes | s / epoch (after the first) | speed-up | epochs s | load avg before / after |")
        print("|---|---|---|---|---|")
        for name, v in f["contenders"].items():
            print(f"| {name} | {v['mean_epoch_s_after_first']} | {base / v['mean_epoch_s_after_first']:.2f}x | "
                  f"{v['epoch_s']} | {v['load1_before']} / {v['load1_after']} |")  # fmt: skip
    if "driver" in result:
        d = result["driver"]
        print(f"\nDriver (one process, load {d['load1_before']}): {d['clips']} clips of {d['bytes_per_clip']} bytes; "
              f"add + parts {d['add_clips_per_s']} clips/s, merge {d['merge_s']} s ({d['merge_clips_per_s']} clips/s), "
              f"pickle round trip {d['pickle_round_trip_ms']} ms/clip")  # fmt: skip


if __name__ == "__main__":
    main()
