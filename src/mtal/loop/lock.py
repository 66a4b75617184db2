"""An OS-level lock on a run folder: one process at a time writes a run.

``fcntl.flock`` on ``<run>/.lock`` is held for the whole run; the kernel releases it when
the holder exits in any way (kill -9 included), so a stale lock file never blocks. The
holder's PID is written into the file so that a second process can name it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

LOCK_NAME = ".lock"


class RunLockedError(RuntimeError):
    """Another process holds the run folder's lock."""


class RunLock:
    """An exclusive, non-blocking ``flock`` on ``<folder>/.lock`` (released by :meth:`release`
    or by the kernel when the process ends)."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock or raise :class:`RunLockedError` naming the holder's PID."""
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunLockedError(
                f"run folder {self.path.parent} is in use by another mtal process (PID "
                f"{holder}, lock file {self.path}); wait for it to finish or stop it, then "
                f"rerun the same command"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (the file stays; its content is only informative)."""
        if self._fd is None:
            return
        import fcntl

        with contextlib.suppress(OSError):
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete the ``.*.tmp`` files an interrupted atomic write left in ``folder`` (call only
    while holding the lock: then no write of this run is in flight)."""
    removed = []
    for path in Path(folder).rglob(".*.tmp"):
        if path.is_file():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed
