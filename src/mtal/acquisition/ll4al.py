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
    """Score ``s(x) = Σ_k l̂_k(x)``, the loss-prediction module's predicted task losses
    (``MultiTaskOutput.loss_pred``, B×K); buy the highest. Per-task ``l̂_k`` are kept as
    the selection's scores."""

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

        pred = stream_summaries(ctx, unl, summarise)["loss_pred"].numpy()
        return self.image_selection(ctx, unl, pred.sum(axis=1), count, rng, task_scores=pred)
