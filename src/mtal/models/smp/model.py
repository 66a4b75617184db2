"""``model: smp``: any segmentation_models_pytorch encoder-decoder as the shared trunk,
one mtal ASPP head per task on the decoder's features (smp's own segmentation head is
not used). smp is imported when the model is built, never at ``import mtal``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch.nn.functional as F
from torch import Tensor, nn

from mtal.models import MODELS
from mtal.models.base import MultiTaskNet
from mtal.models.heads import ASPPHead
from mtal.models.ll4al import LossPredictionModule
from mtal.types import MultiTaskOutput

if TYPE_CHECKING:
    from mtal.tasks.base import Task


def build_trunk(
    arch: str,
    encoder_name: str,
    encoder_weights: str | None,
    encoder_depth: int,
    decoder_kwargs: Mapping[str, Any],
) -> nn.Module:
    """The smp model whose encoder and decoder mtal uses; unknown names are explained."""
    import segmentation_models_pytorch as smp

    archs = sorted(a.__name__.lower() for a in smp._MODEL_ARCHITECTURES)
    if arch.lower() not in archs:
        raise ValueError(
            f"model.model_kwargs.arch={arch!r} is not an smp architecture; known: {archs}"
        )
    encoders = smp.encoders.get_encoder_names()
    if encoder_name not in encoders and not encoder_name.startswith("tu-"):
        raise ValueError(
            f"model.backbone={encoder_name!r} is not an smp encoder (model: smp takes smp "
            f"encoder names, e.g. resnet18, efficientnet-b0, or tu-<timm name>); known: "
            f"{encoders[:12]} ..."
        )
    return smp.create_model(
        arch,
        encoder_name=encoder_name,
        encoder_weights=encoder_weights,
        encoder_depth=encoder_depth,
        in_channels=3,
        classes=1,
        **dict(decoder_kwargs),
    )


@MODELS.register("smp")
class SMPNet(MultiTaskNet):
    """smp encoder-decoder trunk + an ASPP head per task on the decoder output (raw task
    outputs upsampled to the input size; an input whose sides are not multiples of the
    encoder's stride is padded by replication and the outputs cropped back). ``backbone`` is the smp encoder name;
    ``pretrained`` loads its ``imagenet`` weights unless ``encoder_weights`` says which
    (``None``: random initialisation, no download). ``embedding`` is the globally pooled
    deepest encoder feature; ``loss_prediction`` adds LL4AL on the encoder's stages.
    No cross-task committee and no ground-truth substitution (``padnet`` has those)."""

    def __init__(
        self,
        tasks: Mapping[str, Task],
        backbone: str = "resnet18",
        pretrained: bool = False,
        loss_prediction: bool = False,
        *,
        arch: str = "fpn",
        encoder_weights: str | None = None,
        encoder_depth: int = 5,
        decoder_kwargs: Mapping[str, Any] | None = None,
        head_channels: int = 64,
        dropout: float = 0.1,
        aspp_rates: Sequence[int] = (1, 6, 12),
        loss_pred_hidden: int = 128,
    ) -> None:
        nn.Module.__init__(self)  # the trunk replaces MultiTaskNet's timm encoder
        if not tasks:
            raise ValueError("a multi-task model needs at least one task; `tasks` is empty")
        self.tasks: dict[str, Task] = dict(tasks)
        self.task_names: list[str] = list(tasks)
        weights = encoder_weights if encoder_weights is not None or not pretrained else "imagenet"
        trunk = build_trunk(arch, backbone, weights, encoder_depth, decoder_kwargs or {})
        self.encoder = trunk.encoder
        self.decoder = trunk.decoder
        #: the decoder's output channels, read off smp's segmentation head
        self.decoder_channels = int(trunk.segmentation_head[0].in_channels)
        stages = list(self.encoder.out_channels)[1:]  # [0] is the input image itself
        self.embedding_dim = int(stages[-1])
        self.loss_pred_module = (
            LossPredictionModule(stages, len(self.tasks), loss_pred_hidden)
            if loss_prediction
            else None
        )
        self.loss_pred_detach = False
        self.heads = nn.ModuleDict(
            {
                name: ASPPHead(
                    self.decoder_channels, head_channels, t.out_channels, aspp_rates, dropout
                )
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
    ) -> MultiTaskOutput:
        """Predict every task (see :class:`mtal.types.MultiTaskOutput`)."""
        self._check_image(image)
        self._refuse_cross_task("smp", committee, gt, gt_mask)
        height, width = image.shape[-2:]
        stride = int(self.encoder.output_stride)
        pad_h, pad_w = -height % stride, -width % stride
        # smp needs sides divisible by the encoder's stride: pad right/bottom, crop after
        padded = F.pad(image, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else image
        features = self.encoder(padded)
        decoded = self.decoder(features)
        final: dict[str, Tensor] = {}
        feats: dict[str, Tensor] = {}
        for name in self.task_names:
            feats[name], raw = self.heads[name](decoded, mc_dropout=mc_dropout)
            final[name] = self.upsample(raw, padded.shape[-2:])[..., :height, :width]
        loss_pred = None
        if self.loss_pred_module is not None:
            loss_pred = self.loss_pred_module(features[1:], detach=self.loss_pred_detach)
        return MultiTaskOutput(
            final=final,
            task_features=feats,
            embedding=features[-1].mean(dim=(2, 3)),
            loss_pred=loss_pred,
        )
