"""PASCAL-Context in the multi-task layout of Vandenhende et al. (``PASCAL_MT``):
semseg (21 VOC classes), human parts (6 + background), saliency, normals, edges.

Layout (``root`` is the folder that holds these entries)::

    root/
      JPEGImages/<id>.jpg
      ImageSets/Context/train.txt, val.txt     one image id per line
      semseg/VOC12/<id>.png                    palette/gray PNG: 0..20, 255 ignore
      pascal-context/trainval/<id>.mat         'LabelMap' H×W (edges = its boundaries)
      human_parts/<id>.mat                     'parts' H×W uint8 or PASCAL-Part 'anno'
      normals_distill/<id>.png                 RGB, n = 2·v/255 − 1
      sal_distill/<id>.png                     gray, saliency = v/255 > 0.5

Decoding choices (all documented on :class:`PascalContext`):

- edge: a pixel is an edge where the ``LabelMap`` changes. ``edge_thin=True`` marks the
  pixel whose right or lower neighbour has another label (one pixel wide, like the
  thinned |Laplacian| of the reference code); ``edge_thin=False`` marks every pixel with
  a differently labelled 4-neighbour (two pixels wide).
- parts: see :data:`PARTS_SCHEMAS`. Images without a person are all 255 (ignore).
- normals: a raw (0, 0, 0) pixel, or a decoded vector of norm < 0.5, is invalid (zero).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtal.data.base import DATASETS, DatasetLayoutError, IdListDataset, check_file
from mtal.data.nyud import (
    DOCS_HINT,
    check_same_size,
    read_label_png,
    read_mat,
    read_png_uint8,
    read_rgb,
    squeeze_channel,
    unit_normals,
)

PASCAL_LAYOUT = f"""\
<root>/                                (the extracted PASCAL_MT archive; pass it as root)
  JPEGImages/<id>.jpg
  ImageSets/Context/train.txt          one id per line
  ImageSets/Context/val.txt
  semseg/VOC12/<id>.png                0..20 classes, 255 ignore
  pascal-context/trainval/<id>.mat     'LabelMap' (edges)
  human_parts/<id>.mat                 'parts' H×W (0 bg, 1..6, 255) or PASCAL-Part 'anno'
  normals_distill/<id>.png             RGB, 2·v/255 − 1
  sal_distill/<id>.png                 gray, v/255 > 0.5
