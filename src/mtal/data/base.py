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
                f"data.tasks: {type(self).__name__} has no task(s) {unknown}; "
                f"available tasks: {list(allowed)}"
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
    list or a folder), set by the subclass's constructor (:meth:`read_ids` for a split
    file, which also records where each id is listed)."""

    ids: list[str]
    #: the split file the ids were read from (None: ids from a folder listing)
    id_file: Path | None = None
    #: id → its line number in ``id_file``
    id_lines: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def image_id(self, index: int) -> str:
        return self.ids[index]

    def read_ids(self, path: Path, layout: str) -> list[str]:
        """Read ``self.ids`` from the split file ``path`` (see :func:`read_split_file`)."""
        self.id_lines = read_split_file(path, layout)
        self.id_file = path
        self.ids = list(self.id_lines)
        return self.ids


def read_split_file(path: Path, layout: str) -> dict[str, int]:
    """Id → line number of a split file (one id per line, blank lines skipped).

    An empty file, an id listed twice (it would be bought twice) and an id that is a
    path leaving the dataset root (absolute, or with ``..``) are errors naming the file
    and the line."""
    check_file(path, "split file", layout)
    lines: dict[str, int] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        image_id = raw.strip()
        if not image_id:
            continue
        parts = Path(image_id).parts
        if Path(image_id).is_absolute() or ".." in parts or "\\" in image_id:
            raise DatasetLayoutError(
                f"{path}:{number}: id {image_id!r} is a path leaving the dataset root; "
                f"list plain file stems (e.g. 0001), one per line"
            )
        if image_id in lines:
            raise DatasetLayoutError(
                f"{path}:{number}: id {image_id!r} is listed twice (first at line "
                f"{lines[image_id]}), so it would be bought and trained on twice; remove "
                f"one of the lines"
            )
        lines[image_id] = number
    if not lines:
        raise DatasetLayoutError(
            f"split file {path} lists no image ids\nexpected layout:\n{layout}"
        )
    return lines


def check_disjoint_splits(datasets: dict[str, MultiTaskDataset]) -> None:
    """Raise when two split files of one dataset share an id (a val or test image in the
    training pool would be bought, trained on and then evaluated on); names both files
    and lines. Splits read from the same file (e.g. ``test_split = val_split``) and
    datasets without split files are not compared."""
    listed = [
        (stage, d)
        for stage, d in datasets.items()
        if isinstance(d, IdListDataset) and d.id_file is not None
    ]
    for i, (stage_a, a) in enumerate(listed):
        for stage_b, b in listed[i + 1 :]:
            if a.id_file == b.id_file or type(a) is not type(b):
                continue
            shared = [image_id for image_id in a.id_lines if image_id in b.id_lines]
            if shared:
                first = shared[0]
                raise DatasetLayoutError(
                    f"id {first!r} is in both {a.id_file}:{a.id_lines[first]} ({stage_a}) and "
                    f"{b.id_file}:{b.id_lines[first]} ({stage_b}); {len(shared)} id(s) are "
                    f"shared: {shared[:5]}; splits must not overlap, remove them from one file"
                )


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
