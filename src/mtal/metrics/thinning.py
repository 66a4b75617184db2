"""Morphological thinning of binary images to one-pixel-wide skeletons (numpy/scipy).

Implements the two-subiteration parallel algorithm of Lam, Lee and Suen (1992, "Thinning
methodologies — a comprehensive survey", Algorithm A, after Guo and Hall), the rule that
MATLAB's ``bwmorph(·, 'thin', Inf)`` applies before BSDS boundary matching. Each
subiteration looks up every pixel's 8-neighbourhood code in a 256-entry table.
"""

from __future__ import annotations

import numpy as np

# neighbour k = 1..8 counter-clockwise from east, as (row offset, column offset)
_OFFSETS = ((0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1))


def _deletion_tables() -> tuple[np.ndarray, np.ndarray]:
    """Boolean look-up tables (code → delete?) for the two subiterations."""
    first = np.zeros(256, dtype=bool)
    second = np.zeros(256, dtype=bool)
    for code in range(256):
        x = [bool(code >> k & 1) for k in range(8)]
        x = [False, *x, x[0]]  # 1-based: x[1]..x[8], x[9] = x[1]
        crossing = sum(not x[2 * i - 1] and (x[2 * i] or x[2 * i + 1]) for i in range(1, 5))
        n1 = sum(x[2 * k - 1] or x[2 * k] for k in range(1, 5))
        n2 = sum(x[2 * k] or x[2 * k + 1] for k in range(1, 5))
        g12 = crossing == 1 and 2 <= min(n1, n2) <= 3
        first[code] = g12 and not ((x[2] or x[3] or not x[8]) and x[1])
        second[code] = g12 and not ((x[6] or x[7] or not x[4]) and x[5])
    return first, second


_FIRST, _SECOND = _deletion_tables()
_WEIGHTS = (1 << np.arange(8)).astype(np.int32)


def thin(image: np.ndarray) -> np.ndarray:
    """Thin a 2-d binary image until stable; pixels outside the image are background.

    Equivalent to running every subiteration over the whole image, but only pixels whose
    neighbourhood changed since they were last tested against a table are re-tested, so
    the cost follows the number of deleted pixels instead of iterations × image size.
    """
    img = np.asarray(image, dtype=bool)
    if img.ndim != 2:
        raise ValueError(f"thin: expected a 2-d binary image, got shape {img.shape}")
    height, width = img.shape
    padded = np.zeros((height + 2, width + 2), dtype=np.uint8)
    padded[1:-1, 1:-1] = img
    flat = padded.ravel()
    stride = width + 2
    neighbours = np.array([dr * stride + dc for dr, dc in _OFFSETS], dtype=np.int64)
    block = np.array([dr * stride + dc for dr in (-1, 0, 1) for dc in (-1, 0, 1)], dtype=np.int64)
    slot = np.zeros(flat.size, dtype=np.int64)  # scratch for duplicate removal
    # pending[s]: on-pixels whose neighbourhood changed since they were tested with table s
    on = np.flatnonzero(flat)
    pending = [on, on]
    tables = (_FIRST, _SECOND)
    step, clean_steps = 0, 0
    while clean_steps < 2:
        todo = pending[step]
        todo = todo[flat[todo] == 1]
        deleted = todo[:0]
        if len(todo):
            codes = np.zeros(len(todo), dtype=np.int32)
            for k, offset in enumerate(neighbours):
                codes |= flat[todo + offset].astype(np.int32) << k
            deleted = todo[tables[step][codes]]
        pending[step] = on[:0]
        if len(deleted):
            flat[deleted] = 0
            touched = (deleted[:, None] + block).ravel()
            touched = touched[flat[touched] == 1]
            # keep one copy of each index without sorting: the last writer wins its slot
            order = np.arange(len(touched))
            slot[touched] = order
            touched = touched[slot[touched] == order]
            pending = [np.concatenate([p, touched]) for p in pending]
            clean_steps = 0
        else:
            clean_steps += 1
        step ^= 1
    return padded[1:-1, 1:-1].astype(bool)
