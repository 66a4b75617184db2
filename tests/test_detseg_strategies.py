"""Det+seg strategies end to end on tiny procedural scenes with boxes: detseg (BoxMask
consistency), CALD, Alternation, CDAL, EquAL-semseg, LL4AL (two modules), Random."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtal.acquisition import AcquisitionContext, create_strategy
from mtal.data.datamodule import ActiveDataModule
from mtal.training.module import MultiTaskModule

OPTS = {"boxes": {"classes": [3, 4, 5, 6, 7, 8, 9, 10, 11]}}


@pytest.fixture(scope="module")
def setup() -> tuple[MultiTaskModule, ActiveDataModule]:
    torch.manual_seed(0)
    dm = ActiveDataModule(
        tasks=["semseg", "boxes"],
        dataset_kwargs={"size": [32, 40], "cache": True},
        augment=False,
        batch_size=4,
        eval_batch_size=4,
        initial=4,
        pool_size=12,
        val_size=4,
        task_options=OPTS,
    )
    module = MultiTaskModule(
        model="detseg",
        backbone="tiny_cnn",
        model_kwargs={"head_channels": 8, "encoder_channels": 16},
        task_options=OPTS,
        loss_prediction=True,
        lr=1e-3,
    )
    dm.setup("fit")
    module._build(list(dm.tasks), dm.num_classes)
    # one optimisation step on the labelled images so scores are not all at init values
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)
    batch = next(iter(dm.train_dataloader()))
    module.compute_losses(batch)["total"].backward()
    opt.step()
    return module, dm


def _ctx(module: MultiTaskModule, dm: ActiveDataModule, cycle: int = 0) -> AcquisitionContext:
    return AcquisitionContext(
        model=module.net, tasks=module.task_objects, pool=dm.pool, datamodule=dm, cycle=cycle
    )


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("detseg", {"min_score": 0.0, "max_boxes": 3}),
        ("detseg", {"min_score": 0.0, "max_boxes": 2, "scores": ["loc"], "tau": 0.5}),
        ("cald", {"augmentations": ["flip", "resize"]}),
        ("cdal", {}),
        ("equal-semseg", {}),
        ("ll4al", {}),
        ("random", {}),
    ],
)
def test_strategy_buys_distinct_unlabelled_images(setup, name, kwargs) -> None:
    module, dm = setup
    strategy = create_strategy(name, **kwargs)
    strategy.check_model(module.net)
    sel = strategy.select(_ctx(module, dm), budget=4)  # 2 tasks → 2 whole images
    unl = set(dm.pool.unlabelled_images().tolist())
    assert len(sel.images) == 2 and len(set(sel.images.tolist())) == 2
    assert set(sel.images.tolist()) <= unl
    assert sel.num_labels == 4


def test_alternation_switches_member_by_cycle(setup) -> None:
    module, dm = setup
    strategy = create_strategy("alternation", options={"cald": {"augmentations": ["flip"]}})
    first = strategy.select(_ctx(module, dm, cycle=0), budget=2)
    second = strategy.select(_ctx(module, dm, cycle=1), budget=2)
    assert first.diagnostics["alternation_member"] == "cald"
    assert second.diagnostics["alternation_member"] == "equal-semseg"


def test_detseg_rejects_model_without_segment() -> None:
    with pytest.raises(ValueError, match="segment"):
        create_strategy("detseg").check_model(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="subset"):
        create_strategy("detseg", scores=["loc", "nope"])


def test_detseg_image_summaries_are_per_image(setup) -> None:
    module, dm = setup
    strategy = create_strategy("detseg", min_score=0.0, max_boxes=2)
    batch = next(iter(dm.pool_loader(np.arange(3))))
    with torch.no_grad():
        out = strategy.image_scores(_ctx(module, dm), batch)
    assert set(out) == {"score", "s_seg", "s_box", "n_boxes"}
    assert all(v.shape == (3,) for v in out.values())
    # S = S_seg + max_box(S_loc + S_cls)
    torch.testing.assert_close(out["score"], out["s_seg"] + out["s_box"])
