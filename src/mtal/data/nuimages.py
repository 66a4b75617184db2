"""nuImages (Motional), read from the nuImages devkit layout without the devkit.

Expected layout (``root``)::

    root/
      samples/CAM_FRONT/<name>.jpg          (the key-frame images; sweeps/ unused)
      v1.0-train/  v1.0-val/  v1.0-mini/    (one folder per version, JSON tables)
        category.json      [{token, name, description}]
        sample.json        [{token, timestamp, log_token, key_camera_token}]
        sample_data.json   [{token, sample_token, calibrated_sensor_token, filename,
                             fileformat, width, height, is_key_frame, ...}]
        calibrated_sensor.json  [{token, sensor_token, ...}]
        sensor.json        [{token, channel, modality}]
        object_ann.json    [{token, sample_data_token, category_token, bbox: [x1, y1,
                             x2, y2], mask: {size: [h, w], counts: base64 COCO RLE}, ...}]
        surface_ann.json   [{token, sample_data_token, category_token, mask}]

Samples: the key-frame ``sample_data`` of the front camera (``channel`` in ``cameras``,
``CAM_FRONT`` by default) — each sample's ``key_camera_token`` when it is one of those
cameras. ``semseg``: surface masks drawn first, then object masks (the devkit's
``get_segmentation`` order), class ids from ``category_map`` (category name → our class
name in ``class_names``; a category not in the map is not drawn, its pixels stay
background 0). ``boxes``: every object annotation of a mapped category, ``bbox`` as
xyxy pixels, ``box_labels`` = its semseg class id. Masks are decoded with
``pycocotools`` after base64-decoding ``counts``, exactly as the devkit does.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtal.data.base import DATASETS, DatasetLayoutError, IdListDataset, as_uint8_image, check_file

#: our semseg classes for nuImages (0 = background); the object classes are the
#: detection classes (C_det ⊆ C_seg)
NUIMAGES_CLASSES: tuple[str, ...] = (
    "background",
    "driveable_surface",
    "car",
    "truck",
    "bus",
    "trailer",
    "construction_vehicle",
    "pedestrian",
    "motorcycle",
    "bicycle",
    "traffic_cone",
    "barrier",
)
#: nuImages category name → our class (the nuScenes detection-challenge grouping)
NUIMAGES_CATEGORY_MAP: dict[str, str] = {
    "flat.driveable_surface": "driveable_surface",
    "vehicle.car": "car",
    "vehicle.truck": "truck",
    "vehicle.bus.bendy": "bus",
    "vehicle.bus.rigid": "bus",
    "vehicle.trailer": "trailer",
    "vehicle.construction": "construction_vehicle",
    "human.pedestrian.adult": "pedestrian",
    "human.pedestrian.child": "pedestrian",
    "human.pedestrian.construction_worker": "pedestrian",
    "human.pedestrian.police_officer": "pedestrian",
    "vehicle.motorcycle": "motorcycle",
    "vehicle.bicycle": "bicycle",
    "movable_object.trafficcone": "traffic_cone",
    "movable_object.barrier": "barrier",
}
TABLES = (
    "category",
    "sample",
    "sample_data",
    "calibrated_sensor",
    "sensor",
    "object_ann",
    "surface_ann",
)
SPLIT_VERSIONS = {"train": "v1.0-train", "val": "v1.0-val", "test": "v1.0-val", "mini": "v1.0-mini"}
LAYOUT = __doc__.split("Expected layout (``root``)::")[1].split("Samples:")[0]


def decode_rle(mask: Mapping[str, Any], where: str) -> np.ndarray:
    """A nuImages mask (``size`` + base64 ``counts``) → H×W bool."""
    from pycocotools import mask as cocomask

    try:
        rle = {"size": list(mask["size"]), "counts": base64.b64decode(mask["counts"])}
        return cocomask.decode(rle).astype(bool)
    except (KeyError, TypeError, ValueError) as err:
        raise DatasetLayoutError(
            f"{where}: mask must be {{'size': [h, w], 'counts': base64 COCO RLE}} ({err})"
        ) from err


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """H×W bool → a nuImages mask dict (COCO RLE with base64 ``counts``)."""
    from pycocotools import mask as cocomask

    rle = cocomask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {
        "size": [int(v) for v in rle["size"]],
        "counts": base64.b64encode(rle["counts"]).decode(),
    }


def _read_table(folder: Path, name: str) -> list[dict[str, Any]]:
    path = check_file(folder / f"{name}.json", f"nuImages table {name}", LAYOUT)
    try:
        rows = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DatasetLayoutError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(rows, list):
        raise DatasetLayoutError(f"{path}: expected a JSON list of records")
    return rows


@DATASETS.register("nuimages")
class NuImages(IdListDataset):
    """nuImages front-camera key frames with ``semseg`` and ``boxes`` (module docstring)."""

    available_tasks = ("semseg",)
    extra_tasks = ("boxes",)
    class_names = NUIMAGES_CLASSES

    def __init__(
        self,
        root: str | Path = "data/nuimages",
        split: str = "train",
        tasks: Sequence[str] | None = None,
        version: str | None = None,
        cameras: Sequence[str] = ("CAM_FRONT",),
        category_map: Mapping[str, str] | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__(split, ("semseg", "boxes") if tasks is None else tasks)
        self.root = Path(root)
        self.class_names = tuple(class_names or NUIMAGES_CLASSES)
        cmap = dict(NUIMAGES_CATEGORY_MAP if category_map is None else category_map)
        bad = sorted(v for v in cmap.values() if v not in self.class_names)
        if bad:
            raise ValueError(
                f"nuimages: category_map targets {bad} are not in class_names "
                f"{list(self.class_names)}"
            )
        self.num_classes = {"semseg": len(self.class_names)}
        if version is None and split not in SPLIT_VERSIONS:
            raise ValueError(f"nuimages: split {split!r}; use one of {list(SPLIT_VERSIONS)}")
        folder = self.root / (version or SPLIT_VERSIONS[split])
        if not folder.is_dir():
            raise DatasetLayoutError(
                f"missing nuImages version folder: {folder}\nexpected layout:\n{LAYOUT}"
            )
        t = {name: _read_table(folder, name) for name in TABLES}
        sensors = {s["token"]: s for s in t["sensor"]}
        channel = {
            c["token"]: sensors[c["sensor_token"]]["channel"] for c in t["calibrated_sensor"]
        }
        sd = {r["token"]: r for r in t["sample_data"]}
        cls_id = {name: i for i, name in enumerate(self.class_names)}
        self._category = {
            c["token"]: cls_id[cmap[c["name"]]] for c in t["category"] if c["name"] in cmap
        }
        keys = []
        for s in sorted(t["sample"], key=lambda r: (r.get("timestamp", 0), r["token"])):
            rec = sd.get(s.get("key_camera_token"))
            if rec is not None and channel.get(rec["calibrated_sensor_token"]) in tuple(cameras):
                keys.append(rec)
        self._records = keys
        self.ids = [Path(r["filename"]).stem for r in keys]
        self._objects: dict[str, list[dict[str, Any]]] = {}
        self._surfaces: dict[str, list[dict[str, Any]]] = {}
        for name, store in (("object_ann", self._objects), ("surface_ann", self._surfaces)):
            for ann in t[name]:
                store.setdefault(ann["sample_data_token"], []).append(ann)
        self._folder = folder

    def image_path(self, index: int) -> Path:
        return self.root / self._records[index]["filename"]

    def load(self, index: int, tasks: Sequence[str]) -> dict[str, Any]:
        """Image plus ``semseg`` (H×W uint8) and/or ``boxes``/``box_labels``."""
        from PIL import Image

        rec = self._records[index]
        path = check_file(self.image_path(index), "nuImages image", LAYOUT)
        image = as_uint8_image(np.asarray(Image.open(path).convert("RGB")), path)
        out: dict[str, Any] = {"image": image}
        objects = [
            a for a in self._objects.get(rec["token"], []) if a["category_token"] in self._category
        ]
        if "semseg" in tasks:
            seg = np.zeros(image.shape[:2], dtype=np.uint8)
            for ann in [*self._surfaces.get(rec["token"], []), *objects]:
                if ann["category_token"] not in self._category or ann.get("mask") is None:
                    continue
                m = decode_rle(ann["mask"], f"{self._folder} annotation {ann['token']}")
                if m.shape != seg.shape:
                    raise DatasetLayoutError(
                        f"{self._folder}: mask of annotation {ann['token']} is {m.shape}, the "
                        f"image {path} is {seg.shape}"
                    )
                seg[m] = self._category[ann["category_token"]]
            out["semseg"] = seg
        if "boxes" in tasks:
            boxes = np.array([a["bbox"] for a in objects], dtype=np.float32).reshape(-1, 4)
            out["boxes"] = boxes
            out["box_labels"] = np.array(
                [self._category[a["category_token"]] for a in objects], dtype=np.int64
            )
        return out
