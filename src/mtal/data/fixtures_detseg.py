"""Fixture writers for the detection + segmentation datasets: any source with
``load(i, ["semseg", "boxes"])`` (e.g. the procedural scenes) saved in the exact nuImages
devkit layout (JSON tables + base64 COCO-RLE masks) or the A9 OpenLABEL layout.

Class mapping (deterministic, documented): :data:`SYNTHETIC_TO_NUIMAGES` /
:data:`SYNTHETIC_TO_A9` give the category written for each procedural class; classes
not listed are not annotated. An object's mask is the pixels of its class inside its
box; the floor is the one surface (nuImages ``flat.driveable_surface``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtal.data.fixtures import save_jpg

#: procedural class id → nuImages category written by :func:`write_nuimages`
SYNTHETIC_TO_NUIMAGES: dict[int, str] = {
    1: "flat.driveable_surface",
    3: "vehicle.car",
    4: "vehicle.truck",
    5: "movable_object.barrier",
    6: "movable_object.trafficcone",
    7: "vehicle.bicycle",
    8: "vehicle.motorcycle",
    9: "human.pedestrian.adult",
    10: "vehicle.bus.rigid",
    11: "vehicle.trailer",
}
#: procedural class id → A9 object type written by :func:`write_a9`
SYNTHETIC_TO_A9: dict[int, str] = {
    3: "CAR",
    4: "TRUCK",
    5: "TRAILER",
    6: "VAN",
    7: "MOTORCYCLE",
    8: "BUS",
    9: "PEDESTRIAN",
    10: "BICYCLE",
    11: "OTHER",
}


def _token(*parts: Any) -> str:
    return uuid.uuid5(uuid.NAMESPACE_URL, "/".join(str(p) for p in parts)).hex


def _instance_masks(sample: dict[str, Any]) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(class, xyxy box, mask) per box: the pixels of the box's class inside the box."""
    seg = np.asarray(sample["semseg"])
    out = []
    for box, lab in zip(np.asarray(sample["boxes"]).reshape(-1, 4), sample["box_labels"]):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        mask = np.zeros(seg.shape, dtype=bool)
        mask[y1:y2, x1:x2] = seg[y1:y2, x1:x2] == int(lab)
        out.append((int(lab), box.astype(float), mask))
    return out


