"""CALD (Yu et al., "Consistency-based Active Learning for Object Detection", CVPRW 2022).

Stage 1 (Sec. 3.2; official code ``cald_train.py``): detect on the image and on each
augmentation (flip, cut-out, 0.8× resize, 5° rotation). Every reference box ``b_j``
(class distribution ``p_j``, confidence ``s_j``) is mapped into the augmented frame and
matched to the augmented detection of highest IoU (``b'``, ``p'``, ``s'``); its
consistency is ``m_j = |IoU(b_j, b') + ½(s_j + s')(1 − JS(p_j ‖ p')) − β|`` (β = 1.3,
the code's base point). The image's consistency is ``min_j m_j`` averaged over the
augmentations (0 when an output has no box). The ``mr``·budget (1.2) images of lowest
consistency are the candidates.

Stage 2 (Sec. 3.3): a candidate's class vector is, per class, the highest confidence of
that class in each output, averaged over the outputs; candidates without any detection
are taken first, then those whose softmaxed class vector has the largest
Jensen–Shannon divergence to the softmaxed mean ground-truth class counts of the
labelled images. Confidence ``s`` is the detector's score (the FCOS score here).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mtal.acquisition import STRATEGIES
from mtal.acquisition.base import AcquisitionContext, Selection, Strategy
from mtal.acquisition.detseg_consistency import detection_task
from mtal.acquisition.scoring import forward, stream_summaries

Aug = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


def aug_flip(
    image: torch.Tensor, boxes: torch.Tensor, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Horizontal flip of a 3×H×W image and its xyxy boxes."""
    w = image.shape[-1]
    out = boxes.clone()
    out[:, 0], out[:, 2] = w - boxes[:, 2], w - boxes[:, 0]
    return image.flip(-1), out


