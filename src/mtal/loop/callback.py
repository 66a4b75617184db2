"""The Lightning callbacks of active learning: :class:`ActiveLoop` (score the pool and
buy labels, in any Trainer) and :class:`CycleTracker` (one ``mtal loop`` cycle's pool
figures and best weights)."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything

from mtal import distributed
from mtal.loop.adapter import check_datamodule, scoring_network, task_objects
from mtal.loop.oracle import apply_selection
from mtal.loop.runfolder import cpu_state, pool_stats
from mtal.loop.settings import LoopSettings, budget_in_labels, cost_budget, derive_seed

if TYPE_CHECKING:
    from mtal.acquisition.base import Selection, Strategy
    from mtal.acquisition.costs import CostBudget
    from mtal.data.pool import LabelPool


@dataclass
class Acquisition:
    """One purchase of :class:`ActiveLoop`: the labels bought for ``cycle`` at the end of
    ``epoch`` (None: at fit end), and the pool's label count before and after."""

    cycle: int
    epoch: int | None
    selection: Selection
    labels_before: int
    labels_after: int


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run the block and give Python, NumPy and torch (CPU and CUDA) their RNG state back,
    so an acquisition in the middle of a fit does not change the fit's randomness."""
    py, np_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(np_state)


class ActiveLoop(Callback):
    """Active learning in any Trainer: score the datamodule's pool with ``strategy`` and buy
    ``budget`` labels from the oracle (the dataset's own annotations) at the end of every
    ``every_n_epochs``-th training epoch, or once at fit end (``every_n_epochs=None``).

    ``budget``/``budget_unit`` mean what ``loop.budget``/``loop.budget_unit`` mean (a
    fraction of the pool's images when < 1, else a count; "images" or "labels").
    Labels bought after cycle ``c`` (the pool's newest cycle) are marked ``c + 1``;
    selection ``c`` is seeded from ``(seed, "select", c)`` exactly as ``mtal loop`` seeds
    it, and the RNG state of the fit is restored afterwards. After a mid-fit purchase
    the Trainer's training loader is rebuilt at the next epoch start, so the new labels
    train from the next epoch on. The module must follow the adapter protocol
    (:mod:`mtal.loop.adapter`); the datamodule must be an ``ActiveDataModule``.
    ``mtal loop`` uses the same :meth:`select` for its acquisitions.
    """

    def __init__(
        self,
        strategy: str | Strategy = "random",
        budget: float = 0.1,
        *,
        budget_unit: str = "images",
        every_n_epochs: int | None = None,
        seed: int = 0,
        strategy_kwargs: Mapping[str, Any] | None = None,
        clamp_budget: bool = False,
        max_acquisitions: int | None = None,
        task_costs: Mapping[str, float] | None = None,
        summary_dir: str | None = None,
    ) -> None:
        if every_n_epochs is not None and int(every_n_epochs) < 1:
            raise ValueError(
                f"ActiveLoop: every_n_epochs={every_n_epochs}; use a count >= 1, or None to "
                "acquire once at fit end"
            )
        if max_acquisitions is not None and int(max_acquisitions) < 0:
            raise ValueError(f"ActiveLoop: max_acquisitions={max_acquisitions}; use >= 0 or None")
        if budget_unit not in ("images", "labels", "cost"):
            raise ValueError(
                f"ActiveLoop: budget_unit={budget_unit!r}; choose 'images', 'labels' or 'cost'"
            )
        if budget_unit == "cost" and not task_costs:
            raise ValueError("ActiveLoop: budget_unit='cost' needs task_costs={task: price}")
        if budget <= 0:
            raise ValueError(f"ActiveLoop: budget={budget}; use a fraction in (0, 1) or a count")
        if isinstance(strategy, str):
            from mtal.acquisition import create_strategy

            strategy = create_strategy(
                strategy, clamp_budget=clamp_budget, **dict(strategy_kwargs or {})
            )
        elif strategy_kwargs:
            raise ValueError("ActiveLoop: strategy_kwargs apply to a strategy name only")
        self.strategy = strategy
        self.budget = float(budget)
        self.budget_unit = budget_unit
        self.task_costs = dict(task_costs or {})
        self.every_n_epochs = None if every_n_epochs is None else int(every_n_epochs)
        self.seed = int(seed)
        self.max_acquisitions = max_acquisitions
        #: scoring summaries as memory-mapped files in this folder (None: in memory)
        self.summary_dir = None if summary_dir is None else str(summary_dir)
        #: the strategy's cross-cycle state (JSON-serialisable), kept for the callback's life
        self.state: dict[str, Any] = {}
        self.history: list[Acquisition] = []
        self.last_context: Any = None  # AcquisitionContext of the last select()

    # -- the acquisition step (shared with ``mtal loop``) ---------------------------
    def select_seed(self, cycle: int) -> int:
        """The seed of selection ``cycle``: ``derive_seed(seed, "select", cycle)``."""
        return derive_seed(self.seed, "select", cycle)

    def budget_labels(self, pool: LabelPool) -> int:
        """The budget in labels (image/task pairs) for ``pool``."""
        return budget_in_labels(self._settings(), pool.num_images, pool.num_tasks)

    def _settings(self) -> LoopSettings:
        return LoopSettings(
            budget=self.budget,
            budget_unit=self.budget_unit,  # type: ignore[arg-type]
            task_costs=self.task_costs,
        )

    def select(
        self,
        module: Any,
        datamodule: Any,
        cycle: int,
        *,
        budget: int | None = None,
        pool: LabelPool | None = None,
        state: dict[str, Any] | None = None,
        device: torch.device | str | None = None,
        cost: CostBudget | None = None,
    ) -> Selection:
        """Selection ``cycle``: torch/numpy are seeded from ``(seed, cycle)`` first (MC
        dropout and auto-encoder training do not depend on what ran before), then the
        strategy scores ``pool`` (default: the datamodule's) with the module's network."""
        from mtal.acquisition.base import AcquisitionContext
        from mtal.diagnostics import module_task_weights

        pool = datamodule.pool if pool is None else pool
        net = scoring_network(module)
        if device is None:
            first = next(iter(net.parameters()), None)
            device = first.device if first is not None else torch.device("cpu")
        seed = self.select_seed(cycle)
        seed_everything(seed, workers=True, verbose=False)
        ctx = AcquisitionContext(
            model=net,
            tasks=task_objects(module, datamodule, pool),
            pool=pool,
            datamodule=datamodule,
            device=device,
            cycle=cycle,
            seed=seed,
            state=self.state if state is None else state,
            cost=cost_budget(self._settings(), pool.tasks) if cost is None else cost,
            task_weights=module_task_weights(module),
            # under DDP only rank 0 maps its buffers: the folder (the run folder by
            # default) is rank 0's and may not exist on another node
            summary_dir=self.summary_dir if distributed.is_rank_zero() else None,
        )
        self.last_context = ctx  # ``mtal loop`` computes diagnostics on it
        return self.strategy.select(ctx, self.budget_labels(pool) if budget is None else budget)

    def buy(self, datamodule: Any, selection: Selection, cycle: int) -> LabelPool:
        """Buy ``selection``'s labels (marked ``cycle``) into a copy of the datamodule's
        pool and attach it; the old pool object is left as it was."""
        bought = datamodule.pool.copy()
        apply_selection(bought, selection, cycle)
        datamodule.attach_pool(bought)
        return bought

    # -- Lightning hooks ---------------------------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            check_datamodule(trainer.datamodule)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        n = self.every_n_epochs
        if n is not None and (trainer.current_epoch + 1) % n == 0:
            if self._acquire(trainer, pl_module, trainer.current_epoch):
                reload_train_loader(trainer)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.every_n_epochs is None:
            self._acquire(trainer, pl_module, None)

    def _acquire(self, trainer: Trainer, pl_module: LightningModule, epoch: int | None) -> bool:
        """Select and buy once (unless ``max_acquisitions`` is reached); log the request."""
        if self.max_acquisitions is not None and len(self.history) >= self.max_acquisitions:
            return False
        dm = trainer.datamodule
        pool = dm.pool
        cycle = int(pool.cycle.max()) if pool.num_labels else 0
        with preserved_rng():
            selection = self.select(pl_module, dm, cycle, device=pl_module.device)
        # DDP: every rank selected on the same gathered summaries; rank 0's result wins
        selection = distributed.agree_with_rank_zero(selection, self.state)
        bought = self.buy(dm, selection, cycle + 1)
        self.history.append(
            Acquisition(cycle + 1, epoch, selection, pool.num_labels, bought.num_labels)
        )
        if trainer.logger is not None:
            stats = {f"al/{k}": v for k, v in pool_stats(bought).items()}
            trainer.logger.log_metrics(
                {"al/cycle": float(cycle + 1), **stats}, step=trainer.global_step
            )
            from mtal.tracking import log_request

            log_request(trainer.logger, selection, bought, dm.train_dataset, cycle + 1)
        return True


