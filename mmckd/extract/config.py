"""Typed extractor configuration, stored as JSON (with its hash) in every feature file and model bundle.

Strict frozen dataclasses of the one configuration layer (``mmckd.config_fields``): each field declares its
help, choices and bounds, which validate it and make its ``mmckd extract`` option; rules across fields are in
``validate``. A field added later declares ``absent`` (the value that reproduces files made before it), so the
stored JSON and hash of existing feature files and bundles do not change.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmckd.config_fields import Config, ConfigError, option

__all__ = ["AudioConfig", "ConfigError", "ExtractConfig", "TextConfig", "TranscriptConfig", "VisionConfig"]


@dataclass(frozen=True)
class TextConfig(Config):
    """BERT token features of the transcript."""

    model: str = option(
        "default",
        '"default" (all-MiniLM-L6-v2, 384-d), "mpnet", a local BERT folder or a cached hub name (never downloaded).',
    )
    max_tokens: int = option(128, "Tokens kept per transcript, [CLS] and [SEP] included.", low=2, cli=("--max-tokens",))
    lowercase: bool = option(True, "Lowercase the transcript before tokenising.")


def _whole_samples(what: str, seconds: float, sample_rate: int) -> int:
    n = seconds * sample_rate
    if n < 1 or abs(n - round(n)) > 1e-6:
        raise ConfigError(f"audio {what} must be a whole number (>= 1) of samples at {sample_rate} Hz; got {n:g}")
    return int(round(n))


@dataclass(frozen=True)
class AudioConfig(Config):
    """Log-mel filterbank + pitch + energy, computed every hop_ms and mean-pooled to frame_rate."""

    sample_rate: int = option(16000, "Audio is resampled to this rate (Hz).", low=1000)
    n_mels: int = option(40, "Mel filterbank bands.", low=1)
    win_ms: float = option(25.0, "Analysis window (ms).", low=0, low_open=True)
    hop_ms: float = option(10.0, "Analysis hop (ms).", low=0, low_open=True)
    frame_rate: float = option(25.0, "Audio feature frames per second (1/frame_rate a multiple of hop_ms).", low=1)
    f0_min: float = option(60.0, "Lowest pitch searched (Hz).", low=0, low_open=True)
    f0_max: float = option(400.0, "Highest pitch searched (Hz).", low=0, low_open=True)
    silence_dbfs: float = option(-55.0, "A track whose peak level is below this (dBFS) counts as silent.", high=0)

    def validate(self) -> None:
        if not self.f0_min < self.f0_max < self.sample_rate / 2:
            raise ConfigError(
                f"audio f0_min ({self.f0_min:g}) must be < f0_max ({self.f0_max:g}) < sample_rate/2 "
                f"({self.sample_rate / 2:g})"
            )
        if self.win_samples < self.hop_samples:
            raise ConfigError(f"audio win_ms ({self.win_ms:g}) must be >= hop_ms ({self.hop_ms:g})")
        if self.frame_samples % self.hop_samples:
            raise ConfigError(
                f"audio 1/frame_rate ({1000 / self.frame_rate:g} ms) must be a multiple of hop_ms ({self.hop_ms:g})"
            )

    @property
    def dim(self) -> int:
        return self.n_mels + 3  # + f0 (Hz, 0 when unvoiced), voicing, log energy

    @property
    def hop_samples(self) -> int:
        return _whole_samples("hop_ms", self.hop_ms / 1000, self.sample_rate)

    @property
    def win_samples(self) -> int:
        return _whole_samples("win_ms", self.win_ms / 1000, self.sample_rate)

    @property
    def frame_samples(self) -> int:
        return _whole_samples("1/frame_rate", 1 / self.frame_rate, self.sample_rate)


@dataclass(frozen=True)
class VisionConfig(Config):
    """MediaPipe face detection + face mesh on frames sampled at fps, scaled so the long side <= max_side."""

    fps: float = option(25.0, "Vision frames sampled per second.", low=0.1, cli=("--fps",))
    max_side: int = option(
        320, "Frames are scaled so their long side is at most this (pixels).", low=64, cli=("--max-side",)
    )
    min_detection_confidence: float = option(0.5, "Face detector confidence threshold.", low=0, high=1)
    min_tracking_confidence: float = option(0.5, "Face mesh confidence to keep tracking a face.", low=0, high=1)
    tracking: bool = option(True, "Track the face from frame to frame (off: detect it in every frame).")
    mesh_max_interval: int = option(
        4,
        "At most this many sampled frames from one face mesh to the next; frames whose face crop did not change "
        "(see mesh_motion_threshold) go without one and get interpolated landmarks (1: a mesh on every frame).",
        low=1,
        absent=1,
        cli=("--mesh-max-interval",),
    )
    mesh_motion_threshold: float = option(
        0.0,
        "A frame may skip its face mesh when no cell of a 12x12 grey thumbnail of its face crop changed by more "
        "than this (grey levels, 0-255) since the last meshed frame; 0: only unchanged pictures (repeated frames).",
        low=0,
        high=255,
        absent=0.0,
        cli=("--mesh-motion-threshold",),
    )


@dataclass(frozen=True)
class TranscriptConfig(Config):
    """Where transcripts come from, first found: labels file text, sidecar .txt/.srt/.vtt, ASR (when asr)."""

    sidecars: tuple[str, ...] = option(
        (".txt", ".srt", ".vtt"), "Sidecar transcript extensions looked for beside each media file, in order."
    )
    asr: bool = option(False, "Transcribe speech (offline Whisper) when no transcript is given.", cli=("--asr",))
    asr_model: str = option(
        "default", '"default" (Whisper tiny.en) or a CTranslate2 Whisper model folder.', cli=("--asr-model",)
    )

    def validate(self) -> None:
        for ext in self.sidecars:
            if not ext.startswith(".") or len(ext) < 2 or "/" in ext:
                raise ConfigError(f"transcript sidecars must be extensions like .txt; got {ext!r}")


@dataclass(frozen=True)
class ExtractConfig(Config):
    """The extractor: one section per modality, and where transcripts come from."""

    stored_as = "extractor_config"  # in bundle.json

    text: TextConfig = option(help="Text features.", factory=TextConfig)
    audio: AudioConfig = option(help="Audio features.", factory=AudioConfig)
    vision: VisionConfig = option(help="Vision features.", factory=VisionConfig)
    transcript: TranscriptConfig = option(help="Transcripts.", factory=TranscriptConfig)
