"""Typed configuration of the MM-CKD model (architecture, input lengths) and of its training run.

Both are plain frozen dataclasses stored as JSON in run directories and predict bundles
(``to_dict``/``from_dict``; unknown keys are an error so a typo never passes silently).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields

MODES = ("online", "offline-teacher", "no-mvsc", "dropout-baseline", "imputation", "diffusion-imputation")
"""The fit modes, in the order of ``mmckd.model.modes.MODE_REGISTRY`` (a test keeps the two equal)."""
CLASS_SCHEMES = ("3class", "7class", "2class")
REGRESSION_LOSSES = ("l1", "mse")
LONG_SEQUENCE_POLICIES = ("pool", "truncate")
ROUTING_RULES = ("exact", "validated")
MVSC_SPACES = ("projection", "embedding")
MVSC_TEACHER = ("joint", "stop-gradient")
MVSC_POSITIVES = ("clip+class", "clip")
TRAIN_STEPS = ("per-network", "grouped")
DEFAULT_MISSING_RATES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


class ConfigError(ValueError):
    """An option has a value the model cannot use; the message names the option."""


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")


def _check_positive(name: str, value, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{name} must be {'>= 0' if allow_zero else '> 0'}; got {value!r}")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of every network (teacher and students share it) and how inputs are cut to length.

    d_model: width of all streams; layers: intra-modal Transformer layers per modality encoder;
    cross_layers: cross-modal attention layers per stream (default 0: the streams meet in the fusion MLP;
    chosen by speaker-independent cross-validation on real trimodal CMU-MOSI features, where one layer made
    the teacher and the bimodal students worse, see docs/benchmarks.md; set 1 or more for long aligned
    sequences, as MulT-style models use); heads: attention heads; ff_mult: feed-forward
    width as a multiple of d_model; proj_dim: size of the MVSC projection head output.
    max_text/max_audio/max_vision: frames kept per clip; long_sequences: "pool" averages a longer
    sequence into max_* equal bins (keeps the whole clip), "truncate" keeps the first max_* frames.
    modality_dropout: probability that a multimodal network loses a whole stream of a clip in training
    (never all of them); residual_heads: multimodal networks add a linear head per stream to the fused head.
    cra_blocks/cra_layers: the cascade residual autoencoder of the "imputation" mode (MMIN's defaults:
    5 blocks, encoder widths 256,128,64); diffusion_steps/denoiser_width: sampling steps and hidden width
    of the score network of the "diffusion-imputation" mode (IMDer-style).
    """

    d_model: int = 64
    layers: int = 1
    cross_layers: int = 0
    heads: int = 4
    ff_mult: int = 2
    dropout: float = 0.1
    proj_dim: int = 32
    max_text: int = 50
    max_audio: int = 100
    max_vision: int = 100
    long_sequences: str = "pool"
    modality_dropout: float = 0.0
    residual_heads: bool = False
    cra_blocks: int = 5
    cra_layers: tuple[int, ...] = (256, 128, 64)
    diffusion_steps: int = 100
    denoiser_width: int = 256

    def __post_init__(self) -> None:
        object.__setattr__(self, "cra_layers", tuple(int(w) for w in self.cra_layers))
        if not self.cra_layers:
            raise ConfigError("cra_layers must list at least one width")
        for w in self.cra_layers:
            _check_positive("cra_layers", w)
        if not 0.0 <= self.modality_dropout < 1.0:
            raise ConfigError(f"modality_dropout must be in [0, 1); got {self.modality_dropout}")
        for name in ("cra_blocks", "diffusion_steps", "denoiser_width"):
            _check_positive(name, getattr(self, name))
        for name in ("d_model", "layers", "heads", "ff_mult", "proj_dim", "max_text", "max_audio", "max_vision"):
            _check_positive(name, getattr(self, name))
        _check_positive("cross_layers", self.cross_layers, allow_zero=True)
        if self.d_model % self.heads:
            raise ConfigError(f"d_model ({self.d_model}) must be a multiple of heads ({self.heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1); got {self.dropout}")
        _check_choice("long_sequences", self.long_sequences, LONG_SEQUENCE_POLICIES)

    def max_length(self, modality: str) -> int:
        """Frames kept for one modality ("text", "audio", "vision")."""
        return {"text": self.max_text, "audio": self.max_audio, "vision": self.max_vision}[modality]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["cra_layers"] = list(self.cra_layers)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        return cls(**_known(cls, data))


