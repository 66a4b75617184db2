"""Saliency maxF and max IoU over binarisation thresholds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric

from mtal.metrics._common import f_measure, make_thresholds, safe_ratio


class SaliencyMetrics(Metric):
    """maxF_β and max IoU of sigmoid saliency maps over thresholds (p ≥ t is salient).

    Dataset-level: true positives, predicted positives and GT positives are summed over
    all valid (≠ 255) pixels of the dataset per threshold; P = TP / predicted,
    R = TP / GT, F_β = (1 + β²)PR / (β²P + R) (β² = ``beta2``, 0.3 by convention),
    IoU = TP / (predicted + GT − TP); every ratio is 0 when its denominator is 0. The
    reported value is the maximum over thresholds. (Vandenhende's evaluation instead
    averages per-image precision/recall over 15 thresholds in [0.2, 0.9] with β² = 1.)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self, beta2: float = 0.3, thresholds: int | Sequence[float] = 99, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if beta2 <= 0:
            raise ValueError(f"SaliencyMetrics: beta2 must be > 0, got {beta2}")
        self.beta2 = float(beta2)
        self.thresholds = make_thresholds(thresholds, "SaliencyMetrics")
        t = len(self.thresholds)
        self.add_state("tp", default=torch.zeros(t, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("pred_pos", default=torch.zeros(t, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("gt_pos", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, raw: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: ``raw`` B×1×H×W logits, ``target`` B×1×H×W in {0, 1, 255}."""
        if raw.shape != target.shape:
            raise ValueError(
                f"SaliencyMetrics: raw {tuple(raw.shape)} and target {tuple(target.shape)} "
                "must have the same B×1×H×W shape"
            )
        valid = target != 255
        prob = raw.detach().double().sigmoid()[valid]
        positive = target[valid] == 1
        th = torch.as_tensor(self.thresholds, dtype=prob.dtype, device=prob.device)
        t = len(self.thresholds)
        # level = number of thresholds ≤ p, so the pixel is salient at threshold j < level
        level = torch.searchsorted(th, prob, right=True)
        self.pred_pos += _at_least(level, t).to(self.pred_pos.device)
        self.tp += _at_least(level[positive], t).to(self.tp.device)
        self.gt_pos += positive.sum().to(self.gt_pos.device)

    def curve(self) -> dict[str, np.ndarray]:
        """Dataset-level precision, recall, F_β and IoU per threshold."""
        tp = self.tp.cpu().numpy()
        pp = self.pred_pos.cpu().numpy()
        gp = int(self.gt_pos)
        precision = safe_ratio(tp, pp)
        recall = safe_ratio(tp, np.full_like(tp, gp))
        return {
            "threshold": self.thresholds,
            "precision": precision,
            "recall": recall,
            "f": f_measure(precision, recall, self.beta2),
            "iou": safe_ratio(tp, pp + gp - tp),
        }

    def compute(self) -> dict[str, torch.Tensor]:
        curve = self.curve()
        best = int(np.argmax(curve["f"]))
        return {
            "maxf": torch.tensor(float(curve["f"][best])),
            "maxf_threshold": torch.tensor(float(self.thresholds[best])),
            "max_iou": torch.tensor(float(curve["iou"].max())),
        }


def _at_least(level: torch.Tensor, t: int) -> torch.Tensor:
    """counts[j] = #{level > j} for j < t (a reversed cumulative histogram)."""
    hist = torch.bincount(level, minlength=t + 1)
    return hist.flip(0).cumsum(0).flip(0)[1:]
