"""Peak memory of `mmckd extract` does not grow with the length of the video.

Makes talking-head clips of 10 s and of --long seconds (a face photo with espeak-ng speech looped under
it, 25 fps, 360x360 H.264 + AAC), extracts each in its own process with the default configuration
(25 fps face mesh, audio streamed, ASR off) and reports the peak RSS of the whole process tree and the
wall time.

    python benchmarks/extract_memory.py --long 600

Writes docs/results/extract_memory.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mmckd.testing.clips import make_clip  # noqa: E402


def looped(src: Path, dst: Path, seconds: float) -> Path:
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-v",
            "error",
            "-y",
            "-stream_loop",
            "-1",
            "-i",
            str(src),
            "-t",
            str(seconds),
            "-c",
            "copy",
            str(dst),
        ],
        check=True,
    )
    return dst


def measure(video: Path, out: Path) -> tuple[float, float]:
    with tempfile.NamedTemporaryFile("r") as rss:
        t0 = time.perf_counter()
        subprocess.run(
            [
                "/usr/bin/time",
                "-f",
                "%M",
                "-o",
                rss.name,
                str(REPO / ".venv" / "bin" / "mmckd"),
                "extract",
                str(video.parent),
                "-o",
                str(out),
                "--no-progress",
            ],
            check=True,
            capture_output=True,
        )
        return time.perf_counter() - t0, int(rss.read().strip().splitlines()[-1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--long", type=float, default=600.0, help="seconds of the long clip")
    ap.add_argument("--json", type=Path, default=REPO / "docs" / "results" / "extract_memory.json")
    args = ap.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="mmckd-mem-"))
    base = make_clip(scratch / "base.mp4", "I really loved this movie, it was wonderful and I would watch it again.")
    rows = []
    for seconds in (10.0, args.long):
        folder = scratch / f"s{int(seconds)}"
        folder.mkdir()
        clip = looped(base, folder / "clip.mp4", seconds)
        wall, peak = measure(clip, scratch / f"s{int(seconds)}.h5")
        rows.append({"video_seconds": seconds, "wall_s": round(wall, 1), "peak_rss_mib": round(peak)})
        print(f"{seconds:.0f} s clip: {wall:.1f} s wall, peak RSS {peak:.0f} MiB", file=sys.stderr)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"runs": rows}, indent=2) + "\n")
    print("| video length | wall s | peak RSS MiB (whole process tree) |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r['video_seconds']:.0f} s | {r['wall_s']} | {r['peak_rss_mib']} |")


if __name__ == "__main__":
    main()
