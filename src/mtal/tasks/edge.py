"""Edge detection: class-balanced binary cross-entropy with a fixed positive weight."""

from __future__ import annotations

from typing import Any, ClassVar

from mtal.tasks._common import BinaryTask


class EdgeTask(BinaryTask):
    """Edges with the balanced BCE of Vandenhende et al. (``BalancedCrossEntropyLoss``)::

        ℓ = −[ w · y · log σ(x) + (1 − w) · (1 − y) · log(1 − σ(x)) ]

    averaged over the sample's valid (≠ 255) pixels, with the fixed positive weight
    ``w = pos_weight`` (0.95 on PASCAL-Context, 0.8 on NYUD; default 0.95). Vandenhende
    divides the batch sum by all pixels; mtal averages per sample over valid pixels.

    Options: ``pos_weight``; ``discrepancy_target`` ("soft" | "hard" | "kl");
    ``metric_mode`` ("exact" one-to-one matching | "approx" distance transform),
    ``max_dist`` (matching radius as a fraction of the image diagonal) and
    ``thresholds`` (count or list) for :class:`mtal.metrics.EdgeODSF`.
    """

    name: ClassVar[str] = "edge"
    default_options: ClassVar[dict[str, Any]] = {
        "pos_weight": 0.95,
        "discrepancy_target": "soft",
        "metric_mode": "exact",
        "max_dist": 0.0075,
        "thresholds": 99,
    }

    def _check_options(self) -> None:
        super()._check_options()
        self._check_choice("metric_mode", ("exact", "approx"))
        w = self.options["pos_weight"]
        if w is None or not 0.0 <= float(w) <= 1.0:
            raise ValueError(f"task 'edge': pos_weight must be a number in [0, 1], got {w!r}")

    def metric(self) -> Any:
        from mtal.metrics import EdgeODSF

        return EdgeODSF(
            max_dist=self.options["max_dist"],
            thresholds=self.options["thresholds"],
            mode=self.options["metric_mode"],
        )

    @property
    def headline(self) -> tuple[str, bool]:
        key = "odsf" if self.options["metric_mode"] == "exact" else "odsf_approx"
        return (key, True)
