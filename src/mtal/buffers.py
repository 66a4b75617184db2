"""float32 work buffers in memory or memory-mapped on unnamed files (issue 16.6)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np


def require_folder(folder: str | Path, what: str) -> Path:
    """``folder`` as a Path if it is an existing folder, else a FileNotFoundError naming
    ``what`` (the setting or option it came from) and the fix."""
    where = Path(folder)
    if not where.is_dir():
        raise FileNotFoundError(
            f"{what} {where} is not an existing folder; create it (on a disk, not a "
            "RAM-backed tmpfs) or leave the option unset to keep the summaries in memory"
        )
    return where


def float32_buffer(shape: tuple[int, ...], folder: str | None = None) -> np.ndarray:
    """An uninitialised float32 array of ``shape``: in memory (``folder=None``), or mapped
    onto an unnamed temporary file in ``folder`` (``tempfile.TemporaryFile``: no name
    on disk, removed by the OS when the last view of the array is gone, a crash
    included). A mapped buffer's pages are file-backed: the kernel writes them back and
    drops them under memory pressure instead of failing, so a pool's per-image rows need
    not fit in memory (``loop.summary_store: disk``)."""
    if folder is None:
        return np.empty(shape, dtype=np.float32)
    where = require_folder(folder, "summary folder (loop.summary_dir)")
    if int(np.prod(shape)) == 0:  # a zero-length file cannot be mapped
        return np.empty(shape, dtype=np.float32)
    with tempfile.TemporaryFile(dir=where) as handle:
        # the map holds its own descriptor: the file lives on after ``handle`` closes
        return np.memmap(handle, dtype=np.float32, mode="w+", shape=shape)
