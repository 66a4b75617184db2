"""Writers that save any multi-task source in the exact on-disk formats of the real
datasets (NYUD_MT, PASCAL_MT, mtan NYUv2-13 / Cityscapes-7), for tests and demos.

``source`` is anything with ``load(i, tasks) -> dict[str, np.ndarray]`` in the
:class:`mtal.data.base.MultiTaskDataset` layouts (``available_tasks`` is used when
present). Samples ``0..n_train-1`` go to ``train``, the next ``n_val`` to ``val``.

Class mapping into the target range (documented, deterministic): a semseg/parts value
``v`` that is not 255 becomes ``v % C`` (C = the dataset's class count); 255 stays ignore
(or the format's void code). Values a format cannot hold are dropped: NYUD binary edges and
PASCAL saliency PNGs have no ignore code (255 → 0); anno-style parts have no ignore.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mtal.data.pascal_context import HUMAN_PART_GROUPS, PERSON_CLASS


class SampleSource(Protocol):
    """What the writers need: ``len`` and ``load(i, tasks)``."""

    def __len__(self) -> int: ...

    def load(self, index: int, tasks: Sequence[str]) -> dict[str, Any]: ...


# ----------------------------------------------------------------------------------
# small format helpers
# ----------------------------------------------------------------------------------


def voc_palette() -> list[int]:
    """The 256-entry PASCAL VOC colour map (bit-interleaved), flattened RGB."""
    palette: list[int] = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def save_jpg(path: Path, image: np.ndarray, quality: int = 95) -> None:
    """Save an H×W×3 uint8 RGB image as JPEG."""
    from PIL import Image

    Image.fromarray(np.asarray(image, dtype=np.uint8), mode="RGB").save(path, quality=quality)


def save_png(path: Path, array: np.ndarray, palette: list[int] | None = None) -> None:
    """Save a uint8 H×W (gray, or palette-indexed when ``palette`` is given) or H×W×3
    array as PNG."""
    from PIL import Image

    im = Image.fromarray(np.asarray(array, dtype=np.uint8))
    if palette is not None:  # an L image becomes a P image holding the same indices
        im.putpalette(palette)
    im.save(path)


def save_mat(path: Path, variables: dict[str, Any]) -> None:
    """Save variables to a MATLAB v5 ``.mat`` file."""
    from scipy.io import savemat

    savemat(path, variables, format="5", do_compression=True)


def map_classes(label: np.ndarray, num_classes: int) -> np.ndarray:
    """``v % num_classes`` for every non-255 value; 255 stays 255 (int64 array)."""
    label = np.asarray(label).astype(np.int64)
    return np.where(label == 255, 255, label % num_classes)


def encode_normals_png(normals: np.ndarray) -> np.ndarray:
    """Unit normals → uint8 RGB ``round((n + 1) / 2 · 255)``; zero vectors → (0, 0, 0)."""
    n = np.asarray(normals, dtype=np.float32)
    png = np.clip(np.rint((n + 1.0) / 2.0 * 255.0), 0, 255).astype(np.uint8)
    png[np.linalg.norm(n, axis=-1) < 0.5] = 0
    return png


def parts_anno_struct(parts: np.ndarray) -> dict[str, Any]:
    """A PASCAL-Part style ``anno`` struct holding one person whose parts are the non-zero,
    non-255 values of ``parts`` (each group id written under its first part name)."""
    objects_dtype = [("class", "O"), ("class_ind", "O"), ("mask", "O"), ("parts", "O")]
    part_dtype = [("part_name", "O"), ("mask", "O")]
    parts = np.asarray(parts)
    ids = [int(v) for v in np.unique(parts) if 0 < v < 255]
    objects = np.zeros((1, 1 if ids else 0), dtype=objects_dtype)
    if ids:
        part_arr = np.zeros((1, len(ids)), dtype=part_dtype)
        for j, pid in enumerate(ids):
            part_arr[0, j] = (HUMAN_PART_GROUPS[pid][0], (parts == pid).astype(np.uint8))
        person = ((parts > 0) & (parts < 255)).astype(np.uint8)
        objects[0, 0] = ("person", np.array([[PERSON_CLASS]], dtype=np.uint8), person, part_arr)
    anno = np.zeros((1, 1), dtype=[("imname", "O"), ("objects", "O")])
    anno[0, 0] = ("fixture", objects)
    return {"anno": anno}


def _tasks_of(source: SampleSource, wanted: Sequence[str]) -> list[str]:
    have = getattr(source, "available_tasks", None)
    return [t for t in wanted if have is None or t in have]


def _split_indices(source: SampleSource, n_train: int, n_val: int) -> dict[str, list[int]]:
    if n_train < 0 or n_val < 0 or n_train + n_val > len(source):
        raise ValueError(
            f"n_train={n_train} + n_val={n_val} must be >= 0 and fit the source's "
            f"{len(source)} samples"
        )
    return {"train": list(range(n_train)), "val": list(range(n_train, n_train + n_val))}


def _mkdirs(root: Path, folders: Sequence[str]) -> None:
    for folder in folders:
        (root / folder).mkdir(parents=True, exist_ok=True)


# ----------------------------------------------------------------------------------
# writers
# ----------------------------------------------------------------------------------


def write_nyud(
    root: str | Path, source: SampleSource, n_train: int, n_val: int
) -> dict[str, list[str]]:
    """Write ``source`` in the NYUD_MT layout; returns split → ids (source index ``i`` has
    id ``f"{i:06d}"``). semseg stored ``v % 40 + 1`` (void 0)."""
    root = Path(root)
    tasks = _tasks_of(source, ("semseg", "depth", "normals", "edge"))
    folder = {"semseg": "segmentation", "depth": "depth", "normals": "normals", "edge": "edge"}
    _mkdirs(root, ["images", "gt_sets", *(folder[t] for t in tasks)])
    writers: dict[str, Callable[[str, np.ndarray], None]] = {
        "semseg": lambda i, a: save_png(
            root / "segmentation" / f"{i}.png",
            np.where((m := map_classes(a, 40)) == 255, 0, m + 1),
        ),
        "depth": lambda i, a: np.save(root / "depth" / f"{i}.npy", np.asarray(a, np.float32)),
        "normals": lambda i, a: np.save(root / "normals" / f"{i}.npy", np.asarray(a, np.float32)),
        "edge": lambda i, a: np.save(
            root / "edge" / f"{i}.npy", (np.asarray(a) == 1).astype(np.float32)
        ),
    }
    out: dict[str, list[str]] = {}
    for split, indices in _split_indices(source, n_train, n_val).items():
        ids = [f"{i:06d}" for i in indices]
        for i, name in zip(indices, ids):
            sample = source.load(i, tasks)
            save_jpg(root / "images" / f"{name}.jpg", sample["image"])
            for task in tasks:
                writers[task](name, sample[task])
        (root / "gt_sets" / f"{split}.txt").write_text("".join(f"{n}\n" for n in ids))
        out[split] = ids
    return out


def write_pascal_context(
    root: str | Path,
    source: SampleSource,
    n_train: int,
    n_val: int,
    parts_schema: str = "parts",
) -> dict[str, list[str]]:
    """Write ``source`` in the PASCAL_MT layout; returns split → ids (``f"2008_{i:06d}"``).

    semseg ``v % 21`` (palette PNG); the edge file's ``LabelMap`` is the source's raw semseg
    (so edges are its label boundaries); parts ``v % 7`` as a ``parts`` array, or as a
    PASCAL-Part ``anno`` struct with ``parts_schema="anno"``.
    """
    if parts_schema not in ("parts", "anno"):
        raise ValueError(f"parts_schema={parts_schema!r}; choose 'parts' or 'anno'")
    root = Path(root)
    wanted = ["semseg", "parts", "saliency", "normals"]
    tasks = _tasks_of(source, wanted)
    folders = {
        "semseg": "semseg/VOC12",
        "parts": "human_parts",
        "saliency": "sal_distill",
        "normals": "normals_distill",
    }
    _mkdirs(root, ["JPEGImages", "ImageSets/Context", *(folders[t] for t in tasks)])
    if "semseg" in tasks:
        _mkdirs(root, ["pascal-context/trainval"])
    palette = voc_palette()

    def write_semseg(name: str, a: np.ndarray) -> None:
        save_png(root / "semseg/VOC12" / f"{name}.png", map_classes(a, 21), palette)
        label_map = np.asarray(a).astype(np.uint16)
        save_mat(root / "pascal-context/trainval" / f"{name}.mat", {"LabelMap": label_map})

    def write_parts(name: str, a: np.ndarray) -> None:
        parts = map_classes(a, 7).astype(np.uint8)
        variables = {"parts": parts} if parts_schema == "parts" else parts_anno_struct(parts)
        save_mat(root / "human_parts" / f"{name}.mat", variables)

    writers: dict[str, Callable[[str, np.ndarray], None]] = {
        "semseg": write_semseg,
        "parts": write_parts,
        "saliency": lambda n, a: save_png(
            root / "sal_distill" / f"{n}.png", np.where(np.asarray(a) == 1, 255, 0)
        ),
        "normals": lambda n, a: save_png(
            root / "normals_distill" / f"{n}.png", encode_normals_png(a)
        ),
    }
    out: dict[str, list[str]] = {}
    for split, indices in _split_indices(source, n_train, n_val).items():
        ids = [f"2008_{i:06d}" for i in indices]
        for i, name in zip(indices, ids):
            sample = source.load(i, tasks)
            save_jpg(root / "JPEGImages" / f"{name}.jpg", sample["image"])
            for task in tasks:
                writers[task](name, sample[task])
        (root / "ImageSets/Context" / f"{split}.txt").write_text("".join(f"{n}\n" for n in ids))
        out[split] = ids
    return out


#: per mtan kind: (class count, label folder, tasks)
MTAN_KINDS: dict[str, tuple[int, str, tuple[str, ...]]] = {
    "nyuv2_13": (13, "label", ("semseg", "depth", "normals")),
    "cityscapes_7": (7, "label_7", ("semseg", "depth")),
}


def write_mtan(
    root: str | Path,
    source: SampleSource,
    n_train: int,
    n_val: int,
    kind: str = "nyuv2_13",
    label_dir: str | None = None,
) -> dict[str, list[int]]:
    """Write ``source`` in the mtan ``.npy`` layout of ``kind``; returns split → the
    source indices in file order (files are numbered 0.. per split, as mtan does).

    image float32 H×W×3 = uint8/255; label float32 ``v % C`` with 255 → −1; depth float32
    H×W×1; normal float32 H×W×3. ``label_dir`` overrides the label folder name.
    """
    if kind not in MTAN_KINDS:
        raise ValueError(f"kind={kind!r}; choose one of {sorted(MTAN_KINDS)}")
    num_classes, default_label_dir, kind_tasks = MTAN_KINDS[kind]
    folder = {"semseg": label_dir or default_label_dir, "depth": "depth", "normals": "normal"}
    root = Path(root)
    tasks = _tasks_of(source, kind_tasks)
    converters: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "semseg": lambda a: np.where((m := map_classes(a, num_classes)) == 255, -1, m).astype(
            np.float32
        ),
        "depth": lambda a: np.asarray(a, np.float32)[..., None],
        "normals": lambda a: np.asarray(a, np.float32),
    }
    splits = _split_indices(source, n_train, n_val)
    for split, indices in splits.items():
        base = root / split
        _mkdirs(base, ["image", *(folder[t] for t in tasks)])
        for k, i in enumerate(indices):
            sample = source.load(i, tasks)
            image = np.asarray(sample["image"], np.float32) / 255.0
            np.save(base / "image" / f"{k}.npy", image)
            for task in tasks:
                np.save(base / folder[task] / f"{k}.npy", converters[task](sample[task]))
    return splits


def _detseg_writer(name: str) -> Callable[..., Any]:
    """The nuImages / A9 writer of :mod:`mtal.data.fixtures_detseg` (imported on call)."""

    def write(root: str | Path, source: SampleSource, n_train: int, n_val: int) -> Any:
        from mtal.data import fixtures_detseg

        return getattr(fixtures_detseg, f"write_{name}")(root, source, n_train, n_val)

    return write


#: dataset name → fixture writer with the ``(root, source, n_train, n_val)`` signature
FIXTURE_WRITERS: dict[str, Callable[..., Any]] = {
    "nuimages": _detseg_writer("nuimages"),
    "a9": _detseg_writer("a9"),
    "nyud": write_nyud,
    "pascal_context": write_pascal_context,
    "nyuv2_13": partial(write_mtan, kind="nyuv2_13"),
    "cityscapes_7": partial(write_mtan, kind="cityscapes_7"),
}


def write_synthetic_fixture(
    dataset: str,
    root: str | Path,
    n_train: int = 4,
    n_val: int = 2,
    size: tuple[int, int] = (48, 64),
    seed: int = 0,
) -> tuple[Any, Any]:
    """Render ``mtal.data.synthetic.SyntheticScenes`` into ``root`` in ``dataset``'s format
    and return ``(source, written)`` (the synthetic source and the writer's split map)."""
    if dataset not in FIXTURE_WRITERS:
        raise ValueError(f"no fixture writer for {dataset!r}; known: {sorted(FIXTURE_WRITERS)}")
    from mtal.data.synthetic import SyntheticScenes

    source = SyntheticScenes("train", size=size, length=n_train + n_val, seed=seed)
    return source, FIXTURE_WRITERS[dataset](root, source, n_train, n_val)
