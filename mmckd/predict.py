"""Prediction = extraction with the bundle's own extractor configuration + the bundle's routed network.

    import mmckd
    model = mmckd.load("runs/demo")              # a run folder or its model/ folder
    result = model.predict("clip.mp4")           # -> PredictionResult
    print(result.score, result.polarity, result.modalities)

The extractor configuration is read from the bundle, so features always match what the model was
trained on. Which modalities a clip really has (audio track, a face, a transcript) decides which
network answers; nothing is imputed.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from mmckd.extract.clip_extractor import ClipExtractor, ClipJob
from mmckd.extract.config import ExtractConfig
from mmckd.extract.media import MEDIA_EXTENSIONS
from mmckd.feature_file import MODALITIES, config_hash
from mmckd.model.bundle import Bundle, BundleError, load_bundle
from mmckd.model.routing import NoUsableModalityError

log = logging.getLogger(__name__)

SEVEN_CLASSES = (
    "strongly negative", "negative", "weakly negative", "neutral", "weakly positive", "positive", "strongly positive",
)  # fmt: skip


class PredictError(Exception):
    """Prediction cannot start (no model, incompatible bundle); the message says why."""


def polarity(score: float) -> str:
    return "positive" if score > 0 else "negative" if score < 0 else "neutral"


def seven_class(score: float) -> str:
    """The CMU-MOSI 7-class label: the score rounded and clipped to [-3, 3]."""
    return SEVEN_CLASSES[int(min(3, max(-3, round(score)))) + 3]


@dataclass
class PredictionResult:
    """The answer for one media file (also the fields of `mmckd predict --json`, one object per line).

    clip: the media path as given. score: sentiment in [-3, 3] (None when the clip failed); polarity:
    "positive" / "negative" / "neutral" (sign of score); label7: the CMU-MOSI 7-class label of score.
    network: the subset of the network that answered ("lav" = the teacher, "la", "lv", "av", "l", "a", "v"
    = students); modalities: the modalities that network read ("text", "audio", "vision").
    missing: modality -> why it was not used (no audio track, no face found, no transcript, ...).
    transcript / transcript_source: the text read and where it came from ("given", "sidecar:txt",
    "sidecar:srt", "sidecar:vtt", "asr"; None when there was none). extract_seconds / inference_seconds:
    wall time of feature extraction and of the network (``to_dict`` adds their sum as "seconds").
    error: one line saying why the clip got no score (None when it got one).
    """

    clip: str
    score: float | None = None
    polarity: str | None = None
    label7: str | None = None
    network: str | None = None
    modalities: tuple[str, ...] = ()
    missing: dict[str, str] = field(default_factory=dict)
    transcript: str | None = None
    transcript_source: str | None = None
    extract_seconds: float = 0.0
    inference_seconds: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def seconds(self) -> float:
        return self.extract_seconds + self.inference_seconds

    def to_dict(self) -> dict:
        d = asdict(self)
        d["modalities"] = list(self.modalities)
        d["seconds"] = round(self.seconds, 4)
        return d


def latest_run(runs: str | Path = "runs") -> Path:
    """The most recently written model bundle under runs/ (a clear error when there is none)."""
    runs = Path(runs)
    found = sorted(runs.glob("*/model/bundle.json"), key=lambda p: p.stat().st_mtime) if runs.is_dir() else []
    if not found:
        raise PredictError(
            f"no trained model under {runs}/: train one with `mmckd fit features.h5 -o {runs}/NAME` "
            "or pass --model PATH"
        )
    return found[-1].parent


class Predictor:
    """A loaded bundle plus an extractor configured exactly as the features the bundle was trained on."""

    def __init__(self, bundle: Bundle, asr: bool | None = None) -> None:
        """asr: transcribe clips that have no transcript (given text or sidecar) with offline Whisper;
        None keeps the bundle's setting. It only decides where a transcript comes from, not how
        features are computed, so it may differ from the setting the model was trained with."""
        self.bundle = bundle
        stored = bundle.extractor_config
        if config_hash(stored) != bundle.extractor_config_hash:
            raise PredictError(
                f"{bundle.path}: extractor configuration does not match its stored hash "
                "(bundle.json edited or damaged); restore the bundle or retrain"
            )
        if stored.get("source") in ("mmsa", "csd"):
            raise PredictError(
                f"{bundle.path}: trained on features imported from {stored['source']}, which mmckd cannot compute "
                "from media; to predict on clips, train on features from `mmckd extract`"
            )
        try:
            self.config = ExtractConfig.from_dict(stored)
        except (TypeError, ValueError) as e:
            raise PredictError(
                f"{bundle.path}: made with an extractor configuration this mmckd cannot reproduce ({e}); "
                "use the mmckd version that trained it or retrain"
            ) from None
        if self.config.to_dict() != stored:
            raise PredictError(f"{bundle.path}: extractor configuration of another mmckd version; retrain the model")
        if asr is not None and asr != self.config.transcript.asr:
            transcript = dataclasses.replace(self.config.transcript, asr=asr)
            self.config = dataclasses.replace(self.config, transcript=transcript)
        if self.config.transcript.asr:
            from mmckd.extract.asr import ASRUnavailable, resolve_asr_model

            try:
                resolve_asr_model(self.config.transcript.asr_model)
            except (ASRUnavailable, ValueError) as e:
                raise PredictError(f"speech recognition unavailable: {e}") from None
        self.extractor = ClipExtractor(self.config)

    @property
    def path(self) -> Path:
        return self.bundle.path

    def predict(self, media: str | Path, text: str | None = None) -> PredictionResult:
        """Score one media file. text: the transcript (else a sidecar file, else ASR when the bundle has it)."""
        return next(self.predict_many([media], text=text))

    def predict_many(self, media: Iterable[str | Path], text: str | None = None) -> Iterator[PredictionResult]:
        for path in media:
            path = Path(path)
            result = PredictionResult(clip=str(path))
            t0 = time.perf_counter()
            clip = self.extractor.extract(ClipJob(id=path.stem, media=str(path)), text_override=text)
            result.extract_seconds = time.perf_counter() - t0
            result.transcript, result.transcript_source = clip.transcript, clip.transcript_source
            result.missing = dict(clip.missing_reason)
            if clip.status == "failed":
                result.error = clip.error
                yield result
                continue
            t1 = time.perf_counter()
            try:
                pred = self.bundle.predict(clip)
            except (NoUsableModalityError, BundleError) as e:
                result.error = str(e)
                yield result
                continue
            except Exception as e:  # noqa: BLE001 - one clip never stops a batch
                result.error = f"{path}: inference failed ({type(e).__name__}: {' '.join(str(e).split())})"
                yield result
                continue
            result.inference_seconds = time.perf_counter() - t1
            score = float(min(3.0, max(-3.0, pred.score)))
            if math.isnan(score):
                result.error = f"{path}: the model returned NaN"
            else:
                result.score, result.network, result.modalities = score, pred.network, tuple(pred.modalities)
                result.polarity, result.label7 = polarity(score), seven_class(score)
                result.missing = {m: r for m, r in result.missing.items() if m not in result.modalities}
                for m in MODALITIES:
                    if m not in result.modalities and m not in result.missing:
                        result.missing[m] = f"no {m} network in this bundle for the available modalities"
            yield result

    def load_extractors(self) -> float:
        """Load the extraction models now (the text encoder, MediaPipe, and Whisper when ASR is on) instead of
        on the first clip that needs them, so per-clip times hold extraction only. Returns the seconds taken;
        PredictError when a model cannot be loaded."""
        t0 = time.perf_counter()
        ex = self.extractor
        try:
            for name in ("text_encoder", "audio_extractor", "vision_extractor", "speech_recognizer"):
                getattr(ex, name)
        except Exception as e:  # noqa: BLE001 - any loader failure is one clear line
            raise PredictError(f"cannot load the extraction models ({type(e).__name__}: {' '.join(str(e).split())})")
        return time.perf_counter() - t0

    def close(self) -> None:
        """Release the extractors' native resources (MediaPipe graphs)."""
        self.extractor.close()


def load(path: str | Path | None = None, asr: bool | None = None) -> Predictor:
    """Load a model bundle for prediction (default: the latest run under ./runs). asr: see Predictor."""
    try:
        bundle = load_bundle(path if path is not None else latest_run())
    except BundleError as e:
        raise PredictError(str(e)) from None
    return Predictor(bundle, asr=asr)


def expand_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given; folders expanded to their media files (recursively, sorted)."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.suffix.lower() in MEDIA_EXTENSIONS and q.is_file())
        else:
            out.append(p)
    return out
