"""Evaluation metrics: torchmetrics ``Metric``s per task (state summed over the dataset
and across processes) and scalar multi-task summaries (weighted loss, Δm, mDSQ)."""

from mtal.metrics.depth import DepthMetrics
from mtal.metrics.edge import EdgeODSF, match_approx, match_exact
from mtal.metrics.miou import MeanIoU
from mtal.metrics.multitask import delta_m, mdsq, multi_task_loss
from mtal.metrics.normals import NormalsMetrics, angular_error_deg
from mtal.metrics.saliency import SaliencyMetrics
from mtal.metrics.thinning import thin

__all__ = [
    "DepthMetrics",
    "EdgeODSF",
    "MeanIoU",
    "NormalsMetrics",
    "SaliencyMetrics",
    "angular_error_deg",
    "delta_m",
    "match_approx",
    "match_exact",
    "mdsq",
    "multi_task_loss",
    "thin",
]
