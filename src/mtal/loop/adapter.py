"""The adapter protocol: what a LightningModule (and its datamodule) must expose so that
:class:`mtal.loop.ActiveLoop` can score the pool with it (see docs/contracts.md,
"ActiveLoop adapter")."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

    from mtal.tasks.base import Task
    from mtal.types import MultiTaskOutput

#: what a datamodule must have for acquisition (``ActiveDataModule`` has all of them)
DATAMODULE_ATTRIBUTES = ("pool", "attach_pool", "pool_loader", "train_dataset")


@runtime_checkable
class ScoringNetwork(Protocol):
    """The network a strategy calls: ``net(image, **kwargs) -> MultiTaskOutput``.

    Every strategy reads ``final`` (task → raw B×C×H×W output); ``coreset`` reads
    ``extras["fused"]`` when present, else ``embedding`` (B×D); ``mtal`` reads ``task_features`` and, when called with
    ``committee=c`` (c ≥ 1), ``committee``; ``ll4al`` reads ``loss_pred`` (B×K);
    ``partal``/``rbal`` call it with ``mc_dropout=True`` (dropout active in eval mode),
    ``partal`` also with ``gt=``/``gt_mask=`` (ground-truth substitution). A network
    that cannot honour a keyword it is given must raise, not ignore it.
    """

    def __call__(self, image: torch.Tensor, **kwargs: Any) -> MultiTaskOutput: ...


@runtime_checkable
class ActiveModule(Protocol):
    """A LightningModule ActiveLoop can score with: ``task_objects`` (task name →
    :class:`mtal.tasks.base.Task`, in the pool's column order) and either a ``net``
    attribute that is a :class:`ScoringNetwork`, or a ``forward`` that is one itself."""

    task_objects: Mapping[str, Task]


def scoring_network(module: Any) -> torch.nn.Module:
    """The network strategies call: ``module.net`` when the module has one, else the
    module itself (its ``forward`` must then follow :class:`ScoringNetwork`)."""
    net = getattr(module, "net", None)
    return module if net is None else net


def task_objects(module: Any, datamodule: Any, pool: Any = None) -> dict[str, Task]:
    """The Task objects of the run, in pool column order: the module's ``task_objects``,
    else the datamodule's; their names must be those of ``pool`` (default: the
    datamodule's)."""
    tasks = getattr(module, "task_objects", None) or getattr(datamodule, "task_objects", None)
    if not tasks:
        raise TypeError(
            f"ActiveLoop: neither {type(module).__name__} nor {type(datamodule).__name__} "
            "has `task_objects` (task name -> mtal.tasks Task, in the pool's column order); "
            "add that attribute to your LightningModule (see docs/contracts.md, "
            "'ActiveLoop adapter')"
        )
    tasks = dict(tasks)
    pool_tasks = list((datamodule.pool if pool is None else pool).tasks)
    if list(tasks) != pool_tasks:
        raise ValueError(
            f"ActiveLoop: the module's task_objects {list(tasks)} are not the pool's tasks "
            f"{pool_tasks} (same names, same order); build the module for the datamodule's tasks"
        )
    return tasks


def check_datamodule(datamodule: Any) -> None:
    """Raise a TypeError naming what a datamodule lacks for acquisition."""
    if datamodule is None:
        raise TypeError(
            "ActiveLoop needs a datamodule with a label pool: call "
            "trainer.fit(model, datamodule=ActiveDataModule(...))"
        )
    missing = [a for a in DATAMODULE_ATTRIBUTES if not hasattr(datamodule, a)]
    if missing:
        raise TypeError(
            f"ActiveLoop: {type(datamodule).__name__} lacks {missing}; use "
            "mtal.data.ActiveDataModule or a subclass of it (see docs/contracts.md)"
        )
