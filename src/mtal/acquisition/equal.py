"""EquAL (Golestaneh & Kitani, 2020): self-supervised equivariance under horizontal flips.

A model should commute with a flip: ``f(x) ≈ flip⁻¹(f(flip(x)))``. The score of task k is
the divergence between the prediction on ``x`` and the un-flipped prediction on the
flipped image, averaged over pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mtal.acquisition import STRATEGIES
from mtal.acquisition.base import AcquisitionContext, Selection, Strategy, minmax
from mtal.acquisition.scoring import forward, stream_summaries

Divergence = Callable[[Any, torch.Tensor, torch.Tensor], torch.Tensor]


def categorical_kl(task: Any, raw: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Pixel-mean ``KL(softmax(raw) ‖ softmax(other))`` over the class dim → ``[B]``."""
    lp = F.log_softmax(raw.float(), dim=1)
    lq = F.log_softmax(other.float(), dim=1)
    return (lp.exp() * (lp - lq)).sum(dim=1).flatten(1).mean(dim=1)


def binary_kl(task: Any, raw: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Pixel-mean Bernoulli ``KL(σ(raw) ‖ σ(other))`` → ``[B]`` (computed from logits)."""
    raw, other = raw.float(), other.float()
    p = torch.sigmoid(raw)
    kl = p * (F.logsigmoid(raw) - F.logsigmoid(other)) + (1 - p) * (
        F.logsigmoid(-raw) - F.logsigmoid(-other)
    )
    return kl.flatten(1).mean(dim=1)


def regression_discrepancy(task: Any, raw: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Regression tasks: the task's own ``discrepancy(raw, other)`` (its loss with the
    un-flipped prediction as target)."""
    return task.discrepancy(raw, other)


#: divergence between the two predictions, by ``Task.kind``
FLIP_DIVERGENCES: dict[str, Divergence] = {
    "categorical": categorical_kl,
    "binary": binary_kl,
    "regression": regression_discrepancy,
}

EQUAL_TASKS = ("semseg", "depth", "normals", "edge", "saliency", "parts")


def check_flip_tasks(ctx: AcquisitionContext, scope: list[str], who: str) -> None:
    """Every task of ``scope`` must have a flip divergence."""
    for name in scope:
        if ctx.tasks[name].kind not in FLIP_DIVERGENCES:
            raise ValueError(
                f"{who}: task {name!r} has kind {ctx.tasks[name].kind!r}; "
                f"supported kinds: {sorted(FLIP_DIVERGENCES)}"
            )


def flip_scores(ctx: AcquisitionContext, images: np.ndarray, scope: list[str]) -> np.ndarray:
    """Per-task EquAL scores ``[n, len(scope)]`` (float64) of ``images``: one forward of
    each batch stacked with its flip."""

    def summarise(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        image = batch["image"]
        b = image.shape[0]
        out = forward(ctx, {"image": torch.cat([image, image.flip(-1)])})
        cols = []
        for name in scope:
            task = ctx.tasks[name]
            raw = out.final[name]
            cols.append(FLIP_DIVERGENCES[task.kind](task, raw[:b], task.hflip(raw[b:])))
        return {"equal": torch.stack(cols, dim=1)}

    return stream_summaries(ctx, images, summarise)["equal"].numpy().astype(np.float64)


class Equivariance(Strategy):
    """``ŝ_k(x) = D_k(f_k(x), T⁻¹ f_k(T x))`` with ``T`` the horizontal flip
    (``Task.hflip`` un-flips, e.g. negating the x component of normals) and ``D_k`` from
    :data:`FLIP_DIVERGENCES`. ``task=None`` (``equal``) scores every task and sums the
    per-task scores min–max normalised over the candidates (tasks have different scales);
    ``task="depth"`` (``equal-depth``) scores that task only.
    """

    granularity = "image"

    def __init__(self, task: str | None = None, **kwargs: Any) -> None:
        self.name = "equal" if task is None else f"equal-{task}"
        super().__init__(**kwargs)
        self.task = task

    def acquire(self, ctx: AcquisitionContext, count: int, rng: np.random.Generator) -> Selection:
        names = list(ctx.tasks)
        if self.task is not None and self.task not in ctx.tasks:
            raise ValueError(
                f"strategy {self.name!r} scores task {self.task!r}, which is not among the run's "
                f"tasks {names}; pick equal-<task> for one of them or 'equal'"
            )
        scope = names if self.task is None else [self.task]
        check_flip_tasks(ctx, scope, self.name)
        unl = np.asarray(ctx.pool.unlabelled_images(), dtype=np.int64)
        per_task = flip_scores(ctx, unl, scope)
        score = minmax(per_task, axis=0).sum(axis=1) if self.task is None else per_task[:, 0]
        task_scores = np.full((len(unl), len(names)), np.nan)
        for col, name in enumerate(scope):
            task_scores[:, names.index(name)] = per_task[:, col]
        return self.image_selection(ctx, unl, score, count, rng, task_scores=task_scores)


STRATEGIES.register("equal")(Equivariance)
for _task in EQUAL_TASKS:
    STRATEGIES.register(f"equal-{_task}")(partial(Equivariance, task=_task))
