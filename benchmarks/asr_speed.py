"""ASR speed: each file's transcript and real-time factor (compute seconds per second of audio), as JSON lines.

    python benchmarks/asr_speed.py FILE... [--model DIR] [--threads N] [--compute-type int8] [--no-vad]

Loads the model once (load time reported), decodes every file to 16 kHz mono first, warms up on 5 s of
the first audio, then times ``SpeechRecognizer.transcribe`` alone per file. Needs the ``asr`` extra.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from mmckd.extract.asr import ASR_SAMPLE_RATE, SpeechRecognizer
from mmckd.extract.media import iter_audio, probe


def main(argv: list[str] | None = None) -> None:
    """Print each file's transcript and real-time factor (compute seconds per second of audio) as JSON lines."""
    parser = argparse.ArgumentParser(prog="benchmarks/asr_speed.py", description=main.__doc__)
    parser.add_argument("files", nargs="+")
    parser.add_argument("--model", default="default")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compute-type", default="int8")
    parser.add_argument("--no-vad", action="store_true")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    rec = SpeechRecognizer(args.model, compute_type=args.compute_type, threads=args.threads, vad_filter=not args.no_vad)
    print(json.dumps({"load_s": round(time.perf_counter() - t0, 3), **rec.model_info}))
    decoded = []
    for f in args.files:
        info = probe(f)
        chunks = list(iter_audio(info, ASR_SAMPLE_RATE, ASR_SAMPLE_RATE * 30)) if info.has_audio else []
        decoded.append((f, np.concatenate(chunks) if chunks else None))
    warm = next((a for _, a in decoded if a is not None), None)
    if warm is not None:
        rec.transcribe(warm[: ASR_SAMPLE_RATE * 5])  # first call pays one-off set-up (VAD model, allocations)
    total_audio = total_compute = 0.0
    for f, audio in decoded:
        seconds = 0.0 if audio is None else audio.size / ASR_SAMPLE_RATE
        t0 = time.perf_counter()
        result = rec.transcribe(audio) if audio is not None else None
        compute = time.perf_counter() - t0
        total_audio, total_compute = total_audio + seconds, total_compute + compute
        rtf = round(compute / seconds, 3) if seconds else None
        row = {"file": f, "audio_s": round(seconds, 2), "compute_s": round(compute, 3), "rtf": rtf}
        print(json.dumps({**row, "text": result.text if result else None}))
    if total_audio:
        print(json.dumps({"total_audio_s": round(total_audio, 2), "total_rtf": round(total_compute / total_audio, 3)}))


if __name__ == "__main__":
    main()
