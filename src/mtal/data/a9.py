"""The A9 dataset (TUM Traffic / Providentia++) in its OpenLABEL JSON format.

Expected layout (``root``)::

    root/<split>/images/<camera>/<name>.jpg|png
    root/<split>/labels/<camera>/<name>.json    (one OpenLABEL file per image)

OpenLABEL (ASAM OpenLABEL 1.0, as A9 writes it)::

    {"openlabel": {"metadata": {"schema_version": "1.0.0"},
                   "frames": {"<frame>": {"objects": {"<uuid>": {"object_data": {
                       "name": "...", "type": "CAR",
                       "bbox": [{"name": "shape", "val": [x_centre, y_centre, w, h]}],
                       "poly2d": [{"name": "mask", "val": [x1, y1, x2, y2, ...],
                                   "closed": true}]}}}}}}}

``boxes``: each object's ``bbox`` (OpenLABEL boxes are centre + size) as xyxy pixels,
``box_labels`` = the semseg id of its ``type``. ``semseg``: each object's ``poly2d``
polygons filled (cv2) with its class, in file order, over background 0. An object of a
type outside ``class_names`` is skipped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtal.data.base import DATASETS, DatasetLayoutError, IdListDataset, as_uint8_image, check_file

A9_CLASSES: tuple[str, ...] = (
    "BACKGROUND",
    "CAR",
    "TRUCK",
    "TRAILER",
    "VAN",
    "MOTORCYCLE",
    "BUS",
    "PEDESTRIAN",
    "BICYCLE",
    "EMERGENCY_VEHICLE",
    "OTHER",
)
LAYOUT = __doc__.split("Expected layout (``root``)::")[1].split("``boxes``:")[0]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def read_openlabel(path: Path) -> list[dict[str, Any]]:
    """The ``object_data`` records of every frame of an OpenLABEL file (file order)."""
    try:
        doc = json.loads(path.read_text())
        frames = doc["openlabel"]["frames"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise DatasetLayoutError(
            f"{path}: not an OpenLABEL file (need openlabel.frames.<id>.objects; {err!r})"
            f"\nexpected layout:\n{LAYOUT}"
        ) from err
    out = []
    for frame in frames.values():
        for obj in (frame.get("objects") or {}).values():
            if "object_data" not in obj:
                raise DatasetLayoutError(f"{path}: an object has no 'object_data'")
            out.append(obj["object_data"])
    return out


@DATASETS.register("a9")
class A9(IdListDataset):
    """A9 camera images with ``semseg`` (from poly2d) and ``boxes`` (module docstring)."""

    available_tasks = ("semseg",)
    extra_tasks = ("boxes",)

    def __init__(
        self,
        root: str | Path = "data/a9",
        split: str = "train",
        tasks: Sequence[str] | None = None,
        cameras: Sequence[str] | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__(split, ("semseg", "boxes") if tasks is None else tasks)
        self.root = Path(root)
        self.class_names = tuple(class_names or A9_CLASSES)
        self.num_classes = {"semseg": len(self.class_names)}
        self._cls = {n: i for i, n in enumerate(self.class_names)}
        labels = self.root / split / "labels"
        if not labels.is_dir():
            raise DatasetLayoutError(
                f"missing A9 label folder: {labels}\nexpected layout:\n{LAYOUT}"
            )
        cams = (
            sorted(p.name for p in labels.iterdir() if p.is_dir())
            if cameras is None
            else list(cameras)
        )
        self._items: list[tuple[Path, Path]] = []
        for cam in cams:
            for label in sorted((labels / cam).glob("*.json")):
                images = self.root / split / "images" / cam
                found = [images / f"{label.stem}{s}" for s in IMAGE_SUFFIXES]
                found = [p for p in found if p.exists()]
                if not found:
                    raise DatasetLayoutError(
                        f"A9: label {label} has no image {images / label.stem}.jpg|png"
                        f"\nexpected layout:\n{LAYOUT}"
                    )
                self._items.append((found[0], label))
        if not self._items:
            raise DatasetLayoutError(
                f"A9: no OpenLABEL files under {labels}\nexpected layout:\n{LAYOUT}"
            )
        self.ids = [f"{img.parent.name}/{img.stem}" for img, _ in self._items]

    def image_path(self, index: int) -> Path:
        return self._items[index][0]

    def load(self, index: int, tasks: Sequence[str]) -> dict[str, Any]:
        """Image plus ``semseg`` (H×W uint8) and/or ``boxes``/``box_labels``."""
        import cv2
        from PIL import Image

        img_path, label = self._items[index]
        image = as_uint8_image(
            np.asarray(Image.open(check_file(img_path, "A9 image", LAYOUT)).convert("RGB")),
            img_path,
        )
        objects = [o for o in read_openlabel(label) if o.get("type") in self._cls]
        out: dict[str, Any] = {"image": image}
        if "semseg" in tasks:
            seg = np.zeros(image.shape[:2], dtype=np.uint8)
            for obj in objects:
                for poly in obj.get("poly2d", []):
                    pts = np.asarray(poly["val"], dtype=np.float64).reshape(-1, 2)
                    if len(pts) >= 3:
                        cv2.fillPoly(
                            seg, [np.round(pts).astype(np.int32)], int(self._cls[obj["type"]])
                        )
            out["semseg"] = seg
        if "boxes" in tasks:
            rows, labs = [], []
            for obj in objects:
                for bb in obj.get("bbox", []):
                    x, y, w, h = (float(v) for v in bb["val"])
                    rows.append([x - w / 2, y - h / 2, x + w / 2, y + h / 2])
                    labs.append(self._cls[obj["type"]])
            out["boxes"] = np.asarray(rows, dtype=np.float32).reshape(-1, 4)
            out["box_labels"] = np.asarray(labs, dtype=np.int64)
        return out
