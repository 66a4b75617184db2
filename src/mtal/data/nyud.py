"""NYUD-v2 in the multi-task layout of Vandenhende et al. (``NYUD_MT``), plus the small
file readers shared by every real-format loader (nyud, pascal_context, mtan).

Layout (``root`` is the folder that holds these entries)::

    root/
      images/<id>.jpg          RGB image
      segmentation/<id>.png    uint8, 0 = void, 1..40 = the 40 NYU classes
      depth/<id>.npy           float, metres, 0 = invalid
      normals/<id>.npy         float H×W×3 in [-1, 1] (uint8-style [0, 255] also read)
      edge/<id>.npy            binary edge map (non-zero = edge)
      gt_sets/train.txt        one image id per line
      gt_sets/val.txt

Returned arrays follow :class:`mtal.data.base.MultiTaskDataset`: semseg 0..39 with void
→ 255, depth float32 metres (non-finite → 0), normals float32 unit vectors (zero vector
= invalid), edge uint8 {0, 1}.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtal.data.base import (
    DATASETS,
    DatasetLayoutError,
    IdListDataset,
    check_file,
    read_split_file,
)

DOCS_HINT = "see docs/datasets.md for where each public download goes"

# ----------------------------------------------------------------------------------
# shared readers: every reader names the file in its error
# ----------------------------------------------------------------------------------


def read_rgb(path: Path) -> np.ndarray:
    """Read a JPEG/PNG image as H×W×3 uint8 RGB, or raise naming the unreadable file."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, ValueError, SyntaxError) as err:
        raise DatasetLayoutError(
            f"cannot read image {path}: {err}; the file is corrupt or not an image, "
            "re-extract it from the dataset archive"
        ) from err


def read_label_png(path: Path) -> np.ndarray:
    """Read a single-channel (L/P/I) label PNG as an H×W integer array of stored values."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P", "I", "I;16", "1"):
                raise DatasetLayoutError(
                    f"{path}: expected a single-channel or palette label PNG, got mode "
                    f"{im.mode!r}; label files store class indices, not colours"
                )
            return np.asarray(im).astype(np.int64)
    except DatasetLayoutError:
        raise
    except (OSError, ValueError, SyntaxError) as err:
        raise DatasetLayoutError(
            f"cannot read label PNG {path}: {err}; the file is corrupt, re-extract it"
        ) from err


def read_png_uint8(path: Path) -> np.ndarray:
    """Read any 8-bit PNG (gray or RGB) as a uint8 array, or raise naming the file."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im, dtype=np.uint8).copy()
    except (OSError, ValueError, SyntaxError) as err:
        raise DatasetLayoutError(
            f"cannot read PNG {path}: {err}; the file is corrupt, re-extract it"
        ) from err


def read_npy(path: Path) -> np.ndarray:
    """Read a ``.npy`` array (no pickles), or raise naming the unreadable file."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise DatasetLayoutError(
            f"cannot read numpy file {path}: {err}; the file is corrupt or not a .npy "
            "array, re-extract it"
        ) from err


def read_mat(path: Path) -> dict[str, Any]:
    """Read a MATLAB v5 ``.mat`` file with scipy, or raise naming the unreadable file."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        return loadmat(path)
    except (
        OSError,
        EOFError,
        ValueError,
        TypeError,
        NotImplementedError,
        MatReadError,
        zlib.error,
    ) as err:
        raise DatasetLayoutError(
            f"cannot read MATLAB file {path}: {err}; the file is corrupt or not a v5 "
            ".mat file, re-extract it"
        ) from err


def squeeze_channel(array: np.ndarray, path: Path) -> np.ndarray:
    """Return an H×W map from H×W, H×W×1 or 1×H×W storage, else raise naming the file."""
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    elif array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise DatasetLayoutError(f"{path}: expected an H×W map, got shape {array.shape}")
    return array


def check_same_size(
    image: np.ndarray, image_path: Path, target: np.ndarray, target_path: Path
) -> None:
    """Raise if a target's H×W differs from its image's, naming both files and shapes."""
    if target.shape[:2] != image.shape[:2]:
        raise DatasetLayoutError(
            f"size mismatch: image {image_path} has shape {image.shape[:2]} but target "
            f"{target_path} has shape {target.shape[:2]}; labels must have the image's "
            "resolution (re-export the target or the image)"
        )


def unit_normals(normals: np.ndarray, min_norm: float = 0.5) -> np.ndarray:
    """Renormalise H×W×3 normals to unit length; vectors shorter than ``min_norm`` (and
    non-finite ones) become the all-zero 'invalid' vector."""
    normals = np.nan_to_num(normals.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    norm = np.linalg.norm(normals, axis=-1, keepdims=True)
    valid = norm > min_norm
    return np.where(valid, normals / np.maximum(norm, 1e-12), 0.0).astype(np.float32)


def read_depth_npy(path: Path) -> np.ndarray:
    """H×W (or H×W×1) depth ``.npy`` in metres; non-finite and non-positive → 0 (invalid)."""
    depth = squeeze_channel(read_npy(path), path).astype(np.float32)
    return np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float32)


def read_normals_npy(
    path: Path, decode: Callable[[np.ndarray], np.ndarray] = lambda raw: raw
) -> np.ndarray:
    """H×W×3 (or 3×H×W) normals ``.npy``, decoded by ``decode`` and renormalised."""
    raw = read_npy(path)
    if raw.ndim == 3 and raw.shape[0] == 3 and raw.shape[-1] != 3:
        raw = np.moveaxis(raw, 0, -1)
    if raw.ndim != 3 or raw.shape[-1] != 3:
        raise DatasetLayoutError(f"{path}: expected H×W×3 normals, got shape {raw.shape}")
    return unit_normals(decode(raw))


