"""Utterance segmentation of long media files, MOSI-style: one segment per spoken utterance.

    plan = plan_segments("review.mp4", recognizer, TranscriptConfig(asr=True))
    plan.method                      # "sidecar", "asr", "vad" or "window"
    [(s.start, s.end, s.text) for s in plan.segments]

Where the boundaries come from, first that applies:

1. ``sidecar``: the cues of a ``VIDEO.srt`` / ``VIDEO.vtt`` beside the file (their timings and words);
2. ``asr``: Whisper's segment timestamps (faster-whisper, greedy, Silero-VAD filtered: see
   ``mmckd.extract.asr``) when speech recognition is on and speech is heard; each segment keeps its words,
   and a segment that does not end a sentence is joined with the next (``join_sentences``);
3. ``vad``: voice activity (faster-whisper's bundled Silero model, else an energy threshold) when there is an
   audio track with speech but no transcript; speech runs longer than ``max_segment`` are cut evenly;
4. ``window``: fixed windows of ``window`` seconds over the whole file (no audio track, or no speech).

``cut_segment`` writes one segment as its own media file (ffmpeg, frame-accurate re-encode: x264 video and
PCM audio in Matroska, or WAV for audio-only input) so the ordinary extractor reads it like any clip.
``segment_id`` names a segment ``VIDEO_START_END`` (seconds with two decimals).
"""

from __future__ import annotations

import logging
import math
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mmckd.extract.config import TranscriptConfig
from mmckd.extract.errors import MediaError
from mmckd.extract.media import MediaInfo, _first_line, iter_audio, probe

if TYPE_CHECKING:
    from mmckd.extract.asr import SpeechRecognizer
    from mmckd.extract.transcript import Transcript

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
METHODS = ("sidecar", "asr", "vad", "window")
MIN_SEGMENT = 0.3  # seconds; shorter cues/segments are merged into their neighbour


@dataclass(frozen=True)
class Segment:
    """start/end: seconds in the file; text: its words (None when unknown); source: where the words came from
    ("asr", "sidecar:srt", "sidecar:vtt"; None without words)."""

    start: float
    end: float
    text: str | None = None
    source: str | None = None

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class SegmentPlan:
    info: MediaInfo
    method: str
    segments: list[Segment]
    no_text_reason: str  # why segments have no words (for the rows that have none)


def segment_id(video_id: str, start: float, end: float) -> str:
    """The clip id of a segment: VIDEO_START_END, seconds with two decimals ("review_12.40_17.85")."""
    return f"{video_id}_{start:.2f}_{end:.2f}"


def decode_audio(info: MediaInfo) -> np.ndarray | None:
    """The first audio track as 16 kHz mono float32, or None without one."""
    if not info.has_audio:
        return None
    chunks = list(iter_audio(info, SAMPLE_RATE, SAMPLE_RATE * 30))
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


def _merge_short(segments: list[Segment], min_len: float = MIN_SEGMENT) -> list[Segment]:
    """Merge segments shorter than min_len into the previous one (or the next, for the first)."""
    out: list[Segment] = []
    for seg in segments:
        if out and (seg.duration < min_len or out[-1].duration < min_len):
            prev = out.pop()
            text = " ".join(t for t in (prev.text, seg.text) if t) or None
            seg = Segment(prev.start, max(prev.end, seg.end), text, prev.source or seg.source)
        out.append(seg)
    return out


_SENTENCE_END = (".", "?", "!", "…", '."', '?"', '!"')


def join_sentences(segments: list[Segment], max_len: float, max_gap: float = 1.0) -> list[Segment]:
    """Whisper cuts its segments by time as well as by sentence: join a segment whose words do not end a
    sentence with the next one (pause under max_gap s, joined length at most max_len s), so a segment is an
    utterance ("where I chase" + "my own dreams." -> one)."""
    out: list[Segment] = []
    for seg in segments:
        prev = out[-1] if out else None
        if (
            prev is not None
            and prev.text
            and seg.text
            and not prev.text.rstrip().endswith(_SENTENCE_END)
            and seg.start - prev.end < max_gap
            and seg.end - prev.start <= max_len
        ):
            out[-1] = Segment(prev.start, seg.end, f"{prev.text} {seg.text}", prev.source)
        else:
            out.append(seg)
    return out


