"""PAD-Net multi-modal distillation (Xu et al., CVPR 2018) and its committee partner sets."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations

from torch import Tensor, nn

from mtal.models.heads import SpatialAttention


def committee_partner_sets(
    task_names: Sequence[str], task: str, committee: int
) -> list[tuple[str, ...]]:
    """Partner sets of ``task`` for a committee of order ``committee``: all subsets of the
    other tasks of size 1..committee, in task order (pairs, then triplets, ...)."""
    others = [t for t in task_names if t != task]
    return [s for r in range(1, committee + 1) for s in combinations(others, r)]


def member_name(partners: Sequence[str]) -> str:
    """Committee member name: the partner tasks joined by '+' (e.g. ``"depth+normals"``)."""
    return "+".join(partners)


class MultiModalDistillation(nn.Module):
    """One spatial-attention block ``SA_{t,a}`` per ordered task pair; refines task t with
    ``x_t + Σ_{a∈S} SA_{t,a}(x_a)`` over a partner set S (all other tasks for PAD-Net)."""

    def __init__(self, task_names: Sequence[str], channels: int) -> None:
        super().__init__()
        self.task_names = list(task_names)
        self.attention = nn.ModuleDict(
            {
                t: nn.ModuleDict({a: SpatialAttention(channels) for a in task_names if a != t})
                for t in task_names
            }
        )

    def messages(self, inputs: Mapping[str, Tensor]) -> dict[tuple[str, str], Tensor]:
        """All messages ``SA_{t,a}(x_a)`` keyed by (receiver t, sender a), computed once."""
        return {
            (t, a): self.attention[t][a](inputs[a])
            for t in self.task_names
            for a in self.task_names
            if a != t
        }

    @staticmethod
    def refine(
        inputs: Mapping[str, Tensor],
        messages: Mapping[tuple[str, str], Tensor],
        task: str,
        partners: Sequence[str],
    ) -> Tensor:
        """``x_task + Σ_{a ∈ partners} SA_{task,a}(x_a)`` from precomputed messages."""
        out = inputs[task]
        for a in partners:
            out = out + messages[(task, a)]
        return out

    def forward(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Full PAD-Net refinement of every task from all the others."""
        msgs = self.messages(inputs)
        return {
            t: self.refine(inputs, msgs, t, [a for a in self.task_names if a != t])
            for t in self.task_names
        }
