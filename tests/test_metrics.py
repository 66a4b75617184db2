"""Metrics: hand-computed cases, perfect predictions and independent brute-force references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mtal.metrics import (
    DepthMetrics,
    EdgeODSF,
    MeanIoU,
    NormalsMetrics,
    SaliencyMetrics,
    angular_error_deg,
    delta_m,
    match_approx,
    match_exact,
    mdsq,
    multi_task_loss,
    thin,
)


def logits_for(pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """B×H×W class map → B×C×H×W logits whose argmax is that map."""
    return torch.nn.functional.one_hot(pred, num_classes).permute(0, 3, 1, 2).float() * 5


def confident(binary: torch.Tensor) -> torch.Tensor:
    """{0, 1} map → logits ±10."""
    return binary.float() * 20 - 10


# ------------------------------------------------------------------------------- mIoU


def test_miou_hand_case_and_absent_options():
    target = torch.tensor([[[0, 0, 1, 1, 255]]])
    pred = torch.tensor([[[0, 1, 1, 1, 2]]])  # the ignored pixel's prediction must not count
    iou0, iou1 = 1 / 2, 2 / 3  # class 2: absent from GT and (counted) prediction
    expected = {
        "ignore": (iou0 + iou1) / 2,
        "one": (iou0 + iou1 + 1) / 3,
        "zero": (iou0 + iou1) / 3,
    }
    for absent, value in expected.items():
        metric = MeanIoU(3, absent=absent, per_class=True)
        metric.update(logits_for(pred, 3), target)
        out = metric.compute()
        assert out["miou"].item() == pytest.approx(value, rel=1e-6), absent
        assert out["pixel_acc"].item() == pytest.approx(3 / 4)
        assert out["iou_0"].item() == pytest.approx(iou0)
        assert math.isnan(out["iou_2"].item())
    with pytest.raises(ValueError, match="absent"):
        MeanIoU(3, absent="skip")


def test_miou_pools_confusion_over_updates_and_perfect_is_one():
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (4, 6, 6), generator=gen)
    pred = torch.randint(0, 4, (4, 6, 6), generator=gen)
    pooled = MeanIoU(4)
    pooled.update(logits_for(pred[:1], 4), target[:1])
    pooled.update(logits_for(pred[1:], 4), target[1:])
    # independent reference: IoU per class from set counts over all pixels
    ious = []
    for c in range(4):
        inter = ((pred == c) & (target == c)).sum().item()
        union = ((pred == c) | (target == c)).sum().item()
        ious.append(inter / union)
    assert pooled.compute()["miou"].item() == pytest.approx(np.mean(ious), rel=1e-6)
    perfect = MeanIoU(4)
    perfect.update(logits_for(target, 4), target)
    assert perfect.compute()["miou"].item() == 1.0
    with pytest.raises(ValueError, match="outside 0..3"):
        perfect.update(logits_for(target, 4), target + 5)


# ------------------------------------------------------------------------------ depth


def test_depth_metrics_pooled_hand_case():
    metric = DepthMetrics()
    # batch 1: one image, pixels (pred, gt) = (1, 2), (4, 4), (3, invalid)
    metric.update(torch.tensor([[[[1.0, 4.0, 3.0]]]]), torch.tensor([[[[2.0, 4.0, 0.0]]]]))
    # batch 2: (2, 1)
    metric.update(torch.tensor([[[[2.0]]]]), torch.tensor([[[[1.0]]]]))
    out = metric.compute()
    assert out["rmse"].item() == pytest.approx(math.sqrt((1 + 0 + 1) / 3), rel=1e-6)
    log_sq = math.log(0.5) ** 2 + 0 + math.log(2.0) ** 2
    assert out["log_rmse"].item() == pytest.approx(math.sqrt(log_sq / 3), rel=1e-6)
    assert out["abs_rel"].item() == pytest.approx((0.5 + 0 + 1) / 3, rel=1e-6)
    perfect = DepthMetrics()
    gt = torch.rand(2, 1, 5, 5) + 0.1
    perfect.update(gt.clone(), gt)
    assert all(v.item() == pytest.approx(0.0, abs=1e-7) for v in perfect.compute().values())


# ---------------------------------------------------------------------------- normals


def test_angular_error_hand_values():
    e = torch.eye(3)
    diag = torch.tensor([1.0, 1.0, 0.0]) / math.sqrt(2)
    pred = torch.stack([e[0], diag, e[2], -e[0]]).T.reshape(1, 3, 1, 4)
    gt = torch.stack([e[1], e[0], e[2], e[0]]).T.reshape(1, 3, 1, 4)
    angles = angular_error_deg(pred, gt)
    torch.testing.assert_close(angles, torch.tensor([[[90.0, 45.0, 0.0, 180.0]]]))


def test_normals_metrics_hand_case_with_invalid_pixel():
    e = torch.eye(3)
    diag = torch.tensor([1.0, 1.0, 0.0])  # not unit: the metric normalises the prediction
    pred = torch.stack([e[0] * 3, diag, e[2], e[2]]).T.reshape(1, 3, 1, 4)
    gt = torch.stack([e[1], e[0], e[2], torch.zeros(3)]).T.reshape(1, 3, 1, 4)
    metric = NormalsMetrics()
    metric.update(pred, gt)
    out = metric.compute()
    angles = [90.0, 45.0, 0.0]  # 4th pixel invalid
    assert out["mean"].item() == pytest.approx(45.0, rel=1e-6)
    assert out["median"].item() == pytest.approx(45.0, abs=0.01)
    assert out["rmse"].item() == pytest.approx(math.sqrt(sum(a * a for a in angles) / 3), rel=1e-6)
    assert out["pct_11_25"].item() == pytest.approx(100 / 3)
    assert out["pct_22_5"].item() == pytest.approx(100 / 3)
    assert out["pct_30"].item() == pytest.approx(100 / 3)


def test_normals_median_matches_numpy_and_perfect_is_zero():
    gen = torch.Generator().manual_seed(4)
    gt = torch.nn.functional.normalize(torch.randn(3, 3, 8, 8, generator=gen), dim=1)
    pred = gt + 0.4 * torch.randn(3, 3, 8, 8, generator=gen)
    metric = NormalsMetrics()
    metric.update(pred[:2], gt[:2])
    metric.update(pred[2:], gt[2:])
    angles = angular_error_deg(torch.nn.functional.normalize(pred.double(), dim=1), gt.double())
    out = metric.compute()
    assert out["median"].item() == pytest.approx(float(np.median(angles.numpy())), abs=0.011)
    assert out["mean"].item() == pytest.approx(angles.mean().item(), rel=1e-5)
    perfect = NormalsMetrics()
    perfect.update(gt.clone(), gt)
    result = perfect.compute()
    assert result["mean"].item() == pytest.approx(0.0, abs=1e-4)
    assert result["pct_11_25"].item() == 100.0


# ---------------------------------------------------------------------------- thinning


def _no_2x2_block(image: np.ndarray) -> bool:
    blocks = image[:-1, :-1] & image[1:, :-1] & image[:-1, 1:] & image[1:, 1:]
    return not blocks.any()


def test_thinning_properties():
    from scipy import ndimage

    img = np.zeros((12, 16), dtype=bool)
    img[3:8, 2:14] = True  # a 5-pixel-thick bar
    skeleton = thin(img)
    assert skeleton.any() and not (skeleton & ~img).any()
    assert _no_2x2_block(skeleton)
    assert ndimage.label(skeleton, structure=np.ones((3, 3)))[1] == 1
    np.testing.assert_array_equal(thin(skeleton), skeleton)  # idempotent
    # one-pixel lines (straight and diagonal) are already thin
    line = np.zeros((10, 10), dtype=bool)
    line[4, 1:9] = True
    line[np.arange(1, 8), np.arange(1, 8)] = True
    np.testing.assert_array_equal(thin(line), line)
    # a 2×2 square keeps one pixel (no skeleton vanishes)
    square = np.zeros((4, 4), dtype=bool)
    square[1:3, 1:3] = True
    assert thin(square).sum() == 1


def _thin_reference(image: np.ndarray) -> np.ndarray:
    """Slow reference: Lam-Lee-Suen conditions evaluated pixel by pixel over the whole image
    in every subiteration (parallel deletion), until nothing changes."""
    img = np.pad(image.astype(bool), 1)
    ring = ((0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1))
    changed = True
    while changed:
        changed = False
        for first in (True, False):
            delete = []
            for r, c in zip(*np.nonzero(img)):
                x = [None] + [bool(img[r + dr, c + dc]) for dr, dc in ring]
                x.append(x[1])
                xh = sum((not x[2 * i - 1]) and (x[2 * i] or x[2 * i + 1]) for i in range(1, 5))
                n1 = sum(x[2 * k - 1] or x[2 * k] for k in range(1, 5))
                n2 = sum(x[2 * k] or x[2 * k + 1] for k in range(1, 5))
                if first:
                    g3 = not ((x[2] or x[3] or not x[8]) and x[1])
                else:
                    g3 = not ((x[6] or x[7] or not x[4]) and x[5])
                if xh == 1 and 2 <= min(n1, n2) <= 3 and g3:
                    delete.append((r, c))
            for r, c in delete:
                img[r, c] = False
            changed = changed or bool(delete)
    return img[1:-1, 1:-1]


def test_thinning_matches_pixelwise_reference():
    from scipy import ndimage

    rng = np.random.default_rng(3)
    for sigma, level in ((0.8, 0.0), (1.5, -0.3), (2.5, 0.2), (1.0, -1.0)):
        image = ndimage.gaussian_filter(rng.standard_normal((14, 17)), sigma) > level * 0.1
        np.testing.assert_array_equal(thin(image), _thin_reference(image))


# ------------------------------------------------------------------------------- edge


def _kuhn_matching(adjacency: np.ndarray) -> int:
    """Reference maximum bipartite matching by augmenting paths (Kuhn's algorithm)."""
    n_left, n_right = adjacency.shape
    match_right = [-1] * n_right

    def augment(u: int, seen: list[bool]) -> bool:
        for v in range(n_right):
            if adjacency[u, v] and not seen[v]:
                seen[v] = True
                if match_right[v] == -1 or augment(match_right[v], seen):
                    match_right[v] = u
                    return True
        return False

    return sum(augment(u, [False] * n_right) for u in range(n_left))


def test_match_exact_is_one_to_one_and_approx_is_not():
    gt = np.zeros((5, 5), dtype=bool)
    gt[2, 2] = True
    pred = np.zeros((5, 5), dtype=bool)
    pred[2, 1] = pred[2, 3] = True  # two predictions at distance 1 from one GT pixel
    assert match_exact(pred, gt, radius=1.0) == (1, 1)
    assert match_approx(pred, gt, radius=1.0) == (2, 1)
    assert match_exact(pred, gt, radius=0.5) == (0, 0)


def test_edge_odsf_exact_matches_brute_force_reference():
    rng = np.random.default_rng(7)
    h, w, max_dist = 14, 12, 0.12  # radius ≈ 2.2 px: several candidates per pixel
    thresholds = [0.3, 0.5, 0.7]
    radius = max_dist * math.hypot(h, w)
    gt = (rng.random((2, h, w)) < 0.15).astype(np.float32)
    gt[1, :3, :] = 255  # an ignored band
    prob = np.clip(0.6 * gt + 0.5 * rng.random((2, h, w)), 0.01, 0.99)
    raw = torch.from_numpy(np.log(prob / (1 - prob)))[:, None]
    metric = EdgeODSF(max_dist=max_dist, thresholds=thresholds, mode="exact")
    metric.update(raw, torch.from_numpy(gt)[:, None])
    ref = np.zeros((3, len(thresholds)))  # matched, predicted, GT
    ref_approx = np.zeros((2, len(thresholds)))  # pred with a GT partner, GT with a pred partner
    for j, t in enumerate(thresholds):
        for i in range(2):
            valid = gt[i] != 255
            pred_px = np.argwhere(thin(prob[i] >= t) & valid)
            gt_px = np.argwhere((gt[i] == 1) & valid)
            dist = np.linalg.norm(pred_px[:, None, :] - gt_px[None, :, :], axis=-1)
            ref[0, j] += _kuhn_matching(dist <= radius)
            ref[1, j] += len(pred_px)
            ref[2, j] += len(gt_px)
            ref_approx[0, j] += (dist <= radius).any(1).sum()
            ref_approx[1, j] += (dist <= radius).any(0).sum()
    np.testing.assert_array_equal(metric.matched_pred.numpy(), ref[0])
    np.testing.assert_array_equal(metric.total_pred.numpy(), ref[1])
    np.testing.assert_array_equal(metric.total_gt.numpy(), ref[2])
    precision, recall = ref[0] / ref[1], ref[0] / ref[2]
    f_ref = np.max(2 * precision * recall / (precision + recall))
    assert metric.compute()["odsf"].item() == pytest.approx(f_ref, rel=1e-6)
    approx = EdgeODSF(max_dist=max_dist, thresholds=thresholds, mode="approx")
    approx.update(raw, torch.from_numpy(gt)[:, None])
    np.testing.assert_array_equal(approx.matched_pred.numpy(), ref_approx[0])
    np.testing.assert_array_equal(approx.matched_gt.numpy(), ref_approx[1])
    assert approx.compute()["odsf_approx"].item() >= metric.compute()["odsf"].item()
    assert (approx.matched_pred >= metric.matched_pred).all()
    assert (approx.matched_gt >= metric.matched_gt).all()


@pytest.mark.parametrize("mode", ["exact", "approx"])
def test_edge_perfect_prediction_scores_one_and_ignore_is_excluded(mode):
    target = torch.zeros(1, 1, 20, 20)
    target[0, 0, 5, 2:18] = 1  # horizontal line
    target[0, 0, 6:16, 10] = 1  # vertical line meeting it
    metric = EdgeODSF(mode=mode, thresholds=19)
    metric.update(confident(target), target)
    key = "odsf" if mode == "exact" else "odsf_approx"
    assert metric.compute()[key].item() == pytest.approx(1.0)
    # spurious edges inside an ignored region are not false positives
    ignored = target.clone()
    ignored[0, 0, 15:, :5] = 255
    pred = target.clone()
    pred[0, 0, 17, 0:4] = 1
    metric_ign = EdgeODSF(mode=mode, thresholds=19)
    metric_ign.update(confident(pred), ignored)
    assert metric_ign.compute()[key].item() == pytest.approx(1.0)
    metric_fp = EdgeODSF(mode=mode, thresholds=19)
    metric_fp.update(confident(pred), target)
    assert metric_fp.compute()[key].item() < 1.0


# --------------------------------------------------------------------------- saliency


def test_saliency_hand_case_and_brute_force():
    prob = torch.tensor([[[[0.9, 0.6, 0.4, 0.2, 0.7]]]], dtype=torch.float64)
    target = torch.tensor([[[[1.0, 1.0, 0.0, 0.0, 255.0]]]])
    raw = torch.log(prob / (1 - prob))
    metric = SaliencyMetrics(beta2=0.3, thresholds=[0.5])
    metric.update(raw, target)
    out = metric.compute()
    # threshold 0.5 → predicted {0.9, 0.6} (0.7 is ignored): TP 2, P = R = 1
    assert out["maxf"].item() == pytest.approx(1.0)
    assert out["max_iou"].item() == pytest.approx(1.0)
    metric3 = SaliencyMetrics(beta2=0.3, thresholds=[0.3])
    metric3.update(raw, target)
    # threshold 0.3 → predicted {0.9, 0.6, 0.4}: P = 2/3, R = 1
    f = 1.3 * (2 / 3) / (0.3 * 2 / 3 + 1)
    assert metric3.compute()["maxf"].item() == pytest.approx(f, rel=1e-6)
    assert metric3.compute()["max_iou"].item() == pytest.approx(2 / 3, rel=1e-6)

    gen = torch.Generator().manual_seed(5)
    target = (torch.rand(3, 1, 9, 9, generator=gen) < 0.4).float()
    target[0, 0, 0] = 255
    raw = torch.randn(3, 1, 9, 9, generator=gen) + 2 * target
    metric = SaliencyMetrics(thresholds=9)
    metric.update(raw[:1], target[:1])
    metric.update(raw[1:], target[1:])
    valid = target != 255
    p = raw.sigmoid()[valid]
    y = target[valid] == 1
    best_f, best_iou = 0.0, 0.0
    for t in np.linspace(0.1, 0.9, 9):
        on = p >= t
        tp = (on & y).sum().item()
        prec, rec = tp / max(on.sum().item(), 1), tp / y.sum().item()
        if prec + rec > 0:
            best_f = max(best_f, 1.3 * prec * rec / (0.3 * prec + rec))
        best_iou = max(best_iou, tp / (on | y).sum().item())
    out = metric.compute()
    assert out["maxf"].item() == pytest.approx(best_f, rel=1e-6)
    assert out["max_iou"].item() == pytest.approx(best_iou, rel=1e-6)


def test_saliency_perfect_prediction():
    target = (torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(6)) < 0.3).float()
    metric = SaliencyMetrics()
    metric.update(confident(target), target)
    out = metric.compute()
    assert out["maxf"].item() == pytest.approx(1.0)
    assert out["max_iou"].item() == pytest.approx(1.0)


