"""Synthetic inputs with the exact layouts of real ones: MMSA pickles and CMU-MultimodalSDK ``.csd`` files.

For tests, demos and dry runs of ``benchmarks/reproduce_paper.sh`` where the real data sets cannot be
shipped. Labels are learnable: each clip's frames carry its label along a fixed random direction per
modality, plus noise. Run ``python -m mmckd.interop.synthetic mosi-unaligned OUT.pkl`` for a
CMU-MOSI-shaped pickle (2,199 clips; about 400 MB).
"""

from __future__ import annotations

import json
import os
import pickle
import sys
from pathlib import Path

import h5py
import numpy as np

from mmckd.feature_file import MODALITIES

# split sizes and (padded frames, dim) per modality of MMSA's CMU-MOSI and CMU-MOSEI pickles
MOSI_SPLITS = {"train": 1284, "valid": 229, "test": 686}
MOSEI_SPLITS = {"train": 16326, "valid": 1871, "test": 4659}
MOSI_SHAPES = {
    "aligned": {"text": (50, 768), "audio": (50, 5), "vision": (50, 20)},
    "unaligned": {"text": (50, 768), "audio": (375, 5), "vision": (500, 20)},
}
MOSEI_SHAPES = {
    "aligned": {"text": (50, 768), "audio": (50, 74), "vision": (50, 35)},
    "unaligned": {"text": (50, 768), "audio": (500, 74), "vision": (500, 35)},
}
PRESETS = {
    "mosi-aligned": (MOSI_SPLITS, MOSI_SHAPES["aligned"], "aligned"),
    "mosi-unaligned": (MOSI_SPLITS, MOSI_SHAPES["unaligned"], "unaligned"),
    "mosei-aligned": (MOSEI_SPLITS, MOSEI_SHAPES["aligned"], "aligned"),
    "mosei-unaligned": (MOSEI_SPLITS, MOSEI_SHAPES["unaligned"], "unaligned"),
}
_WORDS = "the movie was good bad great awful fine boring funny sad really not very quite plot acting".split()


