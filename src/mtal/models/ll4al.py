"""LL4AL (Yoo & Kweon, CVPR 2019): a loss-prediction module and its margin ranking loss."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class _LossHead(nn.Module):
    """Yoo & Kweon's module: per level GAP → FC(→ ``hidden``) → ReLU, concatenated, then a
    linear layer → ``outputs`` predicted losses."""

    def __init__(self, in_channels: Sequence[int], outputs: int, hidden: int) -> None:
        super().__init__()
        self.fcs = nn.ModuleList(
            [nn.Sequential(nn.Linear(c, hidden), nn.ReLU(inplace=True)) for c in in_channels]
        )
        self.out = nn.Linear(hidden * len(in_channels), outputs)

    def forward(self, pooled: Sequence[Tensor]) -> Tensor:
        return self.out(torch.cat([fc(f) for fc, f in zip(self.fcs, pooled, strict=True)], 1))


class LossPredictionModule(nn.Module):
    """Predicts one loss per task from multi-scale features → B×K.

    ``per_task=True`` (default; WACV24 Sec. 4.2 runs LL4AL with one loss-prediction module
    per task) builds K independent Yoo & Kweon modules with one output each;
    ``per_task=False`` one module with K outputs (shared hidden layers)."""

    def __init__(
        self,
        in_channels: Sequence[int],
        num_tasks: int,
        hidden: int = 128,
        per_task: bool = True,
    ) -> None:
        super().__init__()
        self.num_levels = len(in_channels)
        self.per_task = bool(per_task)
        if self.per_task:
            self.heads = nn.ModuleList(
                [_LossHead(in_channels, 1, hidden) for _ in range(num_tasks)]
            )
        else:
            self.heads = nn.ModuleList([_LossHead(in_channels, num_tasks, hidden)])

    def forward(self, levels: Sequence[Tensor], detach: bool = False) -> Tensor:
        """``levels``: B×C_i×h_i×w_i maps; ``detach`` stops the gradient into the backbone
        (the paper does so after epoch 120)."""
        if len(levels) != self.num_levels:
            raise ValueError(
                f"loss-prediction module built for {self.num_levels} feature levels, "
                f"got {len(levels)}"
            )
        pooled = [(f.detach() if detach else f).mean(dim=(2, 3)) for f in levels]
        return torch.cat([head(pooled) for head in self.heads], dim=1)


def ll4al_ranking_loss(pred: Tensor, target: Tensor, margin: float = 1.0) -> Tensor:
    """Margin ranking loss of LL4AL, pairing sample i with B−1−i (i < ⌊B/2⌋):

    ``L = mean_pairs max(0, −𝟙(l_i, l_j)·(l̂_i − l̂_j) + ξ)``, ``𝟙 = +1 if l_i > l_j else −1``,

    with predicted losses ``l̂`` (``pred``), target losses ``l`` (``target``, detached) and
    margin ξ. Extra trailing dims (e.g. B×K, one column per task) are averaged too; with
    an odd B the middle sample is left unpaired.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must match")
    half = pred.shape[0] // 2
    if half == 0:
        raise ValueError("ll4al_ranking_loss needs a batch of at least 2 samples")
    target = target.detach()
    d_pred = pred[:half] - pred.flip(0)[:half]
    d_target = target[:half] - target.flip(0)[:half]
    sign = torch.where(d_target > 0, 1.0, -1.0).to(pred.dtype)
    return torch.clamp(margin - sign * d_pred, min=0).mean()
