"""RBAL: rank-based multi-task active learning — per-task uncertainty ranks, summed."""

# WACV24 Sec. 4.2 runs RBAL on the ranks of per-task EquAL scores; PartAL's RBAL ranks
# MC-dropout entropies. Both are here: ``uncertainty: equal | mc``.

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mtal.acquisition import STRATEGIES
from mtal.acquisition.base import AcquisitionContext, Selection, Strategy
from mtal.acquisition.scoring import forward, mc_forward, stream_summaries


def categorical_entropy(raw: torch.Tensor) -> torch.Tensor:
    """Pixel-mean Shannon entropy of ``softmax(raw)`` over the class dim → ``[B]``."""
    logp = F.log_softmax(raw.float(), dim=1)
    return -(logp.exp() * logp).sum(dim=1).flatten(1).mean(dim=1)


def binary_entropy(raw: torch.Tensor) -> torch.Tensor:
    """Pixel-mean Bernoulli entropy of ``σ(raw)`` → ``[B]``."""
    raw = raw.float()
    p = torch.sigmoid(raw)
    ent = -(p * F.logsigmoid(raw) + (1 - p) * F.logsigmoid(-raw))
    return ent.flatten(1).mean(dim=1)


#: entropy of a deterministic prediction, by ``Task.kind`` (regression has none)
DETERMINISTIC_ENTROPY: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "categorical": categorical_entropy,
    "binary": binary_entropy,
}


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``values`` along axis 0 (largest = n); ties get their mean rank."""
    values = np.asarray(values, dtype=np.float64)
    ranks = np.empty_like(values)
    for col in range(values.shape[1]):
        v = values[:, col]
        order = np.argsort(v, kind="stable")
        sorted_v = v[order]
        r = np.empty(len(v))
        start = 0
        while start < len(v):
            stop = start
            while stop + 1 < len(v) and sorted_v[stop + 1] == sorted_v[start]:
                stop += 1
            r[order[start : stop + 1]] = (start + stop) / 2.0 + 1.0
            start = stop + 1
        ranks[:, col] = r
    return ranks


#: what RBAL ranks: WACV24's per-task EquAL scores, or PartAL's MC-dropout uncertainty
UNCERTAINTIES = ("equal", "mc")


@STRATEGIES.register("rbal")
class RankBased(Strategy):
    """``s(x) = Σ_k rank_k(u_k(x))``: per-task uncertainty ``u_k`` ranked over the
    candidates (most uncertain = highest rank, ties averaged), ranks summed; buy the
    highest sums.

    ``uncertainty="equal"`` (default; WACV24 Sec. 4.2 "RBAL … ranks of the per-task EquAL
    scores"): ``u_k`` is EquAL's flip divergence of task k
    (:func:`mtal.acquisition.equal.flip_scores`). ``uncertainty="mc"`` (PartAL's form):
    ``u_k`` is ``Task.mc_uncertainty`` of ``mc_samples`` MC-dropout passes (default 8, a
    constant of ours; one forward replicating only the dropout-carrying part S times); with
    ``mc_samples=1`` it is the pixel-mean entropy of the deterministic prediction, which
    exists only for categorical and binary tasks.
    """

    name = "rbal"
    granularity = "image"

    def __init__(self, uncertainty: str = "equal", mc_samples: int = 8, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if uncertainty not in UNCERTAINTIES:
            raise ValueError(
                f"rbal: uncertainty={uncertainty!r}; expected one of {UNCERTAINTIES} "
                "('equal' is WACV24's RBAL, 'mc' PartAL's; loop.strategy_kwargs.uncertainty)"
            )
        if int(mc_samples) < 1:
            raise ValueError(f"rbal: mc_samples must be >= 1, got {mc_samples}")
        self.uncertainty = uncertainty
        self.mc_samples = int(mc_samples)

    def acquire(self, ctx: AcquisitionContext, count: int, rng: np.random.Generator) -> Selection:
        if self.uncertainty == "equal":
            return self._acquire_equal(ctx, count, rng)
        return self._acquire_mc(ctx, count, rng)

    def _acquire_equal(
        self, ctx: AcquisitionContext, count: int, rng: np.random.Generator
    ) -> Selection:
        from mtal.acquisition.equal import check_flip_tasks, flip_scores

        names = list(ctx.tasks)
        check_flip_tasks(ctx, names, self.name)
        unl = np.asarray(ctx.pool.unlabelled_images(), dtype=np.int64)
        u = flip_scores(ctx, unl, names)
        return self._rank_sum(ctx, unl, u, count, rng, {"uncertainty": "equal"})

    def _acquire_mc(
        self, ctx: AcquisitionContext, count: int, rng: np.random.Generator
    ) -> Selection:
        names = list(ctx.tasks)
        s = self.mc_samples
        if s == 1:
            bad = [n for n in names if ctx.tasks[n].kind not in DETERMINISTIC_ENTROPY]
            if bad:
                raise ValueError(
                    f"rbal: tasks {bad} are regression tasks whose deterministic prediction has "
                    "no entropy; set mc_samples >= 2 to use MC-dropout uncertainty"
                )
        unl = np.asarray(ctx.pool.unlabelled_images(), dtype=np.int64)

        def summarise(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
            image = batch["image"]
            b = image.shape[0]
            cols = []
            if s == 1:
                out = forward(ctx, batch)
                for name in names:
                    cols.append(DETERMINISTIC_ENTROPY[ctx.tasks[name].kind](out.final[name]))
            else:
                out = mc_forward(ctx, batch, s)
                for name in names:
                    raw = out.final[name]
                    cols.append(ctx.tasks[name].mc_uncertainty(raw.reshape(s, b, *raw.shape[1:])))
            return {"uncertainty": torch.stack(cols, dim=1)}

        seed = int(rng.integers(2**31 - 1))
        u = (
            stream_summaries(ctx, unl, summarise, seed=seed)["uncertainty"]
            .numpy()
            .astype(np.float64)
        )
        return self._rank_sum(ctx, unl, u, count, rng, {"uncertainty": "mc", "mc_samples": s})

    def _rank_sum(
        self,
        ctx: AcquisitionContext,
        unl: np.ndarray,
        u: np.ndarray,
        count: int,
        rng: np.random.Generator,
        diagnostics: dict[str, Any],
    ) -> Selection:
        """Buy the ``count`` images with the highest ``Σ_k rank_k(u_k)``."""
        ranks = average_ranks(u)
        return self.image_selection(
            ctx, unl, ranks.sum(axis=1), count, rng, task_scores=u, diagnostics=diagnostics
        )
