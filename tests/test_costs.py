"""Budgets in annotation cost: the greedy score-per-cost walk against hand-computed
picks, image strategies paying the sum over tasks, the checks before a run, and a
seeded random property test that a cost budget is never exceeded."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from mtal.acquisition import create_strategy
from mtal.acquisition.base import AcquisitionContext
from mtal.acquisition.costs import CostBudget
from mtal.data.pool import LabelPool
from mtal.loop import LoopSettings, budget_in_labels, check_budget, cost_budget, validate_settings

# columns: semseg costs 10, depth 0.5
CANDIDATES = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
SCORES = np.array([0.9, 0.2, 0.5, 0.1])
INDEX = np.arange(4)


def test_ratio_greedy_matches_hand_computed_picks() -> None:
    # score per cost: 0.09, 0.4, 0.05, 0.2 → depth0 (left 10.5), depth1 (10), semseg0 (0)
    assert CostBudget(11.0, (10.0, 0.5)).pick(CANDIDATES, SCORES, INDEX, 4).tolist() == [1, 3, 0]
    # 10.9: after both depths 9.9 is left, no semseg fits
    assert CostBudget(10.9, (10.0, 0.5)).pick(CANDIDATES, SCORES, INDEX, 4).tolist() == [1, 3]
    # cost-blind ranking at the same spend: semseg0 (left 1), semseg1 skipped, both depths
    blind = CostBudget(11.0, (10.0, 0.5), ranking="score")
    assert blind.pick(CANDIDATES, SCORES, INDEX, 4).tolist() == [0, 1, 3]
    # the count caps the walk
    assert CostBudget(11.0, (10.0, 0.5)).pick(CANDIDATES, SCORES, INDEX, 2).tolist() == [1, 3]


def test_negative_scores_are_shifted_before_the_ratio() -> None:
    # [-0.1, -0.8, -0.5, -0.9] − min(0, −0.9) = [0.8, 0.1, 0.4, 0.0]; per cost 0.08, 0.2,
    # 0.04, 0.0 → depth0 (left 10), semseg0 (left 0)
    scores = SCORES - 1.0
    assert CostBudget(10.5, (10.0, 0.5)).pick(CANDIDATES, scores, INDEX, 4).tolist() == [1, 0]


def test_image_cost_is_the_sum_over_tasks() -> None:
    cost = CostBudget(25.0, (10.0, 0.5, 2.0))
    assert cost.image_cost() == Fraction(25, 2) and cost.images() == 2
    assert CostBudget(24.9, (10.0, 0.5, 2.0)).images() == 1


def _ctx(pool: LabelPool, cost: CostBudget, seed: int = 0) -> AcquisitionContext:
    tasks = {t: None for t in pool.tasks}
    return AcquisitionContext(model=None, tasks=tasks, pool=pool, datamodule=None, cost=cost)  # type: ignore[arg-type]


def test_strategies_spend_within_the_cost_budget() -> None:
    pool = LabelPool([f"{i:03d}" for i in range(20)], ["semseg", "depth", "normals"])
    pool.initialise(count=2, seed=0)
    cost = CostBudget(30.0, (10.0, 0.5, 2.0))
    prices = {"semseg": 10.0, "depth": 0.5, "normals": 2.0}
    settings = LoopSettings(budget=30.0, budget_unit="cost", task_costs=prices)
    assert budget_in_labels(settings, 20, 3) == 60  # the most labels 30 can buy: 30 // 0.5
    images = create_strategy("random").select(_ctx(pool, cost), 60)
    assert len(images.images) == 2 and images.num_labels == 6  # 30 // 12.5 whole images
    assert images.diagnostics["cost_spent"] == 25.0
    pairs = create_strategy("random_pairs").select(_ctx(pool, cost), 60)
    assert pairs.diagnostics["cost_spent"] <= 30.0
    # the walk stops only when nothing fits any more
    left = 30.0 - pairs.diagnostics["cost_spent"]
    assert 0.0 <= left < 0.5  # cheapest price 0.5; unbought depth pairs remain


def test_cost_settings_are_checked_before_a_run() -> None:
    with pytest.raises(ValueError, match="needs loop.task_costs"):
        validate_settings(LoopSettings(budget_unit="cost"))
    with pytest.raises(ValueError, match="positive number"):
        validate_settings(LoopSettings(budget_unit="cost", task_costs={"semseg": -1.0}))
    settings = LoopSettings(budget=5.0, budget_unit="cost", task_costs={"semseg": 10.0})
    with pytest.raises(ValueError, match=r"no price for task\(s\) \['depth'\]"):
        cost_budget(settings, ["semseg", "depth"])
    pool = LabelPool(["a", "b", "c"], ["semseg", "depth"])
    pool.initialise(count=1, seed=0)
    cost = CostBudget(5.0, (10.0, 0.5))
    with pytest.raises(ValueError, match="buys no whole image"):
        check_budget(create_strategy("random"), pool, 10, 1, False, cost=cost)
    # 4 unlabelled pairs are worth 21; two acquisitions of 15 need 30
    with pytest.raises(ValueError, match="worth only 21.0"):
        check_budget(
            create_strategy("random_pairs"), pool, 10, 2, False, cost=CostBudget(15.0, (10.0, 0.5))
        )
    check_budget(
        create_strategy("random_pairs"), pool, 10, 2, True, cost=CostBudget(15.0, (10.0, 0.5))
    )


def test_a_cost_budget_is_never_exceeded() -> None:
    """Property test over 400 seeded random draws of prices, scores, budgets and ties."""
    rng = np.random.default_rng(15)
    for _ in range(400):
        k = int(rng.integers(1, 6))
        costs = tuple(float(c) for c in rng.choice([0.1, 0.3, 0.5, 1.0, 2.5, 10.0, 1e-3], k))
        costs = tuple(c * float(rng.uniform(0.5, 2.0)) if rng.random() < 0.5 else c for c in costs)
        m = int(rng.integers(0, 60))
        candidates = np.stack([rng.integers(0, 30, m), rng.integers(0, k, m)], axis=1)
        scores = rng.normal(size=m) * float(rng.choice([1e-3, 1.0, 1e3]))
        if rng.random() < 0.3:
            scores = np.round(scores)  # many ties
        budget = float(rng.uniform(1e-3, 1.2 * sum(costs) * max(m, 1) / k))
        ranking = "ratio" if rng.random() < 0.7 else "score"
        cost = CostBudget(budget, costs, ranking)
        count = int(rng.integers(0, m + 1))
        pick = cost.pick(candidates, scores, rng.permutation(m), count)
        spent = math.fsum(costs[int(c)] for c in candidates[pick, 1])
        assert spent <= budget, (costs, budget, spent)
        assert len(set(pick.tolist())) == len(pick) <= count
        if len(pick) < count:  # the budget stopped it: nothing unbought still fits
            left = Fraction(budget) - sum(
                (Fraction(costs[int(c)]) for c in candidates[pick, 1]), Fraction(0)
            )
            rest = np.setdiff1d(np.arange(m), pick)
            assert all(Fraction(costs[int(candidates[r, 1])]) > left for r in rest)


def test_loop_spends_each_cost_budget(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``mtal loop --loop.budget_unit cost`` with a pair strategy: every acquisition's
    spend, read back from the pool files, stays within the budget."""
    import json

    from mtal.cli import run_cli

    prices = {"semseg": 10.0, "depth": 0.5, "normals": 2.0}
    runs = tmp_path / "runs"
    run_cli(
        ["loop", "--config", "configs/synthetic/smoke.yaml", "--loop.runs_dir", str(runs)]
        + ["--loop.strategy", "random_pairs", "--loop.cycles", "3", "--loop.logger", "none"]
        + ["--loop.budget_unit", "cost", "--loop.budget", "21.5"]
        + ["--loop.task_costs", json.dumps(prices)]
    )
    run = runs / "smoke" / "random_pairs" / "seed0"
    pools = [LabelPool.load(run / "pool" / f"cycle_{c:03d}.json") for c in range(3)]
    table = np.array([prices[t] for t in pools[0].tasks])
    for before, after in zip(pools, pools[1:]):
        new = after.labelled & ~before.labelled
        spent = float((new * table).sum())
        assert spent <= 21.5
        # random scores, every pair a candidate: the walk stops only when nothing fits
        cheapest_left = table[(~after.labelled).any(axis=0)].min()
        assert cheapest_left > 21.5 - spent
    assert float((pools[0].labelled * table).sum()) == 8 * 12.5  # the initial 25% of 32
