"""Converged training per cycle: train by steps to a plateau of the monitored metric.

With a fixed number of epochs a cycle, a bigger labelled set simply means more
gradient steps, and an AL curve measures training time rather than which labels were
chosen (the under-trained regime of Munjal et al., CVPR 2022, Sec. 4, and Lüth et al.,
NeurIPS 2023, pitfall P4). ``loop.early_stopping`` makes every cycle validate every
``val_check_steps`` optimiser steps, whatever the size of the labelled set, and stop
when the monitored metric has not improved by ``min_delta`` for ``patience``
validations (Lightning's :class:`~lightning.pytorch.callbacks.EarlyStopping`), or at
the step cap ``max_steps``. Each cycle's ``metrics.csv`` row says which of the two
ended it (``stopped`` = ``plateau`` | ``cap``) and after how many steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

#: how a cycle's fit ended, as written to ``metrics.csv`` (``stopped`` column)
STOP_REASONS = ("plateau", "cap", "non_finite")


@dataclass
class EarlyStopSettings:
    """``loop.early_stopping``: plateau stop of every cycle's fit (off = the trainer's
    own ``max_epochs``, the papers' fixed-epoch protocol)."""

    enabled: bool = False
    #: validations without an improvement of more than ``min_delta`` before stopping
    patience: int = 5
    #: smallest change of the monitored metric that counts as an improvement
    min_delta: float = 0.0
    #: step cap of one cycle's fit (Trainer ``max_steps``); reaching it is reported
    max_steps: int = 2000
    #: validate every this many optimiser steps (Trainer ``val_check_interval`` with
    #: ``check_val_every_n_epoch=None``), so small and large labelled sets are judged alike
    val_check_steps: int = 25
    #: fewest steps before a stop may happen (Trainer ``min_steps``)
    min_steps: int = 0


def validate_early_stopping(es: EarlyStopSettings) -> None:
    """Raise a ValueError naming the ``loop.early_stopping.*`` field that cannot work."""
    checks: list[tuple[bool, str]] = [
        (es.patience >= 1, f"loop.early_stopping.patience={es.patience}: use a count >= 1"),
        (es.min_delta >= 0, f"loop.early_stopping.min_delta={es.min_delta}: use a value >= 0"),
        (es.max_steps >= 1, f"loop.early_stopping.max_steps={es.max_steps}: use a count >= 1"),
        (
            1 <= es.val_check_steps <= es.max_steps,
            f"loop.early_stopping.val_check_steps={es.val_check_steps}: use a count in "
            f"[1, max_steps={es.max_steps}]",
        ),
        (
            0 <= es.min_steps < es.max_steps,
            f"loop.early_stopping.min_steps={es.min_steps}: use a count in [0, max_steps)",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


def as_settings(value: EarlyStopSettings | dict[str, Any] | None) -> EarlyStopSettings:
    """``loop.early_stopping`` as settings (a mapping from Python callers is accepted)."""
    if value is None:
        return EarlyStopSettings()
    if isinstance(value, EarlyStopSettings):
        return value
    if isinstance(value, dict):
        try:
            return EarlyStopSettings(**value)
        except TypeError as exc:
            raise ValueError(f"loop.early_stopping={value}: {exc}") from exc
    # jsonargparse hands a Namespace for a nested dataclass
    if hasattr(value, "as_dict"):
        return EarlyStopSettings(**value.as_dict())
    raise ValueError(f"loop.early_stopping={value!r}: expected a mapping of its fields")


def plateau_stop(
    value: EarlyStopSettings | dict[str, Any] | None, monitor: str, mode: Literal["min", "max"]
) -> PlateauStop | None:
    """The plateau stop of one cycle, or None when ``loop.early_stopping`` is off."""
    settings = as_settings(value)
    return PlateauStop(settings, monitor, mode) if settings.enabled else None


class PlateauStop:
    """The trainer arguments and callback of one cycle's plateau-stopped fit, and the
    verdict on how it ended."""

    def __init__(
        self, settings: EarlyStopSettings, monitor: str, mode: Literal["min", "max"]
    ) -> None:
        from lightning.pytorch.callbacks import EarlyStopping

        self.settings = settings
        self.callback = EarlyStopping(
            monitor=monitor,
            mode=mode,
            patience=settings.patience,
            min_delta=settings.min_delta,
            strict=True,
            check_finite=True,
            check_on_train_epoch_end=False,
        )

    def trainer_overrides(self) -> dict[str, Any]:
        """Trainer arguments that replace the config's epoch budget for this fit."""
        s = self.settings
        return {
            "max_steps": s.max_steps,
            "max_epochs": -1,
            "min_steps": s.min_steps or None,
            "val_check_interval": s.val_check_steps,
            "check_val_every_n_epoch": None,
        }

    def outcome(self, global_step: int) -> dict[str, Any]:
        """``stopped`` (plateau | cap | non_finite) and the cycle's own step count."""
        if self.callback.wait_count >= self.settings.patience:
            reason = "plateau"
        elif global_step >= self.settings.max_steps:
            reason = "cap"
        else:  # EarlyStopping's check_finite stopped a fit whose metric became NaN/inf
            reason = "non_finite"
        return {"stopped": reason, "cycle_steps": int(global_step)}
