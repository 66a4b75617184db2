"""Progress with ETA (tqdm): a bar per fit and per scoring pass on an interactive
terminal (none in logs and pipes, where one line per finished cycle or run stays), and
an elapsed/ETA clock for the lines of loop cycles and grid runs."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable
from typing import IO, Any

from lightning.pytorch import Callback, LightningModule, Trainer
from tqdm.auto import tqdm
from tqdm.std import tqdm as std_tqdm


def bar(
    iterable: Iterable[Any] | None = None,
    *,
    total: int | float | None = None,
    desc: str = "",
    file: IO[str] | None = None,
) -> std_tqdm:
    """A transient tqdm bar on stderr, shown only on a terminal (``file`` forces it)."""
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        leave=False,
        dynamic_ncols=True,
        file=file or sys.stderr,
        disable=False if file is not None else None,
    )


class FitProgress(Callback):
    """One bar over a fit's training steps (all epochs) with ETA and the last loss; it
    replaces Lightning's per-epoch bars in ``mtal loop`` and disappears when the fit ends."""

    def __init__(self, desc: str = "fit", file: IO[str] | None = None) -> None:
        self.desc = desc
        self.file = file
        self.bar: std_tqdm | None = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        total = trainer.estimated_stepping_batches
        self.bar = bar(
            total=total if math.isfinite(total) else None, desc=self.desc, file=self.file
        )

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, index: int
    ) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None and hasattr(loss, "item"):
            self.bar.set_postfix(epoch=trainer.current_epoch, loss=f"{float(loss.item()):.4g}")

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._close()

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, error: BaseException
    ) -> None:
        self._close()


class Clock:
    """Elapsed time and ETA over ``total`` equal-ish steps (cycles of a loop, runs of a
    grid): the ETA is the mean time of the steps done so far times the steps left."""

    def __init__(self, total: int) -> None:
        self.total = int(total)
        self.done = 0
        self.start = time.perf_counter()

    def lap(self) -> str:
        """Count one step done; ``"<i>/<n>, <elapsed> elapsed, ETA <left>"``."""
        self.done += 1
        elapsed = time.perf_counter() - self.start
        left = elapsed / self.done * max(self.total - self.done, 0)
        return (
            f"{self.done}/{self.total}, {std_tqdm.format_interval(elapsed)} elapsed, "
            f"ETA {std_tqdm.format_interval(left)}"
        )
