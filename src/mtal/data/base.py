"""The dataset contract: a multi-task dataset returns numpy arrays per task."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtal.registry import Registry

DATASETS: Registry[MultiTaskDataset] = Registry("dataset")


class DatasetLayoutError(FileNotFoundError):
    """A dataset root or file is missing or malformed; the message names the path,
    the expected layout and how to fix it."""


class MultiTaskDataset(ABC):
    """Base class of every dataset (synthetic and real).

    ``load(i, tasks)`` returns a dict of numpy arrays, reading **only** the requested
    tasks (so a label the pool has not bought is never read):

    - ``"image"``: ``H×W×3`` uint8 RGB
    - ``"semseg"``/``"parts"``: ``H×W`` uint8/int (255 ignore)
    - ``"depth"``: ``H×W`` float32 metres (0 invalid)
    - ``"normals"``: ``H×W×3`` float32 unit vectors (all-zero invalid)
    - ``"edge"``/``"saliency"``: ``H×W`` uint8 in {0, 1, 255=ignore}
    - ``"boxes"``: ``N×4`` float32 xyxy pixels and ``"box_labels"``: ``N`` int64
    """

    #: tasks this dataset can provide, in canonical order
    available_tasks: tuple[str, ...] = ()
    #: number of classes of categorical tasks, e.g. {"semseg": 40, "parts": 7}
    num_classes: dict[str, int] = {}

    def __init__(self, split: str = "train", tasks: Sequence[str] | None = None) -> None:
        self.split = split
        tasks = tuple(tasks) if tasks is not None else self.available_tasks
        # ``extra_tasks``: targets a dataset provides only when asked (synthetic boxes)
        allowed = (*self.available_tasks, *getattr(self, "extra_tasks", ()))
        unknown = [t for t in tasks if t not in allowed]
        if unknown:
            raise ValueError(
                f"{type(self).__name__} has no task(s) {unknown}; available tasks: {list(allowed)}"
            )
        self.tasks: tuple[str, ...] = tasks

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def load(self, index: int, tasks: Sequence[str]) -> dict[str, Any]:
        """The image and the listed tasks' targets of sample ``index`` as numpy arrays."""

    def image_id(self, index: int) -> str:
        """A stable identifier of sample ``index`` (file stem for real datasets)."""
        return f"{index:06d}"

    def image_path(self, index: int) -> Path | None:
        """Path of the image file, when there is one (for the labelling export)."""
        return None

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.load(index, self.tasks)


class IdListDataset(MultiTaskDataset):
    """A dataset whose samples are the entries of ``self.ids`` (file stems from a split
    list or a folder), set by the subclass's constructor."""

    ids: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def image_id(self, index: int) -> str:
        return self.ids[index]


def check_file(path: Path, what: str, layout: str) -> Path:
    """Return ``path`` if it exists, else raise a DatasetLayoutError naming it."""
    if not path.exists():
        raise DatasetLayoutError(f"missing {what}: {path}\nexpected layout:\n{layout}")
    return path


def as_uint8_image(array: np.ndarray, path: Path | str) -> np.ndarray:
    """Validate an RGB image array (H×W×3 uint8) or raise naming the file."""
    if array.ndim != 3 or array.shape[2] != 3:
        raise DatasetLayoutError(f"{path}: expected an H×W×3 RGB image, got shape {array.shape}")
    return array.astype(np.uint8, copy=False)
