"""NYUv2-13 and Cityscapes-7 as preprocessed by Liu et al. for MTAN (``.npy`` per sample).

Layout (``root`` holds ``train/`` and ``val/``)::

    root/{train,val}/image/<i>.npy    float H×W×3 in [0, 1] (3×H×W also read)
    root/{train,val}/label/<i>.npy    float H×W class ids, −1 ignore
                    (label_7/<i>.npy  Cityscapes 7-class labels; preferred by cityscapes_7)
    root/{train,val}/depth/<i>.npy    float H×W×1 (or H×W), 0 invalid
    root/{train,val}/normal/<i>.npy   float H×W×3 unit vectors (NYUv2 only)

Sample ids are the integer file stems of ``image/``, sorted numerically. Conversions:
image ×255 rounded to uint8 (a float image whose maximum exceeds 1.5 is taken as already
0..255); label −1 (any negative) → 255; depth kept as stored (NYUv2: metres; the
Cityscapes files hold a disparity-like inverse depth, not metres), non-finite/≤0 → 0;
normals renormalised, zero vectors stay invalid.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mtal.data.base import DATASETS, DatasetLayoutError, IdListDataset, check_file
from mtal.data.nyud import (
    DOCS_HINT,
    check_same_size,
    read_depth_npy,
    read_normals_npy,
    read_npy,
    squeeze_channel,
)


def _layout(name: str, label_dirs: Sequence[str], tasks: Sequence[str]) -> str:
    lines = [
        f"<root>/{{train,val}}/        ({name}, the mtan preprocessed .npy set)",
        "  image/<i>.npy             float H×W×3 in [0, 1]",
        f"  {' or '.join(d + '/' for d in label_dirs)}<i>.npy   class ids, -1 ignore",
        "  depth/<i>.npy             float H×W×1, 0 invalid",
    ]
    if "normals" in tasks:
        lines.append("  normal/<i>.npy            float H×W×3 unit normals")
    lines.append(f"({DOCS_HINT})")
    return "\n".join(lines)


def mtan_image_to_uint8(raw: np.ndarray, path: Path) -> np.ndarray:
    """mtan image array (HWC or CHW, float [0, 1] or 0..255) → H×W×3 uint8."""
    if raw.ndim == 3 and raw.shape[0] == 3 and raw.shape[-1] != 3:
        raw = np.moveaxis(raw, 0, -1)
    if raw.ndim != 3 or raw.shape[-1] != 3:
        raise DatasetLayoutError(f"{path}: expected an H×W×3 or 3×H×W image, got {raw.shape}")
    if raw.dtype == np.uint8:
        return raw.copy()
    img = np.nan_to_num(raw.astype(np.float32))
    scale = 1.0 if float(img.max(initial=0.0)) > 1.5 else 255.0
    return np.clip(np.rint(img * scale), 0, 255).astype(np.uint8)


class MtanDataset(IdListDataset):
    """Base of the mtan ``.npy`` datasets; subclasses fix the tasks, classes and label
    folders (``LABEL_DIRS``, first existing wins)."""

    LABEL_DIRS: ClassVar[tuple[str, ...]] = ("label",)
    NAME: ClassVar[str] = "mtan"

    def __init__(
        self, root: str | Path, split: str = "train", tasks: Sequence[str] | None = None
    ) -> None:
        super().__init__(split=split, tasks=tasks)
        self.root = Path(root)
        self.layout = _layout(self.NAME, self.LABEL_DIRS, self.available_tasks)
        check_file(self.root, f"{self.NAME} dataset root", self.layout)
        self.split_dir = check_file(self.root / split, f"{self.NAME} split folder", self.layout)
        image_dir = check_file(self.split_dir / "image", f"{self.NAME} image folder", self.layout)
        stems = [p.stem for p in image_dir.glob("*.npy")]
        not_int = [s for s in stems if not s.isdigit()]
        if not_int:
            raise DatasetLayoutError(
                f"{image_dir}: mtan files are named <integer>.npy, found {not_int[:5]}"
            )
        if not stems:
            raise DatasetLayoutError(
                f"{image_dir} holds no .npy images\nexpected layout:\n{self.layout}"
            )
        self.ids = [str(i) for i in sorted(int(s) for s in stems)]
        self.label_dir = next(
            (d for d in self.LABEL_DIRS if (self.split_dir / d).is_dir()), self.LABEL_DIRS[0]
        )
        self._folders: dict[str, str] = {
            "semseg": self.label_dir,
            "depth": "depth",
            "normals": "normal",
        }
        self._readers: dict[str, Callable[[Path], np.ndarray]] = {
            "semseg": self._read_label,
            "depth": read_depth_npy,
            "normals": read_normals_npy,
        }

    def image_path(self, index: int) -> Path:
        return self.split_dir / "image" / f"{self.ids[index]}.npy"

    def task_path(self, index: int, task: str) -> Path:
        """Path of the ``task`` file of sample ``index``."""
        return self.split_dir / self._folders[task] / f"{self.ids[index]}.npy"

    def load(self, index: int, tasks: Sequence[str]) -> dict[str, Any]:
        """Read the image and only the listed tasks' files of sample ``index``."""
        image_path = check_file(self.image_path(index), f"{self.NAME} image", self.layout)
        image = mtan_image_to_uint8(read_npy(image_path), image_path)
        out: dict[str, Any] = {"image": image}
        for task in tasks:
            if task not in self.available_tasks:
                raise ValueError(
                    f"{self.NAME} has no task {task!r}; available: {self.available_tasks}"
                )
            path = self.task_path(index, task)
            check_file(path.parent, f"{self.NAME} {task} folder", self.layout)
            check_file(path, f"{self.NAME} {task} file", self.layout)
            target = self._readers[task](path)
            check_same_size(image, image_path, target, path)
            out[task] = target
        return out

    def _read_label(self, path: Path) -> np.ndarray:
        label = squeeze_channel(read_npy(path), path).astype(np.float64)
        label = np.where(np.isfinite(label) & (label >= 0), label, -1)
        n = self.num_classes["semseg"]
        bad = np.unique(label[label >= n])
        if bad.size:
            raise DatasetLayoutError(
                f"{path}: {self.NAME} labels must be 0..{n - 1} or -1, found {bad[:5].tolist()}"
            )
        return np.where(label < 0, 255, np.rint(label)).astype(np.uint8)


@DATASETS.register("nyuv2_13")
class NYUv2MTAN(MtanDataset):
    """NYUv2 with 13 classes at 288×384 (mtan preprocessing): semseg, depth, normals."""

    available_tasks = ("semseg", "depth", "normals")
    num_classes = {"semseg": 13}
    LABEL_DIRS = ("label",)
    NAME = "nyuv2_13"


@DATASETS.register("cityscapes_7")
class CityscapesMTAN(MtanDataset):
    """Cityscapes with 7 classes at 128×256 (mtan preprocessing): semseg, depth (as stored,
    inverse-depth-like). Labels come from ``label_7/`` when present, else ``label/``."""

    available_tasks = ("semseg", "depth")
    num_classes = {"semseg": 7}
    LABEL_DIRS = ("label_7", "label")
    NAME = "cityscapes_7"
