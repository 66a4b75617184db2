"""LL4AL (Yoo & Kweon, CVPR 2019): learning loss for active learning, one loss per task."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mtal.acquisition import STRATEGIES
from mtal.acquisition.base import AcquisitionContext, Selection, Strategy
from mtal.acquisition.scoring import forward, stream_summaries


@STRATEGIES.register("ll4al")
class LearningLoss(Strategy):
    """Score ``s(x) = Σ_k w_k · l̂_k(x)`` (WACV24 Sec. 4.2: one loss-prediction module
    per task, combined with the task weights), ``l̂_k`` the predicted task losses
    (``MultiTaskOutput.loss_pred``, B×K) and ``w_k`` the config's task weights
    (``ctx.task_weights``; 1 for a task without one); buy the highest. Per-task ``l̂_k``
    are kept as the selection's scores."""

    name = "ll4al"
    granularity = "image"

    def acquire(self, ctx: AcquisitionContext, count: int, rng: np.random.Generator) -> Selection:
        unl = np.asarray(ctx.pool.unlabelled_images(), dtype=np.int64)
        k = len(ctx.tasks)

        def summarise(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
            out = forward(ctx, batch)
            if out.loss_pred is None:
                raise ValueError(
                    "ll4al needs predicted losses: build the model with "
                    "create_model(..., loss_prediction=True)"
                )
            if out.loss_pred.shape[-1] != k:
                raise ValueError(
                    f"ll4al: loss_pred has {out.loss_pred.shape[-1]} columns, expected K={k}"
                )
            return {"loss_pred": out.loss_pred.reshape(-1, k)}

        pred = stream_summaries(ctx, unl, summarise)["loss_pred"].numpy().astype(np.float64)
        given = dict(ctx.task_weights or {})
        w = np.array([float(given.get(t, 1.0)) for t in ctx.tasks])
        return self.image_selection(
            ctx, unl, pred @ w, count, rng, task_scores=pred, diagnostics={"w": w.tolist()}
        )