def _clip_to(segments: list[Segment], duration: float | None) -> list[Segment]:
    out = []
    for s in sorted(segments, key=lambda s: (s.start, s.end)):
        start = max(0.0, s.start)
        end = min(s.end, duration) if duration else s.end
        if end - start > 0.05:
            out.append(Segment(round(start, 3), round(end, 3), s.text, s.source))
    return out


def split_long(start: float, end: float, max_len: float) -> list[tuple[float, float]]:
    """[start, end) cut into the fewest equal pieces no longer than max_len."""
    n = max(1, math.ceil((end - start) / max_len - 1e-9))
    step = (end - start) / n
    return [(start + k * step, start + (k + 1) * step if k < n - 1 else end) for k in range(n)]


def windows(duration: float, window: float) -> list[Segment]:
    """Fixed windows of `window` seconds over [0, duration]; a last piece shorter than half a window joins
    the one before it."""
    if duration <= 0:
        return []
    edges = list(np.arange(0.0, duration, window)) + [duration]
    if len(edges) > 2 and edges[-1] - edges[-2] < window / 2:
        del edges[-2]
    return [Segment(round(a, 3), round(b, 3)) for a, b in zip(edges[:-1], edges[1:])]


def voice_activity(audio: np.ndarray, min_silence: float = 0.5) -> list[tuple[float, float]]:
    """Speech regions (seconds) of 16 kHz mono audio: Silero VAD from faster-whisper when installed (offline,
    bundled), else frames of 30 ms louder than max(-45 dBFS, peak - 35 dB) with pauses under min_silence merged."""
    if audio.size == 0:
        return []
    try:
        from faster_whisper.vad import VadOptions, get_speech_timestamps
    except ImportError:
        get_speech_timestamps = None
    if get_speech_timestamps is not None:
        found = get_speech_timestamps(
            audio, VadOptions(min_silence_duration_ms=int(min_silence * 1000), speech_pad_ms=100)
        )
        return [(c["start"] / SAMPLE_RATE, c["end"] / SAMPLE_RATE) for c in found]
    hop = int(0.03 * SAMPLE_RATE)
    n = audio.size // hop
    if n == 0:
        return []
    rms = np.sqrt(np.mean(audio[: n * hop].reshape(n, hop) ** 2, axis=1) + 1e-12)
    db = 20 * np.log10(rms)
    voiced = db > max(-45.0, float(db.max()) - 35.0)
    regions: list[list[float]] = []
    for k in np.flatnonzero(voiced):
        t0, t1 = k * 0.03, (k + 1) * 0.03
        if regions and t0 - regions[-1][1] < min_silence:
            regions[-1][1] = t1
        else:
            regions.append([t0, t1])
    return [(a, b) for a, b in regions if b - a >= 0.25]


def plan_segments(
    media: str | Path,
    recognizer: SpeechRecognizer | None,
    config: TranscriptConfig | None = None,
    window: float = 5.0,
    max_segment: float = 20.0,
) -> SegmentPlan:
    """Split a media file into utterance segments (see the module docstring for the order of methods).

    recognizer: a loaded SpeechRecognizer, or None for no ASR. MediaError when the file cannot be read."""
    if window <= 0 or max_segment <= 0:
        raise ValueError(f"window and max_segment must be > 0 seconds; got {window} and {max_segment}")
    config = config or TranscriptConfig()
    path = Path(media)
    info = probe(path)
    duration = info.duration
    from mmckd.extract.transcript import find_sidecar, read_sidecar

    timed = tuple(e for e in config.sidecars if e.lower().lstrip(".") in ("srt", "vtt"))
    sidecar = find_sidecar(path, timed) if timed else None
    transcript: Transcript | None
    if sidecar is not None:
        transcript = read_sidecar(sidecar)
        segs = [Segment(a, b, t, transcript.source) for a, b, t in transcript.segments if t.strip()]
        if segs:
            segs = join_sentences(_clip_to(segs, duration), max_segment)
            return SegmentPlan(info, "sidecar", _merge_short(segs), f"no words in {sidecar.name} for this time range")
    audio = decode_audio(info)
    if duration is None and audio is not None:
        duration = audio.size / SAMPLE_RATE
    if recognizer is not None and audio is not None:
        transcript = recognizer.transcribe(audio)
        if transcript is not None and transcript.segments:
            segs = [Segment(a, b, t, "asr") for a, b, t in transcript.segments]
            segs = join_sentences(_clip_to(segs, duration), max_segment)
            return SegmentPlan(info, "asr", _merge_short(segs), "ASR heard no speech")
    if audio is None:
        reason = "no audio track, so no speech"
    elif recognizer is not None:
        reason = "ASR heard no speech"
    else:
        reason = "no transcript (ASR off)"
    if audio is not None and recognizer is None:
        regions = voice_activity(audio)
        segs = [Segment(a, b) for s, e in regions for a, b in split_long(s, e, max_segment)]
        segs = _clip_to(segs, duration)
        if segs:
            return SegmentPlan(info, "vad", _merge_short(segs), reason)
    if duration is None:
        raise MediaError(f"{path}: unknown duration and no audio to measure it; cannot cut it into windows")
    return SegmentPlan(info, "window", windows(duration, window), reason)


