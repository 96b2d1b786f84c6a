"""Regenerate the golden files that tests/test_golden.py compares against (`make golden`).

    python tests/golden/regenerate.py              # features and model (what `make golden` runs)
    python tests/golden/regenerate.py --only features
    python tests/golden/regenerate.py --new-inputs # also remake the inputs (the clip: espeak-ng + ffmpeg)

Writes, under tests/golden/:
    clip/golden.mp4, clip/golden.txt   the fixed input clip (remade only with --new-inputs: espeak-ng and x264 are
                                       not bit-stable across versions, so the clip is kept, not remade per run)
    features.npz, features.json        its features as `mmckd.extract.pipeline.extract` stores them (default
                                       ExtractConfig): per-modality arrays, and the clip's metadata and tokens
    model/bundle.json, model/weights.safetensors
                                       a tiny MM-CKD bundle trained once (cpu, 1 thread, fixed seeds) on a
                                       synthetic feature file (mmckd.model.synthetic)
    model_input.h5                     a fixed synthetic feature input (3 clips, every modality present;
                                       remade only with --new-inputs)
    predictions.json                   the bundle's score and network for each input clip under all 7
                                       modality conditions

See tests/golden/README.md for when to regenerate.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

GOLDEN = Path(__file__).resolve().parent
CLIP_DIR = GOLDEN / "clip"
CLIP_TEXT = "I really loved this movie, the acting was wonderful."
MODEL_DIMS = {"text": 8, "audio": 6, "vision": 5}
MODEL_FILES = ("bundle.json", "weights.safetensors")


def make_input_clip() -> None:
    """The fixed synthetic clip: espeak-ng speech of CLIP_TEXT over the astronaut photo, with a sidecar transcript.

    The photo pans slowly (a moving 300 x 300 crop), so the face moves from frame to frame: the face tracking,
    not only the per-frame models, shapes the vision features."""
    from mmckd.testing.clips import make_clip

    shutil.rmtree(CLIP_DIR, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="mmckd-golden-") as work:
        still = make_clip(Path(work) / "still.mp4", text=CLIP_TEXT)
        pan = "crop=300:300:x='30+30*sin(2*PI*t/2)':y='30+15*sin(2*PI*t/3)',scale=320:320"
        CLIP_DIR.mkdir(parents=True)
        subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(still), "-vf", pan, "-c:v", "libx264", "-preset",
             "veryfast", "-crf", "26", "-pix_fmt", "yuv420p", "-c:a", "copy", str(CLIP_DIR / "golden.mp4")],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
    (CLIP_DIR / "golden.txt").write_text(CLIP_TEXT + "\n")


def extract_golden_clip(work: Path):
    """The golden clip extracted by the real pipeline with the default configuration: (Clip, FeatureFile)."""
    from mmckd.extract.config import ExtractConfig
    from mmckd.extract.pipeline import extract
    from mmckd.feature_file import FeatureFile

    out = work / "golden.h5"
    extract(CLIP_DIR, out, config=ExtractConfig(), progress=False, overwrite=True)
    ff = FeatureFile(out)
    (clip,) = ff.iter_clips()
    return clip, ff


def feature_arrays(clip) -> dict[str, np.ndarray]:
    """The arrays compared: features, timestamps, mask, confidence of each present modality."""
    from mmckd.feature_file import MODALITIES

    arrays = {}
    for m in MODALITIES:
        s = clip.sequence(m)
        if s is None:
            continue
        arrays[f"{m}/features"] = s.features
        arrays[f"{m}/timestamps"] = s.timestamps
        arrays[f"{m}/mask"] = s.mask
        arrays[f"{m}/confidence"] = s.confidence
    return arrays


def feature_record(clip, ff) -> dict:
    """What the file says about the clip besides its arrays (compared exactly, except config: informative)."""
    from mmckd.feature_file import MODALITIES

    return {
        "id": clip.id,
        "status": clip.status,
        "transcript": clip.transcript,
        "transcript_source": clip.transcript_source,
        "duration": clip.duration,
        "dims": ff.dims,
        "present": {m: clip.sequence(m) is not None for m in MODALITIES},
        "frames": {m: (s.frames if (s := clip.sequence(m)) is not None else 0) for m in MODALITIES},
        "missing_reason": clip.missing_reason,
        "tokens": clip.text.tokens if clip.text is not None else None,
        "config": ff.config,
    }


def regenerate_features() -> None:
    with tempfile.TemporaryDirectory(prefix="mmckd-golden-") as work:
        clip, ff = extract_golden_clip(Path(work))
        record = feature_record(clip, ff)
        np.savez_compressed(GOLDEN / "features.npz", **feature_arrays(clip))
    (GOLDEN / "features.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    print(f"features: {record['frames']} frames, dims {record['dims']}", file=sys.stderr)


def model_input_clips():
    """The fixed feature input of the golden model: 3 synthetic clips with every modality present."""
    from mmckd.model.synthetic import synthetic_clips

    return synthetic_clips(n=3, dims=MODEL_DIMS, seed=11, splits=(0.0, 0.0))


def predictions(bundle, clips) -> dict:
    """{clip id: {subset: {"score", "network"}}} for the 7 modality conditions (the other modalities removed)."""
    import dataclasses

    from mmckd.model.routing import SUBSETS, subset_modalities

    out: dict[str, dict] = {}
    for clip in clips:
        out[clip.id] = {}
        for subset in SUBSETS:
            keep = subset_modalities(subset)
            drop = {m: None for m in ("text", "audio", "vision") if m not in keep}
            p = bundle.predict(dataclasses.replace(clip, **drop))
            out[clip.id][subset] = {"score": p.score, "network": p.network}
    return out


def regenerate_model(new_input: bool = False) -> None:
    import torch

    from mmckd.feature_file import FeatureFile, write_feature_file
    from mmckd.model.bundle import load_bundle
    from mmckd.model.config import FitConfig, ModelConfig
    from mmckd.model.synthetic import write_synthetic_features
    from mmckd.model.training import fit

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="mmckd-golden-") as work:
        train = write_synthetic_features(Path(work) / "train.h5", n=60, dims=MODEL_DIMS, seed=0)
        model = ModelConfig(d_model=8, heads=2, ff_mult=2, proj_dim=4, max_text=10, max_audio=20, max_vision=16)
        # every setting that decides the weights is pinned here (train_step too, whose default changed once), so
        # regenerating without a change to the network or training code reproduces the same weights
        config = FitConfig(
            model=model, epochs=4, patience=4, batch_size=16, seeds=(1,), missing_rates=(0.5,), train_step="per-network"
        )
        fit(train, Path(work) / "run", config, device="cpu", threads=1, progress=False)
        (GOLDEN / "model").mkdir(exist_ok=True)
        for name in MODEL_FILES:
            shutil.copyfile(Path(work) / "run" / "model" / name, GOLDEN / "model" / name)
    if new_input or not (GOLDEN / "model_input.h5").exists():
        write_feature_file(GOLDEN / "model_input.h5", model_input_clips(), {"golden": "model input"}, MODEL_DIMS)
    clips = list(FeatureFile(GOLDEN / "model_input.h5").iter_clips())
    preds = predictions(load_bundle(GOLDEN / "model"), clips)
    (GOLDEN / "predictions.json").write_text(json.dumps(preds, indent=1, sort_keys=True) + "\n")
    print(f"model: {len(clips)} clips x {len(preds[clips[0].id])} conditions predicted", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=("features", "model"), help="regenerate only these golden files")
    ap.add_argument("--new-inputs", action="store_true", help="remake the input clip and the model's feature input")
    args = ap.parse_args(argv)
    if args.only in (None, "features"):
        if args.new_inputs or not (CLIP_DIR / "golden.mp4").exists():
            make_input_clip()
        regenerate_features()
    if args.only in (None, "model"):
        regenerate_model(new_input=args.new_inputs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
