"""Synthetic talking-head clips: espeak-ng speech over a face photo (scikit-image's astronaut), muxed by ffmpeg.

Used by the test suite and by ``assets/make_demo.py``. Needs the system ``ffmpeg`` and ``espeak-ng``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np


def _run(args: list[str]) -> None:
    proc = subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{args[0]} failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}"
        )


def face_image(kind: str = "face", size: int = 360, shift: int = 0) -> np.ndarray:
    """An RGB uint8 picture: "face" (astronaut, cropped on her face), "blank" (no face), "noise"."""
    if kind == "face":
        from skimage import data, transform

        img = data.astronaut()[0:300, 100:400]  # face with some shoulders
        img = np.roll(img, shift, axis=1)
        return (transform.resize(img, (size, size), anti_aliasing=True) * 255).astype(np.uint8)
    if kind == "blank":
        yy, xx = np.mgrid[0:size, 0:size]
        return np.stack([(xx * 255 // size), (yy * 255 // size), np.full_like(xx, 128)], -1).astype(np.uint8)
    if kind == "noise":
        return np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
    raise ValueError(f"unknown picture kind {kind!r}")


def speech_wav(text: str, path: str | Path, voice: str = "en-us", speed: int = 160) -> Path:
    """Speak text with espeak-ng into a 16 kHz mono WAV."""
    path = Path(path)
    raw = path.with_suffix(".raw.wav")
    _run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text])
    _run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(raw), "-ac", "1", "-ar", "16000", str(path)])
    raw.unlink()
    return path


def make_clip(
    path: str | Path,
    text: str | None = "I really loved this movie, it was wonderful.",
    picture: str = "face",
    audio: bool = True,
    seconds: float | None = None,
    fps: int = 25,
    size: int = 360,
    voice: str = "en-us",
    speed: int = 160,
) -> Path:
    """Write an H.264 mp4 of a still picture, with espeak-ng speech of text (or no audio track).

    Length: the speech's length, or seconds when given (or 3 s without speech).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img_path = path.with_name(path.stem + ".frame.png")
    from PIL import Image

    Image.fromarray(face_image(picture, size)).save(img_path)
    args = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-loop", "1", "-framerate", str(fps), "-i", str(img_path)]
    wav = None
    if audio and text:
        wav = speech_wav(text, path.with_name(path.stem + ".speech.wav"), voice=voice, speed=speed)
        args += ["-i", str(wav), "-map", "0:v", "-map", "1:a", "-c:a", "aac", "-b:a", "64k"]
        args += ["-t", str(seconds)] if seconds else ["-shortest"]
    else:
        args += ["-t", str(seconds or 3.0)]
    args += ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-r", str(fps), str(path)]
    try:
        _run(args)
    finally:
        img_path.unlink(missing_ok=True)
        if wav is not None:
            wav.unlink(missing_ok=True)
    return path


def strip_audio(src: str | Path, dst: str | Path) -> Path:
    """Copy a video without its audio track."""
    _run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(src), "-an", "-c:v", "copy", str(dst)])
    return Path(dst)


def audio_only(src: str | Path, dst: str | Path) -> Path:
    """Extract the audio track of a clip to an audio-only file (format from dst's extension)."""
    _run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(src), "-vn", str(dst)])
    return Path(dst)


def media_seconds(path: str | Path) -> float:
    """Duration of a media file (s), as ffprobe reads it."""
    proc = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        raise RuntimeError(f"ffprobe failed on {path}: {proc.stderr.strip()[-200:]}")
    return float(proc.stdout)


def join_clips(
    sources: list[str | Path],
    dst: str | Path,
    width: int = 640,
    height: int = 480,
    fps: int = 25,
    seconds: float | None = None,
    channels: str = "mono",
    preset: str = "veryfast",
) -> Path:
    """Concatenate clips (each with a video and an audio track) into one mp4: every part scaled to fit
    width x height and padded (aspect kept), at fps, audio at 44.1 kHz in the given channel layout; cut at
    seconds when given. The long videos of the segment tests and the start-up and latency benchmarks."""
    inputs, chains, pairs = [], [], []
    for k, src in enumerate(sources):
        inputs += ["-i", str(src)]
        chains.append(
            f"[{k}:v]scale={width}:{height}:force_original_aspect_ratio=decrease,"
            f"pad={width}:{height}:(ow-iw)/2:(oh-ih)/2,setsar=1,fps={fps}[v{k}];"
            f"[{k}:a]aformat=sample_rates=44100:channel_layouts={channels}[a{k}]"
        )
        pairs.append(f"[v{k}][a{k}]")
    graph = ";".join(chains) + ";" + "".join(pairs) + f"concat=n={len(sources)}:v=1:a=1[v][a]"
    args = ["ffmpeg", "-nostdin", "-v", "error", "-y", *inputs, "-filter_complex", graph, "-map", "[v]", "-map", "[a]"]
    args += ["-t", str(seconds)] if seconds else []
    args += ["-c:v", "libx264", "-preset", preset, "-pix_fmt", "yuv420p", "-c:a", "aac", str(dst)]
    _run(args)
    return Path(dst)
