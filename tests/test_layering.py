"""The stages' import rules of docs/architecture.md, read from the source (ast), so a stray import fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mmckd"


def _imports(path: Path) -> set[str]:
    """Every mmckd module a file imports, at any depth (lazy imports inside functions included)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("mmckd")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mmckd") and node.level == 0:
            out.add(node.module)
    return out


def _files(sub: str) -> list[Path]:
    return sorted((PACKAGE / sub).rglob("*.py"))


@pytest.mark.parametrize(
    ("stage", "forbidden"),
    [
        ("model", ("mmckd.extract", "mmckd.predict", "mmckd.cli", "mmckd.interop")),
        ("extract", ("mmckd.model", "mmckd.predict", "mmckd.cli", "mmckd.interop")),
        ("feature_file", ("mmckd.model", "mmckd.extract", "mmckd.predict", "mmckd.cli", "mmckd.interop")),
    ],
)
def test_stages_import_only_downstream_formats(stage, forbidden):
    bad = [
        f"{f.relative_to(PACKAGE.parent)} imports {m}"
        for f in _files(stage)
        for m in sorted(_imports(f))
        if any(m == x or m.startswith(x + ".") for x in forbidden)
    ]
    assert not bad, "\n".join(bad)


def test_neutral_modules_import_no_stage():
    for name in ("modalities.py", "config_fields.py", "atomic_write.py", "file_lock.py", "hdf5_safety.py"):
        stages = [m for m in _imports(PACKAGE / name) if m.split(".")[1] in ("model", "extract", "interop", "cli")]
        assert not stages, f"{name} imports {stages}"


def test_no_module_imports_another_that_imports_it_back():
    modules = {}
    for f in PACKAGE.rglob("*.py"):
        parts = f.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = _imports(f)
    cycles = sorted(
        f"{a} <-> {b}"
        for a, deps in modules.items()
        for b in deps
        if a < b and a in modules.get(b, ()) and not b.startswith(a + ".") and not a.startswith(b + ".")
    )
    assert not cycles, cycles
