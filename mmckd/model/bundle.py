"""The predict bundle: a folder with ``weights.safetensors`` and ``bundle.json``; no pickle anywhere.

bundle.json holds the model kind and configuration, feature dims, normalisation statistics, the
trained subsets, the extractor configuration (and its hash) of the features it was trained on,
provenance, the mmckd version and the sha256 of the weights file; ``load_bundle`` refuses a bundle
whose weights do not match that hash, and one whose network architecture id (model_config.architecture,
see mmckd.model.config.ARCHITECTURE; bundles written before ids existed are mmckd/1) this mmckd does not build.

    b = load_bundle("runs/NAME")          # the run folder or its model/ folder
    b.predict(clip)                       # -> Prediction(score, network, modalities)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import mmckd
from mmckd.atomic_write import atomic_output
from mmckd.feature_file import Clip
from mmckd.file_digest import sha256_file
from mmckd.model.architectures import create_model
from mmckd.model.checkpoint import write_json_atomic
from mmckd.model.config import ARCHITECTURE, ARCHITECTURES, LEGACY_ARCHITECTURE, ConfigError, ModelConfig
from mmckd.model.data import Normaliser, pad_batch, prepare_clip
from mmckd.model.inference import KINDS, NetworkRouter, architecture_of_kind
from mmckd.model.networks import MMCKDModel
from mmckd.model.routing import MODALITIES, SUBSETS, NoUsableModalityError, subset_modalities, subset_name

FORMAT = "mmckd-model"
FORMAT_VERSION = 1
WEIGHTS = "weights.safetensors"
META = "bundle.json"


class BundleError(Exception):
    """A bundle cannot be loaded or used; the message names the folder and the reason."""


@dataclass
class Prediction:
    """score: sentiment in [-3, 3]; network: subset of the network that answered ("lav", "l", ...);
    modalities: the modalities that network read."""

    score: float
    network: str
    modalities: tuple[str, ...]


def _write_bundle(
    directory: str | Path,
    model: MMCKDModel,
    kind: str,
    model_config: ModelConfig,
    dims: dict[str, int],
    normaliser: Normaliser,
    extractor_config: dict,
    extractor_config_hash: str,
    provenance: dict,
    extra: dict | None = None,
    routing: dict[str, str] | None = None,
) -> Path:
    """Write the bundle's files into the (new, temporary) folder directory; save_bundle makes it atomic."""
    tmp = Path(directory)
    tmp.mkdir(parents=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp / WEIGHTS))
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mmckd_version": mmckd.__version__,
        "kind": kind,
        "model_config": model_config.to_dict(),
        "feature_dims": {m: int(dims[m]) for m in MODALITIES},
        "max_lengths": {m: model_config.max_length(m) for m in MODALITIES},
        "normalisation": normaliser.to_dict(),
        "subsets": list(model.subsets),
        "routing": dict(routing or {}),
        "extractor_config": extractor_config,
        "extractor_config_hash": extractor_config_hash,
        "provenance": provenance,
        "weights_sha256": sha256_file(tmp / WEIGHTS),
    } | (extra or {})
    write_json_atomic(tmp / META, meta)
    return tmp


class Bundle:
    """A loaded predict bundle (see module docstring)."""

    def __init__(self, path: Path, meta: dict, model: MMCKDModel) -> None:
        self.path = path
        self.meta = meta
        self.model_config = ModelConfig.from_dict(meta["model_config"])
        self.normaliser = Normaliser.from_dict(meta["normalisation"])
        self.dims = {m: int(d) for m, d in meta["feature_dims"].items()}
        self.predictor = NetworkRouter(model, meta["kind"], "cpu", routing=meta.get("routing") or {})

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @property
    def extractor_config(self) -> dict:
        return self.meta["extractor_config"]

    @property
    def extractor_config_hash(self) -> str:
        return self.meta["extractor_config_hash"]

    @property
    def available_subsets(self) -> tuple[str, ...]:
        """The modality subsets this model has a network for (what it answers without falling back)."""
        return self.predictor.answers

    def predict(self, clip: Clip) -> Prediction:
        """Score one clip, routed on which of clip.text/audio/vision are usable (present, with a valid
        frame: a vision Sequence whose mask is all False counts as absent)."""
        for m in MODALITIES:
            seq = clip.sequence(m)
            if seq is not None and seq.features.shape[1] != self.dims[m]:
                raise BundleError(
                    f"clip {clip.id}: {m} features have dim {seq.features.shape[1]}, this model expects "
                    f"{self.dims[m]} (features made with another extractor configuration?)"
                )
        try:
            prepared = prepare_clip({m: clip.sequence(m) for m in MODALITIES}, self.model_config, self.normaliser)
        except ValueError as e:
            raise BundleError(f"clip {clip.id}: {e}") from None
        available = subset_name(m for m in MODALITIES if prepared[m] is not None)
        try:
            network = self.predictor.network_for(available)
        except NoUsableModalityError as e:
            raise NoUsableModalityError(f"clip {clip.id}: {e}") from None
        used = tuple(m for m in subset_modalities(network) if prepared[m] is not None)
        inputs = {m: (prepared[m] if m in used else None) for m in MODALITIES}
        batch = pad_batch([inputs], self.dims, [float("nan")])
        score = float(self.predictor.predict_batch(batch, network)[0])
        return Prediction(score=score, network=network, modalities=used)


