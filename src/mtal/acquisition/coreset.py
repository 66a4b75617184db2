"""Core-Set (Sener & Savarese, ICLR 2018): k-center greedy on backbone embeddings."""

from __future__ import annotations

import numpy as np
import torch

from mtal.acquisition import STRATEGIES
from mtal.acquisition.base import AcquisitionContext, Selection, Strategy, whole_images
from mtal.acquisition.scoring import embedding_summary, labelled_features, stream_summaries


@STRATEGIES.register("coreset")
class CoreSet(Strategy):
    """k-center greedy: repeatedly add ``u = argmax_{i∈U} min_{j∈S} ‖f(x_i) − f(x_j)‖₂``
    to the centres ``S`` (initially every image with any label), ``f`` = pooled backbone
    ``MultiTaskOutput.embedding``; only fully unlabelled images can be bought.
    """

    name = "coreset"
    granularity = "image"

    def acquire(self, ctx: AcquisitionContext, count: int, rng: np.random.Generator) -> Selection:
        from mtal.search import k_center_greedy

        unl = np.asarray(ctx.pool.unlabelled_images(), dtype=np.int64)
        lab = np.asarray(ctx.pool.labelled_images(), dtype=np.int64)
        summarise = embedding_summary(ctx)
        f_unl = stream_summaries(ctx, unl, summarise)["embedding"]
        f_lab = labelled_features(ctx, lab, summarise, "embedding")
        if len(lab) == 0:
            f_lab = f_unl.new_zeros((0, f_unl.shape[1]))
        features = torch.cat([f_lab, f_unl]).numpy().astype(np.float32)
        mask = np.zeros(len(features), dtype=bool)
        mask[: len(lab)] = True
        picked = np.asarray(
            k_center_greedy(features, mask, count, seed=int(rng.integers(2**31))), dtype=np.int64
        )
        if picked.size != count or (picked < len(lab)).any() or len(set(picked.tolist())) != count:
            raise RuntimeError(
                f"mtal.search.k_center_greedy returned {picked.tolist()} for a budget of {count} "
                f"among rows {len(lab)}..{len(features) - 1}; expected distinct unlabelled rows"
            )
        return whole_images(ctx, unl[picked - len(lab)], diagnostics={"candidates": len(unl)})
