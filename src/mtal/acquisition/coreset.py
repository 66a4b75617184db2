"""Core-Set (Sener & Savarese, ICLR 2018): k-center greedy on backbone features."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mtal.acquisition import STRATEGIES
from mtal.acquisition.base import AcquisitionContext, Selection, Strategy, whole_images
from mtal.acquisition.scoring import (
    Summarise,
    embedding_summary,
    forward,
    labelled_features,
    stream_summaries,
)

#: which feature k-center runs on: "fused" (WACV24 Sec. 4.2: "the feature map obtained
#: after the backbone, before the task-specific heads", pooled to ``grid``×``grid``) or
#: "embedding" (the global average of the coarsest backbone level)
CORESET_FEATURES = ("fused", "embedding")


def fused_summary(ctx: AcquisitionContext, grid: int) -> Summarise:
    """Summary: the fused pre-head encoder map average-pooled to ``grid``×``grid`` → [B, C·g²];
    a network without ``extras["fused"]`` (a user's own, see the adapter protocol) gives
    its pooled ``embedding`` instead, and the batch says so (``fused`` = 0)."""

    def summarise(batch: dict) -> dict[str, torch.Tensor]:
        out = forward(ctx, batch)
        fused = out.extras.get("fused") if out.extras else None
        if fused is not None:
            feats = torch.nn.functional.adaptive_avg_pool2d(fused, grid).flatten(1)
        elif out.embedding is not None:
            feats = out.embedding.flatten(1)
        else:
            raise ValueError(
                "coreset needs MultiTaskOutput.extras['fused'] (the pre-head encoder map, "
                "mtal's padnet/hps return it) or MultiTaskOutput.embedding; the model gives "
                "neither"
            )
        flag = torch.full((feats.shape[0], 1), float(fused is not None), device=feats.device)
        return {"embedding": feats, "fused": flag}

    return summarise


@STRATEGIES.register("coreset")
class CoreSet(Strategy):
    """k-center greedy: repeatedly add ``u = argmax_{i∈U} min_{j∈S} ‖f(x_i) − f(x_j)‖₂``
    to the centres ``S`` (initially every image with any label); only fully unlabelled
    images can be bought. ``f``: ``features="fused"`` (default, WACV24's) the fused
    pre-head encoder map average-pooled to ``grid``×``grid`` (``grid=4`` is ours: the paper
    does not say how the map is reduced); ``"embedding"`` the pooled coarsest backbone
    level ``MultiTaskOutput.embedding`` (the only one the ``train_features`` hook serves).
    A network without ``extras["fused"]`` is scored on its ``embedding`` (the selection's
    ``diagnostics["features"]`` says so).
    """

    name = "coreset"
    granularity = "image"

    def __init__(self, features: str = "fused", grid: int = 4, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if features not in CORESET_FEATURES:
            raise ValueError(
                f"coreset: features={features!r}; expected one of {CORESET_FEATURES} "
                "(loop.strategy_kwargs.features)"
            )
        if int(grid) < 1:
            raise ValueError(f"coreset: grid must be >= 1, got {grid}")
        self.features = features
        self.grid = int(grid)

    def acquire(self, ctx: AcquisitionContext, count: int, rng: np.random.Generator) -> Selection:
        from mtal.search import k_center_greedy

        unl = np.asarray(ctx.pool.unlabelled_images(), dtype=np.int64)
        lab = np.asarray(ctx.pool.labelled_images(), dtype=np.int64)
        used = self.features
        # labelled rows first: the unlabelled pass writes behind them in one float32
        # [labelled; unlabelled] buffer, the pool's rows held once (issue 16.6)
        lead: dict[str, torch.Tensor] = {}
        if self.features == "embedding":
            summarise = embedding_summary(ctx)
            if len(lab):
                lead["embedding"] = labelled_features(ctx, lab, summarise, "embedding")
            got = stream_summaries(ctx, unl, summarise, lead=lead)
        else:
            summarise = fused_summary(ctx, self.grid)
            if len(lab):
                lead["embedding"] = stream_summaries(ctx, lab, summarise)["embedding"]
            got = stream_summaries(ctx, unl, summarise, lead=lead)
            if not bool(got["fused"].all()):
                used = "embedding (the model returns no extras['fused'])"
        lead.clear()
        features = got.pop("embedding").numpy()
        mask = np.zeros(len(features), dtype=bool)
        mask[: len(lab)] = True
        picked = np.asarray(
            k_center_greedy(
                features,
                mask,
                count,
                seed=int(rng.integers(2**31)),
                scratch_dir=ctx.summary_dir,
            ),
            dtype=np.int64,
        )
        if picked.size != count or (picked < len(lab)).any() or len(set(picked.tolist())) != count:
            raise RuntimeError(
                f"mtal.search.k_center_greedy returned {picked.tolist()} for a budget of {count} "
                f"among rows {len(lab)}..{len(features) - 1}; expected distinct unlabelled rows"
            )
        return whole_images(
            ctx, unl[picked - len(lab)], diagnostics={"candidates": len(unl), "features": used}
        )
