"""HDF5 files from users must be self-contained: no byte of another file may get in through them.

HDF5 can make a dataset read another file: external storage (the data lives in raw files named in the
dataset's creation properties), virtual datasets (mapped from datasets of other files), external links
(a link resolved in another file) and soft links (a path, resolved when followed). A crafted ``.csd`` or
feature file using any of these would read arbitrary local files (``/etc/passwd``, another user's data)
into the features, and from there into exported pickles.

``check_self_contained`` walks every object reachable through hard links with h5py's low-level API,
without reading any dataset's data and without following any soft or external link, and raises
``UnsafeHDF5Error`` naming the file, the object and what it found. Everything mmckd opens from a user
(``.csd`` sequences, feature files) goes through it before any data is read.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
from h5py import h5d, h5g, h5l, h5o

_LINK_KINDS = {h5l.TYPE_SOFT: "a soft link", h5l.TYPE_EXTERNAL: "an external link"}


class UnsafeHDF5Error(ValueError):
    """An HDF5 input refers to data outside itself (external storage, virtual dataset, soft/external link)."""


def _decode(name) -> str:
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)


def _problems(fid: h5py.h5f.FileID) -> str | None:
    """The first reference outside the file found in the open file fid, as a phrase; None when self-contained."""
    found: list[str] = []

    root = h5g.open(fid, b"/")

    def check_links(group_name: str) -> None:
        def visit_link(name: bytes, linfo) -> int | None:
            if linfo.type == h5l.TYPE_HARD:
                return None
            where = "/" + "/".join(p for p in (group_name.strip("./"), _decode(name)) if p)
            kind = _LINK_KINDS.get(linfo.type, f"a user-defined link (type {linfo.type})")
            target = ""
            if linfo.type in _LINK_KINDS:
                full = (group_name.rstrip("/") + "/").encode() + name if group_name != "." else name
                val = root.links.get_val(full)
                target = " -> " + (":".join(_decode(v) for v in val) if isinstance(val, tuple) else _decode(val))
            found.append(f"{where} is {kind}{target}")
            return 1  # stop iterating

        root.links.iterate(visit_link, obj_name=group_name.encode(), info=True)

    def visit(name: bytes, info) -> int | None:
        path = _decode(name)
        if info.type == h5o.TYPE_GROUP:
            check_links(path)
        elif info.type == h5o.TYPE_DATASET:
            dcpl = h5d.open(fid, name).get_create_plist()
            where = "/" + path.lstrip("./")
            if dcpl.get_layout() == h5d.VIRTUAL:
                found.append(f"{where} is a virtual dataset (mapped from other files)")
            elif dcpl.get_external_count() > 0:
                ext = _decode(dcpl.get_external(0)[0])
                found.append(f"{where} keeps its data in an external file ({ext!r})")
        return 1 if found else None

    check_links(".")
    if not found:
        h5o.visit(fid, visit, info=True)
    return found[0] if found else None


def check_self_contained(h5: h5py.File | str | os.PathLike, error: type[Exception] = UnsafeHDF5Error) -> None:
    """Raise ``error`` (one line naming the file) when the HDF5 file - an open h5py.File or a path - would read
    data from outside itself. Only metadata is read: object headers, link tables, dataset creation properties.
    """
    if isinstance(h5, h5py.File):
        path, problem = Path(h5.filename), _problems(h5.id)
    else:
        path = Path(h5)
        with h5py.File(path, "r") as f:
            problem = _problems(f.id)
    if problem is not None:
        raise error(
            f"{path}: refused: {problem}; mmckd reads only self-contained HDF5 files (no external storage, "
            "virtual datasets, soft or external links)"
        )
