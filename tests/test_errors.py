"""Bad input gives one clear error and no half-written run folder; unlabelled targets
never leak into training or scoring (poisoned targets change nothing)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mtal.acquisition import AcquisitionContext, create_strategy
from mtal.cli import run_cli
from mtal.data.base import DATASETS
from mtal.data.datamodule import ActiveDataModule
from mtal.data.fixtures import write_nyud
from mtal.data.pool import LabelPool
from mtal.data.synthetic import SyntheticScenes
from mtal.tasks import create_task
from mtal.training.module import MultiTaskModule

SIZE = '{"size": [32, 32], "cache": true}'


def loop_argv(runs: Path, *extra: str, dataset: str = "synthetic") -> list[str]:
    """A tiny 2-cycle loop; ``extra`` arguments come last and win."""
    return [
        "loop",
        "--data.dataset",
        dataset,
        "--data.tasks",
        "[semseg, depth]",
        "--data.size",
        "[32, 32]",
        "--data.pool_size",
        "12",
        "--data.val_size",
        "2",
        "--data.initial",
        "4",
        "--data.batch_size",
        "4",
        "--trainer.max_epochs",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        "--loop.runs_dir",
        str(runs),
        "--loop.cycles",
        "2",
        "--loop.budget",
        "2",
        "--loop.strategy",
        "random",
        "--loop.logger",
        "none",
        *extra,
    ]


def fails(argv: list[str]) -> str:
    """Run the CLI expecting an error; returns its message."""
    with pytest.raises(Exception) as err:  # noqa: PT011 - each caller checks the message
        run_cli(argv)
    return str(err.value)


# -- dataset files ------------------------------------------------------------------------


@pytest.fixture()
def nyud_root(tmp_path: Path) -> Path:
    """A 12+2 image NYUD_MT fixture in the real on-disk format."""
    root = tmp_path / "nyud"
    write_nyud(root, SyntheticScenes(size=(32, 32), length=14), n_train=12, n_val=2)
    return root


def first_labelled_id(root: Path) -> str:
    dm = ActiveDataModule("nyud", root=str(root), tasks=["semseg", "depth"], initial=4)
    return dm.pool.image_ids[int(dm.pool.labelled_images()[0])]


@pytest.mark.parametrize("damage", ["missing_depth", "corrupt_image", "label_size"])
def test_bad_dataset_file_is_named_before_the_run_starts(
    nyud_root: Path, tmp_path: Path, damage: str
) -> None:
    from PIL import Image

    name = first_labelled_id(nyud_root)
    if damage == "missing_depth":
        culprit = nyud_root / "depth" / f"{name}.npy"
        culprit.unlink()
        match = "missing"
    elif damage == "corrupt_image":
        culprit = nyud_root / "images" / f"{name}.jpg"
        culprit.write_bytes(b"this is not a jpeg")
        match = ""
    else:
        culprit = nyud_root / "segmentation" / f"{name}.png"
        Image.fromarray(np.ones((16, 20), np.uint8)).save(culprit)
        match = "size mismatch"
    runs = tmp_path / "runs"
    message = fails(loop_argv(runs, "--data.root", str(nyud_root), dataset="nyud"))
    assert str(culprit) in message and match in message
    assert not runs.exists()  # checked before the run folder is created


# -- names, budgets, settings -------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--loop.strategy", "bogus"], ["bogus", "coreset", "mtal", "random_pairs"]),
        (["--model.weighting", "bogus"], ["bogus", "fixed", "dwa", "uncertainty"]),
        (["--data.dataset", "bogus"], ["bogus", "synthetic", "nyud"]),
        (["--data.tasks", "[semseg, bogus]"], ["bogus", "depth", "normals"]),
        (["--loop.budget", "5", "--loop.cycles", "4"], ["larger than what is left", "clamp"]),
        (["--data.initial", "0"], ["labelled set is empty", "data.initial"]),
        (["--loop.strategy_kwargs", '{"bogus": 1}'], ["strategy_kwargs", "bogus"]),
    ],
)
def test_bad_setting_fails_before_the_run_folder(
    tmp_path: Path, extra: list[str], expected: list[str]
) -> None:
    runs = tmp_path / "runs"
    message = fails(loop_argv(runs, "--data.dataset_kwargs", SIZE, *extra))
    for word in expected:
        assert word in message, (word, message)
    assert not runs.exists()


def test_unknown_config_key_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        run_cli(loop_argv(tmp_path / "runs", "--loop.no_such_key", "1"))
    assert "no_such_key" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_clamp_budget_buys_what_is_left(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    run_cli(
        loop_argv(runs, "--data.dataset_kwargs", SIZE, "--loop.budget", "50")
        + ["--loop.clamp_budget", "true"]
    )
    pool = LabelPool.load(runs / "synthetic" / "random" / "seed0" / "pool" / "cycle_001.json")
    assert pool.labelled.all()  # 4 initial + the 8 images left, not 50


# -- values inside targets ------------------------------------------------------------------


class _Altered(SyntheticScenes):
    """Synthetic scenes whose training targets are replaced by ``alter(index, task, array)``."""

    alter: Any = None

    def load(self, index: int, tasks: Sequence[str]) -> dict[str, Any]:
        out = super().load(index, tasks)
        if self.split == "train" and type(self).alter is not None:
            for task in tasks:
                out[task] = type(self).alter(index, task, out[task])
        return out


@pytest.fixture()
def altered(monkeypatch: pytest.MonkeyPatch) -> type[_Altered]:
    """Register ``_Altered`` as the dataset ``altered`` for one test."""
    cls = type("AlteredScenes", (_Altered,), {"alter": None})
    monkeypatch.setitem(DATASETS._entries, "altered", cls)
    return cls


def test_non_finite_loss_stops_naming_the_samples(tmp_path: Path, altered: type) -> None:
    # a depth file with absurd values: every pixel 3e38 m overflows the float32 loss sum
    altered.alter = staticmethod(lambda i, task, a: np.full_like(a, 3e38) if task == "depth" else a)
    runs = tmp_path / "runs"
    argv = loop_argv(runs, "--data.dataset_kwargs", SIZE, dataset="altered")
    with pytest.raises(FloatingPointError, match=r"non-finite.*sample ids \[\d+"):
        run_cli(argv)
    run = runs / "synthetic" / "random" / "seed0"
    # the run folder holds the validated start and nothing of the failed fit
    assert LabelPool.load(run / "pool" / "cycle_000.json").num_labels == 8
    assert not (run / "metrics.csv").exists() and not (run / "cycle_000").exists()
    assert not list(run.rglob("*.tmp"))


def test_class_ids_out_of_range_are_named(tmp_path: Path, altered: type) -> None:
    altered.alter = staticmethod(lambda i, task, a: np.full_like(a, 77) if task == "semseg" else a)
    runs = tmp_path / "runs"
    message = fails(loop_argv(runs, "--data.dataset_kwargs", SIZE, dataset="altered"))
    assert "semseg" in message and "[77]" in message
    assert not runs.exists()


def test_zero_norm_normals_are_invalid_not_nan() -> None:
    task = create_task("normals")
    target_np = np.zeros((4, 4, 3), np.float32)
    target_np[:2] = [0.0, 0.0, 1.0]  # top half valid, bottom half all-zero (no label)
    target = task.target_from_numpy(target_np).unsqueeze(0)
    assert task.valid_mask(target)[0].sum() == 8
    raw = torch.zeros(1, 3, 4, 4)
    raw[:, 0] = 1.0  # predicts (1, 0, 0) everywhere
    loss = task.loss(raw, target)
    assert torch.isfinite(loss).all()
    # reference on the valid half only: the same loss of a fully valid top-half target
    top = task.loss(raw[..., :2, :], target[..., :2, :])
    assert torch.allclose(loss, top)
    empty = task.loss(raw, torch.zeros_like(target))  # no valid pixel at all
    assert torch.isfinite(empty).all() and float(empty) == 0.0


# -- no label leaks ---------------------------------------------------------------------------

POISON_TASKS = ["semseg", "depth", "normals"]
FAST = {
    "mtal": {"ae_epochs": 1, "disc_epochs": 1, "code_dim": 16, "ae_hidden": 8},
    "rbal": {"mc_samples": 2},
    "partal": {"mc_samples": 2},
}
STRATEGIES = ["random", "random_pairs", "coreset", "mtal", "ll4al", "equal", "rbal", "partal"]


def poison(array: np.ndarray, task: str) -> np.ndarray:
    """NaN for regression targets, an out-of-range class for categorical ones."""
    if task == "semseg":
        return np.full_like(array, 200)
    return np.full(array.shape, np.nan, dtype=np.float32)


def leak_run(poisoned: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, dict]:
    """Fit 1 epoch on a partially labelled pool, then let every strategy select; with
    ``poisoned`` every target of a pair the pool has not bought is poison."""
    cls = type("PoisonScenes", (_Altered,), {"alter": None})
    monkeypatch.setitem(DATASETS._entries, "poison", cls)
    dm = ActiveDataModule(
        "poison",
        tasks=POISON_TASKS,
        dataset_kwargs={"size": [32, 32], "cache": True},
        size=(32, 32),
        pool_size=16,
        val_size=2,
        initial=4,
        batch_size=4,
        augment=False,
    )
    pool = dm.pool
    rng = np.random.default_rng(0)  # add single pairs: partially labelled images
    pairs = rng.permutation(pool.unlabelled_pairs())[:6]
    pool.label_pairs(pairs, cycle=1)
    if poisoned:
        cls.alter = staticmethod(
            lambda i, task, a: a if pool.labelled[i, POISON_TASKS.index(task)] else poison(a, task)
        )
        # the poison is live: an unlabelled pair, if it were ever read, is poison
        i, k = (int(v) for v in pool.unlabelled_pairs()[0])
        task = POISON_TASKS[k]
        target = dm.train_dataset.load(i, [task])[task]
        assert (target == 200).all() if task == "semseg" else np.isnan(target).all()
    torch.manual_seed(0)
    module = MultiTaskModule(
        tasks=POISON_TASKS,
        num_classes=dm.num_classes,
        loss_prediction=True,
        model_kwargs={"gt_substitution": True},
    )
    import lightning as L

    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=dm)
    params = {k: v.clone() for k, v in module.state_dict().items()}
    selections = {}
    for name in STRATEGIES:
        strategy = create_strategy(name, **FAST.get(name, {}))
        L.seed_everything(1, verbose=False)
        ctx = AcquisitionContext(
            model=module.net, tasks=dm.task_objects, pool=pool, datamodule=dm, seed=3, cycle=1
        )
        sel = strategy.select(ctx, 6)
        selections[name] = (sel.pairs.tolist(), np.nan_to_num(sel.scores, nan=-1.0).tolist())
    return params, selections


def test_unlabelled_targets_never_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    clean_params, clean = leak_run(False, monkeypatch)
    params, poisoned = leak_run(True, monkeypatch)
    for key, value in params.items():
        assert torch.isfinite(value.float()).all(), key
        assert torch.equal(value, clean_params[key]), key
    for name in STRATEGIES:
        pairs, scores = poisoned[name]
        assert len(pairs) > 0 and all(math.isfinite(s) for row in scores for s in row), name
        assert poisoned[name] == clean[name], name
    assert json.dumps(poisoned)  # plain, finite values
