"""Surface-normal angular error statistics over every valid pixel of the dataset."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import Metric

PCT_THRESHOLDS = (11.25, 22.5, 30.0)


def angular_error_deg(pred: torch.Tensor, target: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Angle in degrees between unit vectors along ``dim``: 2·atan2(|p − t|, |p + t|)
    (accurate near 0° and 180°, unlike acos of the dot product)."""
    return torch.rad2deg(
        2.0 * torch.atan2((pred - target).norm(dim=dim), (pred + target).norm(dim=dim))
    )


class NormalsMetrics(Metric):
    """Mean, median and RMSE of the angular error (degrees) and the percentage of pixels
    under 11.25°, 22.5° and 30°, pooled over all valid pixels (target norm > 0).

    Mean, RMSE and percentages are exact sums. The median comes from a histogram of
    ``bin_width``-degree bins (default 0.01°, 18 000 bins) with linear interpolation
    inside the median bin, so it is within one bin width of the exact median while the
    state stays fixed-size and summable across processes.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, bin_width: float = 0.01, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bin_width = float(bin_width)
        self.num_bins = int(math.ceil(180.0 / self.bin_width))
        self.add_state(
            "hist", default=torch.zeros(self.num_bins, dtype=torch.long), dist_reduce_fx="sum"
        )
        for name in ("sum", "sum_sq"):
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state(
            "below",
            default=torch.zeros(len(PCT_THRESHOLDS), dtype=torch.long),
            dist_reduce_fx="sum",
        )

    def update(self, raw: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: ``raw`` B×3×H×W (normalised here), ``target`` B×3×H×W."""
        if raw.shape != target.shape or raw.dim() != 4 or raw.shape[1] != 3:
            raise ValueError(
                f"NormalsMetrics: raw {tuple(raw.shape)} and target {tuple(target.shape)} "
                "must both be B×3×H×W"
            )
        valid = target.norm(dim=1) > 0
        pred = F.normalize(raw.detach().double(), dim=1)
        gt = F.normalize(target.double(), dim=1)
        angle = angular_error_deg(pred, gt)[valid]
        self.sum += angle.sum()
        self.sum_sq += angle.square().sum()
        self.count += angle.numel()
        idx = (angle / self.bin_width).long().clamp(0, self.num_bins - 1)
        self.hist += torch.bincount(idx, minlength=self.num_bins).to(self.hist.device)
        limits = angle.new_tensor(PCT_THRESHOLDS)
        self.below += (angle.unsqueeze(1) < limits).sum(0).to(self.below.device)

    def _median(self) -> torch.Tensor:
        cum = self.hist.cumsum(0)
        half = self.count.double() / 2.0
        k = int(torch.searchsorted(cum.double(), half.unsqueeze(0)).item())
        before = cum[k - 1].double() if k > 0 else half.new_zeros(())
        in_bin = self.hist[k].double().clamp(min=1)
        return (k + (half - before) / in_bin) * self.bin_width

    def compute(self) -> dict[str, torch.Tensor]:
        if self.count == 0:
            nan = torch.tensor(float("nan"))
            keys = ["mean", "median", "rmse"] + [_pct_key(t) for t in PCT_THRESHOLDS]
            return {k: nan.clone() for k in keys}
        n = self.count.double()
        out = {
            "mean": (self.sum / n).float(),
            "median": self._median().float(),
            "rmse": (self.sum_sq / n).sqrt().float(),
        }
        for i, t in enumerate(PCT_THRESHOLDS):
            out[_pct_key(t)] = (100.0 * self.below[i].double() / n).float()
        return out


def _pct_key(threshold: float) -> str:
    """Result key of the percentage under ``threshold`` degrees: 11.25 → "pct_11_25"."""
    return "pct_" + f"{threshold:g}".replace(".", "_")
