"""Prediction = extraction with the bundle's own extractor configuration + the bundle's routed network.

    import mmckd
    model = mmckd.load("runs/demo")              # a run folder or its model/ folder
    result = model.predict("clip.mp4")           # -> PredictionResult
    print(result.score, result.polarity, result.modalities)

The extractor configuration is read from the bundle, so features always match what the model was
trained on. Which modalities a clip really has (audio track, a face, a transcript) decides which
network answers; nothing is imputed. Modalities no network of the bundle reads are not extracted.

Without a model path, the latest run under ./runs is used, else the embedded default model
(``mmckd/default_model``: text only, trained on CMU-MOSI), which turns ASR on by itself.
``Predictor.predict_segments`` scores a long video utterance by utterance (``mmckd.segments``).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import math
import os
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from mmckd import default_model
from mmckd.extract.clip_extractor import ClipExtractor, ClipJob
from mmckd.extract.config import ExtractConfig
from mmckd.extract.media import MEDIA_EXTENSIONS
from mmckd.feature_file import MODALITIES, config_hash

if TYPE_CHECKING:
    from mmckd.model.bundle import Bundle

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


@dataclass
class SegmentResult(PredictionResult):
    """The answer for one utterance segment of a longer media file (``mmckd predict --segments``).

    start / end: the segment's time range in the file, seconds; segment: its index (0-based);
    segmentation: how it was found ("asr": Whisper segment timestamps, "sidecar": the cues of an
    .srt/.vtt file, "vad": voice activity, "window": fixed windows). Other fields as PredictionResult
    (clip is the whole file; transcript is the segment's own words).
    """

    start: float = 0.0
    end: float = 0.0
    segment: int = 0
    segmentation: str = ""

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["start"], d["end"] = round(self.start, 3), round(self.end, 3)
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


_Result = TypeVar("_Result", bound=PredictionResult)  # _score returns the result it was given, filled in


class _ModelExtractor(ClipExtractor):
    """A ClipExtractor that skips the modalities no network of the model reads (a text-only model never
    runs the face mesh or the audio features; ASR still runs on the audio track when it is on)."""

    def __init__(self, config: ExtractConfig, reads: frozenset[str]) -> None:
        super().__init__(config)
        self.reads = reads

    def skip_reason(self, name: str) -> str | None:
        return None if name in self.reads else f"not read by this model (it has no {name} network)"


class Predictor:
    """A loaded bundle plus an extractor configured exactly as the features the bundle was trained on."""

    def __init__(self, bundle: Bundle, asr: bool | None = None, is_default: bool = False) -> None:
        """asr: transcribe clips that have no transcript (given text or sidecar) with offline Whisper;
        None keeps the bundle's setting, except that a model reading text only turns it on when the asr
        extra is installed. It only decides where a transcript comes from, not how features are computed,
        so it may differ from the setting the model was trained with. is_default: the embedded default
        model (only changes how refusals are worded)."""
        self.bundle = bundle
        self.is_default = is_default
        self.reads = frozenset(m for s in bundle.available_subsets for m in _subset_modalities(s))
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
        if asr is None and self.reads == {"text"} and not self.config.transcript.asr:
            asr = self._asr_usable()
            if asr:
                log.info("the model reads text only: clips without a transcript are transcribed with Whisper")
        if asr is not None and asr != self.config.transcript.asr:
            transcript = dataclasses.replace(self.config.transcript, asr=asr)
            self.config = dataclasses.replace(self.config, transcript=transcript)
        if self.config.transcript.asr:
            from mmckd.extract.asr import ASRUnavailable, resolve_asr_model

            try:
                resolve_asr_model(self.config.transcript.asr_model)
            except (ASRUnavailable, ValueError) as e:
                raise PredictError(f"speech recognition unavailable: {e}") from None
        self.extractor = _ModelExtractor(self.config, self.reads)

    def _asr_usable(self) -> bool:
        from mmckd.extract.asr import ASRUnavailable, resolve_asr_model

        try:
            import faster_whisper  # noqa: F401

            resolve_asr_model(self.config.transcript.asr_model)
            return True
        except (ImportError, ASRUnavailable, ValueError) as e:
            log.warning(
                "the model reads text only and speech recognition is unavailable (%s): clips need a "
                "transcript (--text or a sidecar CLIP.txt/.srt/.vtt)",
                e,
            )
            return False

    def _no_text_reason(self, path: Path, clip) -> str:
        who = "the default model" if self.is_default else "this model"
        if "audio" in clip.missing_reason and "track" in clip.missing_reason["audio"]:
            why = "it has no audio track"
        elif self.config.transcript.asr:
            why = "Whisper heard none, and no transcript was given or found in a sidecar"
        else:
            why = "no transcript given or found in a sidecar, and ASR is off"
        return (
            f"{path}: {who} reads text; this clip has no speech ({why}); give its transcript with --text or "
            "a sidecar CLIP.txt, or train a model on your labelled videos for audio and vision"
        )

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
            if isinstance(self.extractor._asr, _PrefetchingRecognizer):  # its ASR ran while the models loaded
                result.extract_seconds += self.extractor._asr.spent.pop(os.path.realpath(path), 0.0)
            result.transcript, result.transcript_source = clip.transcript, clip.transcript_source
            result.missing = dict(clip.missing_reason)
            yield self._score(path, clip, result)

    def _score(self, path: Path, clip, result: _Result) -> _Result:
        """Fill result from an extracted clip: the routed network's score, or the reason there is none."""
        from mmckd.model.bundle import BundleError
        from mmckd.model.routing import NoUsableModalityError

        if clip.status == "failed":
            if self.reads == {"text"} and clip.text is None and (clip.error or "").startswith("no usable modality"):
                result.error = self._no_text_reason(path, clip)
            else:
                result.error = clip.error
            return result
        t1 = time.perf_counter()
        try:
            pred = self.bundle.predict(clip)
        except (NoUsableModalityError, BundleError) as e:
            if self.reads == {"text"} and clip.text is None:
                result.error = self._no_text_reason(path, clip)
            else:
                result.error = str(e)
            return result
        except Exception as e:  # noqa: BLE001 - one clip never stops a batch
            result.error = f"{path}: inference failed ({type(e).__name__}: {' '.join(str(e).split())})"
            return result
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
        return result

    def predict_segments(
        self, media: str | Path, window: float = 5.0, max_segment: float = 20.0, workdir: str | Path | None = None
    ) -> Iterator[SegmentResult]:
        """Score a (long) media file utterance by utterance: segments from Whisper's timestamps when ASR is on
        and there is speech (or from an .srt/.vtt sidecar's cues), else voice activity, else fixed windows of
        ``window`` seconds (see ``mmckd.segments.plan_segments``). Each segment is scored by the network its
        modalities call for. Raises PredictError when the file cannot be read at all."""
        import tempfile

        from mmckd.extract.errors import MediaError
        from mmckd.segments import cut_segment, plan_segments

        path = Path(media)
        t0 = time.perf_counter()
        try:
            plan = plan_segments(
                path, self.extractor.speech_recognizer, self.config.transcript, window=window, max_segment=max_segment
            )
        except (MediaError, OSError, ValueError) as e:
            why = " ".join(str(e).split())
            why = why[len(f"{path}: ") :] if why.startswith(f"{path}: ") else why
            raise PredictError(f"{path}: cannot segment ({why})") from None
        plan_seconds = time.perf_counter() - t0
        log.info("%s: %d segments (%s) in %.1f s", path, len(plan.segments), plan.method, plan_seconds)
        needs_media = bool(self.reads & {"audio", "vision"})
        with tempfile.TemporaryDirectory(prefix="mmckd-segments-", dir=workdir) as tmp:
            for k, seg in enumerate(plan.segments):
                result = SegmentResult(
                    clip=str(path), start=seg.start, end=seg.end, segment=k, segmentation=plan.method
                )
                t1 = time.perf_counter()
                sid = f"{path.stem}_{seg.start:.2f}_{seg.end:.2f}"
                if needs_media:
                    try:
                        cut = cut_segment(plan.info, seg.start, seg.end, Path(tmp) / f"{sid}.cut")
                    except MediaError as e:
                        result.error = str(e)
                        yield result
                        continue
                    job = ClipJob(id=sid, media=str(cut))
                else:
                    job = ClipJob(id=sid, text=seg.text)
                clip = self.extractor.extract(job, text_override=seg.text or "" if needs_media else None)
                result.extract_seconds = time.perf_counter() - t1 + (plan_seconds if k == 0 else 0.0)
                result.transcript = clip.transcript
                result.transcript_source = seg.source if clip.transcript else None
                result.missing = dict(clip.missing_reason)
                if "text" in result.missing and not seg.text:
                    result.missing["text"] = plan.no_text_reason
                yield self._score(path, clip, result)

    def load_extractors(self, skip_asr: bool = False) -> float:
        """Load the extraction models this bundle needs now (the text encoder, the audio extractor, MediaPipe,
        Whisper when ASR is on; each only when a network reads its modality), concurrently, instead of on the
        first clip that needs them, so per-clip times hold extraction only. Returns the seconds taken;
        PredictError when a model cannot be loaded."""
        import numpy as np

        t0 = time.perf_counter()
        ex = self.extractor
        # each task loads one model and runs it once on a dummy input, so one-off set-up (Whisper's VAD model,
        # first-call allocations) is paid here, concurrently, and not by the first clip
        tasks = []
        if "text" in self.reads:
            tasks.append(lambda: ex.text_encoder.encode("warm up"))
        if "audio" in self.reads:
            tasks.append(lambda: ex.audio_extractor)
        if "vision" in self.reads:
            tasks.append(lambda: ex.vision_extractor)
        if self.config.transcript.asr and not skip_asr:
            tasks.append(lambda: ex.speech_recognizer.transcribe(np.zeros(16000, np.float32)))
        try:
            with ThreadPoolExecutor(max_workers=len(tasks) + 1) as pool:
                warm = pool.submit(self._warm_network)
                for f in [pool.submit(t) for t in tasks]:
                    f.result()
                warm.result()
        except Exception as e:  # noqa: BLE001 - any loader failure is one clear line
            raise PredictError(
                f"cannot load the extraction models ({type(e).__name__}: {' '.join(str(e).split())})"
            ) from e
        return time.perf_counter() - t0

    def _warm_network(self) -> None:
        """One forward pass of the network a clip with every modality this model reads would get (zeros)."""
        import numpy as np

        from mmckd.feature_file import Clip, Sequence

        seqs: dict[str, Any] = {m: Sequence(np.zeros((4, self.bundle.dims[m]), np.float32)) for m in self.reads}
        try:
            self.bundle.predict(Clip(id="warm-up", **seqs))
        except Exception as e:  # noqa: BLE001 - only a warm-up: the real clip reports any problem
            log.debug("network warm-up failed: %s", e)

    def close(self) -> None:
        """Release the extractors' native resources (MediaPipe graphs)."""
        self.extractor.close()


def _subset_modalities(subset: str) -> tuple[str, ...]:
    from mmckd.model.routing import subset_modalities

    return subset_modalities(subset)


def resolve_model(path: str | Path | None = None, runs: str | Path = "runs") -> tuple[Path, bool]:
    """(bundle path, is the embedded default model). path None: the latest run under runs/, else the
    default model (said on stderr); "default": the default model."""
    if path is not None and str(path) != default_model.NAME:
        return Path(path), False
    if path is None:
        try:
            return latest_run(runs), False
        except PredictError:
            if not default_model.available():
                raise
        log.warning(
            "no --model given and no trained model under %s/: using the embedded default model (text only, "
            "trained on CMU-MOSI transcripts; `mmckd info default` says more)",
            runs,
        )
    elif not default_model.available():
        raise PredictError(
            f"the embedded default model is missing from {default_model.PATH}; rebuild it with "
            "`make default-model` or pass --model PATH"
        )
    return default_model.PATH, True


def load(path: str | Path | None = None, asr: bool | None = None) -> Predictor:
    """Load a model bundle for prediction: a run or bundle folder, "default" (the embedded default model), or
    None (the latest run under ./runs, else the default model). asr: see Predictor."""
    from mmckd.model.bundle import BundleError, load_bundle

    folder, is_default = resolve_model(path)
    try:
        bundle = load_bundle(folder)
    except BundleError as e:
        raise PredictError(str(e)) from None
    return Predictor(bundle, asr=asr, is_default=is_default)


class _PrefetchingRecognizer:
    """A SpeechRecognizer whose transcribe_media returns the transcript already computed for a file, once."""

    def __init__(self, recognizer, cache: dict[str, tuple[object, float]]) -> None:
        self._rec = recognizer
        self._cache = cache
        self.spent: dict[str, float] = {}  # seconds the prefetch took, added to the clip's extract_seconds

    def transcribe_media(self, info):
        key = os.path.realpath(info.path)
        if key in self._cache:
            transcript, self.spent[key] = self._cache.pop(key)
            return transcript
        return self._rec.transcribe_media(info)

    def __getattr__(self, name):
        return getattr(self._rec, name)


def _reads_and_asr(meta: dict, asr: bool | None) -> tuple[frozenset[str], bool]:
    """What a bundle's networks read and whether Predictor will turn ASR on (the same rule as Predictor)."""
    reads = frozenset(m for s in meta.get("subsets", []) for m in _subset_modalities(s))
    configured = bool(((meta.get("extractor_config") or {}).get("transcript") or {}).get("asr"))
    if asr is not None:
        return reads, asr
    if reads == {"text"} and not configured:
        return reads, importlib.util.find_spec("faster_whisper") is not None
    return reads, configured


def load_for(
    media: list[Path],
    path: str | Path | None = None,
    asr: bool | None = None,
    text: str | None = None,
    segments: bool = False,
) -> tuple[Predictor, float]:
    """``load`` + ``load_extractors`` for a run over ``media``, overlapped with the first clip's speech recognition:
    while one thread imports torch and loads the bundle and the extraction models, this one loads Whisper and
    transcribes the first file (when ASR will run on it: no --text, no sidecar transcript), so the first score
    comes sooner. Same errors as load / load_extractors (PredictError). Returns (predictor, seconds)."""
    t0 = time.perf_counter()
    folder, is_default = resolve_model(path)
    try:
        meta = json.loads((Path(folder) / "bundle.json").read_text())
    except (OSError, ValueError):
        meta = {}  # load_bundle reports it
    reads, will_asr = _reads_and_asr(meta, asr)

    def _load() -> Predictor:
        from mmckd.model.bundle import BundleError, load_bundle

        try:
            bundle = load_bundle(folder)
        except BundleError as e:
            raise PredictError(str(e)) from None
        predictor = Predictor(bundle, asr=asr, is_default=is_default)
        predictor.load_extractors(skip_asr=will_asr)
        return predictor

    recognizer = None
    cache: dict = {}
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(_load)
        if will_asr:
            recognizer = _prefetch(meta, media[:1] if not segments and text is None else [], cache)
        predictor = future.result()
    if recognizer is not None and predictor.config.transcript.asr:
        predictor.extractor._asr = _PrefetchingRecognizer(recognizer, cache)
    elif predictor.config.transcript.asr and predictor.extractor._asr is None:
        predictor.load_extractors()  # prefetching failed: load Whisper the ordinary way (reports errors)
    return predictor, time.perf_counter() - t0


def _prefetch(meta: dict, media: list[Path], cache: dict):
    """Load Whisper (warmed up) and transcribe media that will need ASR into cache; None when that fails (the
    ordinary path then loads it and reports any problem)."""
    import numpy as np

    from mmckd.extract.config import TranscriptConfig

    try:
        from mmckd.extract.asr import SpeechRecognizer
        from mmckd.extract.media import probe
        from mmckd.extract.transcript import find_sidecar

        tconf = TranscriptConfig.from_dict(((meta.get("extractor_config") or {}).get("transcript")) or {})
        recognizer = SpeechRecognizer(tconf.asr_model)
        recognizer.transcribe(np.zeros(16000, np.float32))
    except Exception as e:  # noqa: BLE001 - the ordinary path reports it
        log.debug("Whisper prefetch failed: %s", e)
        return None
    for path in media:
        try:
            if find_sidecar(Path(path), tconf.sidecars) is not None:
                continue
            t0 = time.perf_counter()
            info = probe(path)
            if info.has_audio:
                transcript = recognizer.transcribe_media(info)
                cache[os.path.realpath(info.path)] = (transcript, time.perf_counter() - t0)
        except Exception as e:  # noqa: BLE001 - the clip itself will report it
            log.debug("%s: transcript prefetch failed: %s", path, e)
    return recognizer


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
