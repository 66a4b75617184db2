"""Human-part segmentation (PASCAL-Context parts): P part classes plus background."""

from __future__ import annotations

from typing import ClassVar

from mtal.tasks._common import CategoricalTask


class PartsTask(CategoricalTask):
    """Human parts: cross-entropy over ``num_classes`` = P + 1 (background included),
    255 ignored, headline mIoU; same rules as semseg."""

    name: ClassVar[str] = "parts"
