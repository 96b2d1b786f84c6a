"""Typed configuration of the MM-CKD model (architecture, input lengths) and of its training run.

Both are strict frozen dataclasses of the one configuration layer (``mmckd.config_fields``): every field
declares its help, choices and bounds, which validate it and make its ``mmckd fit`` option. They are stored
as JSON in run folders (run.json) and predict bundles (bundle.json); unknown keys are an error, so a typo
never passes silently.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmckd.config_fields import Config, ConfigError, option

__all__ = ["ARCHITECTURE", "ConfigError", "FitConfig", "ModelConfig"]

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

ARCHITECTURE = "mmckd/1"
"""Id of the network definitions this mmckd builds (mmckd.model.networks, mmckd.model.imputation). Bump it with
any change that alters a network's parameters or what they compute: bundles record it (model_config.architecture)
and one made by another architecture is refused on load with that reason, instead of "weights do not fit" or,
worse, weights that fit and compute something else."""
ARCHITECTURES = (ARCHITECTURE,)
"""The architecture ids this mmckd can load."""
LEGACY_ARCHITECTURE = "mmckd/1"
"""What a bundle written before architecture ids existed was made by (their networks are mmckd/1)."""


@dataclass(frozen=True)
class ModelConfig(Config):
    """Architecture of every network (teacher and students share it) and how inputs are cut to length.

    cross_layers defaults to 0 (the streams meet in the fusion MLP): chosen by speaker-independent
    cross-validation on real trimodal CMU-MOSI features, where one layer made the teacher and the bimodal
    students worse (docs/benchmarks.md); set 1 or more for long aligned sequences, as MulT-style models use.
    long_sequences: "pool" averages a longer sequence into max_* equal bins (keeps the whole clip), "truncate"
    keeps the first max_* frames.
    """

    architecture: str = option(
        ARCHITECTURE, "Id of the network definitions (checked when a bundle is loaded).", choices=ARCHITECTURES
    )
    d_model: int = option(64, "Width of all streams.", low=4)
    layers: int = option(1, "Intra-modal Transformer layers per modality encoder.", low=1)
    cross_layers: int = option(0, "Cross-modal attention layers per stream (0: streams meet in the fusion MLP).", low=0)
    heads: int = option(4, "Attention heads (d_model must be a multiple).", low=1)
    ff_mult: int = option(2, "Feed-forward width as a multiple of d_model.", low=1)
    dropout: float = option(0.1, "Dropout.", low=0, high=1, high_open=True)
    proj_dim: int = option(32, "Size of the MVSC projection head's output.", low=2)
    max_text: int = option(50, "Text frames (tokens) kept per clip.", low=1)
    max_audio: int = option(100, "Audio frames kept per clip.", low=1)
    max_vision: int = option(100, "Vision frames kept per clip.", low=1)
    long_sequences: str = option(
        "pool", "Longer sequences: average into bins (pool) or cut (truncate).", choices=LONG_SEQUENCE_POLICIES
    )
    modality_dropout: float = option(
        0.0,
        "Multimodal networks drop whole streams of a clip with this probability in training (never all).",
        low=0,
        high=1,
        high_open=True,
    )
    residual_heads: bool = option(False, "Multimodal networks add a linear head per stream to the fused head.")
    cra_blocks: int = option(5, "imputation: blocks of the cascade residual autoencoder (MMIN: 5).", low=1)
    cra_layers: tuple[int, ...] = option((256, 128, 64), "imputation: CRA encoder widths (MMIN: 256,128,64).", low=1)
    diffusion_steps: int = option(100, "diffusion-imputation: sampling steps (IMDer-style score network).", low=1)
    denoiser_width: int = option(256, "diffusion-imputation: hidden width of the score network.", low=1)

    def validate(self) -> None:
        if not self.cra_layers:
            raise ConfigError("cra_layers must list at least one width")
        if self.d_model % self.heads:
            raise ConfigError(f"d_model ({self.d_model}) must be a multiple of heads ({self.heads})")

    def max_length(self, modality: str) -> int:
        """Frames kept for one modality ("text", "audio", "vision")."""
        return {"text": self.max_text, "audio": self.max_audio, "vision": self.max_vision}[modality]


@dataclass(frozen=True)
class FitConfig(Config):
    """Everything that decides what a training run computes (stored in the run; checked on --resume).

    mode: "online" (MM-CKD: teacher + six students trained jointly with MVSC), "offline-teacher" (teacher
    pre-trained alone then frozen, students distil from it), "no-mvsc" (every network on its regression loss
    only), "dropout-baseline" (one three-modality network trained with random modality dropout, answering every
    condition with zero-filled inputs), "imputation" (MMIN-style) and "diffusion-imputation" (IMDer-style).
    class_scheme: sentiment classes that make MVSC's cross-sample positives ("3class": y < -b / |y| <= b /
    y > b with b = neutral_band; "7class": clip(round(y), -3, 3); "2class": y >= 0 vs y < 0).
    routing: "exact" (the paper: a clip goes to the network of exactly its modalities) or "validated" (each
    condition goes to the network, among those whose modalities the clip has, with the best valid MAE;
    recorded in the bundle). train_step: "per-network" (each network on its own sub-batch) or "grouped" (the
    networks stacked in one pass over the batch, mmckd.model.grouped; the same terms up to float rounding, for
    GPUs: on CPU no faster, and on real data not yet shown equal, see docs/benchmarks.md).
    """

    stored_as = "fit_config"  # in run.json and bundle.json

    model: ModelConfig = option(help="The networks' architecture.", factory=ModelConfig)
    mode: str = option("online", "The mode to train.", choices=MODES)
    compare: tuple[str, ...] = option((), "Also train these modes on the same data and seeds.", choices=MODES)
    epochs: int = option(30, "Training epochs (at most: see patience).", low=1)
    teacher_epochs: int | None = option(None, "offline-teacher: epochs of the teacher phase [= epochs].", low=1)
    batch_size: int = option(64, "Clips per optimisation step.", low=1)
    lr: float = option(1e-3, "AdamW learning rate.", low=0, low_open=True)
    weight_decay: float = option(1e-4, "AdamW weight decay.", low=0)
    grad_clip: float = option(1.0, "Gradient norm clipping (0: none).", low=0)
    lambda_mvsc: float = option(0.1, "Weight of the MVSC loss.", low=0, cli=("--lambda",))
    temperature: float = option(0.1, "MVSC temperature.", low=0, low_open=True)
    class_scheme: str = option("3class", "Sentiment classes of MVSC's cross-sample positives.", choices=CLASS_SCHEMES)
    neutral_band: float = option(0.0, "3class: |y| <= band is neutral.", low=0)
    regression_loss: str = option("l1", "Regression loss.", choices=REGRESSION_LOSSES, cli=("--loss",))
    seeds: tuple[int, ...] = option((1,), "Training seeds (the best on valid is the run's model).")
    patience: int = option(8, "Early stopping: epochs without a better valid MAE (of any network).", low=1)
    missing_rates: tuple[float, ...] = option(
        DEFAULT_MISSING_RATES, "Missing rates of the random-missing evaluation.", low=0, high=1, high_open=True
    )
    eval_seed: int = option(0, "Seed of the random-missing evaluation protocol.")
    routing: str = option(
        "exact",
        "exact: the network of the clip's modalities; validated: the best on valid among those it can use.",
        choices=ROUTING_RULES,
    )
    mvsc_space: str = option(
        "projection",
        "MVSC views: the projection head's output (the paper) or the fused embedding.",
        choices=MVSC_SPACES,
    )
    mvsc_teacher: str = option(
        "joint", "MVSC: the teacher's views trained jointly or stop-gradient targets.", choices=MVSC_TEACHER
    )
    mvsc_positives: str = option(
        "clip+class", "MVSC positives: same clip or same class (the paper), or same clip only.", choices=MVSC_POSITIVES
    )
    lambda_reconstruction: float = option(
        1.0, "imputation modes: weight of the reconstruction / denoising loss.", low=0
    )
    lambda_cycle: float = option(0.5, "imputation: weight of the cycle-consistency loss.", low=0)
    train_step: str = option(
        "per-network",
        "How one step runs the networks (grouped: batched together; no faster on CPU, for GPUs).",
        choices=TRAIN_STEPS,
    )

    def validate(self) -> None:
        if self.mode in self.compare or len(set(self.compare)) != len(self.compare):
            raise ConfigError(f"compare lists a mode twice (mode {self.mode!r}, compare {list(self.compare)})")
        if not self.seeds:
            raise ConfigError("seeds must list at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds must be distinct; got {list(self.seeds)}")

    @property
    def modes(self) -> tuple[str, ...]:
        """The main mode first, then the compared ones."""
        return (self.mode, *self.compare)

    def for_mode(self, mode: str) -> FitConfig:
        """This configuration with another main mode and nothing to compare (one trained variant)."""
        return self.replace(mode=mode, compare=())
