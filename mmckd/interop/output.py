"""Where importers write: one feature file, locked against other writers, never replaced by accident.

``output_for_import(output, overwrite)`` holds the feature file's lock (the very lock ``mmckd extract``
takes, so an import and an extraction never write the same file), refuses an existing output without
``overwrite``, and yields a function that writes the clips atomically: a disk-full or other I/O error
leaves the previous file intact, no temporary file behind, and raises WriteError naming the output.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Callable, Iterator

from mmckd.atomic_write import WriteError, atomic_output
from mmckd.feature_file import write_feature_file
from mmckd.file_lock import FileLock, LockHeldError, feature_file_lock_path
from mmckd.interop.errors import InteropError


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
            try:
                with atomic_output(output) as tmp:
                    n = write_feature_file(tmp, clips, config, dims, provenance)
            except WriteError as e:
                raise InteropError(str(e)) from None
            if overwrite:
                shutil.rmtree(parts, ignore_errors=True)  # an unfinished extraction of the file just replaced
            return n

        yield write
    finally:
        lock.release()
