"""Where a clip's transcript comes from: the labels file, a sidecar file beside the media, or speech recognition.

Precedence, first found: the labels file's ``text`` (source ``"labels"``); a sidecar with the media's stem and one of
``TranscriptConfig.sidecars`` (``clip.txt`` → ``"sidecar:txt"``, ``clip.srt`` → ``"sidecar:srt"``, ``clip.vtt`` →
``"sidecar:vtt"``, in the configured order); speech recognition when ``TranscriptConfig.asr`` is on (``"asr"``).
An empty source (blank label text, empty sidecar, no speech heard) counts as absent and the next one is tried.

Sidecar decoding: UTF-8 (a BOM is dropped), UTF-16 when it starts with a UTF-16 BOM; other bytes that are not UTF-8
are replaced by U+FFFD with a warning (one odd byte should not cost the whole transcript). Binary data (NUL bytes)
or an SRT/VTT whose timing cannot be read raises ``ValueError`` naming the file, line and reason.
"""

from __future__ import annotations

import codecs
import html
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from mmckd.extract.config import TranscriptConfig
from mmckd.extract.errors import ModalityMissing

if TYPE_CHECKING:
    from mmckd.extract.media import MediaInfo

log = logging.getLogger(__name__)

SIDECAR_FORMATS = (".txt", ".srt", ".vtt")
TRANSCRIPT_SOURCES = ("labels", "sidecar:txt", "sidecar:srt", "sidecar:vtt", "asr", "given")
MAX_SIDECAR_BYTES = 20 * 1024 * 1024  # a transcript is text: anything bigger is not one

Segment = tuple[float, float, str]


@dataclass(frozen=True)
class Transcript:
    """What was said in a clip.

    text: the whole transcript on one line (runs of whitespace collapsed; "" only for an empty sidecar).
    source: where it came from, one of TRANSCRIPT_SOURCES.
    segments: (start_s, end_s, text) per cue / recognised segment when timing is known (srt, vtt, asr), else ().
    """

    text: str
    source: str
    segments: tuple[Segment, ...] = ()


class Recogniser(Protocol):
    """Speech recognition as find_transcript uses it (``mmckd.extract.asr.SpeechRecognizer`` is one)."""

    def transcribe_media(self, info: MediaInfo) -> Transcript | None:
        """The transcript (source "asr") of a media file's speech; None without audio or speech."""
        ...


def _clean(text: str) -> str:
    return " ".join(text.split())


# -- decoding -------------------------------------------------------------------------------------------------------
def _decode(path: Path, data: bytes) -> str:
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: bad UTF-16 text at byte {e.start}") from None
        if "\x00" in text:
            raise ValueError(f"{path}: binary data (NUL characters), not a text transcript")
        return text
    if b"\x00" in data:
        raise ValueError(f"{path}: binary data (NUL bytes), not a text transcript")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        log.warning("%s: not valid UTF-8 (first bad byte at %d); undecodable bytes replaced by U+FFFD", path, e.start)
        return data.decode("utf-8-sig", errors="replace")


# -- SRT / WebVTT ---------------------------------------------------------------------------------------------------
# A timestamp: hours optional (VTT allows mm:ss.ttt), "," (SRT) or "." (VTT) before the fraction.
_TS = r"(?:(\d+):)?(\d{1,2}):(\d{1,2})[,.](\d{1,3})"
_TIMING = re.compile(rf"^\s*{_TS}\s*-->\s*{_TS}(?:\s.*)?$")
_TAG = re.compile(r"<[^>\n]*>")  # <i>, </i>, <c.yellow>, <v Roger>, <00:00:01.000>, <font color="red">
_ASS_TAG = re.compile(r"\{\\[^}\n]*\}")  # {\an8} positioning codes found in some SRT files
_VTT_SKIP_BLOCKS = ("NOTE", "STYLE", "REGION")


def _seconds(h: str | None, m: str, s: str, frac: str) -> float:
    return int(h or 0) * 3600 + int(m) * 60 + int(s) + float("0." + frac)


def _cue_text(lines: list[str]) -> str:
    text = " ".join(lines)
    text = _ASS_TAG.sub("", _TAG.sub("", text))
    return _clean(html.unescape(text))