({DOCS_HINT})"""

#: PASCAL-Part class index of "person"
PERSON_CLASS = 15

#: PASCAL-Part person part names grouped into the 6 parts used for multi-task PASCAL:
#: 1 head, 2 torso, 3 upper arms, 4 lower arms + hands, 5 upper legs, 6 lower legs + feet
HUMAN_PART_GROUPS: dict[int, tuple[str, ...]] = {
    1: ("head", "hair", "lear", "rear", "lebrow", "rebrow", "leye", "reye", "nose", "mouth"),
    2: ("torso", "neck"),
    3: ("luarm", "ruarm"),
    4: ("llarm", "rlarm", "lhand", "rhand"),
    5: ("luleg", "ruleg"),
    6: ("llleg", "rlleg", "lfoot", "rfoot"),
}
PART_NAME_TO_ID: dict[str, int] = {
    name: pid for pid, names in HUMAN_PART_GROUPS.items() for name in names
}


def label_boundaries(label_map: np.ndarray, thin: bool = True) -> np.ndarray:
    """Binary edge map (uint8 {0,1}) of the places where ``label_map`` changes value.

    ``thin``: mark only the pixel whose right/lower neighbour differs (one pixel wide);
    otherwise mark both sides (every pixel with a differently labelled 4-neighbour).
    """
    lm = np.asarray(label_map)
    edge = np.zeros(lm.shape, dtype=bool)
    right = lm[:, :-1] != lm[:, 1:]
    down = lm[:-1, :] != lm[1:, :]
    edge[:, :-1] |= right
    edge[:-1, :] |= down
    if not thin:
        edge[:, 1:] |= right
        edge[1:, :] |= down
    return edge.astype(np.uint8)


def _parts_from_array(mat: dict[str, Any], path: Path, shape: tuple[int, int]) -> np.ndarray:
    parts = squeeze_channel(np.asarray(mat["parts"]), path).astype(np.int64)
    bad = np.setdiff1d(np.unique(parts), np.r_[np.arange(7), 255])
    if bad.size:
        raise DatasetLayoutError(
            f"{path}: 'parts' values must be 0 (background), 1..6 or 255, found {bad.tolist()}"
        )
    return parts.astype(np.uint8)


def _mat_str(value: Any) -> str:
    return str(np.asarray(value).squeeze())


def _parts_from_anno(mat: dict[str, Any], path: Path, shape: tuple[int, int]) -> np.ndarray:
    try:
        anno = mat["anno"][0, 0]
        objects = anno["objects"].ravel()
        target: np.ndarray | None = None
        for obj in objects:
            parts = np.asarray(obj["parts"]).ravel()
            if int(np.asarray(obj["class_ind"]).squeeze()) != PERSON_CLASS or parts.size == 0:
                continue
            if target is None:
                target = np.zeros(np.asarray(obj["mask"]).shape, dtype=np.uint8)
            for part in parts:
                name = _mat_str(part["part_name"])
                if name not in PART_NAME_TO_ID:
                    raise DatasetLayoutError(
                        f"{path}: unknown person part name {name!r}; known: "
                        f"{sorted(PART_NAME_TO_ID)}"
                    )
                target[np.asarray(part["mask"]).astype(bool)] = PART_NAME_TO_ID[name]
    except (KeyError, IndexError, ValueError, TypeError) as err:
        raise DatasetLayoutError(
            f"{path}: malformed PASCAL-Part 'anno' struct ({err}); expected "
            "anno.objects(class_ind, mask, parts(part_name, mask))"
        ) from err
    return np.full(shape, 255, np.uint8) if target is None else target


#: readers of ``human_parts/<id>.mat``, selected by the ``.mat`` variable they need:
#: ``"parts"`` — simplified schema, one H×W uint8 array named ``parts`` holding
#: 0 background, 1..6 parts and 255 ignore (e.g. images without a person);
#: ``"anno"`` — the PASCAL-Part struct: ``anno.objects`` with ``class_ind``, ``mask`` and
#: ``parts`` (``part_name``, ``mask``); person parts are grouped by
#: :data:`HUMAN_PART_GROUPS`, the rest of an image with a person is background 0, an
#: image without a person with parts is all 255.
PARTS_SCHEMAS: dict[str, Callable[[dict[str, Any], Path, tuple[int, int]], np.ndarray]] = {
    "parts": _parts_from_array,
    "anno": _parts_from_anno,
}


@DATASETS.register("pascal_context")
class PascalContext(IdListDataset):
    """PASCAL-Context multi-task set (4998 train / 5105 val in PASCAL_MT).

    ``semseg_dirs``: folders searched in order for ``<id>.png``; the default is the
    21-class ``semseg/VOC12``. Vandenhende's loader falls back to ``semseg/pascal-context``
    when the VOC12 file is absent: pass ``("semseg/VOC12", "semseg/pascal-context")`` for
    that (values outside 0..20/255 raise, naming the file). ``edge_thin``: see the module
    docstring. ``parts_schema``: ``"auto"`` (``parts`` if the .mat has it, else ``anno``)
    or a key of :data:`PARTS_SCHEMAS`.
    """

    available_tasks = ("semseg", "parts", "saliency", "normals", "edge")
    num_classes = {"semseg": 21, "parts": 7}

    #: task → (folder, file suffix); semseg folders come from ``semseg_dirs``
    FILES: dict[str, tuple[str, str]] = {
        "parts": ("human_parts", ".mat"),
        "saliency": ("sal_distill", ".png"),
        "normals": ("normals_distill", ".png"),
        "edge": ("pascal-context/trainval", ".mat"),
    }

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        tasks: Sequence[str] | None = None,
        edge_thin: bool = True,
        semseg_dirs: Sequence[str] = ("semseg/VOC12",),
        parts_schema: str = "auto",
    ) -> None:
        super().__init__(split=split, tasks=tasks)
        if parts_schema != "auto" and parts_schema not in PARTS_SCHEMAS:
            raise ValueError(
                f"parts_schema={parts_schema!r}; choose 'auto' or one of {sorted(PARTS_SCHEMAS)}"
            )
        if not semseg_dirs:
            raise ValueError("semseg_dirs must name at least one folder, e.g. 'semseg/VOC12'")
        self.root = Path(root)
        self.edge_thin = edge_thin
        self.semseg_dirs = tuple(semseg_dirs)
        self.parts_schema = parts_schema
        check_file(self.root, "PASCAL-Context dataset root", PASCAL_LAYOUT)
        self.read_ids(self.root / "ImageSets" / "Context" / f"{split}.txt", PASCAL_LAYOUT)
        check_file(self.root / "JPEGImages", "PASCAL-Context image folder", PASCAL_LAYOUT)
        self._readers: dict[str, Callable[[Path, np.ndarray], np.ndarray]] = {
            "semseg": self._read_semseg,
            "parts": self._read_parts,
            "saliency": self._read_saliency,
            "normals": self._read_normals,
            "edge": self._read_edge,
        }

    def image_path(self, index: int) -> Path:
        return self.root / "JPEGImages" / f"{self.ids[index]}.jpg"

    def task_path(self, index: int, task: str) -> Path:
        """Path of the ``task`` label file of sample ``index`` (first existing semseg dir)."""
        name = self.ids[index]
        if task == "semseg":
            candidates = [self.root / d / f"{name}.png" for d in self.semseg_dirs]
            return next((p for p in candidates if p.exists()), candidates[0])
        folder, suffix = self.FILES[task]
        return self.root / folder / f"{name}{suffix}"

    def load(self, index: int, tasks: Sequence[str]) -> dict[str, Any]:
        """Read the image and only the listed tasks' files of sample ``index``."""
        image_path = check_file(self.image_path(index), "PASCAL-Context image", PASCAL_LAYOUT)
        image = read_rgb(image_path)
        out: dict[str, Any] = {"image": image}
        for task in tasks:
            if task not in self._readers:
                raise ValueError(
                    f"PascalContext has no task {task!r}; available: {self.available_tasks}"
                )
            path = self.task_path(index, task)
            check_file(path.parent, f"PASCAL-Context {task} folder", PASCAL_LAYOUT)
            check_file(path, f"PASCAL-Context {task} file", PASCAL_LAYOUT)
            target = self._readers[task](path, image)
            check_same_size(image, image_path, target, path)
            out[task] = target
        return out

    # -- per-task readers ----------------------------------------------------------
    def _read_semseg(self, path: Path, image: np.ndarray) -> np.ndarray:
        stored = read_label_png(path)
        bad = np.setdiff1d(np.unique(stored), np.r_[np.arange(21), 255])
        if bad.size:
            raise DatasetLayoutError(
                f"{path}: semseg values must be 0..20 (VOC classes) or 255, found "
                f"{bad.tolist()}; a 59/60-class PASCAL-Context map needs a class mapping"
            )
        return stored.astype(np.uint8)

    def _read_edge(self, path: Path, image: np.ndarray) -> np.ndarray:
        mat = read_mat(path)
        if "LabelMap" not in mat:
            raise DatasetLayoutError(
                f"{path}: no 'LabelMap' variable (found {sorted(k for k in mat if not k.startswith('__'))})"
            )
        return label_boundaries(squeeze_channel(np.asarray(mat["LabelMap"]), path), self.edge_thin)

    def _read_parts(self, path: Path, image: np.ndarray) -> np.ndarray:
        mat = read_mat(path)
        schema = self.parts_schema
        if schema == "auto":
            schema = next((k for k in ("parts", "anno") if k in mat), "")
        if schema not in mat:
            raise DatasetLayoutError(
                f"{path}: expected a 'parts' H×W array or a PASCAL-Part 'anno' struct, found "
                f"variables {sorted(k for k in mat if not k.startswith('__'))}"
            )
        return PARTS_SCHEMAS[schema](mat, path, image.shape[:2])

    def _read_normals(self, path: Path, image: np.ndarray) -> np.ndarray:
        raw = read_png_uint8(path)
        if raw.ndim != 3 or raw.shape[-1] < 3:
            raise DatasetLayoutError(f"{path}: expected an RGB normals PNG, got shape {raw.shape}")
        raw = raw[..., :3]
        normals = unit_normals(2.0 * raw.astype(np.float32) / 255.0 - 1.0)
        normals[np.all(raw == 0, axis=-1)] = 0.0
        return normals

    def _read_saliency(self, path: Path, image: np.ndarray) -> np.ndarray:
        raw = read_png_uint8(path)
        if raw.ndim == 3:  # an RGB(A) saliency PNG: the maps are gray, use the first channel
            raw = raw[..., 0]
        return (raw.astype(np.float32) / 255.0 > 0.5).astype(np.uint8)
