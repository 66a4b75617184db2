"""The acquisition contract: context in, selection out, and the shared top-B helpers.

A strategy scores what is still unlabelled and buys ``budget`` labels: image
strategies buy ``budget // K`` whole, fully unlabelled images; pair strategies buy
``budget`` single image/task pairs (see docs/contracts.md, "Strategy").
"""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    import torch

    from mtal.acquisition.costs import CostBudget
    from mtal.tasks.base import Task

GRANULARITIES = ("image", "pair")
TIE_BREAKS = ("random", "index")


@dataclass
class AcquisitionContext:
    """Everything a strategy may look at when it selects.

    ``tasks`` is ordered like the pool's columns. ``state`` survives across cycles (the
    loop saves it in the run folder; keep its values JSON-serialisable).
    ``train_features`` is an optional hook ``indices -> Tensor[n, D]`` giving the
    diversity features of already-labelled pool images (e.g. cached during training);
    when given, diversity strategies (``coreset``, ``mtal``) use it instead of a
    scoring pass over the labelled images. It must return exactly what that strategy's
    own pass computes (``coreset``: ``MultiTaskOutput.embedding``; ``mtal``: see
    :func:`mtal.acquisition.diversity.pooled_task_features`).
    ``cost``: a budget in annotation cost (``loop.budget_unit: cost``); when set, it and
    not the label count limits what :meth:`Strategy.select` buys.
    """

    model: torch.nn.Module
    tasks: Mapping[str, Task]
    pool: Any
    datamodule: Any
    device: torch.device | str = "cpu"
    cycle: int = 0
    seed: int = 0
    state: dict[str, Any] = field(default_factory=dict)
    train_features: Callable[[np.ndarray], torch.Tensor] | None = None
    cost: CostBudget | None = None
    #: the config's task weights w_k (LL4AL's Σ_k w_k l̂_k); None = 1 for every task
    task_weights: Mapping[str, float] | None = None
    #: where scoring passes keep the per-image summary rows: None = in memory; a folder =
    #: memory-mapped unnamed files there (``loop.summary_store: disk``; same numbers)
    summary_dir: str | None = None

    @property
    def task_names(self) -> list[str]:
        """Task names in pool column order."""
        return list(self.tasks)

    @property
    def num_images(self) -> int:
        """Number of images N in the pool."""
        return int(np.asarray(self.pool.labelled).shape[0])


@dataclass
class Selection:
    """What a strategy bought.

    ``pairs``: M×2 int64 (image, task column); ``images``: the distinct images, in
    selection order; ``scores``/``weights``: N_sel×K float32 rows aligned with
    ``images`` (``scores`` NaN where a pair was not scored or not bought; ``weights``
    are the s_k to store as training loss weights, or None for the pool default).
    """

    pairs: np.ndarray
    images: np.ndarray
    scores: np.ndarray
    weights: np.ndarray | None = None
    diagnostics: dict[str, Any] = field(default_factory=dict)

    def pair_values(self, matrix: np.ndarray) -> np.ndarray:
        """Gather an N_sel×K matrix (``scores`` or ``weights``) at ``pairs`` → ``[M]``."""
        row = {int(img): r for r, img in enumerate(self.images)}
        rows = np.array([row[int(i)] for i in self.pairs[:, 0]], dtype=np.int64)
        return np.asarray(matrix)[rows, self.pairs[:, 1]]

    @property
    def num_labels(self) -> int:
        """Number of labels (image/task pairs) bought."""
        return int(self.pairs.shape[0])


@dataclass
class ScoredPool:
    """Every candidate a strategy scored in its last ``select`` (for diagnostics only):
    ``images`` [n]; ``image_score`` [n] (what the image strategy ranks by, or None for
    pair strategies); ``task_scores`` [n, K] per-task scores, NaN where a pair was not a
    candidate, or None when the strategy has none."""

    images: np.ndarray
    image_score: np.ndarray | None
    task_scores: np.ndarray | None


