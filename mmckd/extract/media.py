"""Media access through the system ffmpeg: probing, and streamed decoding of frames and audio.

Decoding is streamed through a pipe, so memory stays bounded whatever the length of the media.

Every ffprobe/ffmpeg call has a timeout (``timeout_s``; ``MMCKD_MEDIA_TIMEOUT`` or ``mmckd extract
--media-timeout`` set it): a probe that takes longer, or a decoder that produces nothing for that long,
is killed and the clip fails with the reason. Files are passed to ffmpeg as ``file:`` URLs of their
absolute path, so a file named ``pipe:0.wav``, ``-i.wav`` or ``http:x.mp4`` is read as the file it is.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import select
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmckd.extract.errors import MediaError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
AUDIO_EXTENSIONS = (".wav", ".mp3", ".flac", ".m4a")
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS + AUDIO_EXTENSIONS

# ffmpeg decoder threads per decoding process (0: ffmpeg decides). Extraction workers set 1 when the
# workers already fill the cores, where extra decoder threads only add overhead.
decoder_threads = 0
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
PIPE_BYTES = 1 << 20  # Linux's default pipe-max-size
# seconds a probe may take, and a decoder may go without producing output, before it is killed
timeout_s = float(os.environ.get("MMCKD_MEDIA_TIMEOUT", "600"))


def ffmpeg_input(path: str | os.PathLike) -> str:
    """path as an ffmpeg input that cannot be read as a protocol (pipe:, http:) or an option (-i)."""
    return "file:" + os.path.abspath(os.fspath(path))


@dataclass(frozen=True)
class MediaInfo:
    path: str
    duration: float | None
    has_audio: bool
    has_video: bool
    width: int = 0
    height: int = 0
    fps: float = 0.0


def _first_line(text: str, path: str | None = None) -> str:
    """ffmpeg's complaint in one line: its distinct messages, without "[demuxer @ 0x...]" or path prefixes."""
    parts: list[str] = []
    prefixes = [p + ":" for p in (path and ffmpeg_input(path), path) if p]
    for line in text.splitlines():
        line = re.sub(r"^\[[^\]]*@ 0x[0-9a-f]+\]\s*", "", line.strip())
        for prefix in prefixes:
            if line.startswith(prefix):
                line = line[len(prefix) :].strip()
                break
        if line and line not in parts:
            parts.append(line)
    return "; ".join(parts)[:300] if parts else "unknown ffmpeg error"


