"""Semantic segmentation: per-pixel classification over ``num_classes`` classes."""

from __future__ import annotations

from typing import ClassVar

from mtal.tasks._common import CategoricalTask


class SemsegTask(CategoricalTask):
    """Semantic segmentation: cross-entropy (255 ignored), headline mIoU.

    Per-sample loss = mean cross-entropy over the sample's labelled pixels (0 if none).
    """

    name: ClassVar[str] = "semseg"
