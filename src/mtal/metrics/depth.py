"""Depth metrics pooled over every valid pixel of the dataset."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import Metric


class DepthMetrics(Metric):
    """RMSE, log-RMSE, absolute relative error and absolute error ``abs_err`` (mtan's and
    MTPSL's aErr) of raw depth (metres) against targets
    (B×1×H×W, 0 = invalid).

    Pooled: each is Σ over all valid pixels of the dataset / their count (then √ for the
    RMSEs), as Vandenhende's ``DepthMeter``; this weights large images more than a
    per-image mean would. Predictions are floored at ``min_depth`` before the log.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, min_depth: float = 1e-9, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.min_depth = float(min_depth)
        for name in ("sq_err", "sq_log_err", "abs_rel", "abs_err", "count"):
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, raw: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of raw depth predictions and targets (same shape)."""
        if raw.shape != target.shape:
            raise ValueError(
                f"DepthMetrics: raw {tuple(raw.shape)} and target {tuple(target.shape)} "
                "must have the same B×1×H×W shape"
            )
        valid = target > 0
        pred = raw.detach().double()[valid]
        gt = target.double()[valid]
        diff = pred - gt
        log_diff = pred.clamp(min=self.min_depth).log() - gt.log()
        self.sq_err += diff.square().sum()
        self.sq_log_err += log_diff.square().sum()
        self.abs_rel += (diff.abs() / gt).sum()
        self.abs_err += diff.abs().sum()
        self.count += valid.sum()

    def compute(self) -> dict[str, torch.Tensor]:
        n = self.count
        if n == 0:
            nan = torch.tensor(float("nan"))
            return {
                "rmse": nan,
                "log_rmse": nan.clone(),
                "abs_rel": nan.clone(),
                "abs_err": nan.clone(),
            }
        return {
            "rmse": (self.sq_err / n).sqrt().float(),
            "log_rmse": (self.sq_log_err / n).sqrt().float(),
            "abs_rel": (self.abs_rel / n).float(),
            "abs_err": (self.abs_err / n).float(),
        }
