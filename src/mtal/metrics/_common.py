"""Helpers shared by the threshold-swept metrics (edge odsF, saliency maxF)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def make_thresholds(thresholds: int | Sequence[float], owner: str) -> np.ndarray:
    """Sorted float64 thresholds in (0, 1): an int T gives the BSDS grid
    ``linspace(1/(T+1), T/(T+1), T)`` (T=99 → 0.01, 0.02, …, 0.99)."""
    if isinstance(thresholds, int | np.integer):
        t = int(thresholds)
        if t < 1:
            raise ValueError(f"{owner}: thresholds must be >= 1, got {t}")
        return np.linspace(1.0 / (t + 1), t / (t + 1.0), t)
    arr = np.sort(np.asarray(list(thresholds), dtype=np.float64))
    if arr.ndim != 1 or arr.size == 0 or not ((arr > 0) & (arr < 1)).all():
        raise ValueError(
            f"{owner}: thresholds must be a count or a non-empty list of values in (0, 1), "
            f"got {thresholds!r}"
        )
    return arr


def f_measure(precision: np.ndarray, recall: np.ndarray, beta2: float = 1.0) -> np.ndarray:
    """F_β = (1 + β²)·P·R / (β²·P + R), and 0 where the denominator is 0."""
    den = beta2 * precision + recall
    return np.where(den > 0, (1.0 + beta2) * precision * recall / np.where(den > 0, den, 1), 0.0)


def safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, and 0 where den is 0 (BSDS convention for P and R)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)
