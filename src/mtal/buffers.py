"""float32 work buffers in memory or memory-mapped on unnamed files (issue 16.6)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np


def float32_buffer(shape: tuple[int, ...], folder: str | None = None) -> np.ndarray:
    """An uninitialised float32 array of ``shape``: in memory (``folder=None``), or mapped
    onto an unnamed temporary file in ``folder`` (``tempfile.TemporaryFile``: no name
    on disk, removed by the OS when the last view of the array is gone, a crash
    included). A mapped buffer's pages are file-backed: the kernel writes them back and
    drops them under memory pressure instead of failing, so a pool's per-image rows need
    not fit in memory (``loop.summary_store: disk``)."""
    if folder is None:
        return np.empty(shape, dtype=np.float32)
    where = Path(folder)
    if not where.is_dir():
        raise FileNotFoundError(
            f"summary folder {where} does not exist; create it or point "
            "loop.summary_dir at an existing folder on a disk (not a RAM-backed tmpfs)"
        )
    if int(np.prod(shape)) == 0:  # a zero-length file cannot be mapped
        return np.empty(shape, dtype=np.float32)
    with tempfile.TemporaryFile(dir=where) as handle:
        # the map holds its own descriptor: the file lives on after ``handle`` closes
        return np.memmap(handle, dtype=np.float32, mode="w+", shape=shape)
