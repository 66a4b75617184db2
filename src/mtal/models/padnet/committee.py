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
import torch.nn.functional as F
from torch import Tensor, nn

from mtal.models.base import MultiTaskNet
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
    run's RNG stream — and hence the main network's outputs — unchanged. ``batched=True``
    computes the members in eval mode with a few stacked kernels instead of one small
    convolution per block (the same numbers to float rounding; parameters and state-dict
    keys are those of the member-by-member modules). Off by default: on CPU, where each
    convolution already runs at the core's arithmetic peak, the stacked kernels measured
    slower (benchmarks/README.md); they save kernel launches where those dominate (GPU,
    small maps — not measured here).
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
        batched: bool = False,
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
        self.batched = bool(batched)
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

    def forward(
        self,
        inputs: Mapping[str, Tensor],
        order: int,
        size: tuple[int, int] | None = None,
    ) -> dict[str, dict[str, Tensor]]:
        """Raw members ``{task: {member name: B×C×h×w}}`` of up to ``order`` partners
        (``order`` ≤ the built order), bilinearly resized to ``size`` when given. Member by
        member; in eval mode with ``batched`` every stage runs once for all members
        (:meth:`_batched`)."""
        if order > self.order:
            raise ValueError(
                f"padnet learnable committee was built with committee_order={self.order}; "
                f"asked for committee={order}. Set model.model_kwargs.committee_order: {order}"
            )
        x = {t: v.detach() for t, v in inputs.items()} if self.detach else dict(inputs)
        members = [(t, s) for t, sets in self.sets.items() for s in sets if len(s) <= order]
        if self.batched and not self.training:
            return self._batched(x, members, size)
        out: dict[str, dict[str, Tensor]] = {t: {} for t in self.task_names}
        for t, s in members:
            name = member_name(s)
            refined = x[t]
            for a in s:
                refined = refined + self.attention[t][name][a](x[a])
            raw = self.heads[t][name](refined)[1]
            out[t][name] = raw if size is None else MultiTaskNet.upsample(raw, size)
        return out

    def _batched(
        self,
        x: Mapping[str, Tensor],
        members: Sequence[tuple[str, tuple[str, ...]]],
        size: tuple[int, int] | None,
    ) -> dict[str, dict[str, Tensor]]:
        """The members of :meth:`forward` (eval mode), the same numbers in a few large
        kernels: per sender a, one convolution computes every SA_{k,S,a}'s message and
        gate from M_a (weights stacked on the output axis); the member heads run as one
        grouped convolution per layer (``groups`` = members; eval BatchNorm is per
        channel, so stacking channels changes nothing); the classifiers and the resize run
        once per task (members of a task stacked on the batch axis)."""
        messages = self._messages(x, members)
        refined = []
        for t, s in members:
            r = x[t]
            for a in s:  # same order of additions as the member-by-member path
                r = r + messages[(t, s, a)]
            refined.append(r)
        batch = refined[0].shape[0]
        heads = [self.heads[t][member_name(s)] for t, s in members]
        feats = _grouped_body(heads, torch.cat(refined, dim=1))
        out: dict[str, dict[str, Tensor]] = {t: {} for t in self.task_names}
        start = 0
        for t in self.task_names:
            mine = [s for task, s in members if task == t]
            if not mine:
                continue
            group = heads[start : start + len(mine)]
            c = feats.shape[1] // len(heads)
            raw = _grouped_classifier(group, feats[:, start * c : (start + len(mine)) * c])
            # B×(n·O)×h×w → (n·B)×O×h×w, member-major: one resize, contiguous members
            n, o = len(mine), raw.shape[1] // len(mine)
            raw = (
                raw.view(batch, n, o, *raw.shape[-2:])
                .transpose(0, 1)
                .reshape(n * batch, o, *raw.shape[-2:])
            )
            if size is not None:
                raw = MultiTaskNet.upsample(raw, size)
            for s, member in zip(mine, raw.split(batch)):
                out[t][member_name(s)] = member
            start += len(mine)
        return out

    def _messages(
        self, x: Mapping[str, Tensor], members: Sequence[tuple[str, tuple[str, ...]]]
    ) -> dict[tuple[str, tuple[str, ...], str], Tensor]:
        """``SA_{k,S,a}(M_a)`` for every member (k, S) and a ∈ S: per sender a one
        convolution with the message and gate weights of all its readers stacked."""
        out = {}
        for a in self.task_names:
            readers = [(t, s) for t, s in members if a in s]
            if not readers:
                continue
            blocks = [self.attention[t][member_name(s)][a] for t, s in readers]
            weight = torch.cat([w for b in blocks for w in (b.message.weight, b.gate.weight)])
            bias = torch.cat([w for b in blocks for w in (b.message.bias, b.gate.bias)])
            first = blocks[0].message
            y = F.conv2d(x[a], weight, bias, first.stride, first.padding, first.dilation)
            y = y.view(y.shape[0], len(blocks), 2, -1, *y.shape[-2:])
            sa = y[:, :, 0] * torch.sigmoid(y[:, :, 1])
            for i, (t, s) in enumerate(readers):
                out[(t, s, a)] = sa[:, i]
        return out


def _layers(head: ConvHead) -> list[nn.Sequential]:
    """The conv-bn-relu blocks of a member head's body (none for ``num_convs=0``)."""
    return list(head.body) if isinstance(head.body, nn.Sequential) else []


def _grouped_body(heads: Sequence[ConvHead], x: Tensor) -> Tensor:
    """The bodies of ``heads`` (eval mode) on ``x`` = their inputs stacked on the channel
    axis (B×(n·C)×h×w): per layer one grouped convolution (``groups=n``, the member
    weights stacked) and one BatchNorm with the members' running statistics stacked."""
    n = len(heads)
    for blocks in zip(*(_layers(h) for h in heads)):
        conv, bn = blocks[0][0], blocks[0][1]
        weight = torch.cat([b[0].weight for b in blocks])
        x = F.conv2d(x, weight, None, conv.stride, conv.padding, conv.dilation, groups=n)
        x = F.batch_norm(
            x,
            torch.cat([b[1].running_mean for b in blocks]),
            torch.cat([b[1].running_var for b in blocks]),
            torch.cat([b[1].weight for b in blocks]),
            torch.cat([b[1].bias for b in blocks]),
            training=False,
            eps=bn.eps,
        )
        x = F.relu(x)
    return x


def _grouped_classifier(heads: Sequence[ConvHead], x: Tensor) -> Tensor:
    """The 1×1 classifiers of ``heads`` (same output channels O) on their stacked
    features (B×(n·C)×h×w) as one grouped convolution → B×(n·O)×h×w (eval: no dropout)."""
    weight = torch.cat([h.classifier.weight for h in heads])
    bias = torch.cat([h.classifier.bias for h in heads])
    return F.conv2d(x, weight, bias, groups=len(heads))


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
