"""Crash-safe training checkpoints: tensors in safetensors, everything else in JSON, no pickle.

A checkpoint is a folder ``<dir>/step_NNNNNN/`` holding ``state.safetensors`` (named tensors) and
``state.json`` (scalars, lists, RNG state). It is written under a temporary name and renamed when complete
(``mmckd.atomic_write.atomic_output``), so a crash leaves either the previous checkpoint or the new one,
never half of one.
Only the newest ``KEEP`` checkpoints are kept.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from mmckd.atomic_write import atomic_output

KEEP = 2
_NAME = re.compile(r"^step_(\d{6})$")


def write_json_atomic(path: Path, data) -> None:
    """Write JSON under a temporary name, fsync, rename over path. An I/O error (disk full) raises
    WriteError naming path, leaves no temporary file and the previous path intact."""
    text = _json_text(data)
    with atomic_output(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)


def _json_text(data) -> str:
    return json.dumps(_finite(data), indent=1, sort_keys=True, allow_nan=False, default=_json_default)


def _finite(obj):
    """obj with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _json_default(obj):
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"cannot store {type(obj).__name__} in JSON")


def save_checkpoint(directory: Path, step: int, tensors: dict[str, torch.Tensor], state: dict) -> Path:
    """Store one checkpoint atomically; returns its folder. An I/O error (disk full) raises WriteError naming
    the checkpoint and leaves no half checkpoint, the previous ones intact."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"step_{step:06d}"
    text = _json_text(state)
    with atomic_output(final) as tmp:
        tmp.mkdir()
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / "state.safetensors"))
        (tmp / "state.json").write_text(text)
    for old in sorted(_complete(directory))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _complete(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return [p for p in directory.iterdir() if p.is_dir() and _NAME.match(p.name) and (p / "state.json").exists()]


def latest_checkpoint(directory: Path) -> tuple[dict[str, torch.Tensor], dict] | None:
    """Tensors and state of the newest complete checkpoint in directory, or None when there is none."""
    found = sorted(_complete(Path(directory)))
    if not found:
        return None
    last = found[-1]
    return load_file(str(last / "state.safetensors")), json.loads((last / "state.json").read_text())


def optimizer_to_parts(optimizer: torch.optim.Optimizer, prefix: str = "opt.") -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimiser's state_dict into named tensors and a JSON-able remainder."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for idx, st in sd["state"].items():
        for key, value in st.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}{idx}.{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_parts(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict, prefix: str = "opt."
) -> None:
    """Restore an optimiser from optimizer_to_parts output."""
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if not name.startswith(prefix):
            continue
        idx, key = name[len(prefix) :].split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    for idx, st in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(st)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
