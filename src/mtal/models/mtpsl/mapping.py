"""Mapping networks for cross-task consistency (MTPSL Sec. 3.2 and its baselines, Sec. 4).

- :class:`JointTaskMapping` (``joint``): the method. Task-specific input layers (one conv
  block per task) feed **one shared** conv encoder whose every block is FiLM-conditioned
  on the pair code A; it maps ``ŷ^s`` and ``y^t`` to the joint pairwise space of (s, t):
  ``m^{s→st}`` and ``m^{t→st}``. ``conditioned=False`` drops FiLM (the ablation "w/o
  conditioning", ``joint_unconditioned``).
- :class:`DirectMapping` (``direct``, Direct-Map): one small conv net per ordered pair
  maps ``ŷ^s`` straight into t's label space, compared with ``y^t`` by t's own loss.
- :class:`PerceptualMapping` (``perceptual``, Perceptual-Map): Direct-Map whose output and
  ``y^t`` are compared in the feature space of a per-task (unconditioned) encoder of t.

The paper does not spell out the two baselines' layers; the structures above are this
suite's reading and are documented as such in README.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from mtal.models.backbones import conv_bn_relu
from mtal.models.mtpsl.film import FiLM
from mtal.registry import Registry

#: mapping families of the paper's comparison; ``create_mapping(name, ...)`` builds one
CONSISTENCY_MAPPINGS: Registry[nn.Module] = Registry("cross-task mapping")


def create_mapping(name: str, /, **kwargs: Any) -> nn.Module:
    """Build the mapping registered as ``name`` (unknown names list the known ones)."""
    return CONSISTENCY_MAPPINGS.create(name, **kwargs)


class ConditionedBlock(nn.Module):
    """conv3×3 → BatchNorm → FiLM(A) → ReLU (MTPSL's conditioned layer); no FiLM when
    ``num_tasks`` is None."""

    def __init__(self, cin: int, cout: int, num_tasks: int | None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.bn = nn.BatchNorm2d(cout)
        self.film = FiLM(num_tasks, cout) if num_tasks is not None else None

    def forward(self, x: Tensor, pair: Tensor | None) -> Tensor:
        h = self.bn(self.conv(x))
        if self.film is not None:
            if pair is None:
                raise ValueError("a conditioned mapping needs the pair code A (pair=None)")
            h = self.film(h, pair)
        return F.relu(h)


@CONSISTENCY_MAPPINGS.register("joint")
class JointTaskMapping(nn.Module):
    """One shared mapping network with task-specific input layers, FiLM-conditioned on
    the task pair: ``forward(x, task, pair)`` → the embedding ``m^{task→st}(x)``.

    ``channels`` are the widths of the encoder levels (two conditioned blocks and a 2×2
    max-pool each; MTPSL uses the SegNet encoder widths 64-128-256-512-512);
    ``out_channels`` the width of the joint space, which must equal that of f_φ(x) for
    the regulariser R (a 1×1 projection is added when it differs from ``channels[-1]``).
    """

    def __init__(
        self,
        in_channels: Mapping[str, int],
        out_channels: int,
        channels: Sequence[int] = (64, 128, 256, 512, 512),
        conditioned: bool = True,
    ) -> None:
        super().__init__()
        if len(in_channels) < 2:
            raise ValueError(f"cross-task mapping needs at least 2 tasks, got {list(in_channels)}")
        if not channels:
            raise ValueError("JointTaskMapping: channels must list at least one level width")
        self.task_names = list(in_channels)
        self.num_tasks = len(self.task_names)
        self.conditioned = bool(conditioned)
        width = [int(c) for c in channels]
        self.inputs = nn.ModuleDict(
            {t: conv_bn_relu(int(c), width[0]) for t, c in in_channels.items()}
        )
        k = self.num_tasks if self.conditioned else None
        blocks: list[nn.Module] = []
        prev = width[0]
        for c in width:
            blocks += [ConditionedBlock(prev, c, k), ConditionedBlock(c, c, k)]
            prev = c
        self.blocks = nn.ModuleList(blocks)
        self.project = nn.Conv2d(prev, int(out_channels), 1) if prev != out_channels else None

    def forward(self, x: Tensor, task: str, pair: Tensor | None = None) -> Tensor:
        if task not in self.inputs:
            raise KeyError(f"mapping has no input layer for task {task!r}; tasks {self.task_names}")
        h = self.inputs[task](x)
        for i, block in enumerate(self.blocks):
            h = block(h, pair if self.conditioned else None)
            if i % 2 == 1 and min(h.shape[-2:]) >= 2:
                h = F.max_pool2d(h, 2)
        return self.project(h) if self.project is not None else h


@CONSISTENCY_MAPPINGS.register("joint_unconditioned")
def joint_unconditioned(
    in_channels: Mapping[str, int],
    out_channels: int,
    channels: Sequence[int] = (64, 128, 256, 512, 512),
) -> JointTaskMapping:
    """The ablation "w/o conditioning": the shared mapping without FiLM."""
    return JointTaskMapping(in_channels, out_channels, channels, conditioned=False)


def _pair_key(source: str, target: str) -> str:
    return f"{source}__to__{target}"


@CONSISTENCY_MAPPINGS.register("direct")
class DirectMapping(nn.Module):
    """Direct-Map: per ordered pair (s, t) a conv net ``m^{s→t}`` from s's prediction space
    to t's raw output space (``hidden`` channels, ``depth`` conv blocks, 1×1 out)."""

    def __init__(
        self,
        in_channels: Mapping[str, int],
        out_channels: int | None = None,
        channels: Sequence[int] = (64,),
        raw_channels: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__()
        names = list(in_channels)
        if len(names) < 2:
            raise ValueError(f"cross-task mapping needs at least 2 tasks, got {names}")
        raw = dict(raw_channels or in_channels)
        width = [int(c) for c in channels] or [64]
        nets: dict[str, nn.Module] = {}
        for s in names:
            for t in names:
                if s == t:
                    continue
                layers: list[nn.Module] = []
                prev = int(in_channels[s])
                for c in width:
                    layers.append(conv_bn_relu(prev, c))
                    prev = c
                layers.append(nn.Conv2d(prev, int(raw[t]), 1))
                nets[_pair_key(s, t)] = nn.Sequential(*layers)
        self.nets = nn.ModuleDict(nets)

    def forward(self, x: Tensor, source: str, target: str) -> Tensor:
        """``m^{s→t}(x)``: raw output in t's space at x's resolution."""
        return self.nets[_pair_key(source, target)](x)


@CONSISTENCY_MAPPINGS.register("perceptual")
class PerceptualMapping(nn.Module):
    """Perceptual-Map: Direct-Map into t's space, then a per-task perceptual encoder e_t
    (an unconditioned :class:`JointTaskMapping` of one task) on both sides."""

    def __init__(
        self,
        in_channels: Mapping[str, int],
        out_channels: int,
        channels: Sequence[int] = (64,),
        perceptual_channels: Sequence[int] = (64, 128),
        raw_channels: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__()
        self.direct = DirectMapping(in_channels, None, channels, raw_channels)
        self.encoders = nn.ModuleDict(
            {
                t: _SingleTaskEncoder(int(c), int(out_channels), perceptual_channels)
                for t, c in in_channels.items()
            }
        )

    def forward(self, x: Tensor, source: str, target: str) -> Tensor:
        """``m^{s→t}(x)`` (raw, t's space); encode with :meth:`encode`."""
        return self.direct(x, source, target)

    def encode(self, x: Tensor, task: str) -> Tensor:
        """e_t(x): the perceptual features of a map in task t's prediction space."""
        return self.encoders[task](x)


class _SingleTaskEncoder(nn.Module):
    """conv3×3-BN-ReLU levels with 2×2 max-pools, then a 1×1 projection."""

    def __init__(self, cin: int, cout: int, channels: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = cin
        for c in channels:
            layers += [conv_bn_relu(prev, int(c)), nn.MaxPool2d(2, ceil_mode=True)]
            prev = int(c)
        layers.append(nn.Conv2d(prev, cout, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
