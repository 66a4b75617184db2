"""Detection mAP: torchmetrics' ``MeanAveragePrecision`` on decoded dense-head outputs.

The COCO protocol (AP averaged over IoU 0.50:0.05:0.95, up to 100 detections) with the
``pycocotools`` backend (pinned in setup.cfg; ``faster_coco_eval`` is accepted too).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchmetrics.detection import MeanAveragePrecision


class DetectionMAP(MeanAveragePrecision):
    """``update(raw, targets)``: decodes ``raw`` with the boxes task, then feeds
    ``MeanAveragePrecision`` (xyxy boxes, labels = detection class indices)."""

    def __init__(self, task: Any, backend: str = "pycocotools", **kwargs: Any) -> None:
        super().__init__(box_format="xyxy", iou_type="bbox", backend=backend, **kwargs)
        self._task = task

    def update(self, raw: torch.Tensor, targets: Sequence[dict[str, torch.Tensor]]) -> None:  # type: ignore[override]
        """Decode ``raw`` (B×(C_det+6)×h×w) and add the images with their ground truth."""
        dets = self._task.decode(raw.detach())
        preds = [{k: d[k] for k in ("boxes", "scores", "labels")} for d in dets]
        gts = [{"boxes": t["boxes"].float(), "labels": t["labels"].long()} for t in targets]
        super().update(preds, gts)

    def compute(self) -> dict[str, torch.Tensor]:
        """``map``, ``map_50``, ``map_75``, ``map_small|medium|large``, ``mar_1|10|100``, ...
        (scalars; the per-class entries, off with ``class_metrics=False``, are dropped)."""
        out = super().compute()
        return {
            k: v
            for k, v in out.items()
            if torch.as_tensor(v).numel() == 1 and not k.endswith("_per_class")
        }
