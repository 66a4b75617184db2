"""``detseg``: shared encoder (fused 1/4 map), an anchor-free detection head for the
``boxes`` task and a dense head (ASPP) for every other task (``semseg``, ...).

The ``boxes`` raw output stays at the encoder's stride 4 (see :mod:`mtal.tasks.boxes`);
dense raw outputs are upsampled to the input size. ``segment(image)`` runs only the
backbone and the segmentation head (BoxMask re-segments crops with it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from mtal.models import MODELS
from mtal.models.backbones import MIN_REDUCTION, conv_bn_relu
from mtal.models.base import MultiTaskNet
from mtal.models.heads import ASPPHead, MCDropout2d
from mtal.models.ll4al import LossPredictionModule
from mtal.types import MultiTaskOutput

if TYPE_CHECKING:
    from mtal.tasks.base import Task


class DetHead(nn.Module):
    """FCOS head on one level: a shared conv tower, then class (C_det + 1), ltrb and
    centre-ness convolutions; the class bias starts at the prior ``prior_prob`` for the
    object classes (FCOS/RetinaNet initialisation)."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        num_det: int,
        num_convs: int = 2,
        dropout: float = 0.1,
        prior_prob: float = 0.01,
    ) -> None:
        super().__init__()
        self.tower = nn.Sequential(
            *[conv_bn_relu(in_channels if i == 0 else channels, channels) for i in range(num_convs)]
        )
        self.dropout = MCDropout2d(dropout)
        self.cls = nn.Conv2d(channels, num_det + 1, 3, padding=1)
        self.reg = nn.Conv2d(channels, 4, 3, padding=1)
        self.ctr = nn.Conv2d(channels, 1, 3, padding=1)
        with torch.no_grad():
            bias = torch.zeros(num_det + 1)
            # background vs one object class at odds (1 − p) : p / C_det
            bias[1:] = torch.log(torch.tensor(prior_prob / ((1 - prior_prob) * num_det)))
            self.cls.bias.copy_(bias)
            self.reg.bias.fill_(1.0)

    def forward(self, x: Tensor, mc_dropout: bool = False) -> tuple[Tensor, Tensor]:
        feats = self.tower(x)
        f = self.dropout(feats, force=mc_dropout)
        return feats, torch.cat([self.cls(f), self.reg(f), self.ctr(f)], dim=1)


@MODELS.register("detseg")
class DetSeg(MultiTaskNet):
    """Shared encoder + :class:`DetHead` for the task of kind ``"detection"`` + an ASPP
    head per dense task. ``loss_pred_per_task=True`` builds one LL4AL loss-prediction
    module per task (the ICCVW'23 LL4AL baseline sums two modules' outputs)."""

    def __init__(
        self,
        tasks: Mapping[str, Task],
        backbone: str = "resnet18",
        pretrained: bool = False,
        head_channels: int = 64,
        dropout: float = 0.1,
        loss_prediction: bool = False,
        *,
        encoder_channels: int = 128,
        backbone_kwargs: Mapping[str, Any] | None = None,
        loss_pred_hidden: int = 128,
        loss_pred_per_task: bool = True,
        aspp_rates: Sequence[int] = (1, 6, 12),
        det_convs: int = 2,
        seg_task: str = "semseg",
    ) -> None:
        super().__init__(
            tasks,
            backbone,
            pretrained,
            loss_prediction and not loss_pred_per_task,
            encoder_channels,
            backbone_kwargs,
            loss_pred_hidden,
        )
        det = [n for n, t in self.tasks.items() if t.kind == "detection"]
        if len(det) != 1:
            raise ValueError(
                f"model 'detseg' needs exactly one detection task (e.g. 'boxes') among "
                f"{self.task_names}, found {det}"
            )
        self.det_task = det[0]
        stride = getattr(self.tasks[self.det_task], "stride", MIN_REDUCTION)
        if stride != MIN_REDUCTION:
            raise ValueError(
                f"model 'detseg' predicts boxes on the fused 1/{MIN_REDUCTION} map; set "
                f"task_options.{self.det_task}.stride to {MIN_REDUCTION} (got {stride})"
            )
        if seg_task not in self.tasks:
            raise ValueError(
                f"model 'detseg': seg_task={seg_task!r} is not among the tasks {self.task_names}"
            )
        self.seg_task = seg_task
        heads: dict[str, nn.Module] = {}
        for name, t in self.tasks.items():
            if name == self.det_task:
                heads[name] = DetHead(
                    encoder_channels, head_channels, t.num_det, det_convs, dropout
                )
            else:
                heads[name] = ASPPHead(
                    encoder_channels, head_channels, t.out_channels, aspp_rates, dropout
                )
        self.heads = nn.ModuleDict(heads)
        self.loss_pred_modules = (
            nn.ModuleList(
                LossPredictionModule(self.encoder.level_channels, 1, loss_pred_hidden)
                for _ in self.task_names
            )
            if loss_prediction and loss_pred_per_task
            else None
        )

    def forward(
        self,
        image: Tensor,
        *,
        committee: int = 0,
        gt: dict[str, Tensor] | None = None,
        gt_mask: Tensor | None = None,
        mc_dropout: bool = False,
    ) -> MultiTaskOutput:
        """Predict every task (``boxes`` at stride 4, dense tasks at the input size)."""
        self._check_image(image)
        self._refuse_cross_task("detseg", committee, gt, gt_mask)
        enc = self.encoder(image)
        final: dict[str, Tensor] = {}
        feats: dict[str, Tensor] = {}
        for name in self.task_names:
            feats[name], raw = self.heads[name](enc.fused, mc_dropout=mc_dropout)
            final[name] = raw if name == self.det_task else self.upsample(raw, image.shape[-2:])
        if self.loss_pred_modules is not None:
            loss_pred = torch.cat(
                [m(enc.levels, detach=self.loss_pred_detach) for m in self.loss_pred_modules], 1
            )
        else:
            loss_pred = self.predict_losses(enc)
        return MultiTaskOutput(
            final=final, task_features=feats, embedding=enc.embedding, loss_pred=loss_pred
        )

    def segment(self, image: Tensor) -> Tensor:
        """Raw segmentation logits (B×C_seg×H×W) of ``image``: backbone + seg head only."""
        self._check_image(image)
        _, raw = self.heads[self.seg_task](self.encoder(image).fused)
        return self.upsample(raw, image.shape[-2:])
