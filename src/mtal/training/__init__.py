"""Training: the ``MultiTaskModule`` LightningModule, loss weightings and optimisers.

Attributes are imported on first access so ``import mtal.training`` stays light
(torch and lightning load only when something is used).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mtal.training.module import MultiTaskModule, reduce_task_losses
    from mtal.training.optim import OPTIMIZERS, SCHEDULES, create_optimizer
    from mtal.training.weighting import WEIGHTINGS, LossWeighting, create_weighting

#: public name → the submodule that defines it
_EXPORTS: dict[str, str] = {
    "MultiTaskModule": "mtal.training.module",
    "reduce_task_losses": "mtal.training.module",
    "OPTIMIZERS": "mtal.training.optim",
    "SCHEDULES": "mtal.training.optim",
    "create_optimizer": "mtal.training.optim",
    "WEIGHTINGS": "mtal.training.weighting",
    "LossWeighting": "mtal.training.weighting",
    "create_weighting": "mtal.training.weighting",
}

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "WEIGHTINGS",
    "LossWeighting",
    "MultiTaskModule",
    "create_optimizer",
    "create_weighting",
    "reduce_task_losses",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mtal.training' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
