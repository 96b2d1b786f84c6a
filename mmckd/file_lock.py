"""Advisory locks that keep two mmckd processes off the same output.

A lock is an ``flock`` on a lock file (``<feature file>.lock`` for feature files - the same file and
lock the extraction writer takes - and ``<run folder>/.lock`` for fit runs). The kernel releases an
flock when its process dies however it dies (``kill -9`` included), so the lock of a dead process is
never in the way: the next command simply takes it over. The holder writes its pid into the file so a
refusal can say who holds it. A lock file is only deleted by its holder, and ``acquire`` checks that the
file it locked is still the one at the path (else two processes could each hold "the" lock).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

_HELD_HERE: set[str] = set()  # lock files this process holds (a nested acquire is a no-op)


class LockHeldError(Exception):
    """Another live process holds the lock; the message says what is locked and by which pid."""


def feature_file_lock_path(path: str | os.PathLike) -> Path:
    """The lock file of a feature file (shared with the extraction writer)."""
    path = Path(path)
    return path.with_name(path.name + ".lock")


def run_folder_lock(out_dir: str | os.PathLike) -> FileLock:
    """The lock of a fit run folder (``<run>/.lock``; not yet acquired)."""
    return FileLock(Path(out_dir) / ".lock", str(out_dir))


class FileLock:
    """An exclusive, non-blocking lock on ``lock_path``; ``what`` names the locked thing in messages.

    ``acquire`` raises LockHeldError at once when a live process holds it. Usable as a context manager.
    """

    def __init__(self, lock_path: str | os.PathLike, what: str) -> None:
        self.lock_path = Path(lock_path)
        self.what = what
        self._fd: int | None = None
        self._nested = False
        self._key = ""
        self.previous_holder: int | None = None  # pid of a dead holder whose lock was taken over

    def acquire(self) -> FileLock:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        key = str(self.lock_path.resolve())
        if key in _HELD_HERE:  # this process holds it already (the CLI and the API both lock a run): nested
            self._nested = True
            return self
        while True:
            fd = os.open(self.lock_path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                by = f" (pid {holder})" if holder else ""
                raise LockHeldError(
                    f"{self.what}: another mmckd process{by} is using it; wait for it to finish"
                ) from None
            except OSError:
                os.close(fd)
                raise
            try:  # the file may have been removed by its previous holder meanwhile: lock the one at the path
                same = os.stat(self.lock_path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self.previous_holder = _read_pid(fd)
        if self.previous_holder == os.getpid():
            self.previous_holder = None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        self._key = key
        _HELD_HERE.add(key)
        return self

    def release(self, remove: bool = False) -> None:
        """Release the lock; remove=True also deletes the lock file (safe: acquire re-checks the path)."""
        if self._nested:
            self._nested = False
            return
        if self._fd is not None:
            _HELD_HERE.discard(self._key)
            try:
                if remove:
                    self.lock_path.unlink(missing_ok=True)
                else:
                    os.ftruncate(self._fd, 0)
            except OSError:
                pass
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except (OSError, ValueError):
        return None
