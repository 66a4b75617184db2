"""SegNet as in mtan's ``model_segnet_split.py`` "standard" split, which MTPSL trains.

A shared encoder-decoder (five levels: conv3×3-BN-ReLU blocks, 2×2 max-pool with indices
on the way down, max-unpool on the way up; widths 64-128-256-512-512) and per task a
head ``conv3×3 → conv1×1``. Outputs are raw (logits, depth, unnormalised normals: the
tasks' ``activate`` does mtan's log-softmax / unit normalisation). The encoder bottleneck
is returned as ``extras["shared"]`` — f_φ(x) of MTPSL's regulariser R.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch.nn.functional as F
from torch import Tensor, nn

from mtal.models import MODELS
from mtal.models.backbones import conv_bn_relu
from mtal.models.base import MultiTaskNet
from mtal.models.heads import MCDropout2d
from mtal.models.ll4al import LossPredictionModule
from mtal.types import MultiTaskOutput

if TYPE_CHECKING:
    from mtal.tasks.base import Task


def _stack(width: int, count: int) -> nn.Module:
    """``count`` conv3×3-BN-ReLU blocks of ``width`` channels (mtan's conv_block_enc/dec)."""
    return nn.Sequential(*[conv_bn_relu(width, width) for _ in range(count)])


class _Head(nn.Module):
    """mtan's task head: conv3×3 (features) → [MC-dropout] → conv1×1 (raw output)."""

    def __init__(self, width: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=1)
        self.dropout = MCDropout2d(dropout)
        self.classifier = nn.Conv2d(width, out_channels, 1)

    def forward(self, x: Tensor, mc_dropout: bool = False) -> tuple[Tensor, Tensor]:
        feats = self.conv(x)
        return feats, self.classifier(self.dropout(feats, force=mc_dropout))


@MODELS.register("segnet")
class SegNet(nn.Module):
    """mtan's multi-task SegNet (``filters`` 64-128-256-512-512; ``deep=True`` doubles
    each conv layer as mtan's "deep" type; ``[64, 128, 256, 512, 1024]`` is "wide").

    SegNet is its own encoder-decoder: ``backbone`` is not used (configs say
    ``segnet``) and ``pretrained`` must be False (it trains from scratch). Inputs whose
    sides are not multiples of 2^len(filters) are zero-padded at the bottom/right and the
    outputs cropped back (mtan's 288×384 and 128×256 need no padding).
    """

    def __init__(
        self,
        tasks: Mapping[str, Task],
        backbone: str = "segnet",
        pretrained: bool = False,
        filters: Sequence[int] = (64, 128, 256, 512, 512),
        deep: bool = False,
        dropout: float = 0.0,
        loss_prediction: bool = False,
        loss_pred_hidden: int = 128,
    ) -> None:
        super().__init__()
        if not tasks:
            raise ValueError("a multi-task model needs at least one task; `tasks` is empty")
        if pretrained:
            raise ValueError(
                "model 'segnet' trains from scratch (mtan, MTPSL) and has no pretrained "
                "weights; set model.pretrained: false"
            )
        f = [int(c) for c in filters]
        if len(f) < 2:
            raise ValueError(f"segnet filters must list >= 2 level widths, got {list(filters)}")
        self.tasks: dict[str, Task] = dict(tasks)
        self.task_names = list(tasks)
        self.filters = f
        per = 2 if deep else 1
        self.enc_in = nn.ModuleList(
            [_stack_in(3 if i == 0 else f[i - 1], f[i], per) for i in range(len(f))]
        )
        self.enc_conv = nn.ModuleList(
            [_stack(f[i], per * (1 if i < 2 else 2)) for i in range(len(f))]
        )
        self.dec_in = nn.ModuleList(
            [_stack_in(f[i], f[i - 1] if i else f[0], per) for i in range(len(f))]
        )
        self.dec_conv = nn.ModuleList(
            [_stack(f[i - 1] if i else f[0], per * (1 if i < 2 else 2)) for i in range(len(f))]
        )
        self.heads = nn.ModuleDict(
            {name: _Head(f[0], t.out_channels, dropout) for name, t in self.tasks.items()}
        )
        self.loss_pred_module = (
            LossPredictionModule(f, len(self.tasks), loss_pred_hidden) if loss_prediction else None
        )
        self.loss_pred_detach = False
        #: channels of ``extras["shared"]`` (f_φ(x)), read by MTPSL's mapping network
        self.shared_channels = f[-1]
        for m in self.modules():  # mtan's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(
        self,
        image: Tensor,
        *,
        committee: int = 0,
        gt: dict[str, Tensor] | None = None,
        gt_mask: Tensor | None = None,
        mc_dropout: bool = False,
    ) -> MultiTaskOutput:
        """Predict every task; SegNet has no cross-task path (``committee`` 0, no ``gt``)."""
        MultiTaskNet._refuse_cross_task("segnet", committee, gt, gt_mask)
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"model input must be B×3×H×W, got shape {tuple(image.shape)}")
        height, width = image.shape[-2:]
        step = 2 ** len(self.filters)
        pad_h, pad_w = (-height) % step, (-width) % step
        if pad_h or pad_w:
            image = F.pad(image, (0, pad_w, 0, pad_h))
        x = image
        indices: list[Tensor] = []
        sizes: list[tuple[int, ...]] = []
        levels: list[Tensor] = []
        for enc_in, enc_conv in zip(self.enc_in, self.enc_conv):
            x = enc_conv(enc_in(x))
            sizes.append(tuple(x.shape))
            x, idx = F.max_pool2d(x, 2, 2, return_indices=True)
            indices.append(idx)
            levels.append(x)
        shared = x
        for i in reversed(range(len(self.filters))):
            x = F.max_unpool2d(x, indices[i], 2, 2, output_size=sizes[i][-2:])
            x = self.dec_conv[i](self.dec_in[i](x))
        final: dict[str, Tensor] = {}
        feats: dict[str, Tensor] = {}
        for name in self.task_names:
            feat, raw = self.heads[name](x, mc_dropout=mc_dropout)
            feats[name], final[name] = feat, raw[..., :height, :width]
        loss_pred = (
            self.loss_pred_module(levels, detach=self.loss_pred_detach)
            if self.loss_pred_module is not None
            else None
        )
        return MultiTaskOutput(
            final=final,
            task_features=feats,
            embedding=shared.mean(dim=(2, 3)),
            loss_pred=loss_pred,
            extras={"shared": shared},
        )


def _stack_in(cin: int, cout: int, per: int) -> nn.Module:
    """mtan's encoder/decoder_block: cin → cout, plus one more cout conv when deep."""
    return nn.Sequential(
        conv_bn_relu(cin, cout), *[conv_bn_relu(cout, cout) for _ in range(per - 1)]
    )
