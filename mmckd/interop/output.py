"""Where importers write: one feature file, locked against other writers, never replaced by accident.

``output_for_import(output, overwrite)`` holds the feature file's lock (the very lock ``mmckd extract``
takes, so an import and an extraction never write the same file), refuses an existing output without
``overwrite``, and yields a function that writes the clips atomically: a disk-full or other I/O error
leaves the previous file intact, no temporary file behind, and raises InteropError naming the output.
"""

from __future__ import annotations

import contextlib
import io
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import h5py

from mmckd.atomic_write import WriteError, write_bytes_stream
from mmckd.feature_file import MODALITIES, FeatureFileError
from mmckd.feature_file.layout import write_attrs, write_clips  # the layout's writers (no in-memory writer yet)
from mmckd.file_lock import FileLock, LockHeldError, feature_file_lock_path
from mmckd.interop.errors import InteropError


def _feature_file_image(output: Path, clips, config, dims, provenance) -> tuple[io.BytesIO, int]:
    """The feature file of clips, built in memory (the layout of ``write_feature_file``).

    HDF5 must not write an import to disk itself: when a write fails (disk full), HDF5 keeps going with
    the error swallowed in h5py's deallocators and then crashes the process (segfault). Built in memory,
    the file reaches the disk through one plain write, whose error is a clean WriteError.
    """
    ordered = sorted(clips, key=lambda c: c.id)
    ids = [c.id for c in ordered]
    if len(set(ids)) != len(ids):
        raise FeatureFileError(f"{output}: duplicate clip ids")
    image = io.BytesIO()
    with h5py.File(image, "w") as h5:
        write_attrs(h5, config, provenance or {})
        write_clips(h5, ordered, {m: int(dims[m]) for m in MODALITIES})
    return image, len(ordered)


@contextlib.contextmanager
def output_for_import(output: str | Path, overwrite: bool = False) -> Iterator[Callable[..., int]]:
    """Lock ``output`` and check it may be written; yields ``write(clips, config, dims, provenance)``."""
    output = Path(output)
    if output.is_dir():
        raise InteropError(f"{output}: is a folder; give the feature file to write (e.g. {output / 'features.h5'})")
    lock = FileLock(feature_file_lock_path(output), str(output))
    try:
        lock.acquire()
    except LockHeldError as e:
        raise InteropError(f"{e} (an extraction or import is writing it)") from None
    except OSError as e:
        raise InteropError(f"{output}: cannot lock ({e.strerror or e})") from None
    try:
        parts = output.with_name(output.name + ".parts")
        if not overwrite and (output.exists() or parts.exists()):
            what = "exists" if output.exists() else f"has an unfinished extraction ({parts.name}/)"
            raise InteropError(f"{output}: {what}; pass --overwrite to replace it, or choose another output")

        def write(clips, config, dims, provenance) -> int:
            image, n = _feature_file_image(output, clips, config, dims, provenance)
            try:
                write_bytes_stream(output, lambda f: f.write(image.getbuffer()))
            except WriteError as e:
                raise InteropError(str(e)) from None
            if overwrite:
                shutil.rmtree(parts, ignore_errors=True)  # an unfinished extraction of the file just replaced
            return n

        yield write
    finally:
        lock.release()