def synthetic_mmsa(
    sizes: dict[str, int] | None = None,
    shapes: dict[str, tuple[int, int]] | None = None,
    variant: str = "unaligned",
    seed: int = 0,
    noise: float = 1.0,
    signal: float = 1.0,
) -> dict:
    """An MMSA-layout dict (see mmckd.interop.mmsa). variant "aligned": every modality has the text's
    padded length, no *_lengths keys, audio/vision zero beyond the clip's token count (as in MMSA's
    aligned_50.pkl); "unaligned": audio/vision have their own lengths and *_lengths keys. Each frame is
    noise * N(0, I) plus signal * label / 3 along a unit direction per modality."""
    sizes = dict(sizes or {"train": 24, "valid": 8, "test": 8})
    shapes = dict(shapes or {"text": (12, 16), "audio": (20, 5), "vision": (24, 6)})
    if variant not in ("aligned", "unaligned"):
        raise ValueError(f"variant must be aligned or unaligned, got {variant!r}")
    rng = np.random.default_rng(seed)
    direction = {}
    for m in MODALITIES:
        v = rng.normal(size=shapes[m][1])
        direction[m] = (signal * v / np.linalg.norm(v)).astype(np.float32)
    data: dict = {}
    clip_no = 0
    for split, n in sizes.items():
        lt = shapes["text"][0]
        labels = np.round(rng.uniform(-3, 3, n) * 5) / 5
        labels[rng.random(n) < 0.05] = 0.0
        part: dict = {"id": [], "raw_text": []}
        text_len = rng.integers(3, lt + 1, n)
        lengths = {"text": text_len}
        for m in ("audio", "vision"):
            lm = shapes[m][0]
            lengths[m] = text_len.copy() if variant == "aligned" else rng.integers(max(1, lm // 5), lm + 1, n)
        for m in MODALITIES:
            t, d = shapes[m]
            block = rng.standard_normal((n, t, d), dtype=np.float32)
            block *= noise
            block += (labels[:, None, None] / 3.0).astype(np.float32) * direction[m][None, None, :]
            block[np.arange(t)[None, :] >= lengths[m][:, None]] = 0.0
            part[m] = block
        bert = np.zeros((n, 3, lt), np.int64)
        for i in range(n):
            k = int(text_len[i])
            bert[i, 0, :k] = rng.integers(1000, 30000, k)
            bert[i, 0, 0], bert[i, 0, k - 1] = 101, 102  # [CLS] ... [SEP]
            bert[i, 1, :k] = 1
            video = f"v{clip_no // 7:04d}{'abcdefgh'[clip_no % 8]}"
            part["id"].append(f"{video}$_${clip_no % 7 + 1}")
            part["raw_text"].append(" ".join(rng.choice(_WORDS, max(1, k - 2))))
            clip_no += 1
        part["id"] = np.array(part["id"], dtype=object)
        part["raw_text"] = np.array(part["raw_text"], dtype=object)
        part["text_bert"] = bert
        if variant == "unaligned":
            part["audio_lengths"] = [int(x) for x in lengths["audio"]]
            part["vision_lengths"] = [int(x) for x in lengths["vision"]]
        part["regression_labels"] = labels.astype(np.float32)
        part["classification_labels"] = np.where(labels < 0, 0, np.where(labels > 0, 2, 1)).astype(np.float32)
        part["annotations"] = np.array(
            [("Negative", "Neutral", "Positive")[int(c)] for c in part["classification_labels"]], dtype=object
        )
        data[split] = part
    return data


def write_synthetic_mmsa(path: str | os.PathLike, preset: str | None = None, **kwargs) -> Path:
    """Write synthetic_mmsa(...) as a pickle (protocol 4, as MMSA's files). preset: a key of PRESETS."""
    if preset is not None:
        sizes, shapes, variant = PRESETS[preset]
        kwargs = {"sizes": sizes, "shapes": shapes, "variant": variant} | kwargs
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(synthetic_mmsa(**kwargs), f, protocol=4)
    return path


# --------------------------------------------------------------------------- computational sequences


def write_csd(path: str | os.PathLike, root: str, entries: dict[str, tuple[np.ndarray, np.ndarray]],
              metadata: dict | None = None) -> Path:  # fmt: skip
    """Write a computational sequence in the CMU-MultimodalSDK layout: entries {id: (features, intervals)};
    metadata values are stored JSON-encoded in (1,) string datasets, as the SDK does."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as h5:
        g = h5.create_group(root)
        data = g.create_group("data")
        for eid, (feats, iv) in entries.items():
            e = data.create_group(eid)
            e.create_dataset("features", data=feats)
            e.create_dataset("intervals", data=np.asarray(iv, np.float64))
        meta = g.create_group("metadata")
        for k, v in (metadata or {"root name": root}).items():
            ds = meta.create_dataset(k, (1,), dtype=h5py.string_dtype())
            ds[0] = json.dumps(v)
    return path


def write_synthetic_csd(
    folder: str | os.PathLike,
    videos: int = 6,
    segments: int = 4,
    dims: dict[str, int] | None = None,
    rates: dict[str, float] | None = None,
    seed: int = 0,
    segment_level: bool = False,
) -> dict[str, Path]:
    """Text/audio/vision/labels/words ``.csd`` files of `videos` videos with `segments` labelled segments
    each (2-4 s, with 0.5 s gaps). Modalities are video-level sequences at their own frame rates
    (words ~3/s, audio 100/s, vision 30/s by default); segment_level=True writes the modalities as the
    SDK's aligned segment entries ``video[k]`` instead. Returns {role: path}."""
    dims = dict(dims or {"text": 8, "audio": 5, "vision": 6})
    rates = dict(rates or {"text": 3.0, "audio": 20.0, "vision": 10.0})
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    direction = {m: rng.normal(size=dims[m]).astype(np.float32) for m in MODALITIES}
    entries: dict[str, dict] = {r: {} for r in (*MODALITIES, "labels", "words")}
    for v in range(videos):
        vid = f"vid_{v:03d}{'xyz'[v % 3]}"
        t, seg_iv, seg_y = 0.5, [], []
        for _ in range(segments):
            dur = float(rng.uniform(2, 4))
            seg_iv.append((t, t + dur))
            seg_y.append(float(np.round(rng.uniform(-3, 3), 1)))
            t += dur + 0.5
        total = t
        entries["labels"][vid] = (np.array(seg_y, np.float32)[:, None], np.array(seg_iv))
        for m in (*MODALITIES, "words"):
            rate = rates["text" if m == "words" else m]
            n = max(1, int(total * rate))
            starts = np.arange(n) / rate
            iv = np.stack([starts, starts + 1.0 / rate], axis=1)
            if m == "words":
                feats = np.array([rng.choice(_WORDS).encode() for _ in range(n)], dtype="S16")[:, None]
                feats[rng.random(n) < 0.1, 0] = b"sp"
            else:
                y = np.zeros(n, np.float32)
                for (s, e), lab in zip(seg_iv, seg_y):
                    y[(starts >= s) & (starts < e)] = lab / 3.0
                feats = rng.standard_normal((n, dims[m]), dtype=np.float32) + y[:, None] * direction[m][None, :]
            if segment_level:
                for k, (s, e) in enumerate(seg_iv):
                    sel = (iv[:, 0] < e) & (iv[:, 1] > s)
                    entries[m][f"{vid}[{k}]"] = (feats[sel], iv[sel])
            else:
                entries[m][vid] = (feats, iv)
    roots = {"text": "glove_vectors", "audio": "COVAREP", "vision": "FACET 4.2", "labels": "Opinion Segment Labels",
             "words": "words"}  # fmt: skip
    return {
        role: write_csd(folder / f"{role}.csd", roots[role], entries[role], {"root name": roots[role]})
        for role in roots
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in PRESETS:
        print(f"usage: python -m mmckd.interop.synthetic {{{','.join(PRESETS)}}} OUT.pkl", file=sys.stderr)
        return 2
    print(write_synthetic_mmsa(argv[1], preset=argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
