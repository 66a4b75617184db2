"""Shared plumbing of the multi-task networks: encoder, task order, LL4AL, upsampling."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch.nn.functional as F
from torch import Tensor, nn

from mtal.models.backbones import Encoder, EncoderOutput
from mtal.models.ll4al import LossPredictionModule

if TYPE_CHECKING:
    from mtal.tasks.base import Task


class MultiTaskNet(nn.Module):
    """Base of every model: a fused :class:`Encoder`, the ordered tasks and an optional
    LL4AL loss-prediction module on the backbone's multi-scale features."""

    def __init__(
        self,
        tasks: Mapping[str, Task],
        backbone: str = "resnet18",
        pretrained: bool = False,
        loss_prediction: bool = False,
        encoder_channels: int = 128,
        backbone_kwargs: Mapping[str, Any] | None = None,
        loss_pred_hidden: int = 128,
    ) -> None:
        super().__init__()
        if not tasks:
            raise ValueError("a multi-task model needs at least one task; `tasks` is empty")
        self.tasks: dict[str, Task] = dict(tasks)
        self.task_names: list[str] = list(tasks)
        self.encoder = Encoder(backbone, pretrained, encoder_channels, backbone_kwargs)
        self.loss_pred_module = (
            LossPredictionModule(self.encoder.level_channels, len(self.tasks), loss_pred_hidden)
            if loss_prediction
            else None
        )
        #: stop LL4AL gradients into the backbone (Yoo & Kweon do so late in training)
        self.loss_pred_detach = False

    @staticmethod
    def upsample(x: Tensor, size: tuple[int, int] | Any) -> Tensor:
        """Bilinear resize of a raw output to the input resolution."""
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)

    def predict_losses(self, enc: EncoderOutput) -> Tensor | None:
        """LL4AL predicted per-task losses (B×K) or None when not built."""
        if self.loss_pred_module is None:
            return None
        return self.loss_pred_module(enc.levels, detach=self.loss_pred_detach)

    @staticmethod
    def run_head(
        head: nn.Module, x: Tensor, mc_dropout: bool, samples: int = 1
    ) -> tuple[Tensor, Tensor]:
        """``(features, raw)`` of a head; ``samples > 1`` replicates only its dropout →
        classifier tail, so ``raw`` has ``samples × len(x)`` rows (sample-major)."""
        if samples == 1:
            return head(x, mc_dropout)
        feats = head.features(x)
        return feats, head.sample(feats, samples, mc_dropout)

    @staticmethod
    def _check_mc_samples(mc_samples: int, mc_dropout: bool, committee: int = 0) -> int:
        """Validate the ``mc_samples`` forward argument and return it as an int."""
        samples = int(mc_samples)
        if samples < 1:
            raise ValueError(f"model forward: mc_samples must be >= 1, got {mc_samples}")
        if samples > 1 and not mc_dropout:
            raise ValueError(
                f"model forward: mc_samples={samples} draws MC-dropout samples; pass "
                "mc_dropout=True with it (without dropout every sample is identical)"
            )
        if samples > 1 and committee:
            raise ValueError(
                f"model forward: mc_samples={samples} cannot be combined with "
                f"committee={committee}; score the committee with mc_samples=1"
            )
        return samples

    def _check_image(self, image: Tensor) -> None:
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"model input must be B×3×H×W, got shape {tuple(image.shape)}")

    @staticmethod
    def _refuse_cross_task(name: str, committee: int, gt: Any, gt_mask: Any) -> None:
        """A model without cross-task paths refuses a committee or ground-truth
        substitution, naming the model that has them (PAD-Net)."""
        if committee:
            raise ValueError(
                f"model {name!r} has no cross-task committee (asked committee={committee}); "
                "use model 'padnet' for committee-based strategies"
            )
        if gt is not None or gt_mask is not None:
            raise ValueError(
                f"model {name!r} cannot substitute ground truth (gt/gt_mask given); "
                "use model 'padnet' with gt_substitution=true (PartAL)"
            )
