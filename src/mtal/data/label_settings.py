"""Read the partial-label split files published with MTPSL (VICO-UoE/MTPSL).

Accepted formats (one row per training image, in the training split's order; one column
per task, in ``columns`` order; 1 = labelled, 0 = not):

- ``.pth`` / ``.pt``: MTPSL's files (``data/nyuv2_settings/onelabel.pth``,
  ``randomlabels.pth``, ``data/cityscapes_settings/...``): a ``torch.save``-d dict whose
  ``labels_weights`` entry is an N×K tensor. MTPSL's column order is semantic, depth,
  normal (NYUv2) and semantic, depth (Cityscapes), i.e. ``[semseg, depth, normals]``.
  Read with ``torch.load(weights_only=True)``: no code in the file is executed.
- ``.npy``: an N×K numeric or bool array.

The file must have exactly as many rows as the training split; the pool (the split's
first ``pool_size`` images) takes the first rows, and the pool's tasks pick their columns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

#: MTPSL's task columns, in the order its settings files store them
MTPSL_COLUMNS: tuple[str, ...] = ("semseg", "depth", "normals")


def _read_torch(path: Path) -> np.ndarray:
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: cannot read as a weights-only torch file ({exc})") from exc
    if isinstance(obj, dict):
        if "labels_weights" not in obj:
            raise ValueError(
                f"{path}: the dict has keys {sorted(map(str, obj))}, expected 'labels_weights' "
                "(an N×K tensor, MTPSL's settings format)"
            )
        obj = obj["labels_weights"]
    if not torch.is_tensor(obj):
        raise ValueError(f"{path}: holds a {type(obj).__name__}, expected an N×K tensor")
    return obj.detach().cpu().numpy()


def _read_numpy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:
        raise ValueError(f"{path}: cannot read as a .npy array ({exc})") from exc


#: file suffix → reader
READERS: dict[str, Callable[[Path], np.ndarray]] = {
    ".pth": _read_torch,
    ".pt": _read_torch,
    ".npy": _read_numpy,
}


def read_label_setting(
    path: str | Path,
    tasks: Sequence[str],
    num_images: int,
    split_length: int,
    columns: Sequence[str] | None = None,
) -> np.ndarray:
    """The ``num_images × len(tasks)`` bool mask of the split file ``path``.

    ``columns`` names the file's columns (default: MTPSL's ``semseg, depth, normals``
    truncated to the file's width); ``split_length`` is the training split's length,
    which must equal the file's row count."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"data.initial_labels_file: {path} does not exist; give MTPSL's onelabel.pth / "
            f"randomlabels.pth (or an N×K .npy) of the training split"
        )
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise ValueError(
            f"data.initial_labels_file: {path} has suffix {path.suffix!r}; accepted: "
            f"{sorted(READERS)}"
        )
    arr = np.asarray(reader(path))
    if arr.ndim != 2:
        raise ValueError(f"{path}: expected an N×K array, got shape {arr.shape}")
    if not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{path}: entries must be 0 or 1 (labelled), got {np.unique(arr)[:5]}")
    cols = list(columns) if columns is not None else list(MTPSL_COLUMNS[: arr.shape[1]])
    if len(cols) != arr.shape[1]:
        raise ValueError(
            f"{path}: has {arr.shape[1]} columns but data.initial_labels_columns names "
            f"{len(cols)} ({cols})"
        )
    missing = [t for t in tasks if t not in cols]
    if missing:
        raise ValueError(
            f"{path}: no column for task(s) {missing}; the file's columns are {cols} "
            f"(set data.initial_labels_columns to name them)"
        )
    if arr.shape[0] != int(split_length):
        raise ValueError(
            f"{path}: has {arr.shape[0]} rows but the training split has {split_length} "
            f"images; the file must list every training image in the split's order"
        )
    picked = arr[: int(num_images), [cols.index(t) for t in tasks]]
    return picked.astype(bool)
