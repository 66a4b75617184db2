"""Edge detection ODS F-measure (BSDS protocol, MATLAB-free)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching
from scipy.spatial import cKDTree
from torchmetrics import Metric

from mtal.metrics._common import f_measure, make_thresholds, safe_ratio
from mtal.metrics.thinning import thin

EDGE_MODES = ("exact", "approx")


class _GroundTruth:
    """GT edge pixels of one image with their search structures, built once per image
    and reused for every threshold."""

    def __init__(self, gt: np.ndarray, radius: float, mode: str) -> None:
        self.mask = gt
        self.points = np.argwhere(gt)
        self.radius = radius
        self.tree = cKDTree(self.points) if len(self.points) else None
        # approx: distance of every pixel to the nearest GT edge pixel
        self.distance = ndimage.distance_transform_edt(~gt) if mode == "approx" else None

    def match_exact(self, pred: np.ndarray) -> tuple[int, int]:
        """One-to-one maximum-cardinality matching; returns (matched pred, matched GT)."""
        points = np.argwhere(pred)
        if self.tree is None or len(points) == 0:
            return 0, 0
        pairs = cKDTree(points).sparse_distance_matrix(
            self.tree, self.radius, output_type="ndarray"
        )
        if len(pairs) == 0:
            return 0, 0
        graph = coo_matrix(
            (np.ones(len(pairs), dtype=np.int8), (pairs["i"], pairs["j"])),
            shape=(len(points), len(self.points)),
        ).tocsr()
        matched = int((maximum_bipartite_matching(graph, perm_type="column") >= 0).sum())
        return matched, matched

    def match_approx(self, pred: np.ndarray) -> tuple[int, int]:
        """Each pixel needs *a* partner within the radius (not one-to-one): the GT side
        uses the distance transform, the prediction side a k-d tree query."""
        points = np.argwhere(pred)
        if self.tree is None or len(points) == 0:
            return 0, 0
        assert self.distance is not None
        matched_pred = int((self.distance[pred] <= self.radius).sum())
        # distance_upper_bound is exclusive: nudge it so that d == radius still matches
        bound = float(np.nextafter(self.radius, np.inf))
        dist, _ = cKDTree(points).query(self.points, k=1, distance_upper_bound=bound)
        return matched_pred, int(np.isfinite(dist).sum())


def match_exact(pred: np.ndarray, gt: np.ndarray, radius: float) -> tuple[int, int]:
    """One-to-one matching of predicted to GT edge pixels of two H×W bool maps within
    ``radius`` pixels (maximum bipartite matching); returns (matched pred, matched GT)."""
    return _GroundTruth(gt, radius, "exact").match_exact(pred)


def match_approx(pred: np.ndarray, gt: np.ndarray, radius: float) -> tuple[int, int]:
    """Approximate matching: a pixel is matched when the other map has *some* pixel within
    ``radius`` (not one-to-one, so both counts are ≥ the exact ones)."""
    return _GroundTruth(gt, radius, "approx").match_approx(pred)


class EdgeODSF(Metric):
    """Optimal-dataset-scale F-measure of edge maps (Martin et al., BSDS protocol).

    For every threshold t: the sigmoid map is binarised (p ≥ t) and thinned, pixels whose
    target is 255 are dropped, and predicted edge pixels are matched to GT edge pixels
    (target 1) within ``max_dist`` × image diagonal. Counts (matched pred, pred, matched
    GT, GT) are summed over the dataset; P = Σ matched pred / Σ pred, R = Σ matched GT /
    Σ GT (0 when a denominator is 0) and ODS F = max_t 2PR / (P + R).

    ``mode="exact"``: one-to-one maximum-cardinality bipartite matching (cKDTree
    candidate pairs within the radius + ``scipy.sparse.csgraph``), key ``odsf``.
    ``mode="approx"``: each pixel only needs a partner within the radius (distance
    transform of the GT, k-d tree query of the prediction), an upper bound of the exact
    score reported as ``odsf_approx``. A single annotation per image is assumed (BSDS
    matches against several human annotations).

    Cost: every threshold thins and matches a full-resolution map on the CPU (tens of
    milliseconds for a 480×512 image, so seconds per image with 99 thresholds); use
    fewer ``thresholds`` or a subset of images for frequent validation.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        max_dist: float = 0.0075,
        thresholds: int | Sequence[float] = 99,
        mode: str = "exact",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if mode not in EDGE_MODES:
            raise ValueError(f"EdgeODSF: mode={mode!r} is not one of {list(EDGE_MODES)}")
        if max_dist <= 0:
            raise ValueError(
                f"EdgeODSF: max_dist must be > 0 (fraction of the diagonal), got {max_dist}"
            )
        self.max_dist = float(max_dist)
        self.mode = mode
        self.thresholds = make_thresholds(thresholds, "EdgeODSF")
        t = len(self.thresholds)
        for name in ("matched_pred", "total_pred", "matched_gt", "total_gt"):
            self.add_state(name, default=torch.zeros(t, dtype=torch.long), dist_reduce_fx="sum")

    def image_counts(self, prob: np.ndarray, target: np.ndarray) -> np.ndarray:
        """4×T counts (matched pred, pred, matched GT, GT) of one H×W probability map
        against its H×W target in {0, 1, 255}."""
        valid = target != 255
        gt = (target == 1) & valid
        radius = self.max_dist * float(np.hypot(*prob.shape))
        truth = _GroundTruth(gt, radius, self.mode)
        matcher = truth.match_exact if self.mode == "exact" else truth.match_approx
        counts = np.zeros((4, len(self.thresholds)), dtype=np.int64)
        counts[3] = int(gt.sum())
        previous: tuple[int, np.ndarray] | None = None
        for j, t in enumerate(self.thresholds):
            binary = prob >= t
            n_on = int(binary.sum())
            if previous is not None and previous[0] == n_on:
                # maps are nested as t grows: equal size means the same map
                counts[:3, j] = previous[1]
                continue
            pred = thin(binary) & valid if n_on else binary
            mp, mg = matcher(pred)
            counts[:3, j] = (mp, int(pred.sum()), mg)
            previous = (n_on, counts[:3, j].copy())
        return counts

    def update(self, raw: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: ``raw`` B×1×H×W logits, ``target`` B×1×H×W in {0, 1, 255}."""
        if raw.shape != target.shape or raw.dim() != 4 or raw.shape[1] != 1:
            raise ValueError(
                f"EdgeODSF: raw {tuple(raw.shape)} and target {tuple(target.shape)} must "
                "both be B×1×H×W"
            )
        probs = raw.detach().double().sigmoid().cpu().numpy()[:, 0]
        targets = target.detach().cpu().numpy()[:, 0]
        total = sum(self.image_counts(p, t) for p, t in zip(probs, targets))
        total_t = torch.as_tensor(total, dtype=torch.long, device=self.total_pred.device)
        self.matched_pred += total_t[0]
        self.total_pred += total_t[1]
        self.matched_gt += total_t[2]
        self.total_gt += total_t[3]

    def curve(self) -> dict[str, np.ndarray]:
        """Dataset-level precision, recall and F per threshold."""
        precision = safe_ratio(self.matched_pred.cpu().numpy(), self.total_pred.cpu().numpy())
        recall = safe_ratio(self.matched_gt.cpu().numpy(), self.total_gt.cpu().numpy())
        return {
            "threshold": self.thresholds,
            "precision": precision,
            "recall": recall,
            "f": f_measure(precision, recall),
        }

    def compute(self) -> dict[str, torch.Tensor]:
        curve = self.curve()
        best = int(np.argmax(curve["f"]))
        key = "odsf" if self.mode == "exact" else "odsf_approx"
        return {
            key: torch.tensor(float(curve["f"][best])),
            f"{key}_threshold": torch.tensor(float(self.thresholds[best])),
        }