def reload_train_loader(trainer: Trainer) -> None:
    """Make the running fit rebuild its training loader at the next epoch start.

    With ``Trainer(reload_dataloaders_every_n_epochs=n)`` Lightning does that itself;
    otherwise the fit loop's combined loader is dropped, which Lightning 2.x's
    ``_FitLoop.setup_data`` (run at every epoch start) then rebuilds from
    ``datamodule.train_dataloader()``.
    """
    if trainer.reload_dataloaders_every_n_epochs == 1:
        return
    trainer.fit_loop._combined_loader = None


class CycleTracker(Callback):
    """Lightning callback of one ``mtal loop`` cycle's fit: logs the ``al/*`` pool figures
    and keeps the best weights (by ``monitor``) in memory so the next cycle continues
    from them."""

    def __init__(
        self,
        cycle: int,
        pool_stats: Mapping[str, float],
        monitor: str = "val/mtl_loss",
        mode: str = "min",
    ) -> None:
        self.cycle = cycle
        self.pool_stats = dict(pool_stats)
        self.monitor = monitor
        self.mode = mode
        self.best_score: float | None = None
        self.best_state: dict[str, torch.Tensor] | None = None

    def _log_pool(self, trainer: Trainer) -> None:
        if trainer.logger is not None:
            stats = {"al/cycle": float(self.cycle)}
            stats.update({f"al/{k}": float(v) for k, v in self.pool_stats.items()})
            trainer.logger.log_metrics(stats, step=trainer.global_step)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._log_pool(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:  # a misspelt monitor would silently keep the last weights
            known = sorted(k for k in trainer.callback_metrics if k.startswith("val/"))
            raise ValueError(
                f"loop.monitor={self.monitor!r} is not a validation metric of this model; "
                f"choose one of {known}"
            )
        score = float(value)
        better = (
            self.best_score is None
            or (self.mode == "min" and score < self.best_score)
            or (self.mode == "max" and score > self.best_score)
        )
        if better and np.isfinite(score):
            self.best_score = score
            self.best_state = cpu_state(pl_module)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.best_state is None:  # no validation ran: the last weights are the best we know
            self.best_state = cpu_state(pl_module)
        if trainer.world_size > 1:  # DDP: buffers (BatchNorm statistics) differ per rank
            self.best_state = trainer.strategy.broadcast(self.best_state, src=0)
