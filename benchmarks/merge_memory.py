"""Peak memory of resuming onto a big feature file: the final merge must not grow with the file.

For each size, a synthetic feature file of N clips is written (text 16 x 384, audio and vision at 25
frames/s over --seconds, as `mmckd extract` stores them); then a fresh process resumes onto a copy of
it, adds one clip and finalizes (the merge `mmckd extract` runs at the end of every resumed run), and
reports its peak RSS (VmHWM) and the peak after importing the modules (the floor).

    python benchmarks/merge_memory.py                              # 5,000 and 20,000 clips
    python benchmarks/merge_memory.py --clips 20000 --baseline 1e79058   # also the merge of that commit

--baseline REV runs the same resume with the mmckd package as it was at REV (unpacked with git archive), so
the merge of REV is measured whether its feature file was one module or the mmckd/feature_file/ package.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DIMS = {"text": 384, "audio": 43, "vision": 19}

RESUME = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
import {module} as ff
def hwm_kib():  # this process's peak RSS (VmHWM; ru_maxrss would include the parent's, from before exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
floor = hwm_kib()
frames = int(sys.argv[3])
rng = np.random.default_rng(1)
def seq(n, d):
    return ff.Sequence(rng.standard_normal((n, d), dtype=np.float32), timestamps=np.arange(n) / 25.0)
clip = ff.Clip(id="zz_added", split="train", label=0.5, transcript="one more", transcript_source="labels",
               text=seq(16, 384), audio=seq(frames, 43), vision=seq(frames, 19))
t0 = time.perf_counter()
with ff.FeatureFileWriter(sys.argv[2], {{"bench": 1}}, {dims}) as w:
    w.add(clip)
    n = w.finalize()
seconds = time.perf_counter() - t0
peak = hwm_kib()
print(json.dumps({{"clips": n, "floor_mib": floor / 1024, "peak_mib": peak / 1024, "merge_s": seconds}}))
"""


def build(path: Path, clips: int, frames: int) -> None:
    """A synthetic feature file of `clips` clips, written through the (streaming) writer."""
    import numpy as np

    sys.path.insert(0, str(REPO))
    from mmckd.feature_file import Clip, FeatureFileWriter, Sequence

    rng = np.random.default_rng(0)

    def seq(n: int, d: int, **kw) -> Sequence:
        return Sequence(rng.standard_normal((n, d), dtype=np.float32), timestamps=np.arange(n) / 25.0, **kw)

    with FeatureFileWriter(path, {"bench": 1}, DIMS) as w:
        for i in range(clips):
            w.add(Clip(id=f"clip{i:06d}", split="train", label=0.5, transcript="a sentence of sixteen tokens",
                       transcript_source="labels", media=f"/data/clip{i:06d}.mp4", duration=frames / 25,
                       text=seq(16, 384, tokens=[f"tok{k}" for k in range(16)]), audio=seq(frames, 43),
                       vision=seq(frames, 19, mask=np.ones(frames, bool), confidence=np.ones(frames))))  # fmt: skip
        w.finalize()


def resume(path: Path, module_dir: Path, module: str, frames: int) -> dict:
    code = RESUME.format(module=module, dims=json.dumps(DIMS))
    proc = subprocess.run([sys.executable, "-c", code, str(module_dir), str(path), str(frames)],
                          capture_output=True, text=True, check=True, timeout=3600)  # fmt: skip
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", default="5000,20000", help="comma-separated file sizes in clips")
    ap.add_argument("--seconds", type=float, default=3.0, help="audio/vision length of each clip (25 frames/s)")
    ap.add_argument("--baseline", default=None, help="also measure mmckd.feature_file of this git revision")
    ap.add_argument("--scratch", default=None, help="folder for the files (default: a temporary one)")
    args = ap.parse_args()
    frames = int(round(args.seconds * 25))
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="merge_memory_"))
    scratch.mkdir(parents=True, exist_ok=True)
    impls = {"now": (REPO, "mmckd.feature_file")}
    if args.baseline:
        old = scratch / "baseline"
        old.mkdir(exist_ok=True)
        archive = subprocess.run(["git", "archive", args.baseline, "mmckd"], cwd=REPO, check=True,
                                 capture_output=True, timeout=60).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True, timeout=60)
        impls[f"baseline {args.baseline}"] = (old, "mmckd.feature_file")
    rows = []
    try:
        for n in (int(x) for x in args.clips.split(",")):
            base = scratch / f"base_{n}.h5"
            t0 = time.perf_counter()
            build(base, n, frames)
            built = time.perf_counter() - t0
            size_mib = base.stat().st_size / 2**20
            for name, (module_dir, module) in impls.items():
                work = scratch / f"work_{n}.h5"
                shutil.copy(base, work)
                r = resume(work, module_dir, module, frames)
                work.unlink()
                shutil.rmtree(scratch / f"work_{n}.h5.parts", ignore_errors=True)
                rows.append({"merge": name, "clips": r["clips"], "file_mib": round(size_mib),
                             "build_s": round(built, 1),
                             "floor_mib": round(r["floor_mib"]), "peak_rss_mib": round(r["peak_mib"]),
                             "above_floor_mib": round(r["peak_mib"] - r["floor_mib"]),
                             "merge_s": round(r["merge_s"], 1)})  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
            base.unlink()
    finally:
        if not args.scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    print("\n| merge | clips | file MiB | peak RSS MiB | above import floor MiB | merge s |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['merge']} | {r['clips']:,} | {r['file_mib']:,} | {r['peak_rss_mib']:,} | "
              f"{r['above_floor_mib']:,} | {r['merge_s']} |")  # fmt: skip


if __name__ == "__main__":
    main()
