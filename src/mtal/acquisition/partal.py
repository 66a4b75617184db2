"""PartAL (Durasov et al.): partial multi-task active learning over image/task pairs."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mtal.acquisition import STRATEGIES
from mtal.acquisition.base import AcquisitionContext, Selection, Strategy
from mtal.acquisition.scoring import accepts_keyword, mc_forward, stream_summaries

#: ``partal`` mc_scope: every head's dropout (the paper's MC dropout) or the final heads'
PARTAL_MC_SCOPES = ("all", "final")


@STRATEGIES.register("partal")
class PartAL(Strategy):
    """Buy the ``budget`` unlabelled (image, task) pairs of highest normalised uncertainty
    ``ũ_k(x) = (u_k(x) − m_k) / (M_k − m_k)``.

    ``u_k = Task.mc_uncertainty`` over ``mc_samples`` MC-dropout samples (mean pixel
    entropy for classification, Gaussian entropy of the MC variance for regression),
    computed in ONE forward that replicates only the dropout-carrying part S times
    (:func:`~mtal.acquisition.scoring.mc_forward`). Labels an image already
    carries are substituted for the initial predictions (``forward(gt=, gt_mask=)``).
    ``m_k``/``M_k`` are the min/max of ``u_k`` over the unlabelled pairs of task k at the
    first cycle the strategy runs, frozen in ``ctx.state["partal"]`` (so later values may
    leave [0, 1]); a constant task (``M_k = m_k``) divides by 1. ``gt_substitution=False``
    scores every image from its own predictions (the ablation without substitution);
    ``normalise=False`` ranks the raw ``u_k`` across tasks (PartAL Fig. 12's ablation
    without normalisation). ``mc_samples=8`` is ours (the paper does not fix it).
    ``mc_scope="final"`` (ours, not the paper's) samples only the final heads' dropout:
    the initial predictions and the distillation run once per batch, ~4× cheaper on
    PAD-Net, but ``u_k`` then ignores the initial heads' dropout, so a known label no
    longer narrows the sampled spread of the other tasks through the distillation (the
    point of substituting it) — it only moves their mean (benchmarks/README.md).
    """

    name = "partal"
    granularity = "pair"

    def __init__(
        self,
        mc_samples: int = 8,
        gt_substitution: bool = True,
        normalise: bool = True,
        mc_scope: str = "all",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if mc_scope not in PARTAL_MC_SCOPES:
            raise ValueError(
                f"partal: mc_scope must be one of {PARTAL_MC_SCOPES}, got {mc_scope!r}"
            )
        self.mc_scope = mc_scope
        if int(mc_samples) < 2:
            raise ValueError(f"partal: mc_samples must be >= 2 for MC-dropout, got {mc_samples}")
        self.mc_samples = int(mc_samples)
        self.gt_substitution = bool(gt_substitution)
        self.normalise = bool(normalise)

    def check_model(self, model: Any) -> None:
        """Ground-truth substitution needs a PAD-Net built with ``gt_substitution=True``;
        ``mc_scope="final"`` a model whose forward takes ``mc_scope``."""
        if self.mc_scope != "all" and not accepts_keyword(model, "mc_scope"):
            raise ValueError(
                f"strategy partal: mc_scope={self.mc_scope!r} needs a model with separate "
                f"initial and final heads (PAD-Net); {type(model).__name__} has none: use "
                "loop.strategy_kwargs.mc_scope: all"
            )
        if self.gt_substitution and not getattr(model, "gt_substitution", False):
            raise ValueError(
                "strategy partal substitutes known labels for the initial predictions, but "
                f"the model ({type(model).__name__}) was built without it: set "
                "model.model_kwargs.gt_substitution: true (PAD-Net), or "
                "loop.strategy_kwargs.gt_substitution: false to score without substitution"
            )

    def uncertainties(
        self, ctx: AcquisitionContext, images: np.ndarray, seed: int | None = None
    ) -> np.ndarray:
        """Raw per-task MC uncertainty ``u_k`` of ``images`` → n×K (float64); ``seed``
        fixes the dropout masks."""
        names = list(ctx.tasks)
        s = self.mc_samples

        def summarise(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
            b = batch["image"].shape[0]
            extra: dict[str, Any] = {}
            if self.gt_substitution:
                extra["gt"] = dict(batch["targets"])
                extra["gt_mask"] = batch["labelled"]
            if self.mc_scope != "all":
                extra["mc_scope"] = self.mc_scope
            out = mc_forward(ctx, batch, s, **extra)
            cols = []
            for name in names:
                raw = out.final[name]
                cols.append(ctx.tasks[name].mc_uncertainty(raw.reshape(s, b, *raw.shape[1:])))
            return {"u": torch.stack(cols, dim=1)}

        got = stream_summaries(ctx, images, summarise, with_labels=self.gt_substitution, seed=seed)
        return got["u"].numpy().astype(np.float64)

    def normaliser(
        self, ctx: AcquisitionContext, u: np.ndarray, unlabelled: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(min, max) per task: frozen in ``ctx.state`` at the first cycle, reused after."""
        names = list(ctx.tasks)
        state = ctx.state.get(self.name)
        if state is None:
            lo = np.zeros(len(names))
            hi = np.zeros(len(names))
            for k in range(len(names)):
                col = u[unlabelled[:, k], k]
                if col.size:
                    lo[k], hi[k] = col.min(), col.max()
            state = {"tasks": names, "min": lo.tolist(), "max": hi.tolist(), "cycle": ctx.cycle}
            ctx.state[self.name] = state
        elif list(state["tasks"]) != names:
            raise ValueError(
                f"partal: ctx.state['{self.name}'] was frozen for tasks {state['tasks']}, but "
                f"this run has tasks {names}; use a fresh state for a different task set"
            )
        return np.asarray(state["min"], np.float64), np.asarray(state["max"], np.float64)

    def acquire(self, ctx: AcquisitionContext, count: int, rng: np.random.Generator) -> Selection:
        images = np.asarray(ctx.pool.partially_unlabelled_images(), dtype=np.int64)
        u = self.uncertainties(ctx, images, seed=int(rng.integers(2**31 - 1)))
        unlabelled = ~np.asarray(ctx.pool.labelled, dtype=bool)[images]
        lo, hi = self.normaliser(ctx, u, unlabelled)
        span = np.where(hi > lo, hi - lo, 1.0)
        norm = (u - lo) / span if self.normalise else u
        rows, cols = np.nonzero(unlabelled)
        candidates = np.stack([images[rows], cols], axis=1).astype(np.int64)
        return self.pair_selection(
            ctx,
            candidates,
            norm[rows, cols],
            count,
            rng,
            diagnostics={
                "norm_min": lo.tolist(),
                "norm_max": hi.tolist(),
                "normalise": self.normalise,
            },
        )
