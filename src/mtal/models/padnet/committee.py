"""WACV24's learnable committee: extra MMD blocks per task and partner set, scoring only.

Hekimoglu et al., WACV 2024, Sec. 3.2: "we extend the PAD-Net architecture by integrating
pairwise task interactions … through a two-task MMD block … the interactions are
learnable … these additional blocks are only utilized for selection purposes". For task
k and a partner set S (pairs {j}; triplets/quadruples for C11/C15) the member is

    ŷ_{k,S} = head_{k,S}(M_k + Σ_{a∈S} SA_{k,S,a}(M_a)),

with its own SA blocks and its own final head (the paper writes ``head_kj``; a separate
head keeps the main network's heads untouched). They are trained on the labelled set with
task k's loss (:meth:`mtal.training.module.MultiTaskModule.committee_loss`); the plain
PAD-Net path (``final``) does not use them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mtal.models.heads import ConvHead, SpatialAttention
from mtal.models.padnet.distillation import committee_partner_sets, member_name

#: how committee members are built: "learnable" (WACV24 Sec. 3.2, own blocks) or
#: "shared" (partial sums of the main network's SA messages through its final heads)
COMMITTEE_MODES = ("learnable", "shared")


class LearnableCommittee(nn.Module):
    """One ``(SA_{k,S,a} for a∈S, head_{k,S})`` per task k and partner set S of size
    1..``order``.

    ``detach=True`` (default) feeds the blocks detached distillation inputs, so their
    loss never reaches the shared network: the main PAD-Net trains exactly as without
    them. ``dropout`` of the member heads defaults to 0 (ours; the paper is silent): a
    member then draws no random numbers, so adding the committee leaves the training
    run's RNG stream — and hence the main network's outputs — unchanged.
    """

    def __init__(
        self,
        task_names: Sequence[str],
        channels: int,
        out_channels: Mapping[str, int],
        order: int = 1,
        num_convs: int = 2,
        dropout: float = 0.0,
        detach: bool = True,
    ) -> None:
        super().__init__()
        k = len(task_names)
        if not 1 <= order <= max(k - 1, 1):
            raise ValueError(
                f"padnet committee_order must be between 1 and K-1={k - 1} for tasks "
                f"{list(task_names)} (1 pairs/C5, 2 +triplets/C11, 3 +quadruples/C15); "
                f"got {order}"
            )
        self.task_names = list(task_names)
        self.order = int(order)
        self.detach = bool(detach)
        self.sets = {t: committee_partner_sets(self.task_names, t, self.order) for t in task_names}
        self.attention = nn.ModuleDict(
            {
                t: nn.ModuleDict(
                    {
                        member_name(s): nn.ModuleDict({a: SpatialAttention(channels) for a in s})
                        for s in sets
                    }
                )
                for t, sets in self.sets.items()
            }
        )
        self.heads = nn.ModuleDict(
            {
                t: nn.ModuleDict(
                    {
                        member_name(s): ConvHead(
                            channels, channels, out_channels[t], num_convs, dropout
                        )
                        for s in sets
                    }
                )
                for t, sets in self.sets.items()
            }
        )

    def forward(self, inputs: Mapping[str, Tensor], order: int) -> dict[str, dict[str, Tensor]]:
        """Raw low-resolution members ``{task: {member name: B×C×h×w}}`` of up to ``order``
        partners (``order`` ≤ the built order)."""
        if order > self.order:
            raise ValueError(
                f"padnet learnable committee was built with committee_order={self.order}; "
                f"asked for committee={order}. Set model.model_kwargs.committee_order: {order}"
            )
        x = {t: v.detach() for t, v in inputs.items()} if self.detach else dict(inputs)
        out: dict[str, dict[str, Tensor]] = {}
        for t, sets in self.sets.items():
            members: dict[str, Tensor] = {}
            for s in sets:
                if len(s) > order:
                    continue
                name = member_name(s)
                refined = x[t]
                for a in s:
                    refined = refined + self.attention[t][name][a](x[a])
                members[name] = self.heads[t][name](refined)[1]
            out[t] = members
        return out


def build_committee(
    mode: str, task_names: Sequence[str], channels: int, out_channels: Mapping[str, int], **kw: Any
) -> LearnableCommittee | None:
    """The learnable committee for ``mode='learnable'`` (built under a forked torch RNG so
    the main network's initialisation and later random draws are those of a run without
    it), None for ``'shared'``."""
    if mode not in COMMITTEE_MODES:
        raise ValueError(f"padnet committee_mode must be one of {COMMITTEE_MODES}, got {mode!r}")
    if mode == "shared" or len(task_names) < 2:
        return None
    with torch.random.fork_rng(devices=[]):
        return LearnableCommittee(task_names, channels, out_channels, **kw)