def cut_segment(info: MediaInfo, start: float, end: float, out: str | Path) -> Path:
    """Write [start, end) of a media file to its own file: x264 + PCM in .mkv for video, PCM .wav for audio
    only (out's suffix is replaced accordingly). Frame-accurate (decoded and re-encoded). MediaError on failure."""
    out = Path(out).with_suffix(".mkv" if info.has_video else ".wav")
    args = [
        "ffmpeg",
        "-nostdin",
        "-v",
        "error",
        "-y",
        "-ss",
        f"{start:.3f}",
        "-i",
        info.path,
        "-t",
        f"{max(0.04, end - start):.3f}",
    ]
    if info.has_video:
        args += ["-map", "0:v:0", "-c:v", "libx264", "-preset", "ultrafast", "-crf", "18", "-pix_fmt", "yuv420p"]
    if info.has_audio:
        args += ["-map", "0:a:0", "-c:a", "pcm_s16le"]
    args.append(str(out))
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        raise MediaError(f"{info.path}: cannot cut {start:.2f}-{end:.2f} s ({_first_line(proc.stderr, info.path)})")
    return out


# -- mmckd extract --segments ---------------------------------------------------------------------------------------
RANGE_COLUMNS = ("video_id", "start", "end", "label", "mode")


@dataclass(frozen=True)
class RangeLabel:
    video_id: str
    start: float
    end: float
    label: float | None
    split: str | None
    line: int


def read_range_labels(path: str | Path) -> dict[str, list[RangeLabel]]:
    """Labels by time range: a CSV with video_id,start,end,label,mode (start/end in seconds; label in [-3, 3]
    or empty; mode train/valid/dev/test or empty). Raises LabelsError naming the file and line."""
    import csv

    from mmckd.extract.labels import LABEL_RANGE, LabelsError, normalise_split

    path = Path(path)
    out: dict[str, list[RangeLabel]] = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in reader.fieldnames or ()]
            missing = [c for c in RANGE_COLUMNS if c not in columns]
            if missing:
                raise LabelsError(
                    f"{path}: missing column(s) {', '.join(missing)} (labels by time range need "
                    f"{','.join(RANGE_COLUMNS)}; found {','.join(columns) or 'nothing'})"
                )
            reader.fieldnames = columns
            for line, rec in enumerate(reader, start=2):
                get = lambda k, rec=rec: (rec.get(k) or "").strip()  # noqa: E731
                vid = get("video_id")
                try:
                    start, end = float(get("start")), float(get("end"))
                except ValueError:
                    raise LabelsError(
                        f"{path}:{line}: start/end must be seconds (got {get('start')!r}, {get('end')!r})"
                    ) from None
                if not (math.isfinite(start) and math.isfinite(end) and 0 <= start < end):
                    raise LabelsError(f"{path}:{line}: need 0 <= start < end (got {start:g}, {end:g})")
                label = None
                if get("label"):
                    try:
                        label = float(get("label"))
                    except ValueError:
                        raise LabelsError(f"{path}:{line}: label {get('label')!r} is not a number") from None
                    if not LABEL_RANGE[0] <= label <= LABEL_RANGE[1]:
                        raise LabelsError(f"{path}:{line}: label {label:g} is outside [-3, 3]")
                try:
                    split = normalise_split(get("mode"))
                except ValueError as e:
                    raise LabelsError(f"{path}:{line}: {e}") from None
                if not vid:
                    raise LabelsError(f"{path}:{line}: empty video_id")
                out.setdefault(vid, []).append(RangeLabel(vid, start, end, label, split, line))
    except FileNotFoundError:
        raise LabelsError(f"{path}: no such labels file") from None
    except UnicodeDecodeError as e:
        raise LabelsError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return out


