"""Monocular depth: masked L1 regression in metres (target 0 = invalid)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from mtal.tasks._common import (
    OptionsTask,
    as_array,
    check_raw,
    check_samples,
    gaussian_entropy,
    masked_mean,
    mc_variance,
)


class DepthTask(OptionsTask):
    """Depth: raw output = metres (identity activation), masked L1 loss, headline RMSE.

    Valid pixels are those with a positive, finite target (0 marks invalid). The
    discrepancy is the L1 between the two predictions over all pixels. MC uncertainty is
    the mean pixel Gaussian differential entropy ½·log(2πe·σ²) of the unbiased MC
    variance, floored at option ``var_floor`` (default 1e-6). Option ``min_depth`` is the
    floor applied to predictions before the log in the metric's log-RMSE.
    """

    name: ClassVar[str] = "depth"
    kind: ClassVar[str] = "regression"
    default_options: ClassVar[dict[str, Any]] = {"var_floor": 1e-6, "min_depth": 1e-9}

    @property
    def out_channels(self) -> int:
        return 1

    @property
    def ignore_value(self) -> float:
        return 0.0

    def empty_target(self, height: int, width: int) -> torch.Tensor:
        return torch.zeros((1, height, width), dtype=torch.float32)

    def target_from_numpy(self, array: np.ndarray) -> torch.Tensor:
        arr = as_array(array, self.name)
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim != 2:
            raise ValueError(f"task 'depth': expected an H×W depth map, got shape {arr.shape}")
        out = torch.from_numpy(arr.astype(np.float32, copy=True))
        out = torch.where(torch.isfinite(out), out, torch.zeros_like(out))
        return out.unsqueeze(0)

    def valid_mask(self, target: torch.Tensor) -> torch.Tensor:
        return (target > 0).squeeze(-3)

    def activate(self, raw: torch.Tensor) -> torch.Tensor:
        return raw

    def encode_target(self, target: torch.Tensor) -> torch.Tensor:
        """Identity (invalid pixels are already 0)."""
        return torch.where(target > 0, target, torch.zeros_like(target)).float()

    def loss(self, raw: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_raw(self, raw)
        valid = self.valid_mask(target)
        safe = torch.where(valid, target.squeeze(-3), target.new_zeros(()))
        return masked_mean((raw.squeeze(-3) - safe).abs(), valid)

    def discrepancy(self, raw: torch.Tensor, other_raw: torch.Tensor) -> torch.Tensor:
        check_raw(self, raw)
        check_raw(self, other_raw, "other_raw")
        return (raw - other_raw.detach()).abs().flatten(1).mean(1)

    def mc_uncertainty(self, raw_samples: torch.Tensor) -> torch.Tensor:
        check_samples(self, raw_samples)
        var = mc_variance(raw_samples)  # B×1×H×W
        entropy = gaussian_entropy(var, self.options["var_floor"], dim=1)
        return entropy.flatten(1).mean(1)

    def metric(self) -> Any:
        from mtal.metrics import DepthMetrics

        return DepthMetrics(min_depth=self.options["min_depth"])

    @property
    def headline(self) -> tuple[str, bool]:
        return ("rmse", False)
