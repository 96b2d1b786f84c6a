"""MMSA feature pickles (``aligned_50.pkl`` / ``unaligned_50.pkl``) to mmckd feature files and back.

MMSA layout: a dict with splits ``train``/``valid``/``test``; each split a dict of arrays over its N clips:

    id                  (N,)        "video$_$clip" ids
    raw_text            (N,)        transcripts
    text                (N, L, 768) BERT features, zero-padded
    text_bert           (N, 3, L)   token ids / attention mask / segment ids (optional)
    audio, vision       (N, La, da), (N, Lv, dv) zero-padded frames
    audio_lengths, vision_lengths (N,) valid frames per clip (optional: absent means all L frames)
    regression_labels   (N,) or (N, 1) sentiment in [-3, 3]
    classification_labels, annotations, regression_labels_T/A/V (optional; checked, not carried over)

Import keeps the valid rows of each clip: text rows where the ``text_bert`` mask is 1 (without
``text_bert``: rows that are not all zero), the first ``audio_lengths[i]`` audio rows and the first
``vision_lengths[i]`` vision rows. A modality with no valid row is absent for that clip. NaN and
infinite values (MMSA's MOSEI audio holds -inf) are replaced by 0, as MMSA's own loader does, and
counted in a note. Ids, splits, transcripts (source "mmsa") and regression labels are kept.

Export writes every clip that has a split and a label, padding each modality to the longest clip or
to the given length (longer clips are cut, and counted in a note). Only frames mmckd counts as
valid (mask True) are written, in order, so lengths say exactly what ``mmckd fit`` would read.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import time
from pathlib import Path

import numpy as np

import mmckd
from mmckd.atomic_write import WriteError, write_bytes_stream
from mmckd.feature_file import MODALITIES, Clip, FeatureFile, FeatureFileError, Sequence
from mmckd.interop.errors import InteropError
from mmckd.interop.output import output_for_import
from mmckd.interop.safe_pickle import load_pickle
from mmckd.interop.summary import TransferSummary
from mmckd.interop.wordpiece_vocab import WordpieceVocab

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
REQUIRED_KEYS = ("id", "text", "audio", "vision", "regression_labels")
CHECKED_EXTRA_KEYS = ("classification_labels", "annotations", "regression_labels_T", "regression_labels_A",
                      "regression_labels_V")  # fmt: skip
_LENGTH_KEYS = {"audio": "audio_lengths", "vision": "vision_lengths"}
_SPLIT_ALIASES = {"train": "train", "valid": "valid", "dev": "valid", "test": "test"}
PICKLE_PROTOCOL = 4  # readable by every Python 3 MMSA install
_CHUNK = 512  # clips per chunk in whole-array checks (bounds temporary memory on MOSEI-size files)


# --------------------------------------------------------------------------- checks of one split


def _where(path: Path, split: str, key: str) -> str:
    return f"{path}: split {split!r}: {key!r}"


def _string_column(values, n: int | None, path: Path, split: str, key: str) -> list[str]:
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise InteropError(f"{_where(path, split, key)} must be 1-D, has shape {values.shape}")
        items = values.tolist()
    elif isinstance(values, (list, tuple)):
        items = list(values)
    else:
        raise InteropError(
            f"{_where(path, split, key)} is a {type(values).__name__}; expected a list or array of strings"
        )
    out = []
    for v in items:
        if isinstance(v, bytes):
            v = v.decode("utf-8", errors="replace")
        if not isinstance(v, str):
            raise InteropError(f"{_where(path, split, key)} must hold strings, found {type(v).__name__}")
        out.append(v)
    if n is not None and len(out) != n:
        raise InteropError(f"{_where(path, split, key)} has {len(out)} entries for {n} clips")
    return out


def _numeric(values, path: Path, split: str, key: str) -> np.ndarray:
    arr = values if isinstance(values, np.ndarray) else np.asarray(values)
    if arr.dtype.kind not in "fiub":
        raise InteropError(f"{_where(path, split, key)} has dtype {arr.dtype}; expected numbers")
    return arr


def _vector(values, n: int, path: Path, split: str, key: str) -> np.ndarray:
    arr = _numeric(values, path, split, key)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or len(arr) != n:
        raise InteropError(f"{_where(path, split, key)} has shape {arr.shape}; expected ({n},) for {n} clips")
    return arr


def _frames(part: dict, key: str, n: int, path: Path, split: str) -> np.ndarray:
    """The (N, L, dim) float32 array of part[key]; converted in part itself so the original is freed."""
    arr = _numeric(part[key], path, split, key)
    if arr.ndim != 3 or arr.shape[0] != n:
        raise InteropError(f"{_where(path, split, key)} has shape {arr.shape}; expected (clips={n}, frames, dim)")
    if arr.dtype != np.float32 or not arr.flags.writeable:  # NaN/inf are zeroed in place later
        arr = arr.astype(np.float32)
        part[key] = arr
    return arr


def _lengths(part: dict, key: str, n: int, padded: int, path: Path, split: str) -> np.ndarray:
    arr = _vector(part[key], n, path, split, key)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise InteropError(f"{_where(path, split, key)} must hold whole numbers of frames")
    arr = arr.astype(np.int64)
    bad = np.flatnonzero((arr < 0) | (arr > padded))
    if len(bad):
        raise InteropError(
            f"{_where(path, split, key)}: clip {int(bad[0])} has length {int(arr[bad[0]])}, outside 0..{padded} "
            "(the padded length)"
        )
    return arr


def _zero_nonfinite(arr: np.ndarray) -> int:
    """Replace NaN/inf in arr by 0, in place, chunk by chunk; returns how many values were replaced."""
    count = 0
    for start in range(0, len(arr), _CHUNK):
        part = arr[start : start + _CHUNK]
        bad = ~np.isfinite(part)
        k = int(bad.sum())
        if k:
            part[bad] = 0.0
            count += k
    return count


def _nonzero_rows(arr: np.ndarray) -> np.ndarray:
    mask = np.zeros(arr.shape[:2], bool)
    for start in range(0, len(arr), _CHUNK):
        mask[start : start + _CHUNK] = np.any(arr[start : start + _CHUNK] != 0, axis=2)
    return mask


class _Split:
    """One checked split: ids, transcripts, float32 frames, valid-frame masks/lengths, labels."""

    def __init__(self, data: dict, split: str, path: Path) -> None:
        part = data[split]
        if not isinstance(part, dict):
            raise InteropError(f"{path}: split {split!r} is a {type(part).__name__}, not a dict of arrays")
        missing = [k for k in REQUIRED_KEYS if k not in part]
        if missing:
            raise InteropError(
                f"{path}: split {split!r} has no {', '.join(map(repr, missing))} (an MMSA split needs "
                f"{', '.join(REQUIRED_KEYS)})"
            )
        self.ids = _string_column(part["id"], None, path, split, "id")
        n = self.n = len(self.ids)
        self.raw_text = _string_column(part["raw_text"], n, path, split, "raw_text") if "raw_text" in part else None
        self.frames = {m: _frames(part, m, n, path, split) for m in MODALITIES}
        self.labels = _vector(part["regression_labels"], n, path, split, "regression_labels").astype(np.float32)
        for key in CHECKED_EXTRA_KEYS:
            if key in part:
                found = len(part[key]) if hasattr(part[key], "__len__") else None
                if found != n:
                    raise InteropError(f"{_where(path, split, key)} has {found} entries for {n} clips")
        self.extra_keys = sorted(k for k in part if k in CHECKED_EXTRA_KEYS)
        self.unknown_keys = sorted(
            str(k)
            for k in part
            if k not in REQUIRED_KEYS
            and k not in CHECKED_EXTRA_KEYS
            and k not in ("raw_text", "text_bert", *_LENGTH_KEYS.values())
        )
        text_len = self.frames["text"].shape[1]
        self.token_ids = None
        if "text_bert" in part:
            bert = _numeric(part["text_bert"], path, split, "text_bert")
            if bert.ndim != 3 or bert.shape[0] != n or bert.shape[1] != 3 or bert.shape[2] != text_len:
                raise InteropError(
                    f"{_where(path, split, 'text_bert')} has shape {bert.shape}; expected ({n}, 3, {text_len}) "
                    "(token ids, attention mask, segment ids over the text frames)"
                )
            self.text_mask = bert[:, 1, :] != 0
            self.token_ids = bert[:, 0, :]
            self.text_mask_source = "text_bert"
        else:
            self.text_mask = _nonzero_rows(self.frames["text"])
            self.text_mask_source = "nonzero_rows"
        self.lengths, self.length_source = {}, {}
        for m, key in _LENGTH_KEYS.items():
            padded = self.frames[m].shape[1]
            if key in part:
                self.lengths[m] = _lengths(part, key, n, padded, path, split)
                self.length_source[m] = key
            else:
                self.lengths[m] = np.full(n, padded, np.int64)
                self.length_source[m] = "full"
        self.nonfinite = {m: _zero_nonfinite(a) for m, a in self.frames.items()}


# --------------------------------------------------------------------------- import


def _mmsa_dict(data, path: Path) -> dict:
    if not isinstance(data, dict):
        raise InteropError(f"{path}: holds a {type(data).__name__}, not MMSA's dict of splits (train, valid, test)")
    missing = [s for s in SPLITS if s not in data]
    if missing:
        raise InteropError(
            f"{path}: no split {', '.join(map(repr, missing))}; an MMSA pickle holds 'train', 'valid' and 'test' "
            f"(found keys: {', '.join(map(str, list(data)[:8])) or 'none'})"
        )
    return data


def _clip_sequences(s: _Split, i: int, vocab: WordpieceVocab | None, path: Path):
    seqs: dict[str, Sequence | None] = {}
    reasons: dict[str, str] = {}
    tm = s.text_mask[i]
    k = int(tm.sum())
    if k == 0:
        seqs["text"] = None
        reasons["text"] = "mmsa: no text token"
    else:
        prefix = bool(tm[:k].all())
        rows = s.frames["text"][i, :k] if prefix else s.frames["text"][i][tm]
        tokens = None
        if vocab is not None and s.token_ids is not None:
            ids = s.token_ids[i, :k] if prefix else s.token_ids[i][tm]
            tokens = vocab.to_tokens(ids, path)
        seqs["text"] = Sequence(rows, tokens=tokens)
    for m in ("audio", "vision"):
        n = int(s.lengths[m][i])
        if n == 0:
            seqs[m] = None
            reasons[m] = f"mmsa: {m} length 0"
        else:
            seqs[m] = Sequence(s.frames[m][i, :n])
    return seqs, reasons


def read_mmsa(path: str | os.PathLike, bert_vocab: str | os.PathLike | None = None):
    """Clips, extractor config, dims, provenance and notes of an MMSA pickle (see module docstring).

    Returns (clips, config, dims, provenance, notes). Raises InteropError (UnsafePickleError for a
    pickle that would run code) naming the file and the reason.
    """
    path = Path(path)
    vocab = WordpieceVocab(bert_vocab) if bert_vocab is not None else None
    data = _mmsa_dict(load_pickle(path), path)
    splits = {name: _Split(data, name, path) for name in SPLITS}
    dims, padded = {}, {}
    for m in MODALITIES:
        found = {name: s.frames[m].shape[2] for name, s in splits.items()}
        if len(set(found.values())) != 1:
            raise InteropError(f"{path}: {m} dims differ between splits ({found})")
        dims[m] = next(iter(found.values()))
        padded[m] = max(s.frames[m].shape[1] for s in splits.values())
    for attr, what in (("text_mask_source", "text_bert"), ("length_source", "audio/vision lengths")):
        kinds = {name: str(getattr(s, attr)) for name, s in splits.items()}
        if len(set(kinds.values())) != 1:
            raise InteropError(f"{path}: splits disagree on {what} ({kinds}); every split must have the same keys")
    seen: dict[str, str] = {}
    clips: list[Clip] = []
    for name, s in splits.items():
        for i, cid in enumerate(s.ids):
            if cid in seen:
                raise InteropError(f"{path}: clip id {cid!r} appears twice (splits {seen[cid]!r} and {name!r})")
            seen[cid] = name
            seqs, reasons = _clip_sequences(s, i, vocab, path)
            label = float(s.labels[i])
            transcript = s.raw_text[i] if s.raw_text is not None else None
            clips.append(
                Clip(
                    id=cid,
                    split=name,
                    label=None if math.isnan(label) else label,
                    transcript=transcript,
                    transcript_source="mmsa" if transcript else None,
                    missing_reason=reasons,
                    **seqs,
                )
            )
    first = splits["train"]
    padded_sizes = {s.frames[m].shape[1] for s in splits.values() for m in MODALITIES}
    variant = "aligned" if len(padded_sizes) == 1 else "unaligned"
    config = {
        "source": "mmsa",
        "variant": variant,
        "dims": dims,
        "padded_lengths": padded,
        "text_mask": first.text_mask_source,
        "lengths": dict(first.length_source),
        "nonfinite": "replaced by 0",
    }
    notes = []
    nonfinite = {m: sum(s.nonfinite[m] for s in splits.values()) for m in MODALITIES}
    for m, k in nonfinite.items():
        if k:
            notes.append(f"{m}: {k} NaN/inf values replaced by 0")
    extra = sorted({k for s in splits.values() for k in s.extra_keys})
    if extra:
        log.info("%s: not carried over (mmckd keeps one regression label): %s", path, ", ".join(extra))
    unknown = sorted({k for s in splits.values() for k in s.unknown_keys})
    if unknown:
        notes.append(f"unknown keys ignored: {', '.join(unknown)}")
    if vocab is None and first.token_ids is not None:
        log.info("%s: text tokens not restored (--bert-vocab vocab.txt turns text_bert ids into wordpieces)", path)
    stat = path.stat()
    provenance = {
        "tool": "mmckd import mmsa",
        "mmckd_version": mmckd.__version__,
        "source_file": str(path.resolve()),
        "source_bytes": stat.st_size,
        "source_mtime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stat.st_mtime)),
        "bert_vocab": str(Path(bert_vocab).resolve()) if bert_vocab is not None else None,
        "nonfinite_replaced": nonfinite,
        "not_carried_over": extra,
        "notes": notes,
    }
    return clips, config, dims, provenance, notes


def import_mmsa(
    path: str | os.PathLike,
    output: str | os.PathLike,
    bert_vocab: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> TransferSummary:
    """Write the mmckd feature file ``output`` from the MMSA pickle ``path``.

    An existing ``output`` is refused unless ``overwrite``; ``output`` is locked against ``mmckd extract``
    and other imports while this runs (see ``mmckd.interop.output``).
    """
    path, output = Path(path), Path(output)
    with output_for_import(output, overwrite) as write:
        clips, config, dims, provenance, notes = read_mmsa(path, bert_vocab)
        for note in notes:
            log.warning("%s: %s", path, note)
        write(clips, config, dims, provenance)
    return TransferSummary.of_clips(path, output, clips, notes)


# --------------------------------------------------------------------------- export


def _classes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """3-class labels (0 negative, 1 neutral, 2 positive) and their names, from the regression labels."""
    classes = np.where(labels < 0, 0, np.where(labels > 0, 2, 1)).astype(np.float32)
    names = np.array([("Negative", "Neutral", "Positive")[int(c)] for c in classes], dtype=object)
    return classes, names


def export_mmsa(
    features: str | os.PathLike,
    output: str | os.PathLike,
    lengths: dict[str, int | None] | None = None,
    bert_vocab: str | os.PathLike | None = None,
) -> TransferSummary:
    """Write the MMSA pickle ``output`` from the mmckd feature file ``features`` (see module docstring).

    lengths: padded frames per modality ({"text": 50, ...}; None or missing: the longest clip).
    bert_vocab: vocab.txt turning the stored wordpieces into ``text_bert`` ids (else ids are 0).
    """
    features, output = Path(features), Path(output)
    lengths = dict(lengths or {})
    vocab = WordpieceVocab(bert_vocab) if bert_vocab is not None else None
    try:
        ff = FeatureFile(features)
        arrays = {m: ff.modality(m) for m in MODALITIES}
        tokens = ff.tokens()
    except FeatureFileError as e:
        raise InteropError(str(e)) from None
    notes: list[str] = []
    chosen: dict[str, list[int]] = {s: [] for s in SPLITS}
    skipped = {"failed": 0, "no split": 0, "unlabelled": 0}
    for i in range(len(ff.ids)):
        split = _SPLIT_ALIASES.get(ff.splits[i] or "")
        if ff.status[i] != "ok":
            skipped["failed"] += 1
        elif split is None:
            skipped["no split"] += 1
        elif not np.isfinite(ff.labels[i]):
            skipped["unlabelled"] += 1
        else:
            chosen[split].append(i)
    if any(skipped.values()):
        notes.append("clips not exported: " + ", ".join(f"{v} {k}" for k, v in skipped.items() if v))
    if not any(chosen.values()):
        raise InteropError(f"{features}: no clip with status ok, a split and a label to export")

    def valid_rows(m: str, i: int) -> np.ndarray:
        a = arrays[m]
        if not a.present[i]:
            return np.zeros((0, a.dim), np.float32)
        r = a.clip_rows(i)
        return a.features[r][a.mask[r]]

    used = [i for s in SPLITS for i in chosen[s]]
    counts = {m: [int(arrays[m].mask[arrays[m].clip_rows(i)].sum()) if arrays[m].present[i] else 0 for i in used]
              for m in MODALITIES}  # fmt: skip
    padded = {}
    for m in MODALITIES:
        given = lengths.get(m)
        if given is not None and int(given) < 1:
            raise InteropError(f"--{m}-len must be at least 1, got {given}")
        padded[m] = int(given) if given is not None else max(1, max(counts[m], default=0))
        cut = sum(c > padded[m] for c in counts[m])
        if cut:
            notes.append(f"{m}: {cut} clips longer than {padded[m]} frames were cut to {padded[m]}")
    if vocab is None:
        notes.append("text_bert token ids are 0 (pass --bert-vocab vocab.txt to write real wordpiece ids)")
    out: dict[str, dict] = {}
    for split in SPLITS:
        idx = chosen[split]
        n = len(idx)
        part: dict = {
            "id": np.array([ff.ids[i] for i in idx], dtype=object),
            "raw_text": np.array([ff.transcripts[i] or "" for i in idx], dtype=object),
        }
        bert = np.zeros((n, 3, padded["text"]), np.int64)
        for m in MODALITIES:
            block = np.zeros((n, padded[m], arrays[m].dim), np.float32)
            lens = np.zeros(n, np.int64)
            for k, i in enumerate(idx):
                rows = valid_rows(m, i)[: padded[m]]
                if not np.isfinite(rows).all():
                    raise InteropError(f"{features}: clip {ff.ids[i]} has NaN/inf {m} features in valid frames")
                block[k, : len(rows)] = rows
                lens[k] = len(rows)
                if m == "text" and len(rows):
                    bert[k, 1, : len(rows)] = 1
                    if vocab is not None:
                        a = arrays["text"]
                        r = a.clip_rows(i)
                        toks = [t for t, ok in zip(tokens[r], a.mask[r]) if ok][: len(rows)]
                        bert[k, 0, : len(rows)] = vocab.to_ids(toks)
            part[m] = block
            if m in _LENGTH_KEYS:
                part[_LENGTH_KEYS[m]] = lens
        part["text_bert"] = bert
        labels = np.array([ff.labels[i] for i in idx], np.float32)
        part["regression_labels"] = labels
        part["classification_labels"], part["annotations"] = _classes(labels)
        out[split] = part
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_stream(output, lambda f: pickle.dump(out, f, protocol=PICKLE_PROTOCOL))
    except OSError as e:  # WriteError: one line naming the output; the previous output is intact
        raise InteropError(str(e) if isinstance(e, WriteError) else str(WriteError(output, e))) from None
    for note in notes:
        log.warning("%s: %s", features, note)
    summary = TransferSummary(features, output, len(used), {s: len(chosen[s]) for s in SPLITS}, notes=notes)
    summary.present = {m: sum(c > 0 for c in counts[m]) for m in MODALITIES}
    return summary