def label_for(segment: Segment, ranges: list[RangeLabel]) -> RangeLabel | None:
    """The labelled range that covers most of the segment, when it covers at least half of it."""
    best, best_overlap = None, 0.0
    for r in ranges:
        overlap = min(r.end, segment.end) - max(r.start, segment.start)
        if overlap > best_overlap:
            best, best_overlap = r, overlap
    return best if best is not None and best_overlap >= 0.5 * segment.duration else None


def prepare_segments(
    media: list[str | Path],
    output: str | Path,
    labels: str | Path | None = None,
    config=None,
    window: float = 5.0,
    max_segment: float = 20.0,
    clips_dir: str | Path | None = None,
) -> tuple[Path, Path]:
    """Cut each (long) media file into utterance clips for ``mmckd extract --segments``; returns the clips
    folder and its labels file, which the ordinary pipeline (``mmckd.extract.pipeline.extract``) then extracts.

    The segments of each file (``plan_segments``, with Whisper whenever the asr extra is installed) are cut into
    ``clips_dir/VIDEO/VIDEO_START_END.mkv`` (.wav for audio-only input; default clips_dir: ``OUTPUT.segments/``),
    their words and labels go to ``clips_dir/labels.csv`` (flat layout id,text,label,mode): a segment takes the
    label and split of the labels-by-time-range row (``read_range_labels``) of its video covering most of it, at
    least half; otherwise it is unlabelled. Cuts already made are kept, so a rerun resumes.
    ExtractError / LabelsError with one line naming the file when a file cannot be segmented.
    """
    import csv

    from mmckd.extract.config import ExtractConfig
    from mmckd.extract.pipeline import ExtractError

    config = config or ExtractConfig()
    output = Path(output)
    clips_dir = Path(clips_dir) if clips_dir is not None else output.with_name(output.name + ".segments")
    ranges = read_range_labels(labels) if labels is not None else {}
    if not media:
        raise ExtractError("--segments: no media files given")
    recognizer = None
    try:
        from mmckd.extract.asr import ASRUnavailable, SpeechRecognizer

        recognizer = SpeechRecognizer(config.transcript.asr_model)
    except (ImportError, ASRUnavailable, ValueError) as e:
        if config.transcript.asr:
            raise ExtractError(f"speech recognition unavailable: {e}") from None
        log.warning("no speech recognition (%s): segments by voice activity, without words", e)
    rows: list[dict] = []
    seen: set[str] = set()
    for item in media:
        path = Path(item)
        if path.stem in seen:
            raise ExtractError(f"{path}: two inputs named {path.stem!r}; segment ids (VIDEO_START_END) would clash")
        seen.add(path.stem)
        try:
            plan = plan_segments(path, recognizer, config.transcript, window=window, max_segment=max_segment)
        except (MediaError, OSError, ValueError) as e:
            raise ExtractError(f"{path}: cannot segment ({' '.join(str(e).split())})") from None
        log.info("%s: %d segments (%s)", path, len(plan.segments), plan.method)
        folder = clips_dir / path.stem
        folder.mkdir(parents=True, exist_ok=True)
        for seg in plan.segments:
            sid = segment_id(path.stem, seg.start, seg.end)
            target = folder / f"{sid}{'.mkv' if plan.info.has_video else '.wav'}"
            if not target.exists():
                try:
                    part = cut_segment(plan.info, seg.start, seg.end, folder / f".{sid}.part")
                except MediaError as e:
                    raise ExtractError(str(e)) from None
                part.replace(target)
            lab = label_for(seg, ranges.get(path.stem, []))
            rows.append(
                {
                    "id": sid,
                    "text": seg.text or "",
                    "label": "" if lab is None or lab.label is None else f"{lab.label:g}",
                    "mode": lab.split if lab is not None and lab.split else "",
                }
            )
    unknown = sorted(set(ranges) - seen)
    if unknown:
        log.warning("labels for videos not given: %s", ", ".join(unknown[:10]))
    labels_csv = clips_dir / "labels.csv"
    tmp = labels_csv.with_name(".labels.csv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=("id", "text", "label", "mode"))
        w.writeheader()
        w.writerows(rows)
    tmp.replace(labels_csv)
    return clips_dir, labels_csv