def read_id_list(path: Path, layout: str) -> list[str]:
    """Read a split file (see :func:`mtal.data.base.read_split_file`: duplicates, ids
    leaving the root and empty files raise, naming the file and line)."""
    return list(read_split_file(path, layout))


# ----------------------------------------------------------------------------------
# NYUD-v2
# ----------------------------------------------------------------------------------

NYUD_LAYOUT = f"""\
<root>/                    (the extracted NYUD_MT archive; pass its path as root)
  images/<id>.jpg
  segmentation/<id>.png    uint8: 0 void, 1..40 classes
  depth/<id>.npy           float metres, 0 invalid
  normals/<id>.npy         float H×W×3 in [-1, 1]
  edge/<id>.npy            binary
  gt_sets/train.txt        one id per line
  gt_sets/val.txt
({DOCS_HINT})"""


def _decode_normals_unit(raw: np.ndarray) -> np.ndarray:
    return raw.astype(np.float32)


def _decode_normals_uint8(raw: np.ndarray) -> np.ndarray:
    return 2.0 * raw.astype(np.float32) / 255.0 - 1.0


def _decode_normals_auto(raw: np.ndarray) -> np.ndarray:
    # Integer storage or values beyond [-1, 1] mean the [0, 255] encoding.
    if np.issubdtype(raw.dtype, np.integer) or float(np.nanmax(np.abs(raw), initial=0.0)) > 1.5:
        return _decode_normals_uint8(raw)
    return _decode_normals_unit(raw)


#: how NYUD ``normals/*.npy`` values are turned into vectors before renormalisation
NORMALS_DECODERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "unit": _decode_normals_unit,
    "uint8": _decode_normals_uint8,
    "auto": _decode_normals_auto,
}


@DATASETS.register("nyud")
class NYUD(IdListDataset):
    """NYUD-v2 (795 train / 654 val) in Vandenhende's NYUD_MT layout: semseg (40 classes),
    depth, normals, edge.

    ``normals_encoding``: ``"unit"`` (stored in [-1, 1], the NYUD_MT files), ``"uint8"``
    (stored in [0, 255], decoded 2v/255 − 1) or ``"auto"`` (uint8 rule when the file is
    integer-typed or holds |v| > 1.5). Decoded normals are renormalised to unit length;
    vectors of norm < 0.5 (the zero vector) are invalid and returned as 0.
    """

    available_tasks = ("semseg", "depth", "normals", "edge")
    num_classes = {"semseg": 40}

    #: task → (folder, file suffix)
    FILES: dict[str, tuple[str, str]] = {
        "semseg": ("segmentation", ".png"),
        "depth": ("depth", ".npy"),
        "normals": ("normals", ".npy"),
        "edge": ("edge", ".npy"),
    }

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        tasks: Sequence[str] | None = None,
        normals_encoding: str = "auto",
    ) -> None:
        super().__init__(split=split, tasks=tasks)
        if normals_encoding not in NORMALS_DECODERS:
            raise ValueError(
                f"normals_encoding={normals_encoding!r}; choose one of {sorted(NORMALS_DECODERS)}"
            )
        self.normals_encoding = normals_encoding
        self.root = Path(root)
        check_file(self.root, "NYUD dataset root", NYUD_LAYOUT)
        self.read_ids(self.root / "gt_sets" / f"{split}.txt", NYUD_LAYOUT)
        check_file(self.root / "images", "NYUD image folder", NYUD_LAYOUT)
        self._readers: dict[str, Callable[[Path], np.ndarray]] = {
            "semseg": self._read_semseg,
            "depth": read_depth_npy,
            "normals": self._read_normals,
            "edge": self._read_edge,
        }

    def image_path(self, index: int) -> Path:
        return self.root / "images" / f"{self.ids[index]}.jpg"

    def task_path(self, index: int, task: str) -> Path:
        """Path of the ``task`` label file of sample ``index``."""
        folder, suffix = self.FILES[task]
        return self.root / folder / f"{self.ids[index]}{suffix}"

    def load(self, index: int, tasks: Sequence[str]) -> dict[str, Any]:
        """Read the image and only the listed tasks' files of sample ``index``."""
        image_path = check_file(self.image_path(index), "NYUD image", NYUD_LAYOUT)
        image = read_rgb(image_path)
        out: dict[str, Any] = {"image": image}
        for task in tasks:
            if task not in self._readers:
                raise ValueError(f"NYUD has no task {task!r}; available: {self.available_tasks}")
            path = self.task_path(index, task)
            check_file(path.parent, f"NYUD {task} folder", NYUD_LAYOUT)
            check_file(path, f"NYUD {task} file", NYUD_LAYOUT)
            target = self._readers[task](path)
            check_same_size(image, image_path, target, path)
            out[task] = target
        return out

    # -- per-task readers ----------------------------------------------------------
    def _read_semseg(self, path: Path) -> np.ndarray:
        stored = read_label_png(path)
        bad = np.setdiff1d(np.unique(stored), np.r_[np.arange(41), 255])
        if bad.size:
            raise DatasetLayoutError(
                f"{path}: NYUD segmentation values must be 0 (void) or 1..40, found {bad.tolist()}"
            )
        # stored 0 = void → 255; classes 1..40 → 0..39; a stored 255 stays ignore
        return np.where((stored == 0) | (stored == 255), 255, stored - 1).astype(np.uint8)

    def _read_normals(self, path: Path) -> np.ndarray:
        return read_normals_npy(path, NORMALS_DECODERS[self.normals_encoding])

    def _read_edge(self, path: Path) -> np.ndarray:
        edge = squeeze_channel(read_npy(path), path)
        return (np.nan_to_num(edge) != 0).astype(np.uint8)