@dataclass(frozen=True)
class FitConfig:
    """Everything that decides what a training run computes (stored in the run; checked on --resume).

    mode: "online" (MM-CKD: teacher + six students trained jointly with MVSC), "offline-teacher"
    (teacher pre-trained alone then frozen, students distil from it), "no-mvsc" (every network trained
    on its regression loss only), "dropout-baseline" (one three-modality network trained with random
    modality dropout, answering every condition with zero-filled inputs).
    compare: further modes trained on the same data and seeds, reported beside the main one.
    lambda_mvsc/temperature: weight and temperature of the MVSC loss. class_scheme: sentiment classes
    that make cross-sample positives ("3class": y < -b / |y| <= b / y > b with b = neutral_band;
    "7class": clip(round(y), -3, 3); "2class": y >= 0 vs y < 0). patience: epochs without a better
    valid MAE (of any network) before stopping. teacher_epochs: epochs of the offline teacher phase
    (None: same as epochs). eval_seed: seed of the random-missing evaluation protocol.
    routing: "exact" (the paper: a clip goes to the network of exactly its modalities) or "validated"
    (each condition goes to the network, among those whose modalities the clip has, with the best valid
    MAE; recorded in the bundle). mvsc_space: views are the projection head's output ("projection", the
    paper) or the fused embedding itself ("embedding"); mvsc_teacher: the teacher's views are trained
    jointly ("joint") or are stop-gradient targets ("stop-gradient"); mvsc_positives: same clip or same
    class ("clip+class", the paper) or same clip only ("clip"). lambda_reconstruction/lambda_cycle: weights
    of the imputation modes' reconstruction and cycle-consistency (or denoising) losses.
    train_step: how one optimisation step runs the networks: "per-network" (each network forward on its own
    sub-batch, one after another) or "grouped" (the networks batched together; same results within seed noise).
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    mode: str = "online"
    compare: tuple[str, ...] = ()
    epochs: int = 30
    teacher_epochs: int | None = None
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    lambda_mvsc: float = 0.1
    temperature: float = 0.1
    class_scheme: str = "3class"
    neutral_band: float = 0.0
    regression_loss: str = "l1"
    seeds: tuple[int, ...] = (1,)
    patience: int = 8
    missing_rates: tuple[float, ...] = DEFAULT_MISSING_RATES
    eval_seed: int = 0
    routing: str = "exact"
    mvsc_space: str = "projection"
    mvsc_teacher: str = "joint"
    mvsc_positives: str = "clip+class"
    lambda_reconstruction: float = 1.0
    lambda_cycle: float = 0.5
    train_step: str = "per-network"

    def __post_init__(self) -> None:
        object.__setattr__(self, "compare", tuple(self.compare))
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        object.__setattr__(self, "missing_rates", tuple(float(r) for r in self.missing_rates))
        _check_choice("mode", self.mode, MODES)
        for m in self.compare:
            _check_choice("compare", m, MODES)
        if self.mode in self.compare or len(set(self.compare)) != len(self.compare):
            raise ConfigError(f"compare lists a mode twice (mode {self.mode!r}, compare {list(self.compare)})")
        _check_choice("class_scheme", self.class_scheme, CLASS_SCHEMES)
        _check_choice("regression_loss", self.regression_loss, REGRESSION_LOSSES)
        _check_choice("routing", self.routing, ROUTING_RULES)
        _check_choice("mvsc_space", self.mvsc_space, MVSC_SPACES)
        _check_choice("mvsc_teacher", self.mvsc_teacher, MVSC_TEACHER)
        _check_choice("mvsc_positives", self.mvsc_positives, MVSC_POSITIVES)
        _check_choice("train_step", self.train_step, TRAIN_STEPS)
        for name in ("epochs", "batch_size", "lr", "temperature", "patience"):
            _check_positive(name, getattr(self, name))
        for name in (
            "weight_decay",
            "grad_clip",
            "lambda_mvsc",
            "neutral_band",
            "lambda_reconstruction",
            "lambda_cycle",
        ):
            _check_positive(name, getattr(self, name), allow_zero=True)
        if self.teacher_epochs is not None:
            _check_positive("teacher_epochs", self.teacher_epochs)
        if not self.seeds:
            raise ConfigError("seeds must list at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds must be distinct; got {list(self.seeds)}")
        if any(not 0.0 <= r < 1.0 for r in self.missing_rates):
            raise ConfigError(f"missing rates must be in [0, 1); got {list(self.missing_rates)}")

    @property
    def modes(self) -> tuple[str, ...]:
        """The main mode first, then the compared ones."""
        return (self.mode, *self.compare)

    def for_mode(self, mode: str) -> FitConfig:
        """This configuration with another main mode and nothing to compare (one trained variant)."""
        return dataclasses.replace(self, mode=mode, compare=())

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["model"] = self.model.to_dict()
        for name in ("compare", "seeds", "missing_rates"):
            d[name] = list(d[name])
        return d

    @classmethod
    def from_dict(cls, data: dict) -> FitConfig:
        kwargs = _known(cls, data)
        if "model" in kwargs:
            kwargs["model"] = ModelConfig.from_dict(kwargs["model"])
        return cls(**kwargs)


def _known(cls, data: dict) -> dict:
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown option(s) {sorted(unknown)}")
    return dict(data)
