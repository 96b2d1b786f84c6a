"""Synthetic feature files with a known answer, for tests, smoke runs and speed benchmarks.

Each clip has a shared hidden score c and three modality scores s_text, s_audio, s_vision, all
~ U(-1, 1), and the label y = clip(shared * c + gain * (s_text + s_audio + s_vision), -3, 3). Modality m
carries c and s_m (along two fixed random directions of its feature space, plus per-frame noise), so
each unimodal network can explain part of the label and only a network reading all three can
explain all of it. Vision frames without a face
(mask False) hold garbage (NaN) that a correct reader must ignore.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmckd.feature_file import Clip, Sequence, write_feature_file

MOSI_DIMS = {"text": 768, "audio": 5, "vision": 20}
MOSEI_DIMS = {"text": 768, "audio": 74, "vision": 35}
DEFAULT_DIMS = {"text": 384, "audio": 43, "vision": 20}


def synthetic_clips(
    n: int = 120,
    dims: dict[str, int] | None = None,
    lengths: dict[str, tuple[int, int]] | None = None,
    seed: int = 0,
    missing: dict[str, float] | None = None,
    noise: float = 0.5,
    gain: float = 1.0,
    shared: float = 0.0,
    no_face_ratio: float = 0.2,
    splits: tuple[float, float] = (0.6, 0.2),
) -> list[Clip]:
    """n labelled clips split train/valid/test by the fractions in splits (rest test).

    lengths: (min, max) frames per modality; missing: probability that a clip lacks a modality
    (never all three); no_face_ratio: share of vision frames with mask False.
    """
    dims = dict(dims or {"text": 16, "audio": 8, "vision": 10})
    lengths = dict(lengths or {"text": (4, 10), "audio": (8, 20), "vision": (6, 16)})
    missing = dict(missing or {})
    rng = np.random.default_rng(seed)
    direction = {m: rng.normal(size=d) for m, d in dims.items()}
    shared_direction = {m: rng.normal(size=d) for m, d in dims.items()}
    n_train, n_valid = int(round(n * splits[0])), int(round(n * splits[1]))
    clips = []
    for i in range(n):
        common = float(rng.uniform(-1, 1))
        scores = {m: float(rng.uniform(-1, 1)) for m in dims}
        label = float(np.clip(shared * common + gain * sum(scores.values()), -3, 3))
        present = {m: rng.random() >= missing.get(m, 0.0) for m in dims}
        if not any(present.values()):
            present[list(dims)[int(rng.integers(len(dims)))]] = True
        seqs = {}
        for m, d in dims.items():
            lo, hi = lengths[m]
            t = int(rng.integers(lo, hi + 1))
            feats = (scores[m] * direction[m] + common * shared_direction[m])[None, :] + noise * rng.normal(size=(t, d))
            mask = None
            if m == "vision":
                mask = rng.random(t) >= no_face_ratio
                mask[int(rng.integers(t))] = True
                feats[~mask] = np.nan
            seqs[m] = (
                Sequence(features=feats.astype(np.float32), mask=mask, timestamps=np.arange(t) / 25.0)
                if present[m]
                else None
            )
        split = "train" if i < n_train else "valid" if i < n_train + n_valid else "test"
        clips.append(
            Clip(
                id=f"clip{i:05d}",
                split=split,
                label=round(label, 3),
                text=seqs["text"],
                audio=seqs["audio"],
                vision=seqs["vision"],
                missing_reason={m: "synthetic" for m in dims if not present[m]},
            )
        )
    return clips


def write_synthetic_features(
    path: str | Path, clips: list[Clip] | None = None, config: dict | None = None, **kwargs
) -> Path:
    """Write a synthetic feature file (clips from synthetic_clips(**kwargs) unless given)."""
    clips = clips if clips is not None else synthetic_clips(**kwargs)
    dims = {
        m: next((s.features.shape[1] for c in clips if (s := c.sequence(m)) is not None), 1)
        for m in ("text", "audio", "vision")
    }
    dims.update(kwargs.get("dims") or {})
    write_feature_file(
        path,
        clips,
        config or {"synthetic": {k: str(v) for k, v in sorted(kwargs.items())}},
        dims,
        provenance={"generator": "mmckd.model.synthetic"},
    )
    return Path(path)
