"""MultiTaskModule: loss reduction, zero-gradient guarantees, NaN errors, LL4AL, GradNorm,
schedules, init_from, and short CPU Lightning fits (toy net and the real PAD-Net)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import mtal.training.module as module_mod
from mtal.tasks import create_task
from mtal.training.module import MultiTaskModule, masked_ranking_loss, reduce_task_losses
from mtal.training.optim import OPTIMIZERS, schedule_lambda
from mtal.types import MultiTaskOutput

TASKS = ["semseg", "depth"]
NUM_CLASSES = {"semseg": 3}


class ToyNet(nn.Module):
    """Stand-in network: shared conv encoder, a 1×1 head per task (final and initial) and an
    optional linear loss predictor on the pooled features."""

    def __init__(
        self,
        tasks: dict[str, Any],
        backbone: str = "toy",
        pretrained: bool = False,
        loss_prediction: bool = False,
        initial: bool = True,
    ) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Tanh())
        self.heads = nn.ModuleDict(
            {t: nn.Conv2d(8, task.out_channels, 1) for t, task in tasks.items()}
        )
        self.initial_heads = (
            nn.ModuleDict({t: nn.Conv2d(8, task.out_channels, 1) for t, task in tasks.items()})
            if initial
            else None
        )
        self.loss_pred_module = nn.Linear(8, len(tasks)) if loss_prediction else None
        self.loss_pred_detach = False

    def forward(self, image: torch.Tensor, **kwargs: Any) -> MultiTaskOutput:
        f = self.encoder(image)
        final = {t: h(f) for t, h in self.heads.items()}
        initial = {t: h(f) for t, h in self.initial_heads.items()} if self.initial_heads else None
        pooled = f.mean(dim=(2, 3))
        loss_pred = None
        if self.loss_pred_module is not None:
            loss_pred = self.loss_pred_module(pooled.detach() if self.loss_pred_detach else pooled)
        return MultiTaskOutput(final=final, initial=initial, embedding=pooled, loss_pred=loss_pred)


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module_mod, "build_model", lambda name, tasks, **kw: ToyNet(tasks, **kw))


def make_module(**kw: Any) -> MultiTaskModule:
    args = {"tasks": TASKS, "num_classes": NUM_CLASSES, "model": "toy", "scheduler": "none"}
    args.update(kw)
    return MultiTaskModule(**args)


def make_batch(
    labelled: list[list[bool]] | None = None,
    weight: list[list[float]] | None = None,
    seed: int = 0,
    size: int = 8,
) -> dict[str, Any]:
    """A batch in the ActiveDataModule contract; unlabelled pairs carry empty targets."""
    g = torch.Generator().manual_seed(seed)
    b = len(labelled) if labelled is not None else 4
    lab = torch.tensor(labelled) if labelled is not None else torch.ones(b, 2, dtype=torch.bool)
    w = torch.tensor(weight, dtype=torch.float32) if weight is not None else torch.ones(b, 2)
    sem = torch.randint(0, 3, (b, size, size), generator=g)
    depth = torch.rand(b, 1, size, size, generator=g) + 0.5
    tasks = {t: create_task(t, num_classes=NUM_CLASSES.get(t)) for t in TASKS}
    targets = {"semseg": sem, "depth": depth}
    for k, t in enumerate(TASKS):
        for i in range(b):
            if not lab[i, k]:
                targets[t][i] = tasks[t].empty_target(size, size)
    return {
        "image": torch.randn(b, 3, size, size, generator=g),
        "targets": targets,
        "labelled": lab,
        "weight": w,
        "index": torch.arange(10, 10 + b),
    }


def loader(batches: list[dict[str, Any]]) -> DataLoader:
    return DataLoader(batches, batch_size=None, shuffle=False)


def trainer(max_epochs: int = 3, callbacks: list | None = None, **kw: Any) -> L.Trainer:
    return L.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
        **kw,
    )


# ---------------------------------------------------------------------------- reduction
def test_reduce_task_losses_hand_values() -> None:
    per_sample = torch.tensor([[1.0, 2.0], [3.0, float("nan")], [5.0, 6.0]])
    labelled = torch.tensor([[True, True], [True, False], [False, True]])
    weight = torch.tensor([[1.0, 0.5], [2.0, float("nan")], [1.0, 0.0]])
    # task 0: (1·1 + 2·3) / 2 = 3.5 ; task 1: (0.5·2 + 0·6) / 2 = 0.5 (NaN pair unlabelled)
    assert reduce_task_losses(per_sample, labelled, weight).tolist() == pytest.approx([3.5, 0.5])
    # without sample weights: (1 + 3)/2, (2 + 6)/2 ; nobody labelled → exactly 0
    assert reduce_task_losses(per_sample, labelled).tolist() == pytest.approx([2.0, 4.0])
    none = reduce_task_losses(per_sample, torch.zeros(3, 2, dtype=torch.bool))
    assert none.tolist() == [0.0, 0.0]


@pytest.mark.parametrize("deep_supervision", [0.0, 0.5])
def test_training_losses_equal_hand_reduction(toy: None, deep_supervision: float) -> None:
    torch.manual_seed(0)
    m = make_module(task_weights={"semseg": 2.0, "depth": 1.0}, deep_supervision=deep_supervision)
    batch = make_batch(
        labelled=[[True, True], [True, False], [False, True], [True, True]],
        weight=[[1.0, 1.0], [0.5, 1.0], [1.0, 3.0], [2.0, 0.0]],
    )
    res = m.compute_losses(batch)
    out = m.net(batch["image"])
    expected = {}
    for k, t in enumerate(TASKS):
        task = m.task_objects[t]
        ls = task.loss(out.final[t], batch["targets"][t])
        li = task.loss(out.initial[t], batch["targets"][t])
        # WACV24 Eq. 5: s_k scales the final-prediction loss only, not deep supervision
        num = sum(
            float(batch["weight"][i, k]) * ls[i].item() + deep_supervision * li[i].item()
            for i in range(4)
            if batch["labelled"][i, k]
        )
        expected[t] = num / float(batch["labelled"][:, k].sum())
    for t in TASKS:
        assert res["task_losses"][t].item() == pytest.approx(expected[t], rel=1e-5)
    assert res["total"].item() == pytest.approx(
        2 * expected["semseg"] + expected["depth"], rel=1e-5
    )
    assert res["weights"] == {"semseg": 2.0, "depth": 1.0}


def test_zero_weight_and_unlabelled_give_exactly_zero_gradient(toy: None) -> None:
    torch.manual_seed(0)
    m = make_module(use_sample_weights=True)
    # depth unlabelled everywhere; semseg: sample 0 weight 0, sample 1 unlabelled
    batch = make_batch(
        labelled=[[True, False], [False, False], [True, False], [True, False]],
        weight=[[0.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0]],
    )
    res = m.compute_losses(batch)
    out = res["output"]
    for d in (out.final, out.initial):
        for v in d.values():
            v.retain_grad()
    res["total"].backward()
    assert res["task_losses"]["depth"].item() == 0.0
    assert torch.isfinite(res["total"])
    for p in [*m.net.heads["depth"].parameters(), *m.net.initial_heads["depth"].parameters()]:
        assert p.grad is None or torch.count_nonzero(p.grad) == 0
    for p in m.net.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()
    g = out.final["semseg"].grad
    assert torch.count_nonzero(g[0]) == 0 and torch.count_nonzero(g[1]) == 0
    assert torch.count_nonzero(g[2]) > 0 and torch.count_nonzero(g[3]) > 0
    assert torch.count_nonzero(out.final["depth"].grad) == 0
    assert torch.count_nonzero(m.net.heads["semseg"].weight.grad) > 0


def test_nan_loss_raises_naming_sample_ids(toy: None) -> None:
    m = make_module()
    batch = make_batch()
    batch["image"][2] = float("nan")
    with pytest.raises(FloatingPointError, match=r"sample ids \[10, 11, 12, 13\].*semseg=nan"):
        m.compute_losses(batch)


# ---------------------------------------------------------------------------- LL4AL
def test_ll4al_ranking_loss_over_labelled_pairs_hand_values() -> None:
    pred = torch.tensor([[0.0, 1.0], [2.0, 0.0], [1.0, 0.5], [0.5, 3.0]])
    target = torch.tensor([[1.0, 2.0], [0.0, 1.0], [3.0, 0.0], [2.0, 5.0]])
    labelled = torch.tensor([[True, False], [True, True], [True, True], [False, True]])
    # task 0: samples (0,1,2) → pair (0,2): l0<l2 → sign −1: max(0, 1 + (0−1)) = 0
    # task 1: samples (1,2,3) → pair (1,3): l1<l3 → sign −1: max(0, 1 + (0−3)) = 0 ... margin 4
    loss = masked_ranking_loss(pred, target, labelled, margin=4.0)
    # task 0: max(0, 4 + (0 − 1)) = 3 ; task 1: max(0, 4 + (0 − 3)) = 1
    assert loss.item() == pytest.approx(4.0)


def test_ll4al_term_and_detach_epoch(toy: None) -> None:
    torch.manual_seed(0)
    m = make_module(loss_prediction=True, ll4al_weight=0.5, ll4al_margin=1.0, ll4al_detach_epoch=1)
    batch = make_batch(labelled=[[True, True], [True, False], [False, True], [True, True]])
    res = m.compute_losses(batch)
    base = res["total"] - 0.5 * res["ll4al"]
    expected = masked_ranking_loss(
        res["output"].loss_pred, res["per_sample"], batch["labelled"], margin=1.0
    )
    assert res["ll4al"].item() == pytest.approx(expected.item())
    assert base.item() == pytest.approx(
        sum(v.item() for v in res["task_losses"].values()), rel=1e-5
    )
    seen: list[bool] = []

    class Spy(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            seen.append(pl_module.net.loss_pred_detach)

    trainer(max_epochs=2, callbacks=[Spy()]).fit(m, loader([batch]))
    assert seen == [False, True]


# ---------------------------------------------------------------------------- weightings
def test_dwa_fed_with_epoch_means_of_labelled_samples(toy: None) -> None:
    torch.manual_seed(0)
    m = make_module(weighting="dwa", lr=0.0)  # lr 0: the net is fixed, means are computable
    batches = [
        make_batch(labelled=[[True, True], [True, False]], weight=[[1.0, 1.0], [0.5, 1.0]], seed=1),
        make_batch(labelled=[[False, True], [True, True]], weight=[[1.0, 2.0], [1.0, 1.0]], seed=2),
    ]
    expected = {}
    with torch.no_grad():
        for k, t in enumerate(TASKS):
            num = den = 0.0
            for b in batches:
                out = m.net(b["image"])
                task = m.task_objects[t]
                lf = task.loss(out.final[t], b["targets"][t])
                li = task.loss(out.initial[t], b["targets"][t])
                # Eq. 5: s_k on the final loss only; deep supervision unweighted
                num += float((b["labelled"][:, k] * (b["weight"][:, k] * lf + li)).sum())
                den += float(b["labelled"][:, k].sum())
            expected[t] = num / den
    tr = trainer(max_epochs=3)
    tr.fit(m, loader(batches))
    assert int(m.weighting.epochs_seen) == 3
    assert m.weighting.history[1].tolist() == pytest.approx([expected[t] for t in TASKS], rel=1e-5)
    for t in TASKS:
        assert tr.callback_metrics[f"train/{t}/loss"].item() == pytest.approx(expected[t], rel=1e-5)


def test_uncertainty_weights_are_learned_with_task_kinds(toy: None) -> None:
    torch.manual_seed(0)
    m = make_module(weighting="uncertainty", lr=0.05)
    assert m.weighting.task_kinds == {"semseg": "categorical", "depth": "regression"}
    trainer(max_epochs=2).fit(m, loader([make_batch(seed=1), make_batch(seed=2)]))
    assert torch.count_nonzero(m.weighting.log_vars.detach()) == 2


def test_gradnorm_manual_optimisation_fit(toy: None) -> None:
    torch.manual_seed(0)
    m = make_module(weighting="gradnorm", weighting_kwargs={"alpha": 1.5}, lr=0.05)
    assert m.automatic_optimization is False
    assert make_module().automatic_optimization is True
    (shared,) = m.gradnorm_parameters()
    assert shared is m.net.encoder[0].weight
    before = [p.detach().clone() for p in m.net.parameters()]
    trainer(max_epochs=3).fit(m, loader([make_batch(seed=1), make_batch(seed=2)]))
    w = m.weighting.task_weights.detach()
    assert w.sum().item() == pytest.approx(2.0, abs=1e-5)
    assert not torch.allclose(w, torch.ones(2))
    assert torch.isfinite(m.weighting.initial_losses).all()
    assert all(not torch.equal(a, b) for a, b in zip(before, m.net.parameters()))
    with pytest.raises(ValueError, match="gradnorm_layer='nope'"):
        make_module(weighting="gradnorm", gradnorm_layer="nope").gradnorm_parameters()


def test_task_weights_rejected_for_schemes_without_them(toy: None) -> None:
    with pytest.raises(ValueError, match="loss_weights_for_metric"):
        make_module(weighting="uncertainty", task_weights={"depth": 2.0})
    with pytest.raises(KeyError, match="known optimizers: adam, adamw, sgd"):
        make_module(optimizer="lbfgs")


# ---------------------------------------------------------------------------- optimisers
def test_schedules_hand_values() -> None:
    poly = schedule_lambda("poly", 10, power=0.9)
    assert poly(0) == 1.0 and poly(5) == pytest.approx(0.5**0.9) and poly(12) == 0.0
    cosine = schedule_lambda("cosine", 10)
    assert cosine(5) == pytest.approx(0.5) and cosine(10) == pytest.approx(0.0)
    assert schedule_lambda("none", 10)(7) == 1.0
    with pytest.raises(ValueError, match="max_epochs"):
        schedule_lambda("poly", -1)
    opt = OPTIMIZERS.get("sgd")(
        [nn.Parameter(torch.ones(1))], lr=0.1, weight_decay=0.0, momentum=0.8
    )
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.8


def test_poly_lr_stepped_per_optimizer_step(toy: None) -> None:
    m = make_module(scheduler="poly", optimizer="sgd", lr=0.1, momentum=0.9)
    lrs: list[float] = []

    class Spy(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer(max_epochs=2, callbacks=[Spy()]).fit(
        m, loader([make_batch(seed=1), make_batch(seed=2)])
    )
    assert lrs == pytest.approx([0.1 * (1 - i / 4) ** 0.9 for i in range(4)])


# ---------------------------------------------------------------------------- evaluation
def test_validation_logs_task_losses_metrics_and_mtl_loss(toy: None) -> None:
    torch.manual_seed(0)
    m = make_module(loss_weights_for_metric={"semseg": 1.0, "depth": 10.0})
    batches = [make_batch(seed=3), make_batch(labelled=[[True, False], [True, True]], seed=4)]
    tr = trainer()
    metrics = tr.validate(m, loader(batches), verbose=False)[0]
    m.eval()
    with torch.no_grad():
        for k, t in enumerate(TASKS):
            vals = torch.cat(
                [
                    m.task_objects[t].loss(m.net(b["image"]).final[t], b["targets"][t])[
                        b["labelled"][:, k]
                    ]
                    for b in batches
                ]
            )
            assert metrics[f"val/{t}/loss"] == pytest.approx(vals.mean().item(), rel=1e-5)
    assert metrics["val/mtl_loss"] == pytest.approx(
        metrics["val/semseg/loss"] + 10 * metrics["val/depth/loss"], rel=1e-5
    )
    assert "val/semseg/miou" in metrics and "val/depth/rmse" in metrics
    test_metrics = tr.test(m, loader(batches), verbose=False)[0]
    assert test_metrics["test/mtl_loss"] == pytest.approx(metrics["val/mtl_loss"], rel=1e-5)
    out = tr.predict(m, loader(batches[:1]))[0]
    assert isinstance(out, MultiTaskOutput) and out.final["semseg"].shape == (4, 3, 8, 8)


def test_compile_option_matches_eager_forward(toy: None) -> None:
    torch.manual_seed(0)
    m = make_module(compile=True, compile_backend="eager")
    image = make_batch()["image"]
    assert torch.allclose(m(image).final["depth"], m.net(image).final["depth"])
    assert "net" in m._compiled
    assert all(not k.startswith("_compiled") for k in m.state_dict())


# ---------------------------------------------------------------------------- init_from
def test_init_from_loads_network_weights_only(toy: None, tmp_path: Path) -> None:
    torch.manual_seed(0)
    first = make_module(weighting="uncertainty", lr=0.05)
    tr = trainer(max_epochs=1)
    tr.fit(first, loader([make_batch(seed=1)]))
    ckpt = tmp_path / "cycle0.ckpt"
    tr.save_checkpoint(ckpt)
    assert torch.load(ckpt, weights_only=True)["optimizer_states"][0]["state"]  # there is state
    torch.manual_seed(1)
    second = make_module(weighting="uncertainty", lr=0.05, init_from=str(ckpt))
    second.setup("fit")
    for (k, a), b in zip(first.net.state_dict().items(), second.net.state_dict().values()):
        assert torch.equal(a, b), k
    assert torch.count_nonzero(first.weighting.log_vars.detach()) == 2
    assert torch.count_nonzero(second.weighting.log_vars.detach()) == 0  # not loaded
    restored = MultiTaskModule.load_from_checkpoint(ckpt)  # full restore, for contrast
    assert torch.equal(restored.weighting.log_vars, first.weighting.log_vars)
    states: list[int] = []

    class Spy(L.Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            states.append(len(trainer.optimizers[0].state))

    trainer(max_epochs=1, callbacks=[Spy()]).fit(second, loader([make_batch(seed=1)]))
    assert states == [0]
    # a plain network state dict works too
    plain = tmp_path / "net.pt"
    torch.save(first.net.state_dict(), plain)
    third = make_module(weighting="uncertainty", init_from=str(plain))
    third.setup("validate")
    assert torch.equal(third.net.encoder[0].weight, first.net.encoder[0].weight)


def test_init_from_errors_name_the_file(toy: None, tmp_path: Path) -> None:
    missing = tmp_path / "nope.ckpt"
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        make_module(init_from=str(missing)).setup("fit")
    other = tmp_path / "other.pt"
    torch.save({"state_dict": make_module(tasks=["semseg"]).state_dict()}, other)
    with pytest.raises(ValueError, match=r"other\.pt does not fit.*heads\.depth"):
        make_module(init_from=str(other)).setup("fit")
    junk = tmp_path / "junk.ckpt"
    junk.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="junk.ckpt"):
        make_module(init_from=str(junk)).setup("fit")


# ---------------------------------------------------------------------------- real stack
def test_fit_on_synthetic_scenes_lowers_every_task_loss() -> None:
    from mtal.data import ActiveDataModule

    L.seed_everything(0, workers=True)
    tasks = ["semseg", "depth", "normals"]
    dm = ActiveDataModule(
        dataset="synthetic",
        tasks=tasks,
        dataset_kwargs={"size": (32, 40), "length": 16, "cache": True},
        augment=False,
        batch_size=8,
        eval_batch_size=16,
        initial=1.0,
        val_size=16,
    )
    m = MultiTaskModule(tasks=None, model="padnet", backbone="tiny_cnn", lr=3e-3, scheduler="none")
    tr = trainer(max_epochs=4)
    before = tr.validate(m, datamodule=dm, verbose=False)[0]
    assert m.task_names == tasks and m.hparams.tasks == tasks
    tr.fit(m, datamodule=dm)
    train_losses = {t: tr.callback_metrics[f"train/{t}/loss"].item() for t in tasks}
    after = tr.validate(m, datamodule=dm, verbose=False)[0]
    for t in tasks:
        assert after[f"val/{t}/loss"] < before[f"val/{t}/loss"], t
        assert math.isfinite(train_losses[t])
    assert after["val/mtl_loss"] < before["val/mtl_loss"]
    wrong = MultiTaskModule(
        tasks=["depth", "semseg", "normals"], num_classes=dm.num_classes, model="padnet"
    )
    with pytest.raises(ValueError, match="same order"):
        trainer().validate(wrong, datamodule=dm, verbose=False)


# ---------------------------------------------------------------------------- packaging
def test_lightning_cli_builds_module_from_plain_arguments(toy: None) -> None:
    from lightning.pytorch.cli import LightningCLI

    cli = LightningCLI(
        MultiTaskModule,
        run=False,
        save_config_callback=None,
        args=[
            "--model.tasks=[semseg,depth]",
            "--model.num_classes={semseg: 3}",
            "--model.model=toy",
            "--model.weighting=dwa",
            "--model.task_weights={depth: 2.0}",
            "--model.optimizer=sgd",
            "--trainer.accelerator=cpu",
            "--trainer.logger=false",
        ],
    )
    assert isinstance(cli.model.net, ToyNet)
    assert cli.model.weighting.base_weights.tolist() == [1.0, 2.0]
    assert cli.model.hparams.optimizer == "sgd"


def test_training_package_is_lazy() -> None:
    import subprocess
    import sys

    import mtal.training as training

    assert training.MultiTaskModule is MultiTaskModule
    assert sorted(training.__all__) == sorted(training._EXPORTS)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = training.nope
    code = "import sys, mtal.training; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
