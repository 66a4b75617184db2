"""Budgets in annotation cost: each task's label has a price, an acquisition spends at
most its budget.

Image strategies pay the sum of the task prices for every image they buy, so they buy
``floor(budget / Σ_k c_k)`` whole images. Pair strategies go through
:meth:`CostBudget.pick` (called by :meth:`Strategy.pair_selection`): a greedy knapsack
that walks the candidates by *score per cost* (``ranking="ratio"``, default) or by score
alone (``ranking="score"``, the cost-blind ablation at equal spend), highest first, and
buys each pair whose price still fits in what is left of the budget (a pair that does
not fit is skipped and the walk goes on, so cheaper pairs fill the rest). Sums are exact
rationals of the float prices, so the spend never exceeds the budget by rounding.

Score per cost needs non-negative values: scores are shifted by ``−min(0, min score)``
first, which changes nothing for non-negative scores (uncertainties, random draws).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

COST_RANKINGS = ("ratio", "score")


@dataclass(frozen=True)
class CostBudget:
    """``amount`` cost units per acquisition, ``costs`` per task column (pool order)."""

    amount: float
    costs: tuple[float, ...]
    ranking: str = "ratio"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.amount) and self.amount > 0):
            raise ValueError(f"loop.budget={self.amount}: a cost budget must be a positive number")
        if not self.costs or any(not (math.isfinite(c) and c > 0) for c in self.costs):
            raise ValueError(
                f"loop.task_costs: every price must be a positive number, got {list(self.costs)}"
            )
        if self.ranking not in COST_RANKINGS:
            raise ValueError(
                f"loop.cost_ranking={self.ranking!r}: choose one of {list(COST_RANKINGS)}"
            )

    @classmethod
    def from_mapping(
        cls, amount: float, task_costs: Mapping[str, float], tasks: Sequence[str], ranking: str
    ) -> CostBudget:
        """Order ``task_costs`` by ``tasks``; a task without a price is an error naming it."""
        missing = [t for t in tasks if t not in task_costs]
        if missing:
            raise ValueError(
                f"loop.task_costs has no price for task(s) {missing} (tasks of this run: "
                f"{list(tasks)}); add e.g. loop.task_costs.{missing[0]}: 1.0"
            )
        return cls(float(amount), tuple(float(task_costs[t]) for t in tasks), ranking)

    def image_cost(self) -> Fraction:
        """The price of one whole image: the sum of the task prices."""
        return sum((Fraction(c) for c in self.costs), Fraction(0))

    def images(self) -> int:
        """Whole images the budget pays for: ``floor(amount / Σ_k c_k)``."""
        return int(Fraction(self.amount) // self.image_cost())

    def pair_costs(self, pairs: np.ndarray) -> np.ndarray:
        """The price of each (image, task column) pair of ``pairs`` (M×2) → ``[M]``."""
        table = np.asarray(self.costs, dtype=np.float64)
        return table[np.asarray(pairs, dtype=np.int64).reshape(-1, 2)[:, 1]]

    def spent(self, pairs: np.ndarray) -> float:
        """Total price of ``pairs`` (float of the exact sum)."""
        cols = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)[:, 1]
        return float(sum((Fraction(self.costs[int(c)]) for c in cols), Fraction(0)))

    def pick(
        self, candidates: np.ndarray, score: np.ndarray, secondary: np.ndarray, count: int
    ) -> np.ndarray:
        """Positions of the pairs bought from ``candidates`` (M×2): the greedy walk of the
        module docstring, ties ordered by ``secondary``, at most ``count`` pairs."""
        value = np.asarray(score, dtype=np.float64)
        value = value - min(0.0, float(value.min())) if value.size else value
        prices = self.pair_costs(candidates)
        key = value / prices if self.ranking == "ratio" else value
        order = np.lexsort((np.asarray(secondary), -key))
        exact = [Fraction(c) for c in self.costs]
        cols = np.asarray(candidates, dtype=np.int64).reshape(-1, 2)[:, 1]
        left = Fraction(self.amount)
        cheapest = min(exact)
        bought: list[int] = []
        for pos in order.tolist():
            if len(bought) >= count or left < cheapest:
                break
            price = exact[int(cols[pos])]
            if price <= left:
                bought.append(pos)
                left -= price
        return np.asarray(bought, dtype=np.int64)

    def diagnostics(self, pairs: np.ndarray) -> dict[str, Any]:
        """``cost_budget`` and ``cost_spent`` for a selection's diagnostics."""
        return {"cost_budget": float(self.amount), "cost_spent": self.spent(pairs)}