def write_nuimages(
    root: str | Path, source: Any, n_train: int, n_val: int, camera: str = "CAM_FRONT"
) -> dict[str, list[str]]:
    """Write ``source`` samples ``0..n_train-1`` as ``v1.0-train`` and the next ``n_val``
    as ``v1.0-val`` (front-camera key frames); returns split → image stems."""
    from mtal.data.nuimages import encode_rle

    root = Path(root)
    cats = sorted(set(SYNTHETIC_TO_NUIMAGES.values()))
    splits = {"train": range(n_train), "val": range(n_train, n_train + n_val)}
    written: dict[str, list[str]] = {}
    (root / "samples" / camera).mkdir(parents=True, exist_ok=True)
    for split, indices in splits.items():
        version = root / f"v1.0-{split}"
        version.mkdir(parents=True, exist_ok=True)
        sensor = {"token": _token("sensor", camera), "channel": camera, "modality": "camera"}
        calib = {
            "token": _token("calib", camera),
            "sensor_token": sensor["token"],
            "translation": [0, 0, 0],
            "rotation": [1, 0, 0, 0],
            "camera_intrinsic": [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
            "camera_distortion": [],
        }
        category = [{"token": _token("cat", c), "name": c, "description": c} for c in cats]
        cat_token = {c["name"]: c["token"] for c in category}
        tables: dict[str, list[dict[str, Any]]] = {
            "category": category,
            "sensor": [sensor],
            "calibrated_sensor": [calib],
            "sample": [],
            "sample_data": [],
            "object_ann": [],
            "surface_ann": [],
            "attribute": [],
            "ego_pose": [],
            "log": [
                {
                    "token": _token("log"),
                    "logfile": "fixture",
                    "vehicle": "fixture",
                    "location": "fixture",
                }
            ],
        }
        written[split] = []
        for k, i in enumerate(indices):
            sample = source.load(i, ["semseg", "boxes"])
            h, w = np.asarray(sample["image"]).shape[:2]
            stem = f"n000-fixture__{camera}__{split}{k:04d}"
            filename = f"samples/{camera}/{stem}.jpg"
            save_jpg(root / filename, sample["image"])
            sd_token, s_token = _token("sd", split, k), _token("sample", split, k)
            tables["sample"].append(
                {
                    "token": s_token,
                    "timestamp": k,
                    "log_token": _token("log"),
                    "key_camera_token": sd_token,
                }
            )
            tables["sample_data"].append(
                {
                    "token": sd_token,
                    "sample_token": s_token,
                    "ego_pose_token": _token("ego", split, k),
                    "calibrated_sensor_token": calib["token"],
                    "filename": filename,
                    "fileformat": "jpg",
                    "width": int(w),
                    "height": int(h),
                    "timestamp": k,
                    "is_key_frame": True,
                    "prev": "",
                    "next": "",
                }
            )
            floor = np.asarray(sample["semseg"]) == 1
            if floor.any():
                tables["surface_ann"].append(
                    {
                        "token": _token("surf", split, k),
                        "sample_data_token": sd_token,
                        "category_token": cat_token[SYNTHETIC_TO_NUIMAGES[1]],
                        "mask": encode_rle(floor),
                    }
                )
            for j, (lab, box, mask) in enumerate(_instance_masks(sample)):
                if lab not in SYNTHETIC_TO_NUIMAGES:
                    continue
                tables["object_ann"].append(
                    {
                        "token": _token("obj", split, k, j),
                        "sample_data_token": sd_token,
                        "category_token": cat_token[SYNTHETIC_TO_NUIMAGES[lab]],
                        "attribute_tokens": [],
                        "bbox": [float(v) for v in box],
                        "mask": encode_rle(mask),
                    }
                )
            written[split].append(stem)
        for name, rows in tables.items():
            (version / f"{name}.json").write_text(json.dumps(rows))
    return written


def _polygons(mask: np.ndarray) -> list[list[float]]:
    """Outer contours of a mask as flat [x1, y1, x2, y2, ...] lists (≥ 3 points)."""
    import cv2

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]


def write_a9(
    root: str | Path,
    source: Any,
    n_train: int,
    n_val: int,
    cameras: Sequence[str] = ("s110_camera_basler_south1_8mm",),
) -> dict[str, list[str]]:
    """Write ``source`` in the A9 OpenLABEL layout (``<split>/images|labels/<camera>/``);
    returns split → ids (``<camera>/<stem>``)."""
    root = Path(root)
    cam = cameras[0]
    written: dict[str, list[str]] = {}
    for split, indices in {"train": range(n_train), "val": range(n_train, n_train + n_val)}.items():
        (root / split / "images" / cam).mkdir(parents=True, exist_ok=True)
        (root / split / "labels" / cam).mkdir(parents=True, exist_ok=True)
        written[split] = []
        for k, i in enumerate(indices):
            sample = source.load(i, ["semseg", "boxes"])
            stem = f"{1_650_000_000 + k}_{k:09d}_{cam}"
            save_jpg(root / split / "images" / cam / f"{stem}.jpg", sample["image"])
            objects = {}
            for j, (lab, box, mask) in enumerate(_instance_masks(sample)):
                if lab not in SYNTHETIC_TO_A9:
                    continue
                x1, y1, x2, y2 = box
                objects[_token("a9", split, k, j)] = {
                    "object_data": {
                        "name": f"{SYNTHETIC_TO_A9[lab]}_{j}",
                        "type": SYNTHETIC_TO_A9[lab],
                        "bbox": [
                            {
                                "name": "shape",
                                "val": [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1],
                            }
                        ],
                        "poly2d": [
                            {"name": "mask", "val": p, "closed": True} for p in _polygons(mask)
                        ],
                    }
                }
            doc = {
                "openlabel": {
                    "metadata": {"schema_version": "1.0.0"},
                    "streams": {cam: {"type": "camera", "uri": f"{stem}.jpg"}},
                    "frames": {
                        str(k): {
                            "frame_properties": {"image_file_names": [f"{stem}.jpg"]},
                            "objects": objects,
                        }
                    },
                }
            }
            (root / split / "labels" / cam / f"{stem}.json").write_text(json.dumps(doc))
            written[split].append(f"{cam}/{stem}")
    return written