def aug_resize(image: torch.Tensor, boxes: torch.Tensor, g: torch.Generator, factor: float = 0.8):
    """Resize by ``factor`` (CALD's "smaller_resize"); boxes scale with it."""
    h, w = image.shape[-2:]
    nh, nw = max(int(round(h * factor)), 8), max(int(round(w * factor)), 8)
    out = F.interpolate(image[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
    scale = boxes.new_tensor([nw / w, nh / h, nw / w, nh / h])
    return out, boxes * scale


def aug_cutout(image: torch.Tensor, boxes: torch.Tensor, g: torch.Generator):
    """Zero (the normalised mean) a random patch of half the box size inside each box."""
    out = image.clone()
    for x1, y1, x2, y2 in boxes.tolist():
        bw, bh = max(int((x2 - x1) / 2), 1), max(int((y2 - y1) / 2), 1)
        cx = int(x1) + int(torch.randint(0, max(int(x2 - x1) - bw, 0) + 1, (1,), generator=g))
        cy = int(y1) + int(torch.randint(0, max(int(y2 - y1) - bh, 0) + 1, (1,), generator=g))
        out[:, cy : cy + bh, cx : cx + bw] = 0.0
    return out, boxes.clone()


def aug_rotate(image: torch.Tensor, boxes: torch.Tensor, g: torch.Generator, degrees: float = 5.0):
    """Rotate by ``degrees`` counter-clockwise about the centre; boxes become the
    axis-aligned hull of their rotated corners."""
    from torchvision.transforms.functional import rotate

    h, w = image.shape[-2:]
    out = rotate(image, degrees)
    t = math.radians(degrees)
    cx, cy = w / 2, h / 2
    corners = boxes[:, [0, 1, 2, 1, 2, 3, 0, 3]].reshape(-1, 4, 2)
    dx, dy = corners[..., 0] - cx, corners[..., 1] - cy
    rx = cx + dx * math.cos(t) + dy * math.sin(t)
    ry = cy - dx * math.sin(t) + dy * math.cos(t)
    hull = torch.stack([rx.min(1).values, ry.min(1).values, rx.max(1).values, ry.max(1).values], 1)
    return out, hull.clamp(min=0).minimum(boxes.new_tensor([w, h, w, h]))


AUGMENTATIONS: dict[str, Aug] = {
    "flip": aug_flip,
    "cutout": aug_cutout,
    "resize": aug_resize,
    "rotate": aug_rotate,
}


def js_divergence(p: torch.Tensor, q: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Jensen–Shannon divergence (nats) between distributions along the last dim."""
    m = (p + q) / 2
    kl = lambda a, b: (a * ((a + eps).log() - (b + eps).log())).sum(-1)  # noqa: E731
    return (0.5 * kl(p, m) + 0.5 * kl(q, m)).clamp(min=0)


def box_consistency(
    ref_box: torch.Tensor,
    ref_p: torch.Tensor,
    ref_s: float,
    aug: dict[str, torch.Tensor],
    beta: float,
) -> float:
    """``|max IoU + ½(s + s')(1 − JS(p ‖ p')) − β|`` against the best-matching
    augmented detection (``ref_box`` already in the augmented frame)."""
    from torchvision.ops import box_iou

    iou = box_iou(ref_box[None], aug["boxes"])[0]
    j = int(iou.argmax())
    js = float(js_divergence(ref_p, aug["probs"][j]))
    return abs(float(iou[j]) + 0.5 * (1 - js) * (ref_s + float(aug["scores"][j])) - beta)


def image_consistency(
    ref: dict[str, torch.Tensor],
    augs: list[tuple[dict[str, torch.Tensor], torch.Tensor]],
    beta: float,
) -> float:
    """Mean over augmentations of ``min_j m_j`` (0 for an output without boxes)."""
    if ref["boxes"].shape[0] == 0:
        return 0.0
    values = []
    for out, mapped in augs:
        if out["boxes"].shape[0] == 0:
            values.append(0.0)
            continue
        values.append(
            min(
                box_consistency(mapped[j], ref["probs"][j], float(ref["scores"][j]), out, beta)
                for j in range(mapped.shape[0])
            )
        )
    return float(np.mean(values))


def class_vector(dets: list[dict[str, torch.Tensor]], num_det: int) -> torch.Tensor:
    """Per class the highest confidence in each output, averaged over the outputs."""
    rows = []
    for d in dets:
        v = torch.zeros(num_det)
        for s, lab in zip(d["scores"].tolist(), d["labels"].tolist()):
            v[lab] = max(v[lab], s)
        rows.append(v)
    return torch.stack(rows).mean(0)


@STRATEGIES.register("cald")
class CALD(Strategy):
    """CALD: consistency under augmentation (stage 1) + class-distribution divergence
    (stage 2); options ``augmentations``, ``beta`` (1.3), ``mr`` (1.2)."""

    name = "cald"
    granularity = "image"

    def __init__(
        self,
        augmentations: tuple[str, ...] | list[str] = ("flip", "cutout", "resize", "rotate"),
        beta: float = 1.3,
        mr: float = 1.2,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        bad = [a for a in augmentations if a not in AUGMENTATIONS]
        if bad or not augmentations:
            raise ValueError(
                f"cald: augmentations {list(augmentations)} must be from {list(AUGMENTATIONS)}"
            )
        if mr < 1.0:
            raise ValueError(f"cald: mr={mr} must be >= 1 (candidates = mr × budget)")
        self.augmentations, self.beta, self.mr = tuple(augmentations), float(beta), float(mr)

    def _summaries(
        self, ctx: AcquisitionContext, batch: dict[str, Any], seed: int
    ) -> dict[str, torch.Tensor]:
        det_name, det = detection_task(dict(ctx.tasks))
        image = batch["image"]
        refs = det.decode(forward(ctx, batch).final[det_name])
        g = torch.Generator().manual_seed(seed + int(batch["index"][0]))
        cons, vecs = [], []
        for b, ref in enumerate(refs):
            outs = []
            for name in self.augmentations:
                aimg, mapped = AUGMENTATIONS[name](image[b], ref["boxes"], g)
                outs.append((det.decode(ctx.model(aimg[None]).final[det_name])[0], mapped))
            cons.append(image_consistency(ref, outs, self.beta))
            vecs.append(class_vector([ref, *[o for o, _ in outs]], det.num_det))
        return {"consistency": torch.tensor(cons), "classes": torch.stack(vecs)}

    def acquire(self, ctx: AcquisitionContext, count: int, rng: np.random.Generator) -> Selection:
        det_name, det = detection_task(dict(ctx.tasks))
        unl = np.asarray(ctx.pool.unlabelled_images(), dtype=np.int64)
        seed = int(rng.integers(2**31))
        res = stream_summaries(ctx, unl, lambda b: self._summaries(ctx, b, seed))
        cons = res["consistency"].numpy().astype(np.float64)
        n_cand = min(len(unl), max(count, int(self.mr * count)))
        # lowest consistency first (top_k takes the highest, so negate)
        cand = self.top_k(-cons, n_cand, rng)
        vec = res["classes"][torch.as_tensor(cand)]
        lab = np.asarray(ctx.pool.labelled_images(), dtype=np.int64)
        gt = torch.zeros(det.num_det)
        if len(lab):

            def counts(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
                rows = [
                    torch.bincount(t["labels"].cpu(), minlength=det.num_det)[: det.num_det]
                    for t in batch["targets"][det_name]
                ]
                return {"counts": torch.stack(rows).float()}

            gt = stream_summaries(ctx, lab, counts, with_labels=True)["counts"].mean(0)
        js = js_divergence(gt.softmax(-1)[None], vec.softmax(-1)).numpy().astype(np.float64)
        empty = (vec.sum(1) == 0).numpy()
        # empty candidates first (CALD), then the largest divergence
        key = np.where(empty, np.inf, js)
        pick = cand[self.top_k(key, count, rng)]
        return self.image_selection(
            ctx,
            unl[pick],
            -cons[pick],
            count,
            rng,
            diagnostics={"candidates": int(len(unl)), "stage2_candidates": int(n_cand)},
        )
