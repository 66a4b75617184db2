"""Mean intersection-over-union from a confusion matrix pooled over the dataset."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import Metric

ABSENT_RULES = ("ignore", "one", "zero")


class MeanIoU(Metric):
    """mIoU and pixel accuracy of argmax(raw) against int targets (B×H×W, ``ignore_index``
    skipped), from one confusion matrix summed over all images (not a per-image mean).

    ``absent`` sets what a class absent from both prediction and ground truth (union 0)
    contributes: "ignore" (default) leaves it out of the mean, "one" counts it as IoU 1,
    "zero" as IoU 0. ``per_class=True`` adds ``iou_<c>`` keys (NaN for absent classes).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        absent: str = "ignore",
        per_class: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if absent not in ABSENT_RULES:
            raise ValueError(f"MeanIoU: absent={absent!r} is not one of {list(ABSENT_RULES)}")
        if num_classes < 1:
            raise ValueError(f"MeanIoU: num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.absent = absent
        self.per_class = per_class
        n = self.num_classes
        self.add_state("confmat", default=torch.zeros(n, n, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, raw: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: ``raw`` B×C×H×W logits, ``target`` B×H×W class indices."""
        if raw.dim() != 4 or raw.shape[1] != self.num_classes:
            raise ValueError(
                f"MeanIoU: raw must be B×{self.num_classes}×H×W, got {tuple(raw.shape)}"
            )
        pred = raw.argmax(1).flatten()
        gt = target.flatten().long()
        keep = gt != self.ignore_index
        pred, gt = pred[keep], gt[keep]
        if gt.numel() and bool(((gt < 0) | (gt >= self.num_classes)).any()):
            bad = gt[(gt < 0) | (gt >= self.num_classes)].unique()[:10].tolist()
            raise ValueError(
                f"MeanIoU: target classes {bad} outside 0..{self.num_classes - 1} "
                f"(ignore_index={self.ignore_index}); check num_classes"
            )
        n = self.num_classes
        counts = torch.bincount(gt * n + pred, minlength=n * n)
        self.confmat += counts.view(n, n).to(self.confmat.device)

    def class_iou(self) -> torch.Tensor:
        """IoU per class (float64), NaN where the class is absent from GT and prediction."""
        cm = self.confmat.double()
        inter = cm.diag()
        union = cm.sum(0) + cm.sum(1) - inter
        nan = torch.full_like(inter, float("nan"))
        return torch.where(union > 0, inter / union.clamp(min=1), nan)

    def compute(self) -> dict[str, torch.Tensor]:
        iou = self.class_iou()
        absent = torch.isnan(iou)
        if self.absent == "ignore":
            present = iou[~absent]
            miou = present.mean() if present.numel() else iou.new_tensor(float("nan"))
        else:
            fill = 1.0 if self.absent == "one" else 0.0
            miou = torch.where(absent, torch.full_like(iou, fill), iou).mean()
        cm = self.confmat.double()
        total = cm.sum()
        acc = cm.diag().sum() / total if total > 0 else cm.new_tensor(float("nan"))
        out = {"miou": miou.float(), "pixel_acc": acc.float()}
        if self.per_class:
            out.update({f"iou_{c}": iou[c].float() for c in range(self.num_classes)})
        return out
