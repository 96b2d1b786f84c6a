"""Extraction throughput, side by side in one run: mmckd vs the peer MMSA-FET 0.4.1 vs ffmpeg decode-only.

Throughput = seconds of video per wall-clock second of the WHOLE process (start-up and model loading
included), on the real clips of ../shared/data (the three talking heads and the MOSI clip), each used
--copies times so start-up does not dominate. Rounds are interleaved (decode, peer, each mmckd, then
again) so machine noise hits every contender alike; the median of --rounds is reported, and the
ratios are what to compare across machines.

    python benchmarks/extract_throughput.py --rounds 2 --copies 6     # 24 clips, 152 s of video

Stages are CPU seconds (the limit on two busy cores), each measured on its own: ffmpeg decoding video and
audio in its one process per clip (`decode_streams`), the face detector and mesh calls (their MediaPipe
threads included), the rest of vision (frames from the pipe, tracking, crops, descriptor math), the audio
features, the text encoder, and writing the feature file.

Contenders: ffmpeg decode-only, the peer, mmckd --workers 1 and 2 at the default adaptive face-mesh rate,
and mmckd --workers 2 at full rate (--mesh-max-interval 1: a mesh on every frame, as before).

After the rounds, in this process (warm, models loaded once, each real clip once): where the CPU goes per
stage (see above), and the fidelity of the default
vision descriptor: per-dimension Pearson correlation with the full-rate output over each real clip's
frames with a face (a dimension constant in a clip is reported as such, not divided by zero).

Writes docs/results/extract_throughput.json and prints Markdown tables. ASR off, vision at 25 fps.
The peer is built with ../shared/peers/mmsa-fet/setup.sh into .peer-venv/mmsa-fet when missing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
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
    ap.add_argument(
        "--fidelity-sweep",
        metavar="INTERVAL:THRESHOLD,...",
        help="only measure the vision fidelity and mesh share of these mesh settings (e.g. 2:0,4:0,4:0.5,4:1,4:2; "
        "tracking-off: full rate with the detector on every frame, the noise floor) and write them to "
        "docs/results/vision_mesh_rate.json; no timing",
    )
    args = ap.parse_args()
    if args.fidelity_sweep:
        sweep(args.fidelity_sweep, REPO / "docs" / "results" / "vision_mesh_rate.json")
        return

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
    for workers, extra in ((1, []), (2, []), (2, ["--mesh-max-interval", "1"])):

        def ours(r, workers=workers, extra=extra):
            out = scratch / f"out_{workers}_{len(extra)}_{r}.h5"
            cmd = [*mmckd, "extract", str(folder), "-o", str(out), "--workers", str(workers), "--no-progress"]
            return cmd + extra

        contenders[f"mmckd --workers {workers}" + (" (full-rate mesh)" if extra else "")] = ours

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
    result["stages"] = stage_times(clips())
    result["fidelity"] = fidelity(clips())
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
    st = result["stages"]
    print(f"\nWhere the CPU goes (warm, the {st['clips']} real clips once, {st['video_seconds']} s of video):\n")
    print("| stage | CPU s | share | CPU ms per video s |")
    print("|---|---|---|---|")
    for name, sec in st["cpu_seconds"].items():
        print(f"| {name} | {sec:.3f} | {sec / st['total_cpu_s']:.0%} | {1000 * sec / st['video_seconds']:.1f} |")
    print(
        f"\nstart-up (imports, model loading; once per worker): {st['startup_s']:.2f} s; face mesh on "
        f"{st['meshed_frames']} of {st['frames']} frames, {st['detector_calls']} detector calls"
    )
    fd = result["fidelity"]
    print(
        f"\nVision fidelity, default vs full-rate mesh (Pearson per dimension, worst clip); meshed "
        f"{fd['meshed_frames']} of {fd['frames']} frames:\n"
    )
    print("| dimension | worst r | clip |")
    print("|---|---|---|")
    for name, v in fd["worst"].items():
        print(f"| {name} | {v['r']} | {v['clip']} |")
    shutil.rmtree(scratch, ignore_errors=True)


def sweep(spec: str, out: Path) -> None:
    rows = []
    for item in spec.split(","):
        if item == "tracking-off":  # the noise floor: the detector's crop on every frame instead of the tracked one
            interval, threshold, settings = "1", "0", {"mesh_max_interval": 1, "tracking": False}
        else:
            interval, threshold = item.split(":")
            settings = {"mesh_max_interval": int(interval), "mesh_motion_threshold": float(threshold)}
        f = fidelity(clips(), **settings)
        weakest = min((v for v in f["worst"].items() if isinstance(v[1]["r"], float)), key=lambda kv: kv[1]["r"])
        rows.append({"setting": item, "mesh_max_interval": int(interval), "mesh_motion_threshold": float(threshold),
                     "meshed_share": round(f["meshed_frames"] / f["frames"], 3), "min_r": f["min_r"],
                     "weakest": f"{weakest[0]} ({weakest[1]['clip']})", "per_clip": f["per_clip"]})  # fmt: skip
    out.write_text(json.dumps({"clips": [p.name for p in clips()], "settings": rows}, indent=2) + "\n")
    print("| setting | mesh_max_interval | mesh_motion_threshold | frames meshed | worst per-dimension r | weakest |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['setting']} | {r['mesh_max_interval']} | {r['mesh_motion_threshold']:g} | "
              f"{r['meshed_share']:.0%} | {r['min_r']} | {r['weakest']} |")  # fmt: skip


def _cpu() -> tuple[float, float]:
    """CPU seconds (user + system) of this process and of its finished children (the ffmpeg processes)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def stage_times(paths: list[Path]) -> dict:
    """CPU seconds per extraction stage over the real clips, each once, after a warm-up clip (see module doc).

    CPU, not wall time: on two busy cores the work is what limits throughput. Each stage is run on its own
    (decode_streams with only that stage's consumer), so the MediaPipe threads and the audio thread of the
    product path, which run beside each other there, are not mixed up here.
    """
    t0 = time.perf_counter()
    from mmckd.extract.clip_extractor import ClipExtractor
    from mmckd.extract.config import ExtractConfig
    from mmckd.extract.media import decode_streams
    from mmckd.extract.pipeline import config_json, feature_dims
    from mmckd.feature_file import Clip, write_feature_file

    config = ExtractConfig()
    ex = ClipExtractor(config)
    vision, audio, text = ex.vision_extractor, ex.audio_extractor, ex.text_encoder
    text.encode_batch([TEXT])
    startup = time.perf_counter() - t0
    spent = {"detector": 0.0, "mesh": 0.0}
    calls = {"detector": 0}

    def timed_call(fn, key):
        def run(*a, **k):
            t = time.process_time()  # the MediaPipe graph threads included
            try:
                return fn(*a, **k)
            finally:
                spent[key] += time.process_time() - t
                calls[key] = calls.get(key, 0) + 1

        return run

    def drain(items) -> int:
        return sum(1 for _ in items)

    def decode(path, on_frames=None, on_audio=None, presence=False):
        v, a = config.vision, config.audio
        return decode_streams(path, fps=v.fps, max_side=v.max_side, sample_rate=a.sample_rate,
                              chunk_samples=audio.chunk_samples, on_frames=on_frames, on_audio=on_audio,
                              audio_presence=presence)  # fmt: skip

    models = vision._models  # the tracker calls these attributes: timed for this pass, restored after it
    originals = {"short_range": models.short_range, "full_range": models.full_range}
    models.short_range = timed_call(models.short_range, "detector")
    models.full_range = timed_call(models.full_range, "detector")
    models.mesh_at = timed_call(models.mesh_at, "mesh")
    decode(paths[0], on_frames=vision.extract_frames)  # warm-up
    spent.update(detector=0.0, mesh=0.0)
    calls["detector"] = 0
    sec = dict.fromkeys(["ffmpeg: decode video + audio (own process)", "face detection", "face mesh",
                         "vision: frames from the pipe, tracking, crops, descriptors", "audio features", "text",
                         "write"], 0.0)  # fmt: skip
    clips_out, frames, meshed, video_s = [], 0, 0, 0.0
    for path in paths:
        c0 = _cpu()
        decode(path, on_frames=drain, on_audio=drain)
        c1 = _cpu()
        sec["ffmpeg: decode video + audio (own process)"] += c1[1] - c0[1]
        got = decode(path, on_frames=vision.extract_frames, presence=True)
        c2 = _cpu()
        sec["vision: frames from the pipe, tracking, crops, descriptors"] += c2[0] - c1[0]
        v = got.video
        video_s += got.info.duration or 0.0
        frames, meshed = frames + v.frames, meshed + vision.last_meshed
        a = decode(path, on_audio=audio.extract_chunks).audio
        c3 = _cpu()
        sec["audio features"] += c3[0] - c2[0]
        tx = text.encode_batch([TEXT])[0]
        c4 = _cpu()
        sec["text"] += c4[0] - c3[0]
        clips_out.append(Clip(id=path.stem, media=str(path), text=tx, audio=a, vision=v, transcript=TEXT,
                              transcript_source="given", duration=got.info.duration))  # fmt: skip
    # vision less its detector and mesh calls: reading frames from the pipe, the tracker, crops and descriptors
    sec["face detection"], sec["face mesh"] = spent["detector"], spent["mesh"]
    sec["vision: frames from the pipe, tracking, crops, descriptors"] -= spent["detector"] + spent["mesh"]
    with tempfile.TemporaryDirectory() as d:
        c0 = _cpu()
        write_feature_file(Path(d) / "f.h5", clips_out, json.loads(config_json(config)), feature_dims(config))
        sec["write"] = _cpu()[0] - c0[0]
    for name, obj in originals.items():
        setattr(models, name, obj)
    del models.mesh_at
    ex.close()
    return {
        "clips": len(paths),
        "video_seconds": round(video_s, 2),
        "startup_s": round(startup, 3),
        "cpu_seconds": {k: round(v, 3) for k, v in sec.items()},
        "total_cpu_s": round(sum(sec.values()), 3),
        "frames": frames,
        "meshed_frames": meshed,
        "detector_calls": calls["detector"],
    }


