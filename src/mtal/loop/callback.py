"""The Lightning callback of one cycle's fit."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from mtal.loop.runfolder import cpu_state


class ActiveLoop(Callback):
    """Lightning callback of one cycle's fit: logs the ``al/*`` pool figures and keeps
    the best weights (by ``monitor``) in memory so the next cycle continues from them."""

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
        if value is None:
            return
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