def _parse_cues(path: Path, text: str, vtt: bool) -> tuple[Segment, ...]:
    """Cues of an SRT or WebVTT document; ValueError with file:line for timing that cannot be read."""
    lines = text.splitlines()
    if vtt:
        first = next((ln for ln in lines if ln.strip()), "")
        if not first.startswith("WEBVTT"):
            raise ValueError(f"{path}: not WebVTT (the first line must be 'WEBVTT', found {first[:40]!r})")
    segments: list[Segment] = []
    cue: tuple[float, float] | None = None
    cue_lines: list[str] = []
    skipping = False  # inside a VTT header, NOTE, STYLE or REGION block (until the next blank line)
    timings = stray = 0  # timing lines seen; other lines outside cues (cue numbers, identifiers, junk)

    def close_cue() -> None:
        if cue is not None:
            body = _cue_text(cue_lines)
            if body:
                segments.append((cue[0], cue[1], body))

    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            close_cue()
            cue, cue_lines, skipping = None, [], False
            continue
        if skipping:
            continue
        if cue is None and vtt and (line.startswith("WEBVTT") or line.split(None, 1)[0] in _VTT_SKIP_BLOCKS):
            skipping = True
            continue
        if "-->" in line and (cue is None or _TIMING.match(line)):
            # a timing line; inside a cue it means the blank line between cues is missing
            m = _TIMING.match(line)
            if m is None:
                raise ValueError(f"{path}:{lineno}: unreadable cue timing {line.strip()[:60]!r}")
            if cue is not None:
                if cue_lines and cue_lines[-1].strip().isdigit():
                    cue_lines.pop()  # the next cue's number
                close_cue()
            start, end = _seconds(*m.group(1, 2, 3, 4)), _seconds(*m.group(5, 6, 7, 8))
            if end < start:
                raise ValueError(f"{path}:{lineno}: cue ends ({end:.3f} s) before it starts ({start:.3f} s)")
            cue, cue_lines = (start, end), []
            timings += 1
        elif cue is not None:
            cue_lines.append(line)
        else:
            stray += 1  # a cue number (SRT) or identifier (VTT), or text outside any cue
    close_cue()
    if timings == 0 and stray > 0:
        example = "HH:MM:SS,mmm --> HH:MM:SS,mmm" if not vtt else "HH:MM:SS.mmm --> HH:MM:SS.mmm"
        fmt = "WebVTT" if vtt else "SubRip"
        raise ValueError(f"{path}: not {fmt}: text but no cue timing line ('{example}')")
    return tuple(segments)


def read_sidecar(path: Path) -> Transcript:
    """Read a .txt, .srt or .vtt transcript. An empty file gives Transcript(text="").

    ValueError (one line, naming the file) for an unsupported extension, an unreadable or oversized file,
    binary data, or SRT/VTT timing that cannot be read.
    """
    path = Path(path)
    fmt = path.suffix.lower()
    if fmt not in SIDECAR_FORMATS:
        raise ValueError(f"{path}: unsupported transcript format {path.suffix!r} (use {', '.join(SIDECAR_FORMATS)})")
    try:
        size = path.stat().st_size
        if size > MAX_SIDECAR_BYTES:
            raise ValueError(f"{path}: {size} bytes is too large for a transcript (limit {MAX_SIDECAR_BYTES})")
        data = path.read_bytes()
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e.strerror or e})") from None
    text = _decode(path, data)
    source = "sidecar:" + fmt[1:]
    if fmt == ".txt":
        return Transcript(_clean(text), source)
    segments = _parse_cues(path, text, vtt=(fmt == ".vtt"))
    return Transcript(" ".join(seg[2] for seg in segments), source, segments)


def _normalise_extension(ext: str) -> str:
    ext = ext if ext.startswith(".") else "." + ext
    if ext.lower() not in SIDECAR_FORMATS:
        raise ValueError(f"TranscriptConfig.sidecars: unsupported format {ext!r} (use {', '.join(SIDECAR_FORMATS)})")
    return ext.lower()


def find_sidecar(media: Path, extensions: tuple[str, ...]) -> Path | None:
    """The first existing file beside media with media's stem and one of extensions (tried in order; the
    upper-case extension is tried too, for case-sensitive file systems). None when there is none."""
    media = Path(media)
    for ext in extensions:
        ext = _normalise_extension(ext)
        for candidate in (media.with_suffix(ext), media.with_suffix(ext.upper())):
            if candidate != media and candidate.is_file():
                return candidate
    return None


def no_transcript_reason(config: TranscriptConfig) -> str:
    """The missing-text reason recorded for a clip when find_transcript returned None."""
    sidecars = "sidecar " + "/".join(config.sidecars) if config.sidecars else "no sidecars"
    asr = "ASR heard no speech" if config.asr else "ASR off"
    return f"no transcript (labels, {sidecars}, {asr})"


def find_transcript(
    media: Path | None,
    label_text: str | None,
    config: TranscriptConfig,
    asr: Recogniser | None,
) -> Transcript | None:
    """The clip's transcript from the first source that has one (labels, sidecars in config order, ASR), or None.

    ASR runs only when config.asr is on and a recognizer is given (callers pass None for a clip without audio).
    A sidecar that exists but cannot be read raises ModalityMissing whose reason names the file and the problem;
    media errors from ASR decoding (MediaError) propagate.
    """
    if label_text is not None and label_text.strip():
        return Transcript(_clean(label_text), "labels")
    if media is None:
        return None
    media = Path(media)
    for ext in config.sidecars:
        sidecar = find_sidecar(media, (ext,))
        if sidecar is None:
            continue
        try:
            transcript = read_sidecar(sidecar)
        except ValueError as e:
            raise ModalityMissing(f"transcript sidecar unusable: {e}") from None
        if transcript.text:
            return transcript
        log.info("%s: empty transcript sidecar, trying the next source", sidecar)
    if config.asr and asr is not None:
        from mmckd.extract.media import probe

        return asr.transcribe_media(probe(media))
    return None
