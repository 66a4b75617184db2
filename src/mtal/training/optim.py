"""Optimiser and learning-rate schedule registries used by ``MultiTaskModule``.

``OPTIMIZERS`` entries take ``(param_groups, lr, weight_decay, momentum)``;
``SCHEDULES`` entries map ``(step, max_steps, **options)`` to an lr multiplier and are
stepped once per optimiser step (``LambdaLR`` with ``interval="step"``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer

from mtal.registry import Registry

OPTIMIZERS: Registry[Optimizer] = Registry("optimizer")
#: name → multiplier(step, max_steps, **options); None = constant learning rate
SCHEDULES: Registry[float] = Registry("scheduler")


@OPTIMIZERS.register("adam")
def adam(params: Iterable[Any], lr: float, weight_decay: float, momentum: float) -> Optimizer:
    """Adam (L2 weight decay added to the gradient); ``momentum`` is unused."""
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


@OPTIMIZERS.register("adamw")
def adamw(params: Iterable[Any], lr: float, weight_decay: float, momentum: float) -> Optimizer:
    """AdamW (decoupled weight decay); ``momentum`` is unused."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


@OPTIMIZERS.register("sgd")
def sgd(params: Iterable[Any], lr: float, weight_decay: float, momentum: float) -> Optimizer:
    """SGD with (heavy-ball) momentum, as in the PASCAL-Context protocols."""
    return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=momentum)


def create_optimizer(
    name: str, params: Iterable[Any], *, lr: float, weight_decay: float = 0.0, momentum: float = 0.9
) -> Optimizer:
    """Build the optimiser registered as ``name`` over ``params`` (tensors or groups)."""
    return OPTIMIZERS.get(name)(params, lr=lr, weight_decay=weight_decay, momentum=momentum)


@SCHEDULES.register("none")
def constant(step: int, max_steps: int, **options: Any) -> float:
    """Constant learning rate."""
    return 1.0


@SCHEDULES.register("poly")
def poly(step: int, max_steps: int, power: float = 0.9, **options: Any) -> float:
    """Polynomial decay (1 − step/max_steps)^power, clamped at 0 past ``max_steps``."""
    return max(0.0, 1.0 - step / max(max_steps, 1)) ** power


@SCHEDULES.register("cosine")
def cosine(step: int, max_steps: int, **options: Any) -> float:
    """Cosine annealing ½·(1 + cos(π·step/max_steps)) down to 0 at ``max_steps``."""
    frac = min(step / max(max_steps, 1), 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * frac))


@SCHEDULES.register("step_half")
def step_half(step: int, max_steps: int, **options: Any) -> float:
    """Halve the rate at the midpoint of training (mtan's / MTPSL's ``StepLR(step_size=100,
    gamma=0.5)`` over 200 epochs)."""
    return 0.5 if step >= max(max_steps, 1) / 2 else 1.0


def schedule_lambda(name: str, max_steps: int, **options: Any) -> Callable[[int], float]:
    """A ``LambdaLR`` multiplier function for the schedule ``name`` over ``max_steps``."""
    fn = SCHEDULES.get(name)
    if max_steps <= 0 or not math.isfinite(max_steps):
        raise ValueError(
            f"the {name!r} learning-rate schedule needs a finite number of training steps, "
            f"got {max_steps}; set trainer.max_epochs or trainer.max_steps"
        )

    def multiplier(step: int) -> float:
        return fn(step, int(max_steps), **options)

    return multiplier
