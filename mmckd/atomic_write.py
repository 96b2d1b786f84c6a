"""Writing outputs so that an I/O error (disk full, file too large, read-only folder) costs nothing.

Every output (feature files from importers, exported pickles, bundles, metrics, reports) is written
under a temporary name beside its destination and renamed over it only when complete and fsynced. On
any error the temporary file is removed, the destination is left exactly as it was, and an I/O error
becomes ``WriteError``: one line naming the destination and the reason ("No space left on device").
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path


class WriteError(OSError):
    """An output could not be written; str() is one line naming the file and the reason."""

    def __init__(self, path: str | os.PathLike, cause: BaseException) -> None:
        self.path = Path(path)
        self.reason = io_reason(cause)
        super().__init__(f"{self.path}: cannot write ({self.reason})")
        self.errno = getattr(cause, "errno", None)


_H5_MESSAGE = re.compile(r"error message = '([^']+)'")
_RUST_IO = re.compile(r"I/O error: (.+?) \(os error \d+\)")


def io_reason(e: BaseException) -> str:
    """The short reason of an I/O error: strerror, or what HDF5 / safetensors wrap it in, on one line."""
    text = str(e)
    for pattern in (_H5_MESSAGE, _RUST_IO):
        m = pattern.search(text)
        if m:
            return m.group(1)
    errno = getattr(e, "errno", None)
    strerror = getattr(e, "strerror", None)
    if strerror and len(str(strerror)) < 100:
        return str(strerror)
    if isinstance(errno, int) and errno > 0:
        return os.strerror(errno)
    first = text.splitlines()[0] if text else type(e).__name__
    return first[:200]


def is_io_error(e: BaseException) -> bool:
    """True for OSError and for libraries' wrappers of one (safetensors' SafetensorError on an I/O error)."""
    return isinstance(e, OSError) or _RUST_IO.search(str(e)) is not None


def temporary_name(path: str | os.PathLike) -> Path:
    """The temporary name an output is written under: hidden, beside it, unique to this process."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _remove(p: Path) -> None:
    try:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    except OSError:
        pass


def _fsync(path: Path) -> None:
    if path.is_dir():
        for p in path.rglob("*"):
            if p.is_file():
                _fsync(p)
        return
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path (file or folder) to write; on success it is fsynced and renamed over ``path``.

    On any exception the temporary path - and any ``<tmp>*`` a writer derived from it - is removed, ``path``
    is untouched, and an I/O error is raised as WriteError naming ``path``. A destination that exists and is
    neither a file nor a folder (``/dev/stdout``, a FIFO) is written in place, never replaced. A folder destination is
    replaced by renaming the old one aside first, so a crash leaves the old or the new folder.
    """
    path = Path(path)
    if path.exists() and not (path.is_file() or path.is_dir()):  # /dev/stdout, a FIFO: write it in place
        try:
            yield path
        except BaseException as e:
            if is_io_error(e) and not isinstance(e, WriteError):
                raise WriteError(path, e) from None
            raise
        return
    tmp = temporary_name(path)
    _remove(tmp)
    try:
        yield tmp
        _fsync(tmp)
        if tmp.is_dir() and path.is_dir():
            old = path.with_name(f".{path.name}.{os.getpid()}.old")
            _remove(old)
            os.replace(path, old)
            os.replace(tmp, path)
            _remove(old)
        else:
            os.replace(tmp, path)
    except BaseException as e:
        _remove(tmp)
        for p in glob.glob(glob.escape(str(tmp)) + "*"):
            _remove(Path(p))
        if is_io_error(e) and not isinstance(e, WriteError):
            raise WriteError(path, e) from None
        raise


def write_bytes_stream(path: str | os.PathLike, write) -> None:
    """Write ``path`` atomically: ``write(f)`` gets a binary file object open on the temporary file."""
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_output(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
