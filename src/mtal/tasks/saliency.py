"""Saliency estimation: balanced BCE with a per-image positive weight."""

from __future__ import annotations

from typing import Any, ClassVar

from mtal.tasks._common import BinaryTask


class SaliencyTask(BinaryTask):
    """Saliency with the balanced BCE (Vandenhende et al., ``pos_weight=None``)::

        ℓ = −[ w · y · log σ(x) + (1 − w) · (1 − y) · log(1 − σ(x)) ]

    averaged over the sample's valid pixels. By default ``w`` is computed **per image**
    as the fraction of negative pixels among its valid pixels, w = N₋ / (N₊ + N₋) (for
    soft targets, Σ(1 − y) / N); Vandenhende computes it over the whole batch. Set option
    ``pos_weight`` to a number in [0, 1] to fix it instead.

    Other options: ``discrepancy_target`` ("soft" | "hard" | "kl"), ``beta2`` and
    ``thresholds`` for :class:`mtal.metrics.SaliencyMetrics`.
    """

    name: ClassVar[str] = "saliency"
    default_options: ClassVar[dict[str, Any]] = {
        "pos_weight": None,
        "discrepancy_target": "soft",
        "beta2": 0.3,
        "thresholds": 99,
    }

    def _check_options(self) -> None:
        super()._check_options()
        w = self.options["pos_weight"]
        if w is not None and not 0.0 <= float(w) <= 1.0:
            raise ValueError(
                f"task 'saliency': pos_weight must be None (per-image balance) or a number "
                f"in [0, 1], got {w!r}"
            )

    def metric(self) -> Any:
        from mtal.metrics import SaliencyMetrics

        return SaliencyMetrics(beta2=self.options["beta2"], thresholds=self.options["thresholds"])

    @property
    def headline(self) -> tuple[str, bool]:
        return ("maxf", True)
