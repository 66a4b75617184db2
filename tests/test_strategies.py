"""Every registered strategy on a tiny real pool (synthetic scenes, 24 images, 3 tasks,
32×32, PAD-Net on the tiny CNN): budget, granularity, determinism and budget errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from mtal.acquisition import STRATEGIES, AcquisitionContext, Selection, create_strategy
from mtal.data.datamodule import ActiveDataModule
from mtal.models import create_model
from mtal.registry import UnknownNameError

TASKS = ["semseg", "depth", "normals"]
K = len(TASKS)
FAST: dict[str, dict[str, Any]] = {
    "mtal": {"ae_epochs": 2, "disc_epochs": 2, "code_dim": 32, "ae_hidden": 8},
    "rbal": {"mc_samples": 2},
    "partal": {"mc_samples": 2},
}
CASES = [
    ("random", {}),
    ("random_pairs", {}),
    ("coreset", {}),
    ("ll4al", {}),
    ("equal", {}),
    ("equal-depth", {}),
    ("equal-semseg", {}),
    ("rbal", {}),
    ("rbal", {"uncertainty": "mc"}),
    ("rbal", {"uncertainty": "mc", "mc_samples": 1, "_regression_free": True}),
    ("partal", {}),
    ("mtal", {}),
    ("mtal", {"committee": 2}),
    ("mtal", {"committee_mode": "shared"}),
    ("mtal", {"anchor": "final"}),
    ("mtal", {"variant": "inconsistency"}),
    ("mtal", {"variant": "diversity"}),
    ("mtal", {"variant": "maxst"}),
    ("mtal", {"variant": "vaal"}),
    ("mtal", {"variant": "ae_disc"}),
]


@pytest.fixture(scope="module")
def setup() -> tuple[ActiveDataModule, torch.nn.Module]:
    torch.manual_seed(0)
    dm = ActiveDataModule(
        dataset="synthetic",
        tasks=TASKS,
        size=(32, 32),
        pool_size=24,
        val_size=2,
        initial=4,
        eval_batch_size=8,
        dataset_kwargs={"cache": True},  # render each scene once for the whole module
    )
    dm.setup("fit")
    model = create_model(
        "padnet",
        tasks=dm.task_objects,
        backbone="tiny_cnn",
        loss_prediction=True,
        gt_substitution=True,
        committee_order=2,  # learnable pairs + triplets (mtal committee=2)
    )
    return dm, model


def make_ctx(setup, seed: int = 0, cycle: int = 1, state=None) -> AcquisitionContext:
    dm, model = setup
    return AcquisitionContext(
        model=model,
        tasks=dm.task_objects,
        pool=dm.pool,
        datamodule=dm,
        device="cpu",
        cycle=cycle,
        seed=seed,
        state={} if state is None else state,
    )


def build(name: str, kw: dict[str, Any], **extra: Any):
    kw = {k: v for k, v in kw.items() if not k.startswith("_")}
    return create_strategy(name, **{**FAST.get(name, {}), **kw, **extra})


def test_registry_names() -> None:
    expected = {"random", "random_pairs", "coreset", "mtal", "ll4al", "equal", "rbal", "partal"}
    expected |= {f"equal-{t}" for t in ("semseg", "depth", "normals", "edge", "saliency", "parts")}
    expected |= {"detseg", "cald", "alternation", "cdal"}  # ICCVW'23 det+seg (test_detseg_*)
    assert set(STRATEGIES.names()) == expected
    with pytest.raises(UnknownNameError, match="known strategies: alternation, cald"):
        create_strategy("nope")


@pytest.mark.parametrize(("name", "kw"), CASES, ids=[f"{n}{sorted(k.items())}" for n, k in CASES])
def test_strategy_buys_exactly_the_budget(setup, name: str, kw: dict[str, Any]) -> None:
    dm, model = setup
    if kw.get("_regression_free"):
        # mc_samples=1 has no entropy for regression tasks: it must say so
        with pytest.raises(ValueError, match="regression"):
            build(name, kw).select(make_ctx(setup), 9)
        return
    model.train()
    pool = dm.pool
    before = pool.labelled.copy()
    strat = build(name, kw)
    sel = strat.select(make_ctx(setup), 9)
    assert model.training, "the scoring pass must restore the model's mode"
    assert isinstance(sel, Selection)
    assert (pool.labelled == before).all(), "select must not touch the pool"
    pairs = sel.pairs
    assert pairs.dtype == np.int64 and pairs.shape == (9, 2)
    assert len({tuple(p) for p in pairs.tolist()}) == 9
    assert not before[pairs[:, 0], pairs[:, 1]].any(), "bought an already-labelled pair"
    assert sorted(sel.images.tolist()) == sorted(set(pairs[:, 0].tolist()))
    assert sel.scores.shape == (len(sel.images), K) and sel.scores.dtype == np.float32
    if sel.weights is not None:
        assert sel.weights.shape == (len(sel.images), K)
        assert np.isfinite(sel.weights).all()
    if strat.granularity == "image":
        assert len(sel.images) == 3
        assert not before[sel.images].any(), "image strategies buy fully unlabelled images"
        for img in sel.images:
            assert sorted(pairs[pairs[:, 0] == img, 1].tolist()) == [0, 1, 2]
    else:
        assert strat.granularity == "pair"
    # same seed and cycle ⇒ same picks, from a fresh strategy object
    again = build(name, kw).select(make_ctx(setup), 9)
    assert again.pairs.tolist() == pairs.tolist()
    np.testing.assert_array_equal(again.scores, sel.scores)
    # the selection can be bought from a copy of the pool
    bought = pool.copy()
    weights = None if sel.weights is None else sel.pair_values(sel.weights)
    bought.label_pairs(pairs, cycle=1, weights=weights, scores=sel.pair_values(sel.scores))
    assert bought.num_labels == pool.num_labels + 9


@pytest.mark.parametrize("name", ["random", "random_pairs"])
def test_random_depends_on_seed(setup, name: str) -> None:
    a = create_strategy(name).select(make_ctx(setup, seed=1), 9).pairs
    b = create_strategy(name).select(make_ctx(setup, seed=2), 9).pairs
    c = create_strategy(name).select(make_ctx(setup, seed=1, cycle=2), 9).pairs
    assert a.tolist() != b.tolist()
    assert a.tolist() != c.tolist()


@pytest.mark.parametrize(("name", "left"), [("random", 20), ("random_pairs", 60), ("partal", 60)])
def test_budget_too_large_and_clamp(setup, name: str, left: int) -> None:
    with pytest.raises(ValueError, match=r"only 20 fully unlabelled|only 60 unlabelled"):
        build(name, {}).select(make_ctx(setup), 63)
    sel = build(name, {}, clamp_budget=True).select(make_ctx(setup), 63)
    assert sel.num_labels == 60
    assert len({tuple(p) for p in sel.pairs.tolist()}) == 60
    assert left == (20 if name == "random" else 60)


def test_budget_errors(setup) -> None:
    with pytest.raises(ValueError, match="multiple of 3"):
        create_strategy("random").select(make_ctx(setup), 2)
    with pytest.raises(ValueError, match="budget must be"):
        create_strategy("random_pairs").select(make_ctx(setup), -1)
    with pytest.raises(ValueError, match="tie_break"):
        create_strategy("random", tie_break="first")
    with pytest.raises(ValueError, match="variant"):
        create_strategy("mtal", variant="vae")
    empty = create_strategy("mtal").select(make_ctx(setup), 0)
    assert empty.pairs.shape == (0, 2) and empty.images.size == 0
    # image strategy, budget not a multiple of K: the remainder is not spent
    assert create_strategy("random").select(make_ctx(setup), 10).num_labels == 9


def test_ll4al_needs_loss_prediction(setup) -> None:
    dm, _ = setup
    plain = create_model("hps", tasks=dm.task_objects, backbone="tiny_cnn")
    ctx = make_ctx(setup)
    ctx.model = plain
    with pytest.raises(ValueError, match="loss_prediction=True"):
        create_strategy("ll4al").select(ctx, 3)


def test_partal_state_lives_in_context(setup) -> None:
    state: dict[str, Any] = {}
    build("partal", {}).select(make_ctx(setup, state=state), 3)
    frozen = state["partal"]
    assert frozen["tasks"] == TASKS and frozen["cycle"] == 1
    assert all(lo <= hi for lo, hi in zip(frozen["min"], frozen["max"]))
    build("partal", {}).select(make_ctx(setup, cycle=2, state=state), 3)
    assert state["partal"] is frozen and state["partal"]["cycle"] == 1
