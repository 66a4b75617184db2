"""Check delivered label files with the dataset loader's own readers (shape, classes,
range, readability), as if they were already in the dataset's layout."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mtal.data.base import DatasetLayoutError


class LabelImportError(ValueError):
    """A delivery cannot be imported; the message names every offending file and pair."""


def _all_ignore(value: Any) -> np.ndarray:
    return np.asarray(value) == 255


def _all_zero(value: Any) -> np.ndarray:
    arr = np.asarray(value)
    return np.all(arr == 0, axis=-1) if arr.ndim == 3 else arr == 0


#: a task whose loaded label is invalid at every pixel carries no label at all
EMPTY_LABEL: dict[str, Callable[[Any], np.ndarray]] = {
    "semseg": _all_ignore,
    "parts": _all_ignore,
    "depth": _all_zero,
    "normals": _all_zero,
}


def check_file_dataset(dataset: Any) -> None:
    """Labels from people need a dataset that reads per-task label files."""
    if not (hasattr(dataset, "task_path") and hasattr(dataset, "root")):
        raise ValueError(
            f"dataset {type(dataset).__name__} has no per-task label files (no task_path/root); "
            "labels from people need a file dataset (nyud, pascal_context, nyuv2_13, "
            "cityscapes_7), or use loop.oracle: simulated"
        )


def validate_label(dataset: Any, index: int, task: str, path: Path) -> str | None:
    """Load ``path`` as the ``task`` label of sample ``index`` through ``dataset.load``
    (its own checks); returns the problem, or None when the label is good."""
    view = copy.copy(dataset)
    view.task_path = lambda i, t: (
        Path(path) if (int(i), t) == (int(index), task) else (dataset.task_path(i, t))
    )
    try:
        loaded = view.load(int(index), [task])
    except (DatasetLayoutError, ValueError, OSError, KeyError) as err:
        return str(err).splitlines()[0]
    empty = EMPTY_LABEL.get(task)
    if empty is not None and bool(np.all(empty(loaded[task]))):
        return f"{path}: the {task} label is invalid (ignore/zero) at every pixel"
    return None
