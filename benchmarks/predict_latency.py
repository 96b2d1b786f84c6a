"""Prediction latency on the real clips: model-load time, per-clip extraction and inference, real-time factor.

For the real talking heads of ../shared/data/videos, the real MOSI clip and a 10-second clip made from
talk1 + talk2 (ffmpeg concat), each predicted --repeats times (medians reported) in three ways:
  * "no text":    ASR off, no transcript          -> audio + vision (network av)
  * "text given": ASR off, transcript passed in    -> text + audio + vision (network lav), as with a sidecar
  * "asr":        offline Whisper tiny.en transcribes the speech -> text + audio + vision
Real-time factor = clip seconds / processing seconds (extraction + inference; > 1 is faster than real time).
CPU s = CPU time of the prediction (all threads, ffmpeg decoders included): on a busy machine it says what the
wall time would be on idle cores (between CPU s / cores and CPU s).
Also the inference time of every network of the bundle (teacher lav and the six students) on one clip.

    python benchmarks/predict_latency.py --model demo-out/run     # `make demo` trains that model

Writes docs/results/predict_latency.json and prints Markdown tables. The target on 2 CPU cores: a 10-second
clip predicted in under 3 s once the model is loaded, ASR off.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MMCKD_SHARED_DATA", REPO.parent / "shared" / "data"))
TEXT = "i really enjoyed this movie, the acting was great"
TEN_SECONDS = "talk1+talk2_10s.mp4"
TARGET_S = 3.0

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def real_clips() -> list[Path]:
    found = sorted((SHARED / "videos").glob("*.mp4")) + [SHARED / "mosi" / "Oz06ZWiO20M_6.mp4"]
    missing = [p for p in found if not p.exists()]
    if missing or len(found) < 2:
        sys.exit(f"real clips not found under {SHARED} (set MMCKD_SHARED_DATA)")
    return found


def ten_second_clip(folder: Path) -> Path:
    """talk1 then talk2 (both fitted to 720x720 at 25 fps, audio 44.1 kHz stereo), cut to exactly 10 s."""
    from mmckd.testing.clips import join_clips

    parts = [SHARED / "videos" / "talk1.mp4", SHARED / "videos" / "talk2.mp4"]
    return join_clips(parts, folder / TEN_SECONDS, width=720, height=720, seconds=10, channels="stereo")


def timed(fn):
    t0 = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t0


def median(values: list[float]) -> float:
    return statistics.median(values)


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    model = names[0] if names else platform.processor()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    return {"cpu": model, "cores": cores, "python": platform.python_version(), "platform": platform.platform()}


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def cpu_seconds() -> float:
    """CPU time of this process (all its threads) and of its finished children (ffmpeg decoders)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure_clip(predictor, path: Path, text: str | None, repeats: int) -> dict:
    runs, cpu = [], []
    for _ in range(repeats):
        c0 = cpu_seconds()
        r = predictor.predict(path, text=text)
        cpu.append(cpu_seconds() - c0)
        if not r.ok:
            sys.exit(f"{path}: prediction failed: {r.error}")
        runs.append(r)
    from mmckd.testing.clips import media_seconds

    seconds = media_seconds(path)
    extract = median([r.extract_seconds for r in runs])
    infer = median([r.inference_seconds for r in runs])
    total = median([r.seconds for r in runs])
    return {
        "clip": path.name,
        "clip_seconds": round(seconds, 3),
        "network": runs[0].network,
        "transcript_source": runs[0].transcript_source,
        "extract_s": round(extract, 4),
        "inference_s": round(infer, 5),
        "total_s": round(total, 4),
        "inference_share": round(infer / total, 5),
        "realtime_factor": round(seconds / total, 2),
        "cpu_s": round(median(cpu), 3),
        "runs_total_s": [round(r.seconds, 4) for r in runs],
    }


def network_times(predictor, path: Path, repeats: int) -> dict[str, dict]:
    """Median inference time of each network of the bundle on one clip (text given), that network's modalities only."""
    from mmckd.extract.clip_extractor import ClipJob
    from mmckd.model.routing import MODALITIES, subset_modalities

    clip = predictor.extractor.extract(ClipJob(id=path.stem, media=str(path)), text_override=TEXT)
    bundle = predictor.bundle
    networks = getattr(bundle.predictor.model, "networks", None)
    out = {}
    for subset in bundle.available_subsets:
        keep = subset_modalities(subset)
        view = dataclasses.replace(clip, **{m: (clip.sequence(m) if m in keep else None) for m in MODALITIES})
        pred = bundle.predict(view)  # warm-up, and check routing
        assert pred.network == subset, (pred.network, subset)
        times = []
        for _ in range(repeats):
            _, dt = timed(lambda view=view: bundle.predict(view))
            times.append(dt)
        entry = {"median_ms": round(1000 * median(times), 3), "role": "teacher" if subset == "lav" else "student"}
        if networks is not None and subset in networks:
            entry["parameters"] = sum(p.numel() for p in networks[subset].parameters())
        out[subset] = entry
    return out


