"""MC-dropout with the deterministic trunk run once (``forward(mc_samples=S)``): the same
dropout masks, hence the same outputs, as today's path (the batch replicated S times)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from mtal.acquisition import AcquisitionContext, create_strategy
from mtal.acquisition.scoring import accepts_mc_samples, mc_forward, seeded_torch
from mtal.data.datamodule import ActiveDataModule
from mtal.models import create_model
from mtal.tasks import create_task

NAMES = ("semseg", "depth", "normals")
S = 4


def build(name: str, **kw: Any) -> torch.nn.Module:
    torch.manual_seed(0)
    tasks = {n: create_task(n, num_classes=5 if n == "semseg" else None) for n in NAMES}
    kw = {"head_channels": 16, "encoder_channels": 16, "dropout": 0.5, **kw}
    return create_model(name, tasks, backbone="tiny_cnn", **kw).eval()


def image(b: int = 3) -> torch.Tensor:
    return torch.randn(b, 3, 32, 40, generator=torch.Generator().manual_seed(1))


def gt_inputs(b: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    gt = {
        "semseg": torch.randint(0, 5, (b, 32, 40), generator=g),
        "depth": torch.rand(b, 1, 32, 40, generator=g) + 0.5,
        "normals": torch.nn.functional.normalize(torch.randn(b, 3, 32, 40, generator=g), dim=1),
    }
    mask = torch.zeros(b, len(NAMES), dtype=torch.bool)
    mask[0, 0] = mask[1, 1] = mask[2, :] = True  # partly and fully labelled images
    return gt, mask


def rep(x: torch.Tensor, s: int) -> torch.Tensor:
    return x.repeat(s, *([1] * (x.dim() - 1)))


CASES = [
    ("hps", {}),
    ("padnet", {}),
    ("padnet", {"gt_substitution": True}),
    ("padnet", {"gt_substitution": True, "gt_embed": "replace"}),
]


@pytest.mark.parametrize(("name", "kw"), CASES)
def test_mc_samples_equal_replicated_batch_for_the_same_seed(name: str, kw: dict) -> None:
    model = build(name, **kw)
    x = image()
    b = x.shape[0]
    extra: dict[str, Any] = {}
    extra_rep: dict[str, Any] = {}
    if kw.get("gt_substitution"):
        gt, mask = gt_inputs(b)
        extra = {"gt": gt, "gt_mask": mask}
        extra_rep = {"gt": {t: rep(v, S) for t, v in gt.items()}, "gt_mask": rep(mask, S)}
    with torch.no_grad():
        with seeded_torch(7):
            old = model(rep(x, S), mc_dropout=True, **extra_rep)
        with seeded_torch(7):
            new = model(x, mc_dropout=True, mc_samples=S, **extra)
        with seeded_torch(8):
            other = model(x, mc_dropout=True, mc_samples=S, **extra)
    for t in NAMES:
        assert new.final[t].shape[0] == S * b
        torch.testing.assert_close(new.final[t], old.final[t], atol=1e-5, rtol=1e-4)
        assert not torch.allclose(new.final[t], other.final[t])  # a seed changes the masks
        # the S samples of one image differ (dropout is really on in eval mode)
        assert not torch.allclose(new.final[t][:b], new.final[t][b : 2 * b])
        if new.initial is not None:
            torch.testing.assert_close(new.initial[t], old.initial[t], atol=1e-5, rtol=1e-4)
        # deterministic parts keep one row per image and equal the replicated pass's rows
        assert new.task_features[t].shape[0] == b
        torch.testing.assert_close(new.task_features[t], old.task_features[t][:b])
    torch.testing.assert_close(new.embedding, old.embedding[:b])


def _batch_sizes(module: torch.nn.Module) -> tuple[list[int], Any]:
    seen: list[int] = []
    handle = module.register_forward_hook(lambda m, i, o: seen.append(int(i[0].shape[0])))
    return seen, handle


@pytest.mark.parametrize(("gt_substitution", "distil_rows"), [(False, 3), (True, 3 * S)])
def test_trunk_runs_once_and_only_dropout_parts_are_replicated(
    gt_substitution: bool, distil_rows: int
) -> None:
    model = build("padnet", gt_substitution=gt_substitution)
    x = image()
    extra: dict[str, Any] = {}
    if gt_substitution:
        gt, mask = gt_inputs(3)
        extra = {"gt": gt, "gt_mask": mask}
    enc_rows, h1 = _batch_sizes(model.encoder)
    body_rows, h2 = _batch_sizes(model.initial_heads["depth"].body)
    sa_rows, h3 = _batch_sizes(model.distillation.attention["depth"]["semseg"])
    cls_rows, h4 = _batch_sizes(model.final_heads["depth"].classifier)
    with torch.no_grad():
        model(x, mc_dropout=True, mc_samples=S, **extra)
    for h in (h1, h2, h3, h4):
        h.remove()
    assert enc_rows == [3] and body_rows == [3]
    # without substitution the distillation input is deterministic (B rows); with it, the
    # sampled initial predictions feed it, so it carries S·B rows
    assert sa_rows == [distil_rows]
    assert cls_rows == [3 * S]


def test_mc_samples_arguments_are_validated() -> None:
    model = build("padnet")
    with pytest.raises(ValueError, match="pass mc_dropout=True"):
        model(image(), mc_samples=2)
    with pytest.raises(ValueError, match="cannot be combined with committee"):
        model(image(), mc_dropout=True, mc_samples=2, committee=1)
    with pytest.raises(ValueError, match="mc_samples must be >= 1"):
        build("hps")(image(), mc_dropout=True, mc_samples=0)


class Replicating(torch.nn.Module):
    """A model without an ``mc_samples`` parameter: scoring replicates the batch for it."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.rows: list[int] = []

    def forward(self, image: torch.Tensor, **kw: Any) -> Any:
        self.rows.append(int(image.shape[0]))
        return self.inner(image, **kw)


