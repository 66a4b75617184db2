"""Task heads: conv blocks with MC-dropout, a light ASPP head and the PAD-Net SA block."""

from __future__ import annotations

import abc
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtal.models.backbones import conv_bn_relu


class MCDropout2d(nn.Dropout2d):
    """Channel dropout that is active in training, or in eval when called with ``force=True``
    (MC-Dropout sampling without switching BatchNorm to training mode)."""

    def forward(self, x: Tensor, force: bool = False) -> Tensor:  # type: ignore[override]
        return F.dropout2d(x, self.p, training=self.training or force, inplace=False)


class _SampledHead(nn.Module, abc.ABC):
    """A head split as ``features(x)`` (deterministic in eval) → ``sample`` (dropout →
    1×1 classifier), so MC-dropout can replicate only the part that carries dropout."""

    dropout: MCDropout2d
    classifier: nn.Conv2d

    @abc.abstractmethod
    def features(self, x: Tensor) -> Tensor:
        """The pre-dropout feature map (no randomness in eval mode)."""

    def sample(self, feats: Tensor, samples: int = 1, mc_dropout: bool = False) -> Tensor:
        """Raw output of ``samples`` dropout draws of ``feats`` (B rows) → ``samples·B`` rows,
        sample-major (row ``s·B + b``): the same masks as ``feats.repeat(samples)`` in one call."""
        x = feats if samples == 1 else feats.repeat(samples, *([1] * (feats.dim() - 1)))
        return self.classifier(self.dropout(x, force=mc_dropout))

    def forward(self, x: Tensor, mc_dropout: bool = False) -> tuple[Tensor, Tensor]:
        feats = self.features(x)
        return feats, self.sample(feats, 1, mc_dropout)


class ConvHead(_SampledHead):
    """``num_convs`` conv3x3-bn-relu blocks → features; MC-dropout → 1×1 conv → raw output.

    ``forward`` returns ``(features, raw)`` so the features can feed distillation/diversity.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        out_channels: int,
        num_convs: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        blocks = [
            conv_bn_relu(in_channels if i == 0 else channels, channels) for i in range(num_convs)
        ]
        self.body = nn.Sequential(*blocks) if blocks else nn.Identity()
        self.dropout = MCDropout2d(dropout)
        self.classifier = nn.Conv2d(channels if num_convs else in_channels, out_channels, 1)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)


class ASPPHead(_SampledHead):
    """Light DeepLab-v3 style head: parallel dilated 3×3 convs + image pooling, concat,
    1×1 projection → features; MC-dropout → 1×1 conv → raw output."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        out_channels: int,
        rates: Sequence[int] = (1, 6, 12),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [conv_bn_relu(in_channels, channels, kernel=3, dilation=r) for r in rates]
        )
        # image pooling branch: no BatchNorm (a 1×1 pooled map has no spatial statistics)
        self.pool = nn.Sequential(nn.Conv2d(in_channels, channels, 1), nn.ReLU(inplace=True))
        self.project = conv_bn_relu(channels * (len(rates) + 1), channels, kernel=1)
        self.refine = conv_bn_relu(channels, channels)
        self.dropout = MCDropout2d(dropout)
        self.classifier = nn.Conv2d(channels, out_channels, 1)

    def features(self, x: Tensor) -> Tensor:
        outs = [branch(x) for branch in self.branches]
        pooled = self.pool(x.mean(dim=(2, 3), keepdim=True))
        outs.append(pooled.expand(-1, -1, *x.shape[-2:]))
        return self.refine(self.project(torch.cat(outs, dim=1)))


class SpatialAttention(nn.Module):
    """PAD-Net attention-guided message: ``SA(x) = conv3x3(x) · sigmoid(conv3x3(x))``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.message = nn.Conv2d(channels, channels, 3, padding=1)
        self.gate = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.message(x) * torch.sigmoid(self.gate(x))
