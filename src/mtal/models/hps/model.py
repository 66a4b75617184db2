"""Hard parameter sharing: one shared encoder, one light ASPP head per task."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from mtal.models import MODELS
from mtal.models.base import MultiTaskNet
from mtal.models.heads import ASPPHead
from mtal.types import MultiTaskOutput

if TYPE_CHECKING:
    from mtal.tasks.base import Task


@MODELS.register("hps")
class HPS(MultiTaskNet):
    """Shared encoder (fused 1/4 features) + an ASPP head per task; raw outputs are
    upsampled to the input size. ``task_features`` are the heads' pre-classifier maps."""

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
        aspp_rates: Sequence[int] = (1, 6, 12),
    ) -> None:
        super().__init__(
            tasks,
            backbone,
            pretrained,
            loss_prediction,
            encoder_channels,
            backbone_kwargs,
            loss_pred_hidden,
        )
        self.heads = nn.ModuleDict(
            {
                name: ASPPHead(encoder_channels, head_channels, t.out_channels, aspp_rates, dropout)
                for name, t in self.tasks.items()
            }
        )

    def forward(
        self,
        image: Tensor,
        *,
        committee: int = 0,
        gt: dict[str, Tensor] | None = None,
        gt_mask: Tensor | None = None,
        mc_dropout: bool = False,
        mc_samples: int = 1,
    ) -> MultiTaskOutput:
        """Predict every task; HPS has no cross-task path, so ``committee`` must be 0 and
        ``gt``/``gt_mask`` None (use ``padnet`` for those). ``mc_samples=S`` (with
        ``mc_dropout``) returns S dropout samples per image in ``final`` (S·B rows,
        sample-major) from one pass of the encoder and head bodies."""
        self._check_image(image)
        samples = self._check_mc_samples(mc_samples, mc_dropout, committee)
        self._refuse_cross_task("hps", committee, gt, gt_mask)
        size = image.shape[-2:]
        enc = self.encoder(image)
        final: dict[str, Tensor] = {}
        feats: dict[str, Tensor] = {}
        for name in self.task_names:
            feats[name], raw = self.run_head(self.heads[name], enc.fused, mc_dropout, samples)
            final[name] = self.upsample(raw, size)
        return MultiTaskOutput(
            final=final,
            task_features=feats,
            embedding=enc.embedding,
            loss_pred=self.predict_losses(enc),
            extras={"fused": enc.fused},  # the pre-head map (Core-Set, WACV24 Sec. 4.2)
        )