def fidelity(paths: list[Path], **mesh) -> dict:
    """Per-dimension Pearson r of the vision descriptor (default config, or its mesh_* fields set to mesh)
    against the full-rate one, per real clip."""
    import numpy as np

    from mmckd.extract.config import VisionConfig
    from mmckd.extract.face_descriptors import DESCRIPTOR_NAMES
    from mmckd.extract.media import probe
    from mmckd.extract.vision import VisionExtractor

    default, full = VisionConfig(**mesh), VisionConfig(mesh_max_interval=1)
    per_clip: dict[str, dict] = {}
    frames = meshed = 0
    with VisionExtractor(default) as ours, VisionExtractor(full) as ref:
        for path in paths:
            info = probe(path)
            a, b = ours.extract(info), ref.extract(info)
            frames, meshed = frames + a.frames, meshed + ours.last_meshed
            both = a.mask & b.mask
            rows: dict[str, float | str] = {}
            for d, name in enumerate(DESCRIPTOR_NAMES):
                x, y = a.features[both, d].astype(np.float64), b.features[both, d].astype(np.float64)
                if x.std() == 0 or y.std() == 0:
                    rows[name] = "constant" if np.array_equal(x, y) else "constant in one"
                else:
                    rows[name] = round(float(np.corrcoef(x, y)[0, 1]), 4)
            per_clip[path.name] = {"frames": int(a.frames), "meshed": int(ours.last_meshed), "r": rows}
    worst = {}
    for name in DESCRIPTOR_NAMES:
        numeric = [(c["r"][name], clip) for clip, c in per_clip.items() if isinstance(c["r"][name], float)]
        r, clip = min(numeric) if numeric else ("constant", "-")
        worst[name] = {"r": r, "clip": clip}
    return {
        "config": default.to_dict(),
        "frames": frames,
        "meshed_frames": meshed,
        "per_clip": per_clip,
        "worst": worst,
        "min_r": min((v["r"] for v in worst.values() if isinstance(v["r"], float)), default=None),
    }


if __name__ == "__main__":
    main()
