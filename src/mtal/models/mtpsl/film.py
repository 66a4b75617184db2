"""The task-pair code A and FiLM conditioning of the joint mapping (MTPSL Sec. 3.2, Eq. 4).

A is the asymmetric K×K one-hot matrix with ``A[s, t] = 1`` for the ordered pair
(unlabelled source s, labelled target t). The auxiliary network a_θ(A) gives every
conditioned layer a scale ``a^c(A)`` and a bias ``a^b(A)``, one fully-connected layer each,
applied as ``h ← a^c(A) ⊙ h + a^b(A)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def pair_matrix(
    num_tasks: int, source: int, target: int, device: torch.device | None = None
) -> Tensor:
    """The K×K one-hot ``A`` of the ordered task pair (source s → target t), s ≠ t."""
    if num_tasks < 2:
        raise ValueError(f"a task pair needs at least 2 tasks, got num_tasks={num_tasks}")
    for what, k in (("source", source), ("target", target)):
        if not 0 <= int(k) < num_tasks:
            raise ValueError(f"pair_matrix: {what} task {k} is out of range [0, {num_tasks})")
    if int(source) == int(target):
        raise ValueError(f"pair_matrix: source and target are the same task ({source})")
    a = torch.zeros(num_tasks, num_tasks, device=device)
    a[int(source), int(target)] = 1.0
    return a


class FiLM(nn.Module):
    """Feature-wise linear modulation by the pair code: ``a^c(A) ⊙ h + a^b(A)``.

    ``a^c`` and ``a^b`` are one ``Linear(K², C)`` each on the flattened A; they start at
    scale 1 and bias 0 (identity), so an untrained conditioner leaves ``h`` unchanged.
    """

    def __init__(self, num_tasks: int, channels: int) -> None:
        super().__init__()
        self.num_tasks = int(num_tasks)
        self.channels = int(channels)
        self.scale = nn.Linear(self.num_tasks**2, self.channels)
        self.shift = nn.Linear(self.num_tasks**2, self.channels)
        for layer, start in ((self.scale, 1.0), (self.shift, 0.0)):
            nn.init.zeros_(layer.weight)
            nn.init.constant_(layer.bias, start)

    def coefficients(self, pair: Tensor) -> tuple[Tensor, Tensor]:
        """``(a^c(A), a^b(A))``, each B×C, for A of shape K×K or B×K×K."""
        code = pair.reshape(-1, self.num_tasks**2).to(self.scale.weight.dtype)
        return self.scale(code), self.shift(code)

    def forward(self, h: Tensor, pair: Tensor) -> Tensor:
        scale, shift = self.coefficients(pair)
        return scale[:, :, None, None] * h + shift[:, :, None, None]