def minmax(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """Min–max normalise along ``axis`` to [0, 1]; a constant column maps to 0 (nothing
    distinguishes its samples, so none of them is preferred)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return values.copy()
    lo = values.min(axis=axis, keepdims=True)
    span = values.max(axis=axis, keepdims=True) - lo
    return np.where(span > 0, (values - lo) / np.where(span > 0, span, 1.0), 0.0)


def whole_images(
    ctx: AcquisitionContext,
    images: np.ndarray,
    task_scores: np.ndarray | None = None,
    weights: np.ndarray | None = None,
    diagnostics: dict[str, Any] | None = None,
) -> Selection:
    """A Selection buying every task of ``images`` (in that order); ``task_scores`` and
    ``weights`` are len(images)×K or None (scores then NaN)."""
    images = np.asarray(images, dtype=np.int64).reshape(-1)
    k = len(ctx.tasks)
    pairs = np.stack(
        [np.repeat(images, k), np.tile(np.arange(k, dtype=np.int64), len(images))], axis=1
    ).astype(np.int64)
    if task_scores is None:
        scores = np.full((len(images), k), np.nan, np.float32)
    else:
        scores = np.asarray(task_scores, dtype=np.float32).reshape(len(images), k)
    w = None if weights is None else np.asarray(weights, dtype=np.float32).reshape(len(images), k)
    return Selection(
        pairs=pairs, images=images, scores=scores, weights=w, diagnostics=dict(diagnostics or {})
    )


class Strategy(ABC):
    """Base class: budget bookkeeping, a seeded generator and top-B helpers.

    Subclasses set ``name`` and ``granularity`` and implement ``acquire(ctx, count, rng)``
    where ``count`` is already validated: a number of images (image strategies) or
    pairs (pair strategies) that are available. ``tie_break``: equal scores are
    ordered by a seeded random permutation (``"random"``, default) or by lowest pool
    index (``"index"``).
    """

    name: ClassVar[str] = "strategy"
    granularity: ClassVar[str] = "image"

    def __init__(self, *, clamp_budget: bool = False, tie_break: str = "random") -> None:
        if tie_break not in TIE_BREAKS:
            raise ValueError(
                f"strategy {self.name!r}: tie_break={tie_break!r}; expected one of {TIE_BREAKS}"
            )
        if self.granularity not in GRANULARITIES:
            raise TypeError(f"{type(self).__name__}.granularity must be one of {GRANULARITIES}")
        self.clamp_budget = clamp_budget
        self.tie_break = tie_break
        self.last_scored: ScoredPool | None = None

    # -- public API -----------------------------------------------------------------
    def check_model(self, model: Any) -> None:
        """Raise a clear error if ``model`` lacks what this strategy needs (called by the
        loop before anything is trained, so a mismatch never costs a fit)."""
        return None

    def rng(self, ctx: AcquisitionContext) -> np.random.Generator:
        """The strategy's own generator, a pure function of (seed, cycle, name)."""
        return np.random.default_rng(
            [int(ctx.seed), int(ctx.cycle), zlib.crc32(self.name.encode())]
        )

    def select(self, ctx: AcquisitionContext, budget: int) -> Selection:
        """Buy ``budget`` labels (image/task pairs) from the pool of ``ctx``."""
        count = self._units(ctx, budget) if ctx.cost is None else self._cost_units(ctx)
        rng = self.rng(ctx)
        # the scored candidates of this select (set by image_/pair_selection), for
        # mtal.diagnostics; None when the strategy ranks nothing (Core-Set)
        self.last_scored = None
        if count == 0:
            sel = self._empty(ctx)
        else:
            sel = self.acquire(ctx, count, rng)
        if ctx.cost is not None:
            sel.diagnostics.update(ctx.cost.diagnostics(sel.pairs))
        sel.diagnostics.setdefault("strategy", self.name)
        sel.diagnostics.setdefault("granularity", self.granularity)
        sel.diagnostics.setdefault("budget", int(budget))
        sel.diagnostics.setdefault("labels_bought", sel.num_labels)
        return sel

    @abstractmethod
    def acquire(self, ctx: AcquisitionContext, count: int, rng: np.random.Generator) -> Selection:
        """Select ``count`` images or pairs (already validated against what is left)."""

    # -- budget -----------------------------------------------------------------------
    def _units(self, ctx: AcquisitionContext, budget: int) -> int:
        if int(budget) != budget or budget < 0:
            raise ValueError(
                f"strategy {self.name!r}: budget must be a label count >= 0, got {budget}"
            )
        budget = int(budget)
        k = len(ctx.tasks)
        if self.granularity == "image":
            left = len(ctx.pool.unlabelled_images())
            want = budget // k
            if budget > 0 and want == 0:
                raise ValueError(
                    f"strategy {self.name!r} buys whole images of {k} labels each; a budget of "
                    f"{budget} labels buys none. Use a budget that is a multiple of {k}."
                )
            unit = f"fully unlabelled images ({left * k} labels)"
        else:
            left = len(ctx.pool.unlabelled_pairs())
            want = budget
            unit = "unlabelled image/task pairs"
        if want > left:
            if self.clamp_budget:
                return left
            raise ValueError(
                f"strategy {self.name!r}: budget of {budget} labels asks for {want} "
                f"{'images' if self.granularity == 'image' else 'pairs'}, but only {left} "
                f"{unit} are left. Lower the budget or create the strategy with "
                f"clamp_budget=True to buy what is left."
            )
        return want

    def _cost_units(self, ctx: AcquisitionContext) -> int:
        """Images (image strategies: ``floor(budget / Σ_k c_k)``) or the candidate-pair cap
        (pair strategies: every unlabelled pair; the cost stops the walk) under ``ctx.cost``."""
        cost = ctx.cost
        assert cost is not None
        if self.granularity == "image":
            left, want = len(ctx.pool.unlabelled_images()), cost.images()
            if want == 0:
                raise ValueError(
                    f"strategy {self.name!r} buys whole images costing {float(cost.image_cost())} "
                    f"each (the sum of loop.task_costs); a budget of {cost.amount} buys none. "
                    "Raise loop.budget."
                )
            what, have = f"{want} images", f"{left} fully unlabelled images"
            short = want > left
        else:
            pairs = ctx.pool.unlabelled_pairs()
            left = want = len(pairs)
            total = cost.spent(pairs)
            what, have = f"{cost.amount} cost units", f"pairs worth {total} cost units"
            short = total < cost.amount
        if short and not self.clamp_budget:
            raise ValueError(
                f"strategy {self.name!r}: a cost budget of {cost.amount} asks for {what}, but "
                f"only {have} are left. Lower the budget or create the strategy with "
                f"clamp_budget=True to buy what is left."
            )
        return min(want, left)

    def pick_pairs(
        self,
        ctx: AcquisitionContext,
        candidates: np.ndarray,
        score: np.ndarray,
        count: int,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """Positions of the candidate pairs to buy: the top ``count`` by score, or under a
        cost budget the greedy walk of :meth:`mtal.acquisition.costs.CostBudget.pick`
        (same tie-break). Every pair strategy buys through here."""
        if ctx.cost is None:
            return self.top_k(score, count, rng)
        scores = np.asarray(score, dtype=np.float64)
        if np.isnan(scores).any():
            raise ValueError(
                f"strategy {self.name!r} produced {int(np.isnan(scores).sum())} NaN scores; "
                "check the model outputs for NaN/inf"
            )
        n = scores.shape[0]
        secondary = rng.permutation(n) if self.tie_break == "random" else np.arange(n)
        return ctx.cost.pick(candidates, scores, secondary, count)

    def _empty(self, ctx: AcquisitionContext) -> Selection:
        k = len(ctx.tasks)
        return Selection(
            pairs=np.zeros((0, 2), np.int64),
            images=np.zeros(0, np.int64),
            scores=np.zeros((0, k), np.float32),
            weights=None,
        )

    # -- ranking helpers ----------------------------------------------------------------
    def top_k(self, scores: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
        """Positions of the ``count`` highest ``scores`` (highest first), ties broken by
        ``tie_break``. NaN scores are a bug of the scorer and raise."""
        scores = np.asarray(scores, dtype=np.float64)
        if np.isnan(scores).any():
            raise ValueError(
                f"strategy {self.name!r} produced {int(np.isnan(scores).sum())} NaN scores; "
                "check the model outputs for NaN/inf"
            )
        if self.tie_break == "random":
            secondary = rng.permutation(scores.shape[0])
        else:
            secondary = np.arange(scores.shape[0])
        order = np.lexsort((secondary, -scores))
        return order[:count]

    def image_selection(
        self,
        ctx: AcquisitionContext,
        candidates: np.ndarray,
        score: np.ndarray,
        count: int,
        rng: np.random.Generator,
        task_scores: np.ndarray | None = None,
        weights: np.ndarray | None = None,
        diagnostics: dict[str, Any] | None = None,
    ) -> Selection:
        """Top-``count`` images of ``candidates`` by ``score`` → a whole-image Selection.

        ``task_scores``/``weights`` are n_candidates×K (rows aligned with ``candidates``)
        and are gathered for the chosen images.
        """
        candidates = np.asarray(candidates, dtype=np.int64)
        pick = self.top_k(score, count, rng)
        self.last_scored = ScoredPool(
            candidates.copy(),
            np.asarray(score, dtype=np.float64).copy(),
            None if task_scores is None else np.asarray(task_scores, dtype=np.float64).copy(),
        )
        diag = dict(diagnostics or {})
        diag.setdefault("selected_score", np.asarray(score, dtype=np.float64)[pick].tolist())
        diag.setdefault("candidates", int(len(candidates)))
        return whole_images(
            ctx,
            candidates[pick],
            None if task_scores is None else np.asarray(task_scores)[pick],
            None if weights is None else np.asarray(weights)[pick],
            diag,
        )

    def pair_selection(
        self,
        ctx: AcquisitionContext,
        candidates: np.ndarray,
        score: np.ndarray,
        count: int,
        rng: np.random.Generator,
        diagnostics: dict[str, Any] | None = None,
        record_scores: bool = True,
    ) -> Selection:
        """Top-``count`` pairs of ``candidates`` (M×2) by ``score`` → a pair Selection; only
        the bought pairs carry a score (none when ``record_scores`` is False), the other
        cells of their rows are NaN."""
        candidates = np.asarray(candidates, dtype=np.int64).reshape(-1, 2)
        pick = self.pick_pairs(ctx, candidates, score, count, rng)
        scored_images, rows = np.unique(candidates[:, 0], return_inverse=True)
        matrix = np.full((len(scored_images), len(ctx.tasks)), np.nan)
        matrix[rows, candidates[:, 1]] = np.asarray(score, dtype=np.float64)
        self.last_scored = ScoredPool(scored_images, None, matrix)
        pairs = candidates[pick]
        _, first = np.unique(pairs[:, 0], return_index=True)
        images = pairs[np.sort(first), 0]
        row = {int(img): r for r, img in enumerate(images)}
        scores = np.full((len(images), len(ctx.tasks)), np.nan, np.float32)
        chosen = np.asarray(score, dtype=np.float64)[pick]
        if record_scores:
            for (img, task), value in zip(pairs, chosen):
                scores[row[int(img)], int(task)] = value
        diag = dict(diagnostics or {})
        diag.setdefault("candidates", int(len(candidates)))
        return Selection(pairs=pairs, images=images, scores=scores, weights=None, diagnostics=diag)