def extraction_parts(predictor, asr_predictor, path: Path, repeats: int) -> dict[str, float]:
    """Median seconds of each extraction step on one clip: probe, audio, vision, text encoding (and ASR)."""
    from mmckd.extract.media import probe

    ex = predictor.extractor
    info = probe(path)
    steps = {
        "probe": lambda: probe(path),
        "audio": lambda: ex.audio_extractor.extract(info),
        "vision": lambda: ex.vision_extractor.extract(info),
        "text_encoding": lambda: ex.text_encoder.encode(TEXT),
    }
    if asr_predictor is not None:
        steps["asr"] = lambda: asr_predictor.extractor.speech_recognizer.transcribe_media(info)
    return {name: round(median([timed(fn)[1] for _ in range(repeats)]), 4) for name, fn in steps.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "demo-out" / "run", help="run or bundle folder")
    parser.add_argument("--repeats", type=int, default=3, help="predictions per clip and mode (median reported)")
    parser.add_argument("--network-repeats", type=int, default=50, help="timed calls per network")
    parser.add_argument("--no-asr", action="store_true", help="skip the ASR mode")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "predict_latency.json")
    args = parser.parse_args()
    if not (args.model / "bundle.json").exists() and not (args.model / "model" / "bundle.json").exists():
        sys.exit(f"{args.model}: no model bundle; run `make demo` first or pass --model RUN")
    clips = real_clips()
    load_before = uptime()
    results: dict = {"machine": machine(), "uptime_before": load_before, "model": str(args.model)}

    (_, t_import) = timed(lambda: __import__("mmckd.predict"))
    import torch

    from mmckd.predict import load

    results["torch_threads"] = torch.get_num_threads()
    predictor, t_bundle = timed(lambda: load(args.model, asr=False))
    ex = predictor.extractor
    _, t_text = timed(lambda: ex.text_encoder)
    _, t_audio = timed(lambda: ex.audio_extractor)
    _, t_vision = timed(lambda: ex.vision_extractor)
    load_times = {"import_s": t_import, "bundle_s": t_bundle, "text_encoder_s": t_text, "audio_s": t_audio,
                  "vision_s": t_vision}  # fmt: skip
    asr_predictor = None
    if not args.no_asr:
        asr_predictor, t_asr_bundle = timed(lambda: load(args.model, asr=True))
        for name in ("text_encoder", "audio_extractor", "vision_extractor"):
            getattr(asr_predictor.extractor, name)
        _, t_asr = timed(lambda: asr_predictor.extractor.speech_recognizer)
        load_times["asr_model_s"] = t_asr
    load_times["total_without_asr_s"] = t_bundle + t_text + t_audio + t_vision
    results["load"] = {k: round(v, 3) for k, v in load_times.items()}

    with tempfile.TemporaryDirectory() as tmp:
        ten = ten_second_clip(Path(tmp))
        all_clips = clips + [ten]
        # first prediction after loading (lazy graph set-up, caches): measured once, then excluded
        first, t_first = timed(lambda: predictor.predict(clips[0], text=TEXT))
        results["first_prediction_s"] = round(t_first, 3)
        modes = [("no text", predictor, None), ("text given", predictor, TEXT)]
        if asr_predictor is not None:
            asr_predictor.predict(clips[0])  # warm-up
            modes.append(("asr", asr_predictor, None))
        results["clips"] = {}
        for mode, pred, text in modes:
            rows = [measure_clip(pred, path, text, args.repeats) for path in all_clips]
            results["clips"][mode] = rows
            print(f"{mode}: done", file=sys.stderr)
        results["networks"] = network_times(predictor, ten, args.network_repeats)
        results["extraction_parts_10s"] = extraction_parts(predictor, asr_predictor, ten, args.repeats)
    results["uptime_after"] = uptime()
    ten_row = next(r for r in results["clips"]["text given"] if r["clip"] == TEN_SECONDS)
    results["target"] = {"clip_seconds": ten_row["clip_seconds"], "total_s": ten_row["total_s"], "target_s": TARGET_S,
                         "met": ten_row["total_s"] < TARGET_S}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print_tables(results)
    print(f"\nwritten: {args.out}")


def print_tables(results: dict) -> None:
    m = results["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, torch threads {results['torch_threads']}")
    print(f"before: {results['uptime_before']}\nafter:  {results['uptime_after']}\n")
    ld = results["load"]
    print("| load step | seconds |\n|---|---:|")
    for k, v in ld.items():
        print(f"| {k.removesuffix('_s')} | {v:.2f} |")
    print(f"| first prediction (after load) | {results['first_prediction_s']:.2f} |\n")
    print("| mode | clip | clip s | network | extract s | inference ms | total s | inference / total | RTF | CPU s |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for mode, rows in results["clips"].items():
        for r in rows:
            print(f"| {mode} | {r['clip']} | {r['clip_seconds']:.1f} | {r['network']} | {r['extract_s']:.2f} | "
                  f"{1000 * r['inference_s']:.1f} | {r['total_s']:.2f} | {100 * r['inference_share']:.2f}% | "
                  f"{r['realtime_factor']:.1f} | {r['cpu_s']:.2f} |")  # fmt: skip
    parts = results["extraction_parts_10s"]
    print(f"\nextraction steps on the {TEN_SECONDS} clip (s): " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items()))
    print("\n| network | role | inference ms (median) | parameters |\n|---|---|---:|---:|")
    for net, e in results["networks"].items():
        print(f"| {net} | {e['role']} | {e['median_ms']:.2f} | {e.get('parameters', '')} |")
    t = results["target"]
    print(f"\ntarget: {t['clip_seconds']:.0f} s clip in {t['total_s']:.2f} s (ASR off, text given) "
          f"< {t['target_s']:.0f} s: {'met' if t['met'] else 'NOT met'}")  # fmt: skip


if __name__ == "__main__":
    main()
