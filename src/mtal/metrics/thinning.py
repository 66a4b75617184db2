"""Morphological thinning of binary images to one-pixel-wide skeletons (numpy/scipy).

Implements the two-subiteration parallel algorithm of Lam, Lee and Suen (1992, "Thinning
methodologies — a comprehensive survey", Algorithm A, after Guo and Hall), the rule that
MATLAB's ``bwmorph(·, 'thin', Inf)`` applies before BSDS boundary matching. Each
subiteration looks up every pixel's 8-neighbourhood code in a 256-entry table.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# neighbour k = 1..8 counter-clockwise from east, as (row offset, column offset)
_OFFSETS = ((0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1))


def _code_kernel() -> np.ndarray:
    kernel = np.zeros((3, 3), dtype=np.int32)
    for k, (dr, dc) in enumerate(_OFFSETS):
        kernel[1 + dr, 1 + dc] = 1 << k
    return kernel


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


_KERNEL = _code_kernel()
_FIRST, _SECOND = _deletion_tables()


def thin(image: np.ndarray, max_iter: int | None = None) -> np.ndarray:
    """Thin a 2-d binary image until stable (or ``max_iter`` full iterations).

    Pixels outside the image count as background. Returns a new bool array.
    """
    img = np.asarray(image, dtype=bool)
    if img.ndim != 2:
        raise ValueError(f"thin: expected a 2-d binary image, got shape {img.shape}")
    out = img.astype(np.uint8)
    iteration = 0
    while max_iter is None or iteration < max_iter:
        before = int(out.sum())
        for table in (_FIRST, _SECOND):
            code = ndimage.correlate(out, _KERNEL.astype(np.uint8), mode="constant", cval=0,
                                     output=np.int32)
            out[table[code] & (out == 1)] = 0
        iteration += 1
        if int(out.sum()) == before:
            break
    return out.astype(bool)