# -------------------------------------------------------------------------- multi-task


def test_multi_task_loss_and_delta_m():
    losses = {"semseg": 1.5, "depth": 0.5, "normals": torch.tensor(0.2)}
    weights = {"semseg": 1.0, "depth": 1.0, "normals": 10.0}
    assert multi_task_loss(losses, weights) == pytest.approx(1.5 + 0.5 + 2.0)
    with pytest.raises(KeyError, match="normals"):
        multi_task_loss(losses, {"semseg": 1.0, "depth": 1.0})
    metrics = {"semseg": 0.44, "depth": 0.5}
    refs = {"semseg": 0.40, "depth": 0.6}
    hib = {"semseg": True, "depth": False}
    # semseg +10 %, depth rmse 0.6 → 0.5 is an improvement of +16.67 %
    assert delta_m(metrics, refs, hib) == pytest.approx((10.0 + 100 / 6) / 2)
    assert delta_m(refs, refs, hib) == 0.0
    worse = {"semseg": 0.36, "depth": 0.66}
    assert delta_m(worse, refs, hib) == pytest.approx(-10.0)
    with pytest.raises(KeyError, match="normals"):
        delta_m({"normals": 20.0}, refs, hib)
    assert mdsq(0.3, 0.5, 0.6, 0.5) == pytest.approx(0.75)
