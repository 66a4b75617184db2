"""The simulated oracle: labels are bought from the dataset's own annotations."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from mtal.acquisition.base import Selection
    from mtal.data.pool import LabelPool


def apply_selection(pool: LabelPool, selection: Selection, cycle: int) -> None:
    """Buy the selected labels from the oracle (the dataset's own annotations)."""
    pairs = np.asarray(selection.pairs, dtype=np.int64).reshape(-1, 2)
    weights = scores = None
    row_of = {int(img): r for r, img in enumerate(np.asarray(selection.images).tolist())}
    rows = np.array([row_of[int(i)] for i in pairs[:, 0]], dtype=np.int64)
    if selection.weights is not None:
        weights = np.asarray(selection.weights, dtype=np.float32)[rows, pairs[:, 1]]
    if selection.scores is not None:
        scores = np.asarray(selection.scores, dtype=np.float32)[rows, pairs[:, 1]]
    pool.label_pairs(pairs, cycle, weights=weights, scores=scores)
