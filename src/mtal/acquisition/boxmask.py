"""BoxMask and the detection–segmentation consistency scores of Hekimoglu et al.,
"Multi-Task Consistency for Active Learning" (ICCVW 2023), Sec. III.

- **BoxMask** (Sec. III-B): crop the image around a detected box (``margin`` × the box
  size on each side), run backbone + segmentation head on the crop (resized to
  ``crop_size``; all crops of a batch go through the network together with
  ``torchvision.ops.roi_align``), map the probability of the box's class back onto the
  crop's pixels and threshold it at ``τ`` (0.3 in the paper).
- **S_loc** (Eq. 1, localisation constraint: the box should tightly enclose the object's
  pixels). The agreement is the IoU between the detected box and the tight box around
  its BoxMask. Eq. 1 as printed is an *agreement* (high when the tasks agree), but a
  selection score must grow with disagreement, so the default reading is
  ``S_loc = 1 − IoU`` (``loc_reading="disagreement"``); ``"agreement"`` keeps the printed
  value. A box whose BoxMask is empty has IoU 0.
- **S_cls** (Eq. 2, classification constraint): the mean over the BoxMask's pixels of the
  symmetric KL divergence ``KL(p_seg ‖ p̃) + KL(p̃ ‖ p_seg)`` between the full-image
  segmentation distribution of the pixel and the box's class distribution ``p̃``
  embedded into the C_seg classes (classes outside C_det get ``eps``, then
  renormalised). An empty BoxMask has S_cls = 0 (no pixel to compare).
- **S_seg** (Eq. 3, segmentation constraint: every object pixel belongs to a detected
  object): the number of pixels whose segmentation argmax is a detection class but that
  lie outside the union of the BoxMasks, divided by the image's pixels
  (``seg_normalise="image"``, default) or by its object-class pixels (``"objects"``).
- **S = S_seg + max_box(S_loc + S_cls)** (Algorithm 1); an image without detections has
  no box term (max over nothing = 0), so it scores S_seg alone: every object pixel the
  segmentation sees is then unexplained by the detector.

Only per-image numbers leave :func:`consistency_scores`; crops and masks die with the
batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

SCORE_NAMES = ("loc", "cls", "seg")
LOC_READINGS = ("disagreement", "agreement")
SEG_NORMALISE = ("image", "objects")


@dataclass
class BoxMask:
    """One detection's BoxMask: the integer crop ``region`` (x1, y1, x2, y2; exclusive
    x2/y2) and the boolean ``mask`` over that region (rows × columns)."""

    region: tuple[int, int, int, int]
    mask: torch.Tensor


def crop_regions(
    boxes: torch.Tensor, margin: float, height: int, width: int
) -> list[tuple[int, int, int, int]]:
    """Integer crop regions: each box grown by ``margin``·(w, h) on every side, rounded
    outwards, clipped to the image and at least one pixel wide and high."""
    out = []
    for x1, y1, x2, y2 in boxes.tolist():
        mx, my = margin * (x2 - x1), margin * (y2 - y1)
        a = min(max(int(math.floor(x1 - mx)), 0), width - 1)
        b = min(max(int(math.floor(y1 - my)), 0), height - 1)
        c = max(min(int(math.ceil(x2 + mx)), width), a + 1)
        d = max(min(int(math.ceil(y2 + my)), height), b + 1)
        out.append((a, b, c, d))
    return out


def box_masks(
    segment: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    boxes: Sequence[torch.Tensor],
    seg_labels: Sequence[torch.Tensor],
    *,
    tau: float = 0.3,
    margin: float = 0.1,
    crop_size: int = 64,
    crop_batch: int = 64,
) -> list[list[BoxMask]]:
    """BoxMasks of every box of every image of ``image`` (B×3×H×W).

    ``boxes[b]`` (N_b×4 xyxy pixels) and ``seg_labels[b]`` (N_b segmentation class ids of
    the boxes' classes); ``segment`` maps crops (n×3×S×S) to raw seg logits (n×C×S×S).
    """
    from torchvision.ops import roi_align

    h, w = int(image.shape[-2]), int(image.shape[-1])
    regions = [crop_regions(bx, margin, h, w) for bx in boxes]
    rois = [image.new_tensor(r, dtype=image.dtype).reshape(-1, 4) for r in regions]
    labels = torch.cat([lab.reshape(-1).long() for lab in seg_labels]) if seg_labels else None
    result: list[list[BoxMask]] = [[] for _ in boxes]
    if labels is None or labels.numel() == 0:
        return result
    # roi_align with aligned=True samples pixel centres: region [a, c) covers pixels a..c-1
    crops = roi_align(
        image,
        rois,
        output_size=(crop_size, crop_size),
        spatial_scale=1.0,
        sampling_ratio=2,
        aligned=True,
    )
    probs = []
    for start in range(0, crops.shape[0], crop_batch):
        part = crops[start : start + crop_batch]
        prob = segment(part).float().softmax(1)
        lab = labels[start : start + crop_batch]
        probs.append(prob[torch.arange(len(lab), device=prob.device), lab])
    prob_all = torch.cat(probs)
    k = 0
    for b, regs in enumerate(regions):
        for a, bb, c, d in regs:
            back = F.interpolate(
                prob_all[k][None, None], size=(d - bb, c - a), mode="bilinear", align_corners=False
            )[0, 0]
            result[b].append(BoxMask(region=(a, bb, c, d), mask=back >= tau))
            k += 1
    return result


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two xyxy boxes (0 when they do not overlap or one is empty)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def tight_box(bm: BoxMask) -> tuple[float, float, float, float] | None:
    """The tight xyxy box (exclusive x2/y2, image pixels) around a BoxMask, or None."""
    rows, cols = torch.nonzero(bm.mask, as_tuple=True)
    if rows.numel() == 0:
        return None
    a, b = bm.region[0], bm.region[1]
    return (
        a + int(cols.min()),
        b + int(rows.min()),
        a + int(cols.max()) + 1,
        b + int(rows.max()) + 1,
    )


def s_loc(box: Sequence[float], bm: BoxMask, reading: str = "disagreement") -> float:
    """Eq. 1: IoU(box, tight box of its BoxMask) ("agreement"), or 1 − that IoU."""
    tb = tight_box(bm)
    agreement = 0.0 if tb is None else box_iou([float(v) for v in box], tb)
    return agreement if reading == "agreement" else 1.0 - agreement


def embed_class_distribution(
    p_det: torch.Tensor, seg_classes: Sequence[int], num_seg: int, eps: float = 1e-6
) -> torch.Tensor:
    """``p̃_cls`` over C_det → a distribution over C_seg: classes outside C_det get
    ``eps`` (the paper's "negligible value"), then the vector is renormalised."""
    q = torch.full((num_seg,), eps, dtype=torch.float32, device=p_det.device)
    q[torch.as_tensor(list(seg_classes), device=p_det.device)] = p_det.float().clamp(min=eps)
    return q / q.sum()


def s_cls(p_seg: torch.Tensor, q: torch.Tensor, eps: float = 1e-6) -> float:
    """Eq. 2: mean over pixels of ``KL(p ‖ q) + KL(q ‖ p)``; ``p_seg`` is n×C_seg
    (the BoxMask's pixels), ``q`` the box's embedded class distribution. 0 when n = 0."""
    if p_seg.shape[0] == 0:
        return 0.0
    p = p_seg.float().clamp(min=eps)
    p = p / p.sum(1, keepdim=True)
    lq = q.log()[None]
    lp = p.log()
    sym = (p * (lp - lq)).sum(1) + (q[None] * (lq - lp)).sum(1)
    return float(sym.mean())


def s_seg(
    seg_argmax: torch.Tensor,
    union: torch.Tensor,
    object_classes: Sequence[int],
    normalise: str = "image",
) -> float:
    """Eq. 3: object-class pixels (argmax in ``object_classes``) outside ``union`` (the
    union of the image's BoxMasks), over all pixels ("image") or over object pixels."""
    objects = torch.isin(
        seg_argmax, torch.as_tensor(list(object_classes), device=seg_argmax.device)
    )
    outside = int((objects & ~union).sum())
    if normalise == "objects":
        n = int(objects.sum())
        return outside / n if n else 0.0
    return outside / seg_argmax.numel()


def combine(seg: float, loc: Sequence[float], cls: Sequence[float], use: Sequence[str]) -> float:
    """``S = S_seg + max_box(S_loc + S_cls)`` restricted to the scores in ``use``
    (ablations of Tab. I); no box → the max term is 0."""
    per_box = [("loc" in use) * lo + ("cls" in use) * cl for lo, cl in zip(loc, cls, strict=True)]
    return ("seg" in use) * seg + (max(per_box) if per_box else 0.0)


def paste_union(
    masks: Sequence[BoxMask], height: int, width: int, device: torch.device
) -> torch.Tensor:
    """Boolean H×W union of BoxMasks."""
    union = torch.zeros((height, width), dtype=torch.bool, device=device)
    for bm in masks:
        a, b, c, d = bm.region
        union[b:d, a:c] |= bm.mask
    return union