@pytest.fixture(scope="module")
def dm() -> ActiveDataModule:
    torch.manual_seed(0)
    dm = ActiveDataModule(
        dataset="synthetic",
        tasks=list(NAMES),
        size=(32, 32),
        pool_size=12,
        val_size=1,
        initial=3,
        eval_batch_size=4,
        dataset_kwargs={"cache": True},
    )
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("strategy", ["partal", "rbal"])
def test_strategies_score_alike_with_and_without_the_mc_samples_path(
    dm: ActiveDataModule, strategy: str
) -> None:
    model = create_model(
        "padnet", dm.task_objects, backbone="tiny_cnn", head_channels=16, gt_substitution=True
    )
    wrapped = Replicating(model)
    assert accepts_mc_samples(model) and not accepts_mc_samples(wrapped)
    sels = []
    for m in (model, wrapped):
        ctx = AcquisitionContext(
            model=m, tasks=dm.task_objects, pool=dm.pool, datamodule=dm, device="cpu", seed=3
        )
        kwargs = {"uncertainty": "mc"} if strategy == "rbal" else {}  # RBAL's MC form
        chooser = create_strategy(strategy, mc_samples=3, tie_break="index", **kwargs)
        sels.append(chooser.select(ctx, 6))
    a, b = sels
    assert a.images.tolist() == b.images.tolist()
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-4, atol=1e-6)
    assert max(wrapped.rows) == 3 * 4  # eval batch 4, replicated S=3 times


def test_mc_forward_replicates_gt_for_models_without_the_parameter() -> None:
    model = build("padnet", gt_substitution=True)
    wrapped = Replicating(model)
    ctx = AcquisitionContext(model=wrapped, tasks=model.tasks, pool=None, datamodule=None)
    gt, mask = gt_inputs(3)
    with torch.no_grad(), seeded_torch(1):
        out = mc_forward(ctx, {"image": image()}, S, gt=gt, gt_mask=mask)
    assert wrapped.rows == [3 * S] and out.final["depth"].shape[0] == 3 * S


def _final_dropout_off(model: torch.nn.Module) -> None:
    for head in model.final_heads.values():
        head.dropout.p = 0.0


@pytest.mark.parametrize(("scope", "final_varies"), [("all", True), ("final", False)])
def test_mc_scope_final_samples_only_the_final_heads(scope: str, final_varies: bool) -> None:
    """With the final heads' dropout at p=0, ``mc_scope="final"`` leaves nothing random:
    every sample equals the eval-mode forward. ``"all"`` still varies, because the
    sampled initial predictions feed the distillation (ground-truth substitution)."""
    model = build("padnet", gt_substitution=True)
    _final_dropout_off(model)
    x = image()
    b = x.shape[0]
    gt, mask = gt_inputs(b)
    mask[0] = False  # image 0 carries no label: its distillation reads its own p_t
    with torch.no_grad():
        plain = model(x, gt=gt, gt_mask=mask)
        with seeded_torch(7):
            out = model(x, mc_dropout=True, mc_samples=S, mc_scope=scope, gt=gt, gt_mask=mask)
    for t in NAMES:
        samples = out.final[t].reshape(S, b, *out.final[t].shape[1:])
        varies = not torch.allclose(samples[0, 0], samples[1, 0])
        assert varies is final_varies
        if scope == "final":
            assert out.initial[t].shape[0] == b  # deterministic: one row per image
            torch.testing.assert_close(out.initial[t], plain.initial[t])
            for k in range(S):
                torch.testing.assert_close(samples[k], plain.final[t])


def test_mc_scope_final_runs_the_distillation_once() -> None:
    model = build("padnet", gt_substitution=True)
    sa_rows, h1 = _batch_sizes(model.distillation.attention["depth"]["semseg"])
    cls_rows, h2 = _batch_sizes(model.final_heads["depth"].classifier)
    gt, mask = gt_inputs(3)
    with torch.no_grad():
        model(image(), mc_dropout=True, mc_samples=S, mc_scope="final", gt=gt, gt_mask=mask)
    h1.remove()
    h2.remove()
    assert sa_rows == [3] and cls_rows == [3 * S]
    with pytest.raises(ValueError, match=r"mc_scope must be one of \('all', 'final'\)"):
        model(image(), mc_dropout=True, mc_samples=S, mc_scope="heads")


def test_partal_mc_scope_option(dm: ActiveDataModule) -> None:
    """PartAL with ``mc_scope="final"`` selects pairs on PAD-Net and refuses a model
    without separate initial/final heads, naming the fix."""
    model = create_model(
        "padnet", dm.task_objects, backbone="tiny_cnn", head_channels=16, gt_substitution=True
    )
    ctx = AcquisitionContext(
        model=model, tasks=dm.task_objects, pool=dm.pool, datamodule=dm, device="cpu", seed=3
    )
    sel = create_strategy("partal", mc_samples=3, mc_scope="final").select(ctx, 6)
    assert len(sel.pairs) == 6
    hps = create_model("hps", dm.task_objects, backbone="tiny_cnn", head_channels=16)
    chooser = create_strategy("partal", mc_samples=3, mc_scope="final", gt_substitution=False)
    with pytest.raises(ValueError, match="loop.strategy_kwargs.mc_scope: all"):
        chooser.check_model(hps)
    with pytest.raises(ValueError, match="mc_scope must be one of"):
        create_strategy("partal", mc_scope="initial")
