"""Random baselines: uniformly random whole images or image/task pairs."""

from __future__ import annotations

import numpy as np

from mtal.acquisition import STRATEGIES
from mtal.acquisition.base import AcquisitionContext, Selection, Strategy


@STRATEGIES.register("random")
class RandomImages(Strategy):
    """Buy ``budget // K`` fully unlabelled images uniformly at random (seeded)."""

    name = "random"
    granularity = "image"

    def acquire(self, ctx: AcquisitionContext, count: int, rng: np.random.Generator) -> Selection:
        candidates = np.asarray(ctx.pool.unlabelled_images(), dtype=np.int64)
        return self.image_selection(ctx, candidates, rng.random(len(candidates)), count, rng)


@STRATEGIES.register("random_pairs")
class RandomPairs(Strategy):
    """Buy ``budget`` unlabelled image/task pairs uniformly at random (seeded)."""

    name = "random_pairs"
    granularity = "pair"

    def acquire(self, ctx: AcquisitionContext, count: int, rng: np.random.Generator) -> Selection:
        candidates = np.asarray(ctx.pool.unlabelled_pairs(), dtype=np.int64).reshape(-1, 2)
        return self.pair_selection(
            ctx, candidates, rng.random(len(candidates)), count, rng, record_scores=False
        )
