"""Joint augmentations that keep an image and all its dense targets aligned, and the
conversion of a numpy sample to tensors.

A sample is the dict a :class:`~mtal.data.base.MultiTaskDataset` returns: ``"image"``
H×W×3 uint8 plus any of ``semseg``/``parts``/``edge``/``saliency`` (H×W label maps),
``depth`` (H×W float32, 0 invalid), ``normals`` (H×W×3 float32, zero vector invalid),
``boxes`` (N×4 xyxy pixels) with ``box_labels`` (N).

Choices (documented, and options where it matters):

- Label maps **and depth and normals** are resized with nearest-neighbour
  interpolation, so an invalid depth of 0 is never blended into its valid neighbours
  and normals stay unit vectors. It is OpenCV's pixel-centre-aligned
  ``INTER_NEAREST_EXACT``: plain ``INTER_NEAREST`` is shifted by up to half a source
  pixel against the bilinear image, which misaligns labels and image after a rescale.
  The image uses bilinear interpolation.
- Pixels created by padding carry each target's ignore value: 255 for label maps,
  0 for depth and the zero vector for normals (the image is padded with 0).
- The horizontal flip is applied by this module (not by albumentations) with a seeded
  decision, because flipping surface normals must also negate their x component.
- Thin edge maps can lose pixels when strongly downscaled with nearest interpolation;
  keep ``scale`` near 1 for edge detection if that matters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import albumentations as A
import cv2
import numpy as np

if TYPE_CHECKING:
    import torch

    from mtal.tasks.base import Task

__all__ = [
    "BOX_TASK",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LABEL_MAP_KEYS",
    "PAD_VALUES",
    "DenseTransform",
    "empty_box_target",
    "hflip_sample",
    "normalise_image",
    "to_tensors",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: dense target keys and the value that marks padded / ignored pixels
PAD_VALUES: dict[str, float] = {
    "semseg": 255,
    "parts": 255,
    "edge": 255,
    "saliency": 255,
    "depth": 0.0,
    "normals": 0.0,
}
LABEL_MAP_KEYS = ("semseg", "parts", "edge", "saliency")
_VALID = "_valid"
#: the detection task: its target is a box list, not a map
BOX_TASK = "boxes"
#: keys that are not dense maps and pass through albumentations' bbox machinery
_BOX_KEYS = (BOX_TASK, "box_labels")


def hflip_sample(sample: Mapping[str, Any]) -> dict[str, Any]:
    """Mirror a sample left↔right: every map is flipped, normals' x component is
    negated, and boxes ``x1, x2`` become ``W − x2, W − x1``."""
    out: dict[str, Any] = dict(sample)
    width = int(np.asarray(sample["image"]).shape[1])
    for key, value in sample.items():
        if key in _BOX_KEYS:
            continue
        arr = np.asarray(value)
        if arr.ndim >= 2:
            out[key] = np.ascontiguousarray(arr[:, ::-1])
    if "normals" in out:
        normals = np.array(out["normals"], dtype=np.float32, copy=True)
        normals[..., 0] = -normals[..., 0]
        normals[normals == 0] = 0.0  # no negative zeros in invalid vectors
        out["normals"] = normals
    if "boxes" in sample:
        boxes = np.asarray(sample["boxes"], dtype=np.float32).reshape(-1, 4).copy()
        x1 = boxes[:, 0].copy()
        boxes[:, 0] = width - boxes[:, 2]
        boxes[:, 2] = width - x1
        out["boxes"] = boxes
    return out


class DenseTransform:
    """Seeded joint transform for a multi-task sample.

    ``train=True``: (optionally) resize to ``size``, random rescale by a factor drawn
    uniformly from ``scale``, pad with ignore values to ``size`` and random-crop
    ``size``, then horizontal flip with probability ``flip_prob``. ``train=False``:
    resize to ``size`` when given, else identity. With ``size=None`` in training the
    crop has the sample's own size. ``base_resize=False`` crops at native resolution
    (the NYUD/PASCAL protocol of cropping e.g. 425×560 from 480×640).
    Call as ``transform(sample, seed)``: the same seed gives the same output.
    """

    def __init__(
        self,
        size: tuple[int, int] | Sequence[int] | None = None,
        *,
        train: bool = True,
        scale: tuple[float, float] = (0.75, 1.5),
        flip_prob: float = 0.5,
        base_resize: bool = True,
    ) -> None:
        self.size = None if size is None else (int(size[0]), int(size[1]))
        if self.size is not None and min(self.size) <= 0:
            raise ValueError(f"DenseTransform: size must be positive (H, W), got {size}")
        if not 0 < scale[0] <= scale[1]:
            raise ValueError(
                f"DenseTransform: scale must be (low, high) with 0 < low <= high, got {scale}"
            )
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f"DenseTransform: flip_prob must be in [0, 1], got {flip_prob}")
        self.train = bool(train)
        self.scale = (float(scale[0]), float(scale[1]))
        self.flip_prob = float(flip_prob)
        self.base_resize = bool(base_resize)
        self._pipelines: dict[tuple[Any, ...], A.Compose] = {}

    def __repr__(self) -> str:
        return (
            f"DenseTransform(size={self.size}, train={self.train}, scale={self.scale}, "
            f"flip_prob={self.flip_prob}, base_resize={self.base_resize})"
        )

    # -- pipeline construction -----------------------------------------------------
    def _pipeline(self, out_hw: tuple[int, int], keys: tuple[str, ...], boxes: bool) -> A.Compose:
        cache_key = (out_hw, keys, boxes)
        if cache_key in self._pipelines:
            return self._pipelines[cache_key]
        h, w = out_hw
        ops: list[Any] = []
        if self.train:
            if self.base_resize and self.size is not None:
                ops.append(
                    A.Resize(
                        h,
                        w,
                        interpolation=cv2.INTER_LINEAR,
                        mask_interpolation=cv2.INTER_NEAREST_EXACT,
                    )
                )
            if self.scale != (1.0, 1.0):
                ops.append(
                    A.RandomScale(
                        scale_limit=(self.scale[0] - 1.0, self.scale[1] - 1.0),
                        interpolation=cv2.INTER_LINEAR,
                        mask_interpolation=cv2.INTER_NEAREST_EXACT,
                        p=1.0,
                    )
                )
            ops.append(
                A.PadIfNeeded(
                    min_height=h,
                    min_width=w,
                    position="center",
                    border_mode=cv2.BORDER_CONSTANT,
                    fill=0,
                    fill_mask=0,
                )
            )
            ops.append(A.RandomCrop(h, w))
        else:
            ops.append(
                A.Resize(
                    h, w, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST_EXACT
                )
            )
        bbox_params = (
            A.BboxParams(format="pascal_voc", label_fields=["box_labels"], clip=True)
            if boxes
            else None
        )
        pipeline = A.Compose(
            ops,
            bbox_params=bbox_params,
            additional_targets={k: "mask" for k in keys},
            mask_interpolation=cv2.INTER_NEAREST_EXACT,
        )
        self._pipelines[cache_key] = pipeline
        return pipeline

    # -- application --------------------------------------------------------------
    def __call__(self, sample: Mapping[str, Any], seed: int | None = None) -> dict[str, Any]:
        """Transform ``sample`` (not modified in place); ``seed`` fixes every random draw."""
        if "image" not in sample:
            raise KeyError("DenseTransform: the sample has no 'image'")
        image = np.asarray(sample["image"])
        in_hw = (int(image.shape[0]), int(image.shape[1]))
        out_hw = self.size if self.size is not None else in_hw
        rng = np.random.default_rng(seed)
        if not self.train and out_hw == in_hw:
            return dict(sample)
        dense = tuple(
            k for k in sample if k not in ("image", *_BOX_KEYS) and np.asarray(sample[k]).ndim >= 2
        )
        for key in dense:
            if np.asarray(sample[key]).shape[:2] != in_hw:
                raise ValueError(
                    f"DenseTransform: target {key!r} has shape {np.asarray(sample[key]).shape}, "
                    f"the image is {in_hw}; every map must match the image size"
                )
        has_boxes = "boxes" in sample
        keys = (*dense, _VALID)
        pipeline = self._pipeline(out_hw, keys, has_boxes)
        pipeline.set_random_seed(int(rng.integers(0, 2**31 - 1)))
        inputs: dict[str, Any] = {"image": image}
        for key in dense:
            inputs[key] = np.asarray(sample[key])
        inputs[_VALID] = np.ones(in_hw, dtype=np.uint8)
        if has_boxes:
            inputs["bboxes"] = np.asarray(sample["boxes"], dtype=np.float32).reshape(-1, 4)
            labels = sample.get("box_labels")
            if labels is None:
                raise KeyError("DenseTransform: a sample with 'boxes' needs 'box_labels'")
            inputs["box_labels"] = np.asarray(labels, dtype=np.int64).reshape(-1)
        result = pipeline(**inputs)
        out: dict[str, Any] = dict(sample)
        out["image"] = result["image"]
        padded = result[_VALID] == 0
        for key in dense:
            arr = np.asarray(result[key])
            if key in PAD_VALUES and padded.any():
                arr = arr.copy()
                arr[padded] = PAD_VALUES[key]
            out[key] = arr
        if has_boxes:
            out["boxes"] = np.asarray(result["bboxes"], dtype=np.float32).reshape(-1, 4)
            out["box_labels"] = np.asarray(result["box_labels"], dtype=np.int64).reshape(-1)
        if self.train and rng.random() < self.flip_prob:
            out = hflip_sample(out)
        return out


def normalise_image(image: np.ndarray) -> torch.Tensor:
    """H×W×3 uint8 RGB → float32 3×H×W tensor normalised with ImageNet mean/std."""
    import torch

    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"normalise_image: expected an H×W×3 RGB image, got shape {arr.shape}")
    x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)
    return ((x - mean) / std).contiguous()


def empty_box_target() -> dict[str, torch.Tensor]:
    """The "no label" detection target: zero boxes."""
    import torch

    return {
        "boxes": torch.zeros((0, 4), dtype=torch.float32),
        "labels": torch.zeros(0, dtype=torch.int64),
    }


def to_tensors(sample: Mapping[str, Any], tasks: Mapping[str, Task]) -> dict[str, Any]:
    """Convert a (transformed) numpy sample to ``{"image": 3×H×W, "targets": {...}}``.

    Only tasks both in ``tasks`` and in the sample are converted, with
    ``task.target_from_numpy``; a ``boxes`` target becomes
    ``{"boxes": float32 N×4, "labels": int64 N}`` (detection targets are lists, not maps),
    through ``task.target_from_boxes`` when the task has it (class-id mapping).
    """
    import torch

    out: dict[str, Any] = {"image": normalise_image(sample["image"]), "targets": {}}
    for name, task in tasks.items():
        if name not in sample:
            continue
        if name == BOX_TASK:
            boxes = np.asarray(sample[BOX_TASK], dtype=np.float32).reshape(-1, 4)
            labels = np.asarray(sample.get("box_labels", np.zeros(0)), dtype=np.int64).reshape(-1)
            if hasattr(task, "target_from_boxes"):  # maps seg class ids to detection classes
                out["targets"][name] = task.target_from_boxes(boxes, labels)
                continue
            out["targets"][name] = {
                "boxes": torch.from_numpy(boxes.copy()),
                "labels": torch.from_numpy(labels.copy()),
            }
        else:
            out["targets"][name] = task.target_from_numpy(np.ascontiguousarray(sample[name]))
    return out
