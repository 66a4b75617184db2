"""Small shared data contracts: the model output and the batch keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

#: Keys of a collated batch produced by ``mtal.data.ActiveDataModule``:
#:   "image":    float32 B×3×H×W (normalised)
#:   "targets":  dict task -> tensor (layouts in mtal.tasks.base); unlabelled = ignore fill
#:   "labelled": bool B×K (K = len(tasks), the datamodule's task order)
#:   "weight":   float32 B×K per-pair sample weight s_k (1.0 default)
#:   "index":    int64 B pool indices
BATCH_KEYS = ("image", "targets", "labelled", "weight", "index")


@dataclass
class MultiTaskOutput:
    """What every multi-task network returns.

    All prediction tensors are *raw* (pre-activation) outputs upsampled to the input
    resolution; ``task_features`` stay at the network's working resolution.
    """

    final: dict[str, Tensor]
    initial: dict[str, Tensor] | None = None
    task_features: dict[str, Tensor] | None = None
    #: committee[k][member] for task k; members: "initial" plus one per partner set,
    #: named by the partner tasks joined with "+" (e.g. "depth", "depth+normals")
    committee: dict[str, dict[str, Tensor]] | None = None
    #: globally pooled backbone feature, B×D (core-set, diversity)
    embedding: Tensor | None = None
    #: LL4AL predicted loss per task, B×K
    loss_pred: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)