def bundle_dir(path: str | Path) -> Path:
    """The bundle folder of a path that is either a bundle folder or a run folder holding model/."""
    path = Path(path)
    if (path / META).exists():
        return path
    if (path / "model" / META).exists():
        return path / "model"
    raise BundleError(f"{path}: no model bundle here (expected {META} in it or in its model/ folder)")


def _load_bundle(path: str | Path) -> Bundle:
    """Load a bundle (run folder or model/ folder); checks format and the weights' sha256."""
    folder = bundle_dir(path)
    try:
        meta = json.loads((folder / META).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BundleError(f"{folder / META}: unreadable ({e})") from None
    if meta.get("format") != FORMAT:
        raise BundleError(f"{folder / META}: not an mmckd model bundle")
    if int(meta.get("format_version", -1)) > FORMAT_VERSION:
        raise BundleError(f"{folder}: bundle format {meta['format_version']} is newer than this mmckd reads")
    if meta.get("kind") not in KINDS or any(s not in SUBSETS for s in meta.get("subsets", [])):
        raise BundleError(f"{folder / META}: unknown model kind or subsets")
    weights = folder / WEIGHTS
    if not weights.exists():
        raise BundleError(f"{weights}: missing")
    digest = sha256_file(weights)
    if digest != meta.get("weights_sha256"):
        raise BundleError(
            f"{weights}: sha256 {digest[:16]}… does not match bundle.json ({str(meta.get('weights_sha256'))[:16]}…); "
            "the weights were modified or belong to another bundle"
        )
    architecture = meta["model_config"].get("architecture", LEGACY_ARCHITECTURE)
    if architecture not in ARCHITECTURES:
        raise BundleError(
            f"{folder / META}: made with network architecture {architecture!r}; this mmckd "
            f"({mmckd.__version__}) builds {ARCHITECTURE!r}: load it with the mmckd version that trained it "
            f"({meta.get('mmckd_version', 'unknown')}), or retrain"
        )
    cfg = ModelConfig.from_dict(meta["model_config"])
    model = create_model(cfg, meta["feature_dims"], tuple(meta["subsets"]), architecture_of_kind(meta["kind"]))
    try:
        state = load_file(str(weights))
        model.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError) as e:
        raise BundleError(f"{weights}: does not fit the model described in bundle.json ({e})") from None
    model.eval()
    return Bundle(folder, meta, model)


def save_bundle(directory: str | Path, *args, **kwargs) -> Path:
    """Write a bundle folder atomically (arguments: those of ``_write_bundle``): it is built under a temporary
    name beside ``directory`` and swapped in when complete. A disk-full or other I/O error raises WriteError
    (one line naming the folder), leaves no temporary folder, and leaves a previous bundle intact."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(directory) as tmp:
        _write_bundle(tmp, *args, **kwargs)
    return directory


_MALFORMED = (KeyError, TypeError, ValueError, AttributeError, IndexError, ConfigError, SafetensorError, RuntimeError,
              OSError, UnicodeDecodeError)  # fmt: skip


def load_bundle(path: str | Path) -> Bundle:
    """Load a bundle (run folder or model/ folder); checks format and the weights' sha256.

    Anything wrong with the bundle - bundle.json missing, truncated, not JSON, fields of the wrong type,
    weights missing, truncated or not matching - raises BundleError: one line naming the file.
    """
    folder = bundle_dir(path)
    try:
        return _load_bundle(folder)
    except BundleError:
        raise
    except _MALFORMED as e:
        what = "cannot be read" if isinstance(e, OSError) else "is malformed"
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BundleError(f"{folder / META}: the bundle {what} ({type(e).__name__}: {reason[:200]})") from None
