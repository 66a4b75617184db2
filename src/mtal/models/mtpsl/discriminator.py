"""The joint-space discriminator of MTPSL's Discriminator-Loss baseline (Sec. 4).

A small conv net that scores an embedding of the joint pairwise space of (s, t) as
"mapped ground truth" (real) or "mapped prediction" (fake). It is conditioned on the task
pair by concatenating the K×K one-hot code A, broadcast over the map, to its input
(cGAN-style concatenation; our choice: no architecture for it was at hand, and the
official code has none). No
normalisation layers, so the generator side can call it with detached parameters
(:func:`torch.func.functional_call`) without touching running statistics.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class PairDiscriminator(nn.Module):
    """conv3×3 → LeakyReLU(0.2) per entry of ``channels``, then a 1×1 conv to one logit
    per pixel: ``forward(x B×C×h×w, pair B×K×K) -> B×1×h×w`` logits."""

    def __init__(
        self, in_channels: int, num_tasks: int, channels: Sequence[int] = (64, 64)
    ) -> None:
        super().__init__()
        width = [int(c) for c in channels]
        if not width:
            raise ValueError(
                "partial_kwargs.consistency_kwargs.channels: the discriminator needs at "
                "least one hidden width, e.g. [64, 64]"
            )
        self.num_tasks = int(num_tasks)
        layers: list[nn.Module] = []
        prev = int(in_channels) + self.num_tasks**2
        for c in width:
            layers += [nn.Conv2d(prev, c, 3, padding=1), nn.LeakyReLU(0.2)]
            prev = c
        layers.append(nn.Conv2d(prev, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, pair: Tensor) -> Tensor:
        code = pair.reshape(x.shape[0], self.num_tasks**2, 1, 1).to(x.dtype)
        return self.net(torch.cat([x, code.expand(-1, -1, *x.shape[-2:])], dim=1))
