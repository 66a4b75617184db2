"""Backbones: multi-scale feature extractors (timm or built-in) and the fused 1/4 encoder.

Every backbone returns a list of feature maps at reductions >= 4 (the stride-2 stem is
dropped) and advertises ``channels`` and ``reductions``. :class:`Encoder` upsamples all
levels to the 1/4 map, concatenates them and projects them to a fixed width with a 1×1
conv (the HRNet multi-task recipe of Vandenhende et al.).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtal.registry import Registry

#: Built-in backbones (no timm); any other name is looked up in timm.
BACKBONES: Registry[nn.Module] = Registry("backbone")

#: Extra ``timm.create_model`` keyword arguments per model-name prefix. HRNet returns its
#: four raw branches (18/36/72/144 channels for w18) as in multi-task HRNet, not the
#: classification "incre" features.
TIMM_FAMILY_KWARGS: dict[str, dict[str, Any]] = {"hrnet": {"feature_location": ""}}

#: Smallest feature reduction kept: levels finer than 1/4 (the stem) are dropped.
MIN_REDUCTION = 4


class PretrainedWeightsError(RuntimeError):
    """Raised when ``pretrained=True`` but the backbone weights cannot be obtained."""


class MultiScaleBackbone(nn.Module):
    """Base for backbones: ``forward(x) -> list of B×C_i×H/r_i×W/r_i`` (r_i = reductions)."""

    channels: list[int]
    reductions: list[int]


class TimmBackbone(MultiScaleBackbone):
    """A timm model built with ``features_only=True``; keeps levels with reduction >= 4."""

    def __init__(self, name: str, pretrained: bool = False, **timm_kwargs: Any) -> None:
        super().__init__()
        import timm

        if not timm.is_model(name):
            raise ValueError(
                f"backbone {name!r} is neither built in (known: {', '.join(BACKBONES.names())}) "
                f"nor a timm model; list timm names with timm.list_models('*{name[:6]}*') and "
                "fix `model.backbone` in your config"
            )
        kwargs = {**_family_kwargs(name), **timm_kwargs}
        try:
            self.body = timm.create_model(name, features_only=True, pretrained=pretrained, **kwargs)
        except Exception as exc:  # network/cache failures come in many exception types
            if not pretrained:
                raise
            raise PretrainedWeightsError(
                f"pretrained weights for backbone {name!r} could not be downloaded "
                f"({type(exc).__name__}: {exc}). Pre-download them into the timm / Hugging Face "
                f"cache (e.g. run `timm.create_model({name!r}, pretrained=True)` on a machine "
                "with network and copy ~/.cache/huggingface, or set HF_HUB_CACHE), or set "
                "`pretrained: false` in the model config"
            ) from exc
        info = self.body.feature_info
        keep = [i for i, r in enumerate(info.reduction()) if r >= MIN_REDUCTION]
        self.keep = keep
        self.channels = [info.channels()[i] for i in keep]
        self.reductions = [info.reduction()[i] for i in keep]

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = self.body(x)
        return [feats[i] for i in self.keep]


def _family_kwargs(name: str) -> dict[str, Any]:
    """Default timm kwargs for the family whose prefix matches ``name`` (empty if none)."""
    matches = [kw for prefix, kw in TIMM_FAMILY_KWARGS.items() if name.startswith(prefix)]
    return dict(matches[0]) if matches else {}


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1, dilation: int = 1):
    """Conv (no bias) → BatchNorm → ReLU, 'same' padding for odd kernels."""
    pad = dilation * (kernel // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class TinyCNN(MultiScaleBackbone):
    """A few conv-bn-relu stages (reductions 4, 8, 16) for fast CPU tests and demos."""

    def __init__(self, pretrained: bool = False, widths: Sequence[int] = (16, 32, 48, 64)) -> None:
        super().__init__()
        if pretrained:
            raise PretrainedWeightsError(
                "backbone 'tiny_cnn' has no pretrained weights; set `pretrained: false` "
                "or choose a timm backbone such as 'resnet18'"
            )
        w0, w1, w2, w3 = widths
        self.stem = nn.Sequential(conv_bn_relu(3, w0, stride=2), conv_bn_relu(w0, w1, stride=2))
        self.stage2 = conv_bn_relu(w1, w2, stride=2)
        self.stage3 = conv_bn_relu(w2, w3, stride=2)
        self.channels = [w1, w2, w3]
        self.reductions = [4, 8, 16]

    def forward(self, x: Tensor) -> list[Tensor]:
        f4 = self.stem(x)
        f8 = self.stage2(f4)
        f16 = self.stage3(f8)
        return [f4, f8, f16]


BACKBONES.register("tiny_cnn")(TinyCNN)


def create_backbone(name: str, pretrained: bool = False, **kwargs: Any) -> MultiScaleBackbone:
    """A built-in backbone by name, or else the timm model ``name`` (features_only)."""
    factory: Callable[..., MultiScaleBackbone] = (
        BACKBONES.get(name) if name in BACKBONES else _timm_factory(name)
    )
    return factory(pretrained=pretrained, **kwargs)


def _timm_factory(name: str) -> Callable[..., MultiScaleBackbone]:
    def build(pretrained: bool = False, **kwargs: Any) -> MultiScaleBackbone:
        return TimmBackbone(name, pretrained=pretrained, **kwargs)

    return build


@dataclass
class EncoderOutput:
    """The shared encoder's result: fused 1/4 map, the raw levels and the pooled embedding."""

    fused: Tensor
    levels: list[Tensor]
    embedding: Tensor


class Encoder(nn.Module):
    """Backbone + fusion: all levels upsampled to 1/4 resolution, concatenated, 1×1 conv.

    Inputs whose size is not a multiple of the coarsest reduction are zero-padded at the
    bottom/right (HRNet needs it) and the fused map is cropped back to ``ceil(H/4)×ceil(W/4)``.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        pretrained: bool = False,
        out_channels: int = 128,
        backbone_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.backbone = create_backbone(backbone, pretrained=pretrained, **(backbone_kwargs or {}))
        self.out_channels = out_channels
        self.stride = max(self.backbone.reductions)
        self.fuse = conv_bn_relu(sum(self.backbone.channels), out_channels, kernel=1)

    @property
    def level_channels(self) -> list[int]:
        """Channels of the backbone levels (reductions >= 4), as fed to LL4AL."""
        return list(self.backbone.channels)

    @property
    def embedding_dim(self) -> int:
        """D of the pooled embedding (channels of the coarsest level)."""
        return self.backbone.channels[-1]

    def forward(self, image: Tensor) -> EncoderOutput:
        """Fused B×out_channels×ceil(H/4)×ceil(W/4) map, raw levels and pooled embedding."""
        h, w = image.shape[-2:]
        pad_h, pad_w = (-h) % self.stride, (-w) % self.stride
        if pad_h or pad_w:
            image = F.pad(image, (0, pad_w, 0, pad_h))
        levels = self.backbone(image)
        size = (image.shape[-2] // MIN_REDUCTION, image.shape[-1] // MIN_REDUCTION)
        ups = [
            f
            if tuple(f.shape[-2:]) == size
            else F.interpolate(f, size=size, mode="bilinear", align_corners=False)
            for f in levels
        ]
        fused = self.fuse(torch.cat(ups, dim=1))
        fused = fused[..., : -(-h // MIN_REDUCTION), : -(-w // MIN_REDUCTION)]
        embedding = levels[-1].mean(dim=(2, 3))
        return EncoderOutput(fused=fused, levels=levels, embedding=embedding)
