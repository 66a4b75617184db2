"""CDAL (Agarwal et al., "Contextual Diversity for Active Learning", ECCV 2020), core-set
variant (CDAL-CS) on the segmentation output.

Per image and predicted class c (Sec. 3, Eq. 1): the entropy-weighted mixture of the
softmax vectors of the pixels predicted as c, ``P^c_I = Σ_{r∈I^c} w_r P_r / Σ_{r∈I^c} w_r``
with ``w_r = H(P_r)`` (normalised so P^c is a distribution; a class not predicted has
none). Contextual diversity (Eq. 2): ``d(I₁, I₂) = Σ_c ½KL(P^c_1 ‖ P^c_2) +
½KL(P^c_2 ‖ P^c_1)`` over the classes present in both images. Selection: k-center greedy
with d, centres initialised with every image that has a label.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mtal.acquisition import STRATEGIES
from mtal.acquisition.base import AcquisitionContext, Selection, Strategy, whole_images
from mtal.acquisition.scoring import forward, stream_summaries


def class_mixtures(prob: torch.Tensor, eps: float = 1e-12) -> tuple[torch.Tensor, torch.Tensor]:
    """``B×C×H×W`` softmax → (``B×C×C`` mixtures P^c, ``B×C`` presence)."""
    b, c = prob.shape[:2]
    p = prob.flatten(2).float()  # B×C×N
    w = -(p * (p + eps).log()).sum(1)  # B×N entropy
    onehot = torch.nn.functional.one_hot(p.argmax(1), c).float()  # B×N×C
    weighted = onehot * w[..., None]  # B×N×C
    mix = torch.einsum("bnk,bjn->bkj", weighted, p)  # B×C(class)×C(dist)
    total = weighted.sum(1)  # B×C
    present = onehot.sum(1) > 0
    mix = mix / total.clamp(min=eps)[..., None]
    return mix, present


def contextual_distance(
    mix_a: torch.Tensor,
    pres_a: torch.Tensor,
    mix_b: torch.Tensor,
    pres_b: torch.Tensor,
    eps: float = 1e-12,
) -> torch.Tensor:
    """Eq. 2 between every row of ``a`` (n×C×C) and every row of ``b`` (m×C×C) → n×m."""
    la, lb = (mix_a + eps).log(), (mix_b + eps).log()
    pa, pb = mix_a[:, None], mix_b[None]
    kl_ab = (pa * (la[:, None] - lb[None])).sum(-1)
    kl_ba = (pb * (lb[None] - la[:, None])).sum(-1)
    both = (pres_a[:, None] & pres_b[None]).float()
    return ((0.5 * kl_ab + 0.5 * kl_ba) * both).sum(-1)


@STRATEGIES.register("cdal")
class CDAL(Strategy):
    """k-center greedy under contextual diversity of the ``seg_task`` prediction."""

    name = "cdal"
    granularity = "image"

    def __init__(self, seg_task: str = "semseg", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seg_task = seg_task

    def acquire(self, ctx: AcquisitionContext, count: int, rng: np.random.Generator) -> Selection:
        if self.seg_task not in ctx.tasks or ctx.tasks[self.seg_task].kind != "categorical":
            raise ValueError(
                f"cdal: seg_task={self.seg_task!r} must be a categorical task among {list(ctx.tasks)}"
            )

        def summarise(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
            prob = forward(ctx, batch).final[self.seg_task].float().softmax(1)
            mix, present = class_mixtures(prob)
            return {"mix": mix, "present": present.float()}

        unl = np.asarray(ctx.pool.unlabelled_images(), dtype=np.int64)
        lab = np.asarray(ctx.pool.labelled_images(), dtype=np.int64)
        u = stream_summaries(ctx, unl, summarise)
        mu, pu = u["mix"], u["present"] > 0
        if len(lab):
            lsum = stream_summaries(ctx, lab, summarise)
            min_d = torch.full((len(unl),), float("inf"))
            for start in range(0, len(lab), 256):
                d = contextual_distance(
                    mu,
                    pu,
                    lsum["mix"][start : start + 256],
                    lsum["present"][start : start + 256] > 0,
                )
                min_d = torch.minimum(min_d, d.min(1).values)
        else:
            min_d = torch.full((len(unl),), float("inf"))
        picked: list[int] = []
        for _ in range(count):
            if torch.isinf(min_d).all():
                choice = int(rng.integers(len(unl)))
                while choice in picked:
                    choice = int(rng.integers(len(unl)))
            else:
                scores = min_d.clone()
                scores[picked] = -1.0
                choice = int(scores.argmax())
            picked.append(choice)
            d = contextual_distance(mu, pu, mu[choice : choice + 1], pu[choice : choice + 1])[:, 0]
            min_d = torch.minimum(min_d, d)
            min_d[picked] = -1.0
        return whole_images(
            ctx, unl[np.asarray(picked, dtype=np.int64)], diagnostics={"candidates": int(len(unl))}
        )
