"""Multi-task networks (plain ``nn.Module``s returning :class:`mtal.types.MultiTaskOutput`).

``create_model(name, tasks, **kw)`` builds a registered model: ``hps`` (shared encoder +
one head per task), ``padnet`` (PAD-Net with pairwise committee and GT substitution) or
``smp`` (a segmentation_models_pytorch encoder-decoder trunk + one head per task).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from torch import nn

from mtal.registry import Registry

if TYPE_CHECKING:
    from mtal.tasks.base import Task

#: Registered multi-task networks; ``MODELS.names()`` lists them.
MODELS: Registry[nn.Module] = Registry("model")


def create_model(name: str, tasks: Mapping[str, Task], **kw: Any) -> nn.Module:
    """Build the model registered as ``name`` for ``tasks`` (ordered name → Task)."""
    return MODELS.get(name)(tasks=tasks, **kw)


# imported last: these modules register themselves into MODELS
from mtal.models.hps import HPS  # noqa: E402
from mtal.models.ll4al import LossPredictionModule, ll4al_ranking_loss  # noqa: E402
from mtal.models.padnet import PADNet  # noqa: E402
from mtal.models.smp import SMPNet  # noqa: E402

__all__ = [
    "HPS",
    "MODELS",
    "LossPredictionModule",
    "PADNet",
    "SMPNet",
    "create_model",
    "ll4al_ranking_loss",
]
