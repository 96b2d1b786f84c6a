"""Media access through the system ffmpeg: probing, and streamed decoding of frames and audio.

Decoding is streamed through a pipe, so memory stays bounded whatever the length of the media.

Every ffprobe/ffmpeg call has a timeout (``timeout_s``; ``MMCKD_MEDIA_TIMEOUT`` or ``mmckd extract
--media-timeout`` set it): a probe that takes longer, or a decoder that produces nothing for that long,
is killed and the clip fails with the reason. Files are passed to ffmpeg as ``file:`` URLs of their
absolute path, so a file named ``pipe:0.wav``, ``-i.wav`` or ``http:x.mp4`` is read as the file it is.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import select
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

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


def check_media_file(path: str | os.PathLike) -> Path:
    """path as a Path when it is a non-empty regular file; MediaError with the reason otherwise."""
    shown = os.fspath(path)
    p = Path(path)
    if not p.exists():
        raise MediaError(f"{shown}: no such file")
    if not p.is_file():
        raise MediaError(f"{shown}: not a regular file")
    if p.stat().st_size == 0:
        raise MediaError(f"{shown}: empty file (0 bytes)")
    return p


def probe(path: str | Path) -> MediaInfo:
    """Streams and duration of a media file; MediaError with a one-line reason when unreadable."""
    shown = os.fspath(path)
    path = check_media_file(path)
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
    """Frame size with the long side at most max_side, both sides even (as the encoders like); halves round
    up. The frames decoded by `scale_filter` have this size (ffmpeg evaluates the same formula)."""
    scale = min(1.0, max_side / max(width, height)) if max_side > 0 else 1.0
    w = max(1, math.floor(width * scale / 2 + 0.5)) * 2
    h = max(1, math.floor(height * scale / 2 + 0.5)) * 2
    return w, h


def scale_filter(max_side: int) -> str:
    """ffmpeg scale filter to `scaled_size` of whatever size the decoded (and auto-rotated) frames have."""
    s = f"min(1\\,{max_side}/max(iw\\,ih))" if max_side > 0 else "1"
    side = "2*max(1\\,floor({}*{}/2+0.5))"
    return f"scale=w='{side.format('iw', s)}':h='{side.format('ih', s)}':flags=fast_bilinear"


class _Pipe:
    """One output pipe of an ffmpeg process, read with the decoder's timeout; bytes may be pushed back."""

    def __init__(self, fd: int, decoder: _Decoder) -> None:
        self.fd = fd
        self.decoder = decoder
        self.got = 0  # bytes read so far
        self.frames = 0  # video frames read so far (PPM images)
        self._back = b""
        try:  # a bigger pipe lets ffmpeg decode ahead while the caller works on what it read last
            fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_BYTES)
        except OSError:
            pass

    def read(self, n: int) -> bytes:
        """Up to n bytes (fewer only at the end); MediaError when ffmpeg produces nothing for timeout s."""
        chunks, got = [], 0
        if self._back:
            chunks.append(self._back[:n])
            got, self._back = len(chunks[0]), self._back[n:]
        while got < n:
            ready, _, _ = select.select([self.fd], [], [], self.decoder.timeout)
            if not ready:
                self.decoder.stop()
                raise MediaError(
                    f"{self.decoder.path}: ffmpeg produced nothing for {self.decoder.timeout:g} s (stopped)"
                )
            chunk = os.read(self.fd, n - got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        self.got += got
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def unread(self, data: bytes) -> None:
        self._back = data + self._back
        self.got -= len(data)

    def drain(self) -> None:
        """Read and drop the rest (so that ffmpeg is never blocked on this pipe)."""
        while self.read(PIPE_BYTES):
            pass


_PPM_HEADER = re.compile(rb"P6\s+(\d+)\s+(\d+)\s+255\s")


def _ppm_frames(pipe: _Pipe, fps: float) -> Iterator[tuple[float, np.ndarray]]:
    """(timestamp, RGB uint8 HxWx3) of each PPM image ffmpeg's image2pipe writes to pipe (its header carries the
    size, so a size change mid-stream is followed). MediaError on anything that is not a PPM image."""
    header, size = b"", 0
    w = h = 0
    while True:
        if header:  # the usual case: same size as the last frame, header and pixels in one read
            buf = pipe.read(len(header) + size)
            if not buf:
                return
            if buf.startswith(header) and len(buf) == len(header) + size:
                pipe.frames += 1
                yield (pipe.frames - 1) / fps, np.frombuffer(buf, np.uint8, offset=len(header)).reshape(h, w, 3)
                continue
            pipe.unread(buf)
        head = pipe.read(32)
        if not head:
            return
        m = _PPM_HEADER.match(head)
        if m is None and len(head) < 32:
            return  # ffmpeg was stopped in the middle of a header
        if m is None:
            raise MediaError(f"{pipe.decoder.path}: ffmpeg wrote something other than PPM frames")
        header, (w, h) = head[: m.end()], (int(m.group(1)), int(m.group(2)))
        size = w * h * 3
        pipe.unread(head[m.end() :])
        pixels = pipe.read(size)
        if len(pixels) < size:
            return  # a partial last frame: ffmpeg was stopped
        pipe.frames += 1
        yield (pipe.frames - 1) / fps, np.frombuffer(pixels, np.uint8).reshape(h, w, 3)


def _audio_chunks(pipe: _Pipe, chunk_samples: int) -> Iterator[np.ndarray]:
    """Mono float32 chunks in [-1, 1] of chunk_samples samples (the last may be shorter) from s16le bytes."""
    n_bytes = chunk_samples * 2
    while True:
        buf = pipe.read(n_bytes)
        if not buf:
            return
        buf = buf[: len(buf) // 2 * 2]
        yield np.frombuffer(buf, np.int16).astype(np.float32) / 32768.0


_LOG_LINE = re.compile(r"^(?:\[[^\]]*@ 0x[0-9a-f]+\]\s*)?\[(\w+)\]\s?(.*)$")
_DURATION = re.compile(r"^  Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?),")
_NO_STREAM = re.compile(r"Output file #(\d+) does not contain any stream")
_ATTACHED_PIC = re.compile(r"^  Stream #0:(\d+)\S*: Video: .*\(attached pic\)")
_MAPPING = re.compile(r"^  Stream #0:(\d+) -> #(\d+):\d+ ")


def _video_output(fps: float, max_side: int) -> list[str]:
    """ffmpeg output options: the first video stream that is not cover art, at fps, scaled, as PPM images."""
    return ["-map", "0:V:0?", "-vf", f"fps={fps},{scale_filter(max_side)}", "-c:v", "ppm", "-f", "image2pipe"]


def _audio_output(sample_rate: int) -> list[str]:
    """ffmpeg output options: the first audio stream, mono, sample_rate Hz, signed 16-bit little-endian."""
    return ["-map", "0:a:0?", "-ac", "1", "-ar", str(sample_rate), "-c:a", "pcm_s16le", "-f", "s16le"]


class _Decoder:
    """A running ffmpeg process writing one or more outputs to pipes; its log goes to a temp file (no deadlock).

    outputs: ffmpeg output options, each written to its own pipe (`pipes`, in order). The log is at level
    info with level prefixes, so the input's duration and the errors can be told apart from metadata.
    """

    def __init__(self, url: str, outputs: list[list[str]], path: str) -> None:
        self.path = path
        self.timeout = timeout_s
        self._err = tempfile.TemporaryFile()
        args = ["ffmpeg", "-nostdin", "-hide_banner", "-nostats", "-v", "level+info",
                "-threads", str(decoder_threads), "-i", url]  # fmt: skip
        read_fds, write_fds = [], []
        for k, out in enumerate(outputs):
            if k == 0:
                args += [*out, "pipe:1"]
            else:
                r, w = os.pipe()
                read_fds.append(r)
                write_fds.append(w)
                args += [*out, f"pipe:{w}"]
        try:
            self.proc = subprocess.Popen(
                args, stdout=subprocess.PIPE, stderr=self._err, stdin=subprocess.DEVNULL, bufsize=0,
                pass_fds=write_fds,
            )  # fmt: skip
        except BaseException as e:
            for fd in read_fds:
                os.close(fd)
            self._err.close()
            if isinstance(e, OSError):
                raise MediaError(f"{path}: cannot run ffmpeg ({e.strerror or e})") from None
            raise
        finally:
            for fd in write_fds:
                os.close(fd)
        assert self.proc.stdout is not None  # stdout=PIPE
        self.pipes = [_Pipe(self.proc.stdout.fileno(), self)] + [_Pipe(fd, self) for fd in read_fds]
        self._extra_fds = read_fds
        self.log: list[tuple[str, str]] | None = None  # (level, message) lines, once closed

    def finish(self) -> int:
        """Wait for ffmpeg (killed after timeout s) and read its log; the exit status."""
        assert self.proc.stdout is not None  # stdout=PIPE
        if self.log is not None:
            return self.proc.returncode
        self.proc.stdout.close()
        for fd in self._extra_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        try:
            rc = self.proc.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._err.seek(0)
        self.log = []
        for line in self._err.read().decode(errors="replace").splitlines():
            m = _LOG_LINE.match(line)
            if m:
                self.log.append((m.group(1), m.group(2)))
        self._err.close()
        return rc

    def errors(self) -> str:
        """The error lines of the log (as -v error would print them)."""
        return "\n".join(msg for level, msg in self.log or () if level in ("error", "fatal", "panic"))

    def duration(self) -> float | None:
        """The input's duration as ffmpeg reports it (10 ms resolution), or None."""
        for level, msg in self.log or ():
            m = _DURATION.match(msg) if level == "info" else None
            if m:
                return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
        return None

    def outputs_fed_by_cover_art(self) -> set[int]:
        """Outputs that got an attached picture (cover art): ffmpeg 5 maps one there when an optional map
        ("0:V:0?", no cover art) matches nothing, as if no map had been given."""
        pics = {m.group(1) for level, msg in self.log or () if level == "info" for m in [_ATTACHED_PIC.match(msg)] if m}
        return {
            int(m.group(2)) for level, msg in self.log or () if level == "info"
            for m in [_MAPPING.match(msg)] if m and m.group(1) in pics
        }  # fmt: skip

    def check(self, rc: int, decoded: bool, decoded_s: float | None = None, duration: float | None = None) -> None:
        """MediaError when ffmpeg failed with nothing decoded, or reported a truncated file."""
        err = self.errors()
        if rc != 0 and not decoded:
            raise MediaError(f"{self.path}: ffmpeg failed to decode ({_first_line(err, self.path)})")
        if decoded_s is not None and "partial file" in err:
            total = f" of {duration:.1f} s" if duration else ""
            raise MediaError(f"{self.path}: truncated file (only {decoded_s:.1f} s{total} decodable)")

    def stop(self) -> None:
        """Kill ffmpeg (safe from any thread; its pipes then end); `finish` still reaps it."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.kill()

    def kill(self) -> None:
        self.stop()
        self.finish()


def iter_video_frames(info: MediaInfo, fps: float, max_side: int) -> Iterator[tuple[float, np.ndarray]]:
    """Yield (timestamp_seconds, RGB uint8 HxWx3) frames sampled at fps, one at a time, long side at most
    max_side (`scaled_size` of the frames as ffmpeg decodes them, i.e. after auto-rotation)."""
    dec = _Decoder(ffmpeg_input(info.path), [_video_output(fps, max_side)], info.path)
    pipe = dec.pipes[0]
    try:
        yield from _ppm_frames(pipe, fps)
    except BaseException:  # stopped early (GeneratorExit), timed out, or the caller failed
        dec.kill()
        raise
    dec.check(dec.finish(), decoded=pipe.frames > 0, decoded_s=pipe.frames / fps, duration=info.duration)


def iter_audio(info: MediaInfo, sample_rate: int, chunk_samples: int) -> Iterator[np.ndarray]:
    """Yield mono float32 chunks in [-1, 1] of chunk_samples samples (the last one may be shorter)."""
    dec = _Decoder(ffmpeg_input(info.path), [_audio_output(sample_rate)], info.path)
    pipe = dec.pipes[0]
    try:
        yield from _audio_chunks(pipe, chunk_samples)
    except BaseException:  # stopped early (GeneratorExit), timed out, or the caller failed
        dec.kill()
        raise
    dec.check(dec.finish(), decoded=pipe.got > 0, decoded_s=pipe.got / 2 / sample_rate, duration=info.duration)


T = TypeVar("T")
U = TypeVar("U")


@dataclass
class DecodedStreams(Generic[T, U]):
    """What `decode_streams` made of one media file: its facts, and per stream what its consumer returned or
    the exception it raised (None: the file has no such stream, or it was not asked for)."""

    info: MediaInfo
    video: T | None = None
    audio: U | None = None
    video_error: BaseException | None = None
    audio_error: BaseException | None = None


def _consume(kind: str, pipe: _Pipe, consumer: Callable | None, fps: float, chunk_samples: int,
             results: dict, errors: dict) -> None:  # fmt: skip
    """Hand one stream to its consumer (None: drop it); its result or exception goes to results / errors.
    The pipe is drained after, so a consumer that stops early never leaves ffmpeg blocked on it."""
    try:
        if consumer is not None:
            items = _ppm_frames(pipe, fps) if kind == "video" else _audio_chunks(pipe, chunk_samples)
            results[kind] = consumer(items)
    except Exception as exc:  # noqa: BLE001 - handed to the caller of decode_streams
        errors[kind] = exc
    try:
        pipe.drain()
    except MediaError as exc:
        errors.setdefault(kind, exc)


def _fatal(exc: BaseException) -> bool:
    """An exception that stops the whole clip (not one stream's ModalityMissing or the like)."""
    return isinstance(exc, MediaError)


def decode_streams(
    path: str | os.PathLike,
    *,
    fps: float,
    max_side: int,
    sample_rate: int,
    chunk_samples: int,
    on_frames: Callable[[Iterator[tuple[float, np.ndarray]]], T] | None,
    on_audio: Callable[[Iterator[np.ndarray]], U] | None,
    audio_presence: bool = False,
) -> DecodedStreams[T, U]:
    """Decode a file's video (as `iter_video_frames`) and audio (as `iter_audio`) in ONE ffmpeg process.

    For extraction this replaces probe + one decoder per stream (three process starts of ~50 ms CPU each):
    ffmpeg is asked for both streams; one the file lacks makes it stop at once, before decoding, and it is
    asked again without it. The duration is read from ffmpeg's report of its input (10 ms resolution).
    on_frames / on_audio consume the frames / the audio chunks while they are decoded (the audio in a thread
    beside the video); None skips that stream. audio_presence: decode the audio without a consumer, only to
    learn whether there is an audio track.

    A consumer's exception (e.g. ModalityMissing) is returned as video_error / audio_error; MediaError
    (not readable, truncated, timed out, no stream at all) is raised, naming the file.
    """
    shown = os.fspath(path)
    url = ffmpeg_input(check_media_file(path))
    consumers: dict[str, Callable | None] = {"video": on_frames, "audio": on_audio}
    streams = [k for k in ("video", "audio") if consumers[k] is not None or (k == "audio" and audio_presence)]
    absent: list[str] = []
    while True:
        if not streams:
            if len(absent) == 2:
                raise MediaError(f"{shown}: no audio or video stream")
            return DecodedStreams(MediaInfo(shown, None, has_audio=False, has_video=False))
        outputs = [_video_output(fps, max_side) if k == "video" else _audio_output(sample_rate) for k in streams]
        dec = _Decoder(url, outputs, shown)
        pipes = dict(zip(streams, dec.pipes))
        results: dict[str, Any] = {}
        errors: dict[str, BaseException] = {}
        jobs = [(k, pipes[k], consumers[k], fps, chunk_samples, results, errors) for k in streams]
        thread = None
        try:
            if len(jobs) == 2:  # the audio beside the video, in a thread (its consumer releases the GIL)
                thread = threading.Thread(target=_consume, args=jobs[1], name="mmckd-audio", daemon=True)
                thread.start()
            _consume(*jobs[0])
        except BaseException:  # e.g. KeyboardInterrupt: stop ffmpeg, so the audio thread sees its pipe end
            dec.stop()
            raise
        finally:
            if thread is not None:
                if any(_fatal(e) for e in errors.values()):
                    dec.stop()
                thread.join()
            rc = dec.finish()
        missing = [streams[int(m.group(1))] for _, msg in dec.log or () for m in [_NO_STREAM.search(msg)] if m]
        if missing and not any(p.got for p in pipes.values()):
            absent += missing
            streams = [k for k in streams if k not in missing]
            continue
        if "video" in pipes and streams.index("video") in dec.outputs_fed_by_cover_art():
            absent.append("video")  # only cover art: an audio file (its frames and their consumer's result dropped)
            del pipes["video"]
            results.pop("video", None)
            errors.pop("video", None)
        for exc in errors.values():
            if _fatal(exc):
                raise exc
        duration = dec.duration()
        seconds = max(pipes["audio"].got / 2 / sample_rate if "audio" in pipes else 0.0,
                      pipes["video"].frames / fps if "video" in pipes else 0.0)  # fmt: skip
        dec.check(rc, decoded=any(p.got for p in pipes.values()), decoded_s=seconds, duration=duration)
        out: DecodedStreams = DecodedStreams(MediaInfo(shown, duration, "audio" in pipes, "video" in pipes))
        out.video, out.audio = results.get("video"), results.get("audio")
        out.video_error, out.audio_error = errors.get("video"), errors.get("audio")
        return out


def ffmpeg_version() -> str:
    try:
        out = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, check=True, timeout=60,
                             stdin=subprocess.DEVNULL).stdout  # fmt: skip
        return out.splitlines()[0]
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return "unavailable"
