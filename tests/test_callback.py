"""ActiveLoop as a drop-in Lightning callback: a user-defined LightningModule (not mtal's)
in a plain ``Trainer.fit`` buys labels at the chosen epochs and trains on them."""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn

from mtal.data.datamodule import ActiveDataModule
from mtal.loop import ActiveLoop
from mtal.types import MultiTaskOutput

TASKS = ["semseg", "depth"]
POOL, INITIAL, BATCH = 16, 4, 2


class TinyNet(nn.Module):
    """A user's own two-task network following the adapter protocol (final, embedding,
    task_features)."""

    def __init__(self, tasks: dict[str, Any]) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.heads = nn.ModuleDict({n: nn.Conv2d(8, t.out_channels, 1) for n, t in tasks.items()})

    def forward(self, image: torch.Tensor, **kwargs: Any) -> MultiTaskOutput:
        if kwargs.get("committee"):
            raise ValueError("TinyNet has no committee")
        feats = self.trunk(image)
        return MultiTaskOutput(
            final={n: h(feats) for n, h in self.heads.items()},
            task_features={n: feats for n in self.heads},
            embedding=feats.mean(dim=(2, 3)),
        )


class UserModule(L.LightningModule):
    """A plain LightningModule a user could write: it exposes ``net`` and ``task_objects``
    (the adapter protocol) and records how many batches each epoch trained on."""

    def __init__(self, tasks: dict[str, Any]) -> None:
        super().__init__()
        self.task_objects = dict(tasks)
        self.net = TinyNet(tasks)
        self.batches_per_epoch: dict[int, int] = {}
        self.labels_at_epoch_start: dict[int, int] = {}

    def on_train_epoch_start(self) -> None:
        pool = self.trainer.datamodule.pool
        self.labels_at_epoch_start[self.current_epoch] = pool.num_labels

    def training_step(self, batch: dict[str, Any], _: int) -> torch.Tensor:
        epoch = self.current_epoch
        self.batches_per_epoch[epoch] = self.batches_per_epoch.get(epoch, 0) + 1
        out = self.net(batch["image"])
        losses = [
            (task.loss(out.final[n], batch["targets"][n]) * batch["labelled"][:, k]).mean()
            for k, (n, task) in enumerate(self.task_objects.items())
        ]
        return torch.stack(losses).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def datamodule() -> ActiveDataModule:
    return ActiveDataModule(
        dataset="synthetic",
        tasks=TASKS,
        dataset_kwargs={"size": [16, 16], "cache": True},
        augment=False,
        batch_size=BATCH,
        eval_batch_size=8,
        initial=INITIAL,
        pool_size=POOL,
        val_size=2,
    )


def fit(callback: ActiveLoop, epochs: int, **trainer_kwargs: Any) -> tuple[UserModule, Any]:
    dm = datamodule()
    dm.setup("fit")
    module = UserModule(dm.task_objects)
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        log_every_n_steps=1,
        **trainer_kwargs,
    )
    trainer.fit(module, datamodule=dm)
    return module, dm


def test_user_module_pool_grows_by_budget_at_chosen_epochs() -> None:
    callback = ActiveLoop(strategy="random", budget=2, every_n_epochs=2, seed=3)
    module, dm = fit(callback, epochs=4)
    k = len(TASKS)
    # bought after epochs 1 and 3 (the 2nd and 4th), 2 images x 2 tasks each time
    assert [a.epoch for a in callback.history] == [1, 3]
    assert [a.labels_after - a.labels_before for a in callback.history] == [4, 4]
    assert module.labels_at_epoch_start == {0: 8, 1: 8, 2: 12, 3: 12}
    assert dm.pool.num_labels == (INITIAL + 4) * k
    # the labels bought after epoch 1 are trained on from epoch 2: 4 -> 6 images
    assert module.batches_per_epoch == {0: 2, 1: 2, 2: 3, 3: 3}
    # marked with the cycle they were bought for, never an initial image twice
    assert sorted(np.unique(dm.pool.cycle[dm.pool.labelled]).tolist()) == [0, 1, 2]
    assert len(set(np.concatenate([a.selection.images for a in callback.history]))) == 4


def test_reload_every_epoch_and_fit_end_acquisition_with_features() -> None:
    # Lightning's own reload path, and coreset reading the user's embedding at fit end
    callback = ActiveLoop(strategy="coreset", budget=3, seed=0)
    module, dm = fit(callback, epochs=2, reload_dataloaders_every_n_epochs=1)
    assert len(callback.history) == 1 and callback.history[0].epoch is None
    assert dm.pool.num_labels == (INITIAL + 3) * len(TASKS)
    assert module.batches_per_epoch == {0: 2, 1: 2}  # bought after the last epoch


def test_same_selection_as_the_loop_seeding() -> None:
    # select() of two callbacks with the same seed and cycle picks the same images
    dm = datamodule()
    dm.setup("fit")
    module = UserModule(dm.task_objects)
    first = ActiveLoop("random", budget=3, seed=5).select(module, dm, 0)
    again = ActiveLoop("random", budget=3, seed=5).select(module, dm, 0)
    other = ActiveLoop("random", budget=3, seed=6).select(module, dm, 0)
    assert first.images.tolist() == again.images.tolist()
    assert first.images.tolist() != other.images.tolist()


def test_errors_name_the_fix() -> None:
    with pytest.raises(ValueError, match="every_n_epochs=0"):
        ActiveLoop(every_n_epochs=0)
    dm = datamodule()
    dm.setup("fit")
    bare = nn.Conv2d(3, 3, 1)
    with pytest.raises(TypeError, match="task_objects"):
        ActiveLoop("random", budget=2).select(bare, object(), 0, pool=dm.pool)
    with pytest.raises(TypeError, match="needs a datamodule with a label pool"):
        trainer = L.Trainer(
            max_epochs=1,
            callbacks=[ActiveLoop()],
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(UserModule(dm.task_objects), train_dataloaders=dm.train_dataloader())
    with pytest.raises(TypeError, match=r"lacks \['pool'"):
        trainer = L.Trainer(
            max_epochs=1,
            callbacks=[ActiveLoop()],
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(UserModule(dm.task_objects), datamodule=L.LightningDataModule())
