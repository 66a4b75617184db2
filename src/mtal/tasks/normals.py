"""Surface normals: unit 3-vectors per pixel (all-zero target = invalid)."""

from __future__ import annotations

from collections.abc import Sequence
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

_NORM_EPS = 1e-12


def unit(x: torch.Tensor) -> torch.Tensor:
    """``x / max(‖x‖, eps)`` along the channel axis (−3): the same as ``F.normalize``,
    written out because that call is ~40× slower on CPU for these shapes
    (benchmarks/README.md, pool scoring)."""
    return x / x.pow(2).sum(dim=-3, keepdim=True).sqrt().clamp_min(_NORM_EPS)


class NormalsTask(OptionsTask):
    """Surface normals: the raw 3-channel output is normalised to unit length before the
    loss; valid pixels have a target of non-zero norm.

    Options: ``loss`` = "l1" (default; |p̂ − t| averaged over the 3 channels, as in
    Vandenhende's ``NormalsLoss(normalize=True)``, or summed with
    ``l1_channel_reduction="sum"``) or "cosine" (1 − p̂·t); ``var_floor`` (variance floor of
    the MC entropy). ``hflip`` negates the x channel (0). MC uncertainty: the Gaussian
    entropy ½·log((2πe)³·det Σ) with Σ the *diagonal* per-channel MC variance of the
    unit-normalised samples (cross-channel covariances are ignored).
    """

    name: ClassVar[str] = "normals"
    kind: ClassVar[str] = "regression"
    default_options: ClassVar[dict[str, Any]] = {
        "loss": "l1",
        "l1_channel_reduction": "mean",
        "var_floor": 1e-6,
    }

    def _check_options(self) -> None:
        super()._check_options()
        self._check_choice("loss", ("l1", "cosine"))
        self._check_choice("l1_channel_reduction", ("mean", "sum"))

    @property
    def out_channels(self) -> int:
        return 3

    @property
    def ignore_value(self) -> float:
        return 0.0

    def empty_target(self, height: int, width: int) -> torch.Tensor:
        return torch.zeros((3, height, width), dtype=torch.float32)

    def target_from_numpy(self, array: np.ndarray) -> torch.Tensor:
        arr = as_array(array, self.name)
        if arr.ndim != 3 or arr.shape[-1] != 3:
            raise ValueError(f"task 'normals': expected an H×W×3 normal map, got shape {arr.shape}")
        out = torch.from_numpy(arr.astype(np.float32, copy=True)).permute(2, 0, 1)
        out = torch.where(torch.isfinite(out), out, torch.zeros_like(out))
        return out.contiguous()

    def valid_mask(self, target: torch.Tensor) -> torch.Tensor:
        return target.pow(2).sum(dim=-3) > 0

    def activate(self, raw: torch.Tensor) -> torch.Tensor:
        return unit(raw)

    def encode_target(self, target: torch.Tensor) -> torch.Tensor:
        """Unit normals (invalid pixels stay the zero vector)."""
        return unit(target.float())

    def pixel_loss(self, pred_unit: torch.Tensor, target_unit: torch.Tensor) -> torch.Tensor:
        """B×H×W loss between unit normals per the ``loss`` option."""
        if self.options["loss"] == "cosine":
            return 1.0 - (pred_unit * target_unit).sum(1)
        diff = (pred_unit - target_unit).abs()
        return diff.mean(1) if self.options["l1_channel_reduction"] == "mean" else diff.sum(1)

    def loss(self, raw: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_raw(self, raw)
        valid = self.valid_mask(target)
        safe = torch.where(valid.unsqueeze(1), target, target.new_zeros(()))
        per_pixel = self.pixel_loss(self.activate(raw), self.encode_target(safe))
        return masked_mean(per_pixel, valid)

    def discrepancy(self, raw: torch.Tensor, other_raw: torch.Tensor) -> torch.Tensor:
        return self.discrepancies(raw, [other_raw])[0]

    def discrepancies(self, raw: torch.Tensor, others: Sequence[torch.Tensor]) -> torch.Tensor:
        """:meth:`discrepancy` against every member with ``raw`` normalised once."""
        check_raw(self, raw)
        unit = self.activate(raw)
        rows = []
        for other_raw in others:
            check_raw(self, other_raw, "other_raw")
            per_pixel = self.pixel_loss(unit, self.activate(other_raw.detach()))
            rows.append(per_pixel.flatten(1).mean(1))
        return torch.stack(rows, dim=0)

    def mc_uncertainty(self, raw_samples: torch.Tensor) -> torch.Tensor:
        check_samples(self, raw_samples)
        var = mc_variance(self.activate(raw_samples))  # B×3×H×W
        entropy = gaussian_entropy(var, self.options["var_floor"], dim=1)
        return entropy.flatten(1).mean(1)

    def hflip(self, x: torch.Tensor) -> torch.Tensor:
        """Flip the width axis and negate the x component (channel axis −3)."""
        if x.dim() < 3 or x.shape[-3] != 3:
            raise ValueError(f"task 'normals': hflip expects …×3×H×W, got {tuple(x.shape)}")
        sign = x.new_tensor([-1.0, 1.0, 1.0]).view(3, 1, 1)
        return x.flip(-1) * sign

    def metric(self) -> Any:
        from mtal.metrics import NormalsMetrics

        return NormalsMetrics()

    @property
    def headline(self) -> tuple[str, bool]:
        return ("mean", False)
