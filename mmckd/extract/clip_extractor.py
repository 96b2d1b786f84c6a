"""Turns one clip (media file and/or labelled transcript) into a feature-file `Clip`.

Models are loaded once per `ClipExtractor` (one per worker process) and only when first needed, so a
text-only run never loads MediaPipe. A clip never raises: any failure becomes status "failed" with a
one-line reason, and a modality that is absent is recorded with the reason it is missing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmckd.extract.config import ExtractConfig
from mmckd.extract.errors import MediaError, ModalityMissing
from mmckd.extract.media import MediaInfo, decode_streams
from mmckd.feature_file import Clip

log = logging.getLogger(__name__)

NO_MEDIA = "no media file"


@dataclass(frozen=True)
class ClipJob:
    """What is known about a clip before extraction."""

    id: str
    media: str | None = None
    text: str | None = None  # transcript from the labels file
    label: float | None = None
    split: str | None = None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if isinstance(exc, (MediaError, ModalityMissing)) else f"{type(exc).__name__}: {text}"


class ClipExtractor:
    def __init__(self, config: ExtractConfig, device: str = "cpu") -> None:
        self.config = config
        self.device = device
        self._text = self._audio = self._vision = None
        self._asr: Any = None  # a SpeechRecognizer, or predict's prefetching wrapper around one

    # lazily created extractors -------------------------------------------------------
    @property
    def text_encoder(self):
        if self._text is None:
            from mmckd.extract.text import TextEncoder

            self._text = TextEncoder(self.config.text, device=self.device)
        return self._text

    @property
    def audio_extractor(self):
        if self._audio is None:
            from mmckd.extract.audio import AudioExtractor

            self._audio = AudioExtractor(self.config.audio)
        return self._audio

    @property
    def vision_extractor(self):
        if self._vision is None:
            from mmckd.extract.vision import VisionExtractor

            self._vision = VisionExtractor(self.config.vision)
        return self._vision

    @property
    def speech_recognizer(self):
        if self._asr is None and self.config.transcript.asr:
            from mmckd.extract.asr import SpeechRecognizer

            self._asr = SpeechRecognizer(self.config.transcript.asr_model, device=self.device)
        return self._asr

    # extraction ------------------------------------------------------------------------
    def extract(self, job: ClipJob, text_override: str | None = None) -> Clip:
        return self.extract_batch([job], [text_override])[0]

    def extract_batch(self, jobs: list[ClipJob], text_overrides: list[str | None] | None = None) -> list[Clip]:
        """Extract several clips; their transcripts are encoded in one batch (fast for text-only runs)."""
        overrides = text_overrides or [None] * len(jobs)
        clips, transcripts = [], []
        for job, override in zip(jobs, overrides):
            clip, transcript = self._media_part(job, override)
            clips.append(clip)
            transcripts.append(transcript)
        todo = [i for i, t in enumerate(transcripts) if t is not None and clips[i].status == "ok"]
        if todo:
            try:
                seqs = self.text_encoder.encode_batch([transcripts[i].text for i in todo])
            except Exception:  # one bad text must not sink the batch: fall back to one by one
                seqs = None
            for k, i in enumerate(todo):
                try:
                    clips[i].text = seqs[k] if seqs is not None else self.text_encoder.encode(transcripts[i].text)
                except ModalityMissing as e:
                    clips[i].missing_reason["text"] = e.reason
                except Exception as e:  # noqa: BLE001 - a clip never stops the run
                    clips[i].missing_reason["text"] = _one_line(e)
        for clip in clips:
            self._final_status(clip)
        return clips

    def _media_part(self, job: ClipJob, text_override: str | None):
        from mmckd.extract.transcript import Transcript, find_transcript, no_transcript_reason

        clip = Clip(id=job.id, split=job.split, label=job.label, media=job.media)
        info: MediaInfo | None = None
        try:
            if job.media is not None:
                info = self._media_features(clip, job.media)
            else:
                clip.missing_reason.update(audio=NO_MEDIA, vision=NO_MEDIA)
            try:
                if text_override is not None:
                    transcript = Transcript(text_override, "given") if text_override.strip() else None
                else:
                    transcript = find_transcript(
                        Path(job.media) if job.media else None,
                        job.text,
                        self.config.transcript,
                        self.speech_recognizer if info is not None and info.has_audio else None,
                    )
            except ModalityMissing as e:  # e.g. a malformed sidecar: only the text is lost
                clip.missing_reason["text"] = e.reason
                return clip, None
        except Exception as e:  # noqa: BLE001 - a clip never stops the run
            clip.status, clip.error = "failed", _one_line(e)
            clip.audio = clip.vision = None
            return clip, None
        if transcript is None:
            clip.missing_reason["text"] = no_transcript_reason(self.config.transcript)
        else:
            clip.transcript, clip.transcript_source = transcript.text, transcript.source
        return clip, transcript

    def skip_reason(self, name: str) -> str | None:
        """Why modality name ("audio", "vision") is not computed for any clip; None: it is."""
        return None

    def _media_features(self, clip: Clip, media: str) -> MediaInfo:
        """Audio and vision features of clip's media file, both decoded by one ffmpeg process; the file's facts.
        A modality that cannot be computed gets its reason in clip.missing_reason; MediaError fails the clip."""
        skip = {name: self.skip_reason(name) for name in ("audio", "vision")}
        a, v = self.config.audio, self.config.vision
        audio = self.audio_extractor if skip["audio"] is None else None
        vision = self.vision_extractor if skip["vision"] is None else None
        decoded = decode_streams(
            media,
            fps=v.fps,
            max_side=v.max_side,
            sample_rate=a.sample_rate,
            chunk_samples=audio.chunk_samples if audio is not None else a.sample_rate,
            on_frames=vision.extract_frames if vision is not None else None,
            on_audio=audio.extract_chunks if audio is not None else None,
            audio_presence=True,  # whether there is an audio track is reported (and needed by ASR) either way
        )
        info = decoded.info
        clip.duration = info.duration
        for name, value, error, present, absent_reason in (
            ("audio", decoded.audio, decoded.audio_error, info.has_audio, "no audio track"),
            ("vision", decoded.video, decoded.video_error, info.has_video, "no video stream (audio-only file)"),
        ):
            if skip[name] is not None and not (name == "audio" and not present):
                clip.missing_reason[name] = skip[name]  # type: ignore[assignment]
            elif not present:
                clip.missing_reason[name] = absent_reason
            elif isinstance(error, ModalityMissing):
                clip.missing_reason[name] = error.reason
            elif error is not None:
                raise error
            else:
                setattr(clip, name, value)
        return info

    @staticmethod
    def _final_status(clip: Clip) -> None:
        if clip.status == "ok" and not clip.modalities:
            reasons = "; ".join(f"{m}: {r}" for m, r in clip.missing_reason.items())
            clip.status, clip.error = "failed", f"no usable modality ({reasons})"

    def close(self) -> None:
        if self._vision is not None and hasattr(self._vision, "close"):
            self._vision.close()
