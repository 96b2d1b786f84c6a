"""From a feature file to model inputs: checked clips, cut sequences, train-only normalisation, padded batches.

Per clip and modality, only valid frames are kept (``mask`` True; for vision: a face was found), then
sequences longer than the configured maximum are pooled or truncated (``ModelConfig.long_sequences``).
A modality without any valid frame counts as absent. Features are normalised per dimension with
mean and standard deviation computed on the training clips only. Everything here is shared with the
predict bundle, so training and prediction see identical inputs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TypeGuard

import numpy as np
import torch

from mmckd.feature_file import FeatureFile, FeatureFileError, Sequence
from mmckd.model.config import ModelConfig
from mmckd.model.routing import MODALITIES

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
_SPLIT_ALIASES = {"train": "train", "valid": "valid", "dev": "valid", "test": "test"}
NORMALISED_CLAMP = 10.0  # normalised features are clamped to +-this, so one wild frame cannot dominate


class DataError(ValueError):
    """The feature file cannot be trained on; the message names the file and the reason."""


# --------------------------------------------------------------------------- per-sequence preparation


def cut_sequence(features: np.ndarray, mask: np.ndarray | None, max_len: int, policy: str) -> np.ndarray:
    """Valid frames of one sequence, at most max_len of them (pooled into equal bins or truncated)."""
    rows = features if mask is None else features[np.asarray(mask, bool)]
    n = len(rows)
    if n <= max_len:
        return np.asarray(rows, np.float32)
    if policy == "truncate":
        return np.asarray(rows[:max_len], np.float32)
    edges = np.linspace(0, n, max_len + 1).round().astype(np.int64)
    sums = np.add.reduceat(rows.astype(np.float64), edges[:-1], axis=0)
    return (sums / np.diff(edges)[:, None]).astype(np.float32)


@dataclass
class Normaliser:
    """Per-dimension mean and standard deviation of each modality (computed on training frames)."""

    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]

    @classmethod
    def from_rows(
        cls, rows: dict[str, np.ndarray], selected: dict[str, np.ndarray], chunk: int = 1 << 16
    ) -> Normaliser:
        """Statistics of the rows where selected[m] is True (float64 sums over chunks, no full copy)."""
        mean, std = {}, {}
        for m, r in rows.items():
            dim = r.shape[1]
            total, sq, count = np.zeros(dim), np.zeros(dim), 0
            for start in range(0, len(r), chunk):
                part = r[start : start + chunk][selected[m][start : start + chunk]].astype(np.float64)
                total += part.sum(0)
                sq += (part * part).sum(0)
                count += len(part)
            if count == 0:
                mean[m], std[m] = np.zeros(dim, np.float32), np.ones(dim, np.float32)
                continue
            mu = total / count
            sd = np.sqrt(np.maximum(sq / count - mu * mu, 0.0))
            sd[sd < 1e-6] = 1.0  # constant dimensions pass through centred
            mean[m], std[m] = mu.astype(np.float32), sd.astype(np.float32)
        return cls(mean, std)

    def apply(self, modality: str, rows: np.ndarray) -> np.ndarray:
        out = (rows - self.mean[modality]) / self.std[modality]
        return np.clip(out, -NORMALISED_CLAMP, NORMALISED_CLAMP).astype(np.float32)

    def apply_inplace(self, modality: str, rows: np.ndarray, chunk: int = 1 << 16) -> None:
        """apply() written into rows itself (for large training arrays)."""
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            part -= self.mean[modality]
            part /= self.std[modality]
            np.clip(part, -NORMALISED_CLAMP, NORMALISED_CLAMP, out=part)

    def to_dict(self) -> dict:
        return {m: {"mean": self.mean[m].tolist(), "std": self.std[m].tolist()} for m in self.mean}

    @classmethod
    def from_dict(cls, data: dict) -> Normaliser:
        return cls(
            {m: np.asarray(v["mean"], np.float32) for m, v in data.items()},
            {m: np.asarray(v["std"], np.float32) for m, v in data.items()},
        )


def usable_sequence(seq: Sequence | None) -> TypeGuard[Sequence]:
    """A sequence the model can read: present and with at least one valid frame."""
    return seq is not None and seq.frames > 0 and bool(np.asarray(seq.mask, bool).any())


# --------------------------------------------------------------------------- batches


@dataclass
class Batch:
    """Padded inputs of B clips. x[m]: (B, T_m, dim_m); mask[m]: (B, T_m) True on real frames;
    present: (B, 3) bool in MODALITIES order; y: (B,) labels (NaN when unknown).

    An absent modality is one all-zero frame marked valid ("zero fill": the normalised mean), so any
    network can run on any clip; networks that must not see it are given only clips that have it.
    """

    x: dict[str, torch.Tensor]
    mask: dict[str, torch.Tensor]
    present: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def select(self, rows: torch.Tensor) -> Batch:
        """The clips at positions ``rows`` (sequence padding trimmed to the longest kept clip)."""
        x, mask = {}, {}
        for m in self.x:
            mk = self.mask[m][rows]
            t = max(1, int(mk.sum(1).max().item())) if len(rows) else 1
            x[m], mask[m] = self.x[m][rows, :t], mk[:, :t]
        return Batch(x, mask, self.present[rows], self.y[rows])

    def withhold(self, keep: torch.Tensor) -> Batch:
        """The batch with the modalities where keep (B, 3) is False withheld from their clips: zero fill
        (one all-zero valid frame), present False, exactly as a clip that never had them."""
        keep = keep.to(self.present.device).bool() & self.present
        if bool(keep.eq(self.present).all()):
            return self
        x, mask = dict(self.x), dict(self.mask)
        for j, m in enumerate(MODALITIES):
            gone = self.present[:, j] & ~keep[:, j]
            if not bool(gone.any()):
                continue
            g = gone[:, None]
            first = torch.zeros_like(self.mask[m])
            first[:, 0] = True
            x[m] = self.x[m].masked_fill(g[:, :, None], 0.0)
            mask[m] = torch.where(g, first, self.mask[m])
        return Batch(x, mask, keep, self.y)

    def to(self, device: torch.device) -> Batch:
        return Batch(
            {m: v.to(device) for m, v in self.x.items()},
            {m: v.to(device) for m, v in self.mask.items()},
            self.present.to(device),
            self.y.to(device),
        )


def pad_batch(
    sequences: list[dict[str, np.ndarray | None]], dims: dict[str, int], labels: np.ndarray | list[float]
) -> Batch:
    """Pad per-clip prepared sequences ({modality: (T, dim) array or None when absent}) into a Batch."""
    b = len(sequences)
    x, mask = {}, {}
    present = np.zeros((b, len(MODALITIES)), bool)
    for j, m in enumerate(MODALITIES):
        lengths = [0 if (a := s[m]) is None else len(a) for s in sequences]
        t = max([1, *lengths])
        xm = np.zeros((b, t, dims[m]), np.float32)
        mm = np.zeros((b, t), bool)
        for i, s in enumerate(sequences):
            if s[m] is None:
                mm[i, 0] = True
            else:
                xm[i, : lengths[i]] = s[m]
                mm[i, : lengths[i]] = True
                present[i, j] = True
        x[m], mask[m] = torch.from_numpy(xm), torch.from_numpy(mm)
    return Batch(x, mask, torch.from_numpy(present), torch.as_tensor(np.asarray(labels, np.float32)))


# --------------------------------------------------------------------------- the prepared data set


@dataclass
class PreparedData:
    """All trainable clips of one feature file, normalised, in clip order.

    rows[m]/offsets[m]: prepared frames of modality m, clip i owning rows offsets[i]:offsets[i+1]
    (empty when absent); present: (N, 3) bool; labels: (N,); split: (N,) "train"|"valid"|"test".
    """

    path: Path
    ids: list[str]
    labels: np.ndarray
    split: np.ndarray
    dims: dict[str, int]
    rows: dict[str, np.ndarray]
    offsets: dict[str, np.ndarray]
    present: np.ndarray
    normaliser: Normaliser
    extractor_config: dict
    extractor_config_hash: str
    provenance: dict
    skipped: dict[str, int]

    def __len__(self) -> int:
        return len(self.ids)

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split)

    def sequences(self, i: int, keep: np.ndarray | None = None) -> dict[str, np.ndarray | None]:
        out = {}
        for j, m in enumerate(MODALITIES):
            ok = self.present[i, j] and (keep is None or keep[j])
            out[m] = self.rows[m][self.offsets[m][i] : self.offsets[m][i + 1]] if ok else None
        return out

    def batch(self, idx: np.ndarray, keep: np.ndarray | None = None) -> Batch:
        """Padded batch of clips idx; keep (len(idx), 3) bool withholds modalities (zero fill)."""
        seqs = [self.sequences(int(i), None if keep is None else keep[k]) for k, i in enumerate(idx)]
        return pad_batch(seqs, self.dims, self.labels[idx])

    def summary(self) -> dict:
        """Clip counts per split and modality presence (for logs and the report)."""
        out = {}
        for s in SPLITS:
            idx = self.indices(s)
            out[s] = {"clips": int(len(idx))} | {m: int(self.present[idx, j].sum()) for j, m in enumerate(MODALITIES)}
        return out


def load_prepared(path: str | Path, model: ModelConfig, splits: dict[str, str] | None = None) -> PreparedData:
    """Read, check and prepare a feature file for training. Raises DataError before any training.

    Used clips: status "ok", a finite label, a split among train/valid/dev/test ("dev" is read as
    valid) and at least one usable modality. Errors: no labels at all, an empty split, non-finite
    features in a valid frame. splits: clip id -> split, replacing the file's own splits (clips not
    listed are not used): cross-validation folds over one file, normalised on each fold's train clips.
    """
    path = Path(path)
    try:
        ff = FeatureFile(path)
    except FeatureFileError as e:
        raise DataError(str(e)) from None
    n = len(ff)
    ok = np.array([s == "ok" for s in ff.status], bool)
    labels = ff.labels.astype(np.float32)
    labelled = ok & np.isfinite(labels)
    if n == 0 or not labelled.any():
        raise DataError(f"{path}: no clip has a sentiment label ({n} clips); extract with --labels to train on it")
    if np.any(np.abs(labels[labelled]) > 3.0 + 1e-6):
        bad = ff.ids[int(np.flatnonzero(labelled & (np.abs(np.nan_to_num(labels)) > 3.0 + 1e-6))[0])]
        raise DataError(f"{path}: clip {bad} has label outside [-3, 3]")
    given = ff.splits if splits is None else [splits.get(i, "") for i in ff.ids]
    split = np.array([_SPLIT_ALIASES.get((s or "").lower(), "") for s in given], object)
    used = labelled & (split != "")
    _check_splits(path, used, split)

    rows, lengths = {}, {}
    for m in MODALITIES:
        rows[m], lengths[m] = _prepare_modality(path, m, used, model, ff.ids)
    has_any = np.any([lengths[m] > 0 for m in MODALITIES], axis=0)
    skipped = {
        "failed": int((~ok).sum()),
        "unlabelled": int((ok & ~np.isfinite(labels)).sum()),
        "no_split": int((labelled & (split == "")).sum()),
        "no_modality": int((used & ~has_any).sum()),
    }
    used &= has_any
    _check_splits(path, used, split)
    keep = np.flatnonzero(used)  # dropped clips own no rows, so rows stay as they are
    offsets = {m: np.concatenate([[0], np.cumsum(lengths[m][keep])]).astype(np.int64) for m in MODALITIES}
    present = np.stack([lengths[m][keep] > 0 for m in MODALITIES], axis=1)
    train_rows = {m: np.repeat(split[keep] == "train", lengths[m][keep]) for m in MODALITIES}
    normaliser = Normaliser.from_rows(rows, train_rows)
    for m in MODALITIES:
        normaliser.apply_inplace(m, rows[m])
    if any(skipped.values()):
        log.info("%s: clips not used: %s", path, ", ".join(f"{v} {k}" for k, v in skipped.items() if v))
    return PreparedData(
        path=path,
        ids=[ff.ids[i] for i in keep],
        labels=labels[keep],
        split=split[keep],
        dims=dict(ff.dims),
        rows=rows,
        offsets=offsets,
        present=present,
        normaliser=normaliser,
        extractor_config=ff.config,
        extractor_config_hash=ff.config_hash or "",
        provenance={
            "features_path": str(path.resolve()),
            "features_created": ff.created,
            "features_clips": n,
            "extractor_provenance": ff.provenance,
        },
        skipped=skipped,
    )


def _check_splits(path: Path, used: np.ndarray, split: np.ndarray) -> None:
    for s in SPLITS:
        if not (used & (split == s)).any():
            name = "valid (or dev)" if s == "valid" else s
            raise DataError(
                f"{path}: split {name!r} has no usable labelled clip; fit needs train, valid (or dev) and test clips"
            )


def _prepare_modality(
    path: Path, m: str, used: np.ndarray, model: ModelConfig, ids: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Cut valid frames of modality m of the used clips into one (T, dim) array; frames per clip (0: absent).

    The modality is read with its own FeatureFile so its raw arrays are freed before the next one."""
    arr = FeatureFile(path).modality(m)
    n = len(used)
    max_len = model.max_length(m)
    valid_counts = np.zeros(n, np.int64)
    for i in np.flatnonzero(used & arr.present):
        valid_counts[i] = int(arr.mask[arr.clip_rows(i)].sum())
    lengths = np.minimum(valid_counts, max_len)
    out = np.empty((int(lengths.sum()), arr.dim), np.float32)
    pos = 0
    for i in np.flatnonzero(lengths):
        r = arr.clip_rows(i)
        feats = arr.features[r][arr.mask[r]]
        if not np.isfinite(feats).all():
            raise DataError(f"{path}: clip {ids[i]} has non-finite (NaN/inf) {m} features")
        out[pos : pos + lengths[i]] = cut_sequence(feats, None, max_len, model.long_sequences)
        pos += lengths[i]
    return out, lengths


def prepare_clip(
    sequences: dict[str, Sequence | None], model: ModelConfig, normaliser: Normaliser
) -> dict[str, np.ndarray | None]:
    """One clip's sequences prepared exactly as in training (used by the predict bundle)."""
    out: dict[str, np.ndarray | None] = {}
    for m in MODALITIES:
        seq = sequences.get(m)
        if not usable_sequence(seq):
            out[m] = None
            continue
        cut = cut_sequence(seq.features, seq.mask, model.max_length(m), model.long_sequences)
        if not np.isfinite(cut).all():
            raise DataError(f"{m} features contain NaN or inf")
        out[m] = normaliser.apply(m, cut)
    return out