def ffprobe_json(url: str, shown: str) -> dict:
    """ffprobe's format and streams of url, within timeout_s; MediaError naming shown when it fails or hangs."""
    args = ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", url]
    try:
        proc = subprocess.run(args, capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise MediaError(f"{shown}: ffprobe gave no answer within {timeout_s:g} s (stopped)") from None
    except OSError as e:
        raise MediaError(f"{shown}: cannot run ffprobe ({e.strerror or e})") from None
    if proc.returncode != 0:
        raise MediaError(f"{shown}: not readable media ({_first_line(proc.stderr.decode(errors='replace'), shown)})")
    try:
        return json.loads(proc.stdout.decode(errors="replace") or "{}")
    except ValueError:
        raise MediaError(f"{shown}: ffprobe's answer is not JSON") from None


def probe(path: str | Path) -> MediaInfo:
    """Streams and duration of a media file; MediaError with a one-line reason when unreadable."""
    shown = os.fspath(path)
    path = Path(path)
    if not path.exists():
        raise MediaError(f"{shown}: no such file")
    if not path.is_file():
        raise MediaError(f"{shown}: not a regular file")
    if path.stat().st_size == 0:
        raise MediaError(f"{shown}: empty file (0 bytes)")
    info = ffprobe_json(ffmpeg_input(path), shown)
    streams = info.get("streams", [])
    video = [s for s in streams if s.get("codec_type") == "video" and s.get("disposition", {}).get("attached_pic") != 1]
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    if not video and not audio:
        raise MediaError(f"{path}: no audio or video stream")
    duration = info.get("format", {}).get("duration")
    duration = float(duration) if duration not in (None, "N/A") else None
    width = height = 0
    fps = 0.0
    if video:
        v = video[0]
        width, height = int(v.get("width", 0)), int(v.get("height", 0))
        num, _, den = str(v.get("avg_frame_rate", "0/1")).partition("/")
        try:
            fps = float(num) / float(den or 1)
        except (ValueError, ZeroDivisionError):
            fps = 0.0
    return MediaInfo(shown, duration, bool(audio), bool(video), width, height, fps if math.isfinite(fps) else 0.0)


def scaled_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Frame size with the long side at most max_side, both sides even (as the encoders like)."""
    scale = min(1.0, max_side / max(width, height)) if max_side > 0 else 1.0
    w = max(2, int(round(width * scale / 2)) * 2)
    h = max(2, int(round(height * scale / 2)) * 2)
    return w, h


class _Decoder:
    """A running ffmpeg process writing raw data to a pipe; stderr goes to a temp file (no deadlock)."""

    def __init__(self, args: list[str], path: str) -> None:
        self.path = path
        self.timeout = timeout_s
        self._err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=self._err, stdin=subprocess.DEVNULL, bufsize=0
        )  # fmt: skip
        assert self.proc.stdout is not None  # stdout=PIPE
        self._fd = self.proc.stdout.fileno()
        try:  # a bigger pipe lets ffmpeg decode a few frames ahead while the caller works on the last one
            fcntl.fcntl(self._fd, F_SETPIPE_SZ, PIPE_BYTES)
        except OSError:
            pass

    def read(self, n: int) -> bytes:
        """Up to n bytes (fewer only at the end); MediaError when ffmpeg produces nothing for timeout s."""
        chunks, got = [], 0
        while got < n:
            ready, _, _ = select.select([self._fd], [], [], self.timeout)
            if not ready:
                self.kill()
                raise MediaError(f"{self.path}: ffmpeg produced nothing for {self.timeout:g} s (stopped)")
            chunk = os.read(self._fd, n - got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def close(self, check: bool, decoded_s: float | None = None, duration: float | None = None) -> None:
        """Wait for ffmpeg; MediaError when it failed (check) or reported a truncated file."""
        assert self.proc.stdout is not None  # stdout=PIPE
        self.proc.stdout.close()
        try:
            rc = self.proc.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._err.seek(0)
        err = self._err.read().decode(errors="replace")
        self._err.close()
        if check and rc != 0:
            raise MediaError(f"{self.path}: ffmpeg failed to decode ({_first_line(err, self.path)})")
        if decoded_s is not None and "partial file" in err:
            total = f" of {duration:.1f} s" if duration else ""
            raise MediaError(f"{self.path}: truncated file (only {decoded_s:.1f} s{total} decodable)")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.close(check=False)


def iter_video_frames(info: MediaInfo, fps: float, max_side: int) -> Iterator[tuple[float, np.ndarray]]:
    """Yield (timestamp_seconds, RGB uint8 HxWx3) frames sampled at fps, one at a time."""
    w, h = scaled_size(info.width, info.height, max_side)
    args = [
        "ffmpeg", "-nostdin", "-v", "error", "-threads", str(decoder_threads), "-i", ffmpeg_input(info.path),
        "-map", "0:v:0",
        "-vf", f"fps={fps},scale={w}:{h}:flags=fast_bilinear", "-f", "rawvideo", "-pix_fmt", "rgb24", "-",
    ]  # fmt: skip
    dec = _Decoder(args, info.path)
    size = w * h * 3
    i = 0
    try:
        while True:
            buf = dec.read(size)
            if len(buf) < size:
                break
            yield i / fps, np.frombuffer(buf, np.uint8).reshape(h, w, 3)
            i += 1
    except GeneratorExit:
        dec.kill()
        raise
    dec.close(check=(i == 0), decoded_s=i / fps, duration=info.duration)


def iter_audio(info: MediaInfo, sample_rate: int, chunk_samples: int) -> Iterator[np.ndarray]:
    """Yield mono float32 chunks in [-1, 1] of chunk_samples samples (the last one may be shorter)."""
    args = [
        "ffmpeg", "-nostdin", "-v", "error", "-threads", str(decoder_threads), "-i", ffmpeg_input(info.path),
        "-map", "0:a:0",
        "-ac", "1", "-ar", str(sample_rate), "-f", "s16le", "-acodec", "pcm_s16le", "-",
    ]  # fmt: skip
    dec = _Decoder(args, info.path)
    n_bytes = chunk_samples * 2
    got = 0
    try:
        while True:
            buf = dec.read(n_bytes)
            if not buf:
                break
            buf = buf[: len(buf) // 2 * 2]
            got += len(buf)
            yield np.frombuffer(buf, np.int16).astype(np.float32) / 32768.0
    except GeneratorExit:
        dec.kill()
        raise
    dec.close(check=(got == 0), decoded_s=got / 2 / sample_rate, duration=info.duration)


def ffmpeg_version() -> str:
    try:
        out = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, check=True, timeout=60,
                             stdin=subprocess.DEVNULL).stdout  # fmt: skip
        return out.splitlines()[0]
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return "unavailable"
