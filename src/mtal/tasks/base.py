"""The Task contract: everything mtal knows about one dense prediction task.

Every other module (models, losses, strategies, metrics) is generic over tasks and
talks to them only through this interface.

Tensor conventions (after collation, ``B`` samples of ``H×W`` pixels):

=========  ===========  ==========================  ==========================
task       out channels target                      "no label" fill (ignore)
=========  ===========  ==========================  ==========================
semseg     C classes    int64 ``B×H×W``             255
parts      P+1 classes  int64 ``B×H×W``             255
depth      1            float32 ``B×1×H×W`` metres  0 (invalid)
normals    3            float32 ``B×3×H×W`` unit    0 vector (invalid)
edge       1            float32 ``B×1×H×W`` {0,1}   255
saliency   1            float32 ``B×1×H×W`` {0,1}   255
=========  ===========  ==========================  ==========================

Model outputs are *raw* (logits for classification/binary tasks, unconstrained for
regression) at the target resolution; ``activate`` maps them to prediction space.

``boxes`` (:mod:`mtal.tasks.boxes`, kind ``"detection"``) is the one non-dense task: its
target is a per-sample dict ``{"boxes": N×4, "labels": N}`` (batches carry a list), its
raw output a dense map at the head's stride, and its loss is still per sample ``[B]``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # keep `import mtal.tasks` light
    from collections.abc import Sequence

    import numpy as np
    import torch
    from torchmetrics import Metric


class Task(ABC):
    """One dense task: channels, per-sample loss, committee discrepancy, MC uncertainty,
    flip rule, ignore value and metrics.

    ``kind`` is one of ``"categorical"``, ``"binary"``, ``"regression"``.
    """

    name: ClassVar[str]
    kind: ClassVar[str]

    def __init__(self, num_classes: int | None = None, **options: Any) -> None:
        self.num_classes = num_classes
        self.options = options

    # -- shapes and encoding ------------------------------------------------------
    @property
    @abstractmethod
    def out_channels(self) -> int:
        """Number of raw output channels the network must produce for this task."""

    @property
    @abstractmethod
    def ignore_value(self) -> float:
        """Value that marks an ignored/invalid target pixel (see table above)."""

    @abstractmethod
    def empty_target(self, height: int, width: int) -> torch.Tensor:
        """A single-sample all-ignore target (no batch dim): used for unlabelled tasks."""

    @abstractmethod
    def target_from_numpy(self, array: np.ndarray) -> torch.Tensor:
        """Convert a dataset's numpy target (H×W or H×W×C) to the single-sample tensor
        layout in the table above (no batch dim)."""

    @abstractmethod
    def valid_mask(self, target: torch.Tensor) -> torch.Tensor:
        """Bool ``B×H×W`` mask of pixels that carry a label."""

    @abstractmethod
    def activate(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw output → prediction space (softmax probs, sigmoid prob, metres, unit normal)."""

    @abstractmethod
    def encode_target(self, target: torch.Tensor) -> torch.Tensor:
        """Ground truth → a tensor shaped like ``activate(raw)`` (one-hot, float map, ...)
        for ground-truth substitution (PartAL); ignored pixels become zeros."""

    # -- losses -------------------------------------------------------------------
    @abstractmethod
    def loss(self, raw: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample loss ``[B]`` averaged over each sample's valid pixels; a sample
        with no valid pixel gives exactly 0 and no gradient (never NaN)."""

    @abstractmethod
    def discrepancy(self, raw: torch.Tensor, other_raw: torch.Tensor) -> torch.Tensor:
        """Per-sample task loss ``[B]`` of ``raw`` against ``other_raw`` turned into a
        target (committee inconsistency); the conversion is an option of the task."""

    def discrepancies(self, raw: torch.Tensor, others: Sequence[torch.Tensor]) -> torch.Tensor:
        """``[M, B]``: :meth:`discrepancy` of one ``raw`` against each of M others (the
        committee members); tasks override it to compute ``raw``'s side once."""
        import torch

        return torch.stack([self.discrepancy(raw, other) for other in others], dim=0)

    @abstractmethod
    def mc_uncertainty(self, raw_samples: torch.Tensor) -> torch.Tensor:
        """Per-sample uncertainty ``[B]`` from ``S×B×C×H×W`` MC-dropout raw outputs."""

    # -- geometry -----------------------------------------------------------------
    def hflip(self, x: torch.Tensor) -> torch.Tensor:
        """Horizontally flip a ``B×C×H×W`` (or ``B×H×W``) raw output or target."""
        return x.flip(-1)

    # -- evaluation -----------------------------------------------------------------
    @abstractmethod
    def metric(self) -> Metric:
        """A fresh torchmetrics Metric; ``update(raw, target)``; ``compute()`` → dict."""

    @property
    def headline(self) -> tuple[str, bool]:
        """(metric key, higher_is_better) used in curves and Δm."""
        return ("loss", False)
