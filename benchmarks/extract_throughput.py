"""Extraction throughput, side by side in one run: mmckd vs the peer MMSA-FET 0.4.1 vs ffmpeg decode-only.

Throughput = seconds of video per wall-clock second of the WHOLE process (start-up and model loading
included), on the real clips of ../shared/data (the three talking heads and the MOSI clip), each used
--copies times so start-up does not dominate. Rounds are interleaved (decode, peer, mmckd x1, mmckd x2,
then again) so machine noise hits every contender alike; the median of --rounds is reported, and the
ratios are what to compare across machines.

    python benchmarks/extract_throughput.py --rounds 3 --copies 4

Writes docs/results/extract_throughput.json and prints a Markdown table. ASR off, face mesh at 25 fps.
The peer is built with ../shared/peers/mmsa-fet/setup.sh into .peer-venv/mmsa-fet when missing.
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
SHARED = Path(os.environ.get("MMCKD_SHARED_DATA", REPO.parent / "shared" / "data"))
PEER = SHARED.parent / "peers" / "mmsa-fet"
TEXT = "I really enjoyed this movie, the acting was great."  # the text the peer's runner uses


def clips() -> list[Path]:
    found = sorted((SHARED / "videos").glob("*.mp4")) + [SHARED / "mosi" / "Oz06ZWiO20M_6.mp4"]
    missing = [p for p in found if not p.exists()]
    if missing or not found:
        sys.exit(f"real clips not found under {SHARED}")
    return found


def clip_folder(folder: Path, copies: int) -> tuple[list[Path], float]:
    """folder filled with copies symlinks of each real clip, each with a sidecar transcript (TEXT);
    (the files, their total seconds of video)."""
    folder.mkdir()
    files = []
    for k in range(copies):
        for src in clips():
            dst = folder / f"{src.stem}_{k}.mp4"
            os.symlink(src, dst)
            dst.with_suffix(".txt").write_text(TEXT + "\n")
            files.append(dst)
    return files, sum(duration(f) for f in files)


def duration(path: Path) -> float:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(out.strip())


def timed(args: list[str], env: dict | None = None) -> tuple[float, float]:
    """Run a command under GNU time; (wall seconds, peak RSS MiB of the largest process of its tree)."""
    with tempfile.NamedTemporaryFile("r") as rss:
        t0 = time.perf_counter()
        proc = subprocess.run(
            ["/usr/bin/time", "-f", "%M", "-o", rss.name, *args], capture_output=True, text=True, env=env
        )
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"{args[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
        return wall, int(rss.read().strip().splitlines()[-1]) / 1024


def decode_only(files: list[Path]) -> list[str]:
    script = "; ".join(f"ffmpeg -nostdin -v error -i '{f}' -map 0 -f null -" for f in files)
    return ["bash", "-c", script]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--copies", type=int, default=4, help="times each real clip is used")
    ap.add_argument("--peer-venv", type=Path, default=REPO / ".peer-venv" / "mmsa-fet")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--json", type=Path, default=REPO / "docs" / "results" / "extract_throughput.json")
    args = ap.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="mmckd-bench-"))
    folder = scratch / "clips"
    files, video_s = clip_folder(folder, args.copies)
    mmckd = [str(REPO / ".venv" / "bin" / "mmckd")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    contenders = {"ffmpeg decode-only": lambda r: decode_only(files)}
    if not args.no_peer:
        if not (args.peer_venv / "bin" / "python").exists():
            subprocess.run(["bash", str(PEER / "setup.sh"), str(args.peer_venv)], check=True)
        peer_tmp = scratch / "peer"

        def peer(r):
            shutil.rmtree(peer_tmp, ignore_errors=True)
            peer_tmp.mkdir()
            return [str(args.peer_venv / "bin" / "python"), str(PEER / "run.py"), str(peer_tmp), *map(str, files)]

        contenders["MMSA-FET 0.4.1"] = peer
    for workers in (1, 2):

        def ours(r, workers=workers):
            out = scratch / f"out_{workers}_{r}.h5"
            return [*mmckd, "extract", str(folder), "-o", str(out), "--workers", str(workers), "--no-progress"]

        contenders[f"mmckd --workers {workers}"] = ours

    runs: dict[str, list[tuple[float, float]]] = {k: [] for k in contenders}
    for r in range(args.rounds):
        for name, make in contenders.items():
            e = {**env, "HOME": str(scratch)} if name.startswith("MMSA") else env
            wall, rss = timed(make(r), e)
            runs[name].append((wall, rss))
            print(
                f"round {r + 1}: {name}: {wall:.1f} s, {video_s / wall:.1f}x real time, peak {rss:.0f} MiB",
                file=sys.stderr,
            )
    result = {
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "clips": len(files),
        "video_seconds": round(video_s, 2),
        "rounds": args.rounds,
        "contenders": {},
    }
    for name, vals in runs.items():
        wall = statistics.median(v[0] for v in vals)
        result["contenders"][name] = {
            "wall_s": [round(v[0], 2) for v in vals],
            "median_wall_s": round(wall, 2),
            "x_real_time": round(video_s / wall, 2),
            "peak_rss_mib": round(max(v[1] for v in vals)),
        }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    c = result["contenders"]
    decode = c["ffmpeg decode-only"]["x_real_time"]
    peer_x = c.get("MMSA-FET 0.4.1", {}).get("x_real_time")
    print(f"\n{len(files)} clips, {video_s:.1f} s of video, {args.rounds} rounds, median whole-process wall time\n")
    print("| contender | wall s | x real time | vs MMSA-FET | decode-only / it | peak RSS MiB |")
    print("|---|---|---|---|---|---|")
    for name, v in c.items():
        vs_peer = f"{v['x_real_time'] / peer_x:.2f}x" if peer_x else "-"
        print(
            f"| {name} | {v['median_wall_s']} | {v['x_real_time']} | {vs_peer} | "
            f"{decode / v['x_real_time']:.2f} | {v['peak_rss_mib']} |"
        )
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
