"""``detseg``: detection–segmentation consistency (Hekimoglu et al., ICCVW 2023, Alg. 1).

Per unlabelled image: detect, build a BoxMask per detection, score
``S = S_seg + max_box(S_loc + S_cls)`` (see :mod:`mtal.acquisition.boxmask`) and buy the
images with the highest S. Ablations (Tab. I): ``scores`` picks any non-empty subset of
``("loc", "cls", "seg")``; ``tau`` the BoxMask threshold.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mtal.acquisition import STRATEGIES
from mtal.acquisition import boxmask as bm
from mtal.acquisition.base import AcquisitionContext, Selection, Strategy
from mtal.acquisition.scoring import forward, stream_summaries


def detection_task(tasks: dict[str, Any]) -> tuple[str, Any]:
    """The (name, task) of the run's detection task; a clear error when there is none."""
    found = [(n, t) for n, t in tasks.items() if t.kind == "detection"]
    if len(found) != 1:
        raise ValueError(
            f"this strategy needs exactly one detection task (e.g. 'boxes') among the run's "
            f"tasks {list(tasks)}; add boxes to data.tasks and use model 'detseg'"
        )
    return found[0]


def filter_detections(
    dets: list[dict[str, torch.Tensor]], min_score: float, max_boxes: int
) -> list[dict[str, torch.Tensor]]:
    """Keep detections scoring at least ``min_score``, the ``max_boxes`` best per image."""
    out = []
    for d in dets:
        keep = (d["scores"] >= min_score).nonzero().squeeze(1)
        keep = keep[d["scores"][keep].argsort(descending=True)[:max_boxes]]
        out.append({k: v[keep] for k, v in d.items()})
    return out


@STRATEGIES.register("detseg")
class DetSegConsistency(Strategy):
    """Multi-task consistency of detection and segmentation (module docstring).

    Options (paper defaults where it fixes them): ``tau`` 0.3, ``margin`` 0.1 (crop
    margin as a fraction of the box size; not fixed by the paper), ``crop_size`` 64,
    ``scores`` ("loc", "cls", "seg"), ``loc_reading`` ("disagreement" = 1 − Eq. 1, or
    "agreement" = Eq. 1 as printed), ``seg_normalise`` ("image" | "objects"), ``eps``
    1e-6 (probability of classes outside C_det in S_cls), ``min_score`` 0.3 and
    ``max_boxes`` 20 (which detections get a BoxMask; not fixed by the paper),
    ``seg_task`` "semseg".
    """

    name = "detseg"
    granularity = "image"

    def __init__(
        self,
        tau: float = 0.3,
        margin: float = 0.1,
        crop_size: int = 64,
        scores: tuple[str, ...] | list[str] = bm.SCORE_NAMES,
        loc_reading: str = "disagreement",
        seg_normalise: str = "image",
        eps: float = 1e-6,
        min_score: float = 0.3,
        max_boxes: int = 20,
        seg_task: str = "semseg",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        scores = tuple(scores)
        bad = [s for s in scores if s not in bm.SCORE_NAMES]
        if not scores or bad:
            raise ValueError(
                f"strategy 'detseg': scores={list(scores)} must be a non-empty subset of "
                f"{list(bm.SCORE_NAMES)}"
            )
        if loc_reading not in bm.LOC_READINGS:
            raise ValueError(f"strategy 'detseg': loc_reading must be one of {bm.LOC_READINGS}")
        if seg_normalise not in bm.SEG_NORMALISE:
            raise ValueError(f"strategy 'detseg': seg_normalise must be one of {bm.SEG_NORMALISE}")
        if not 0.0 < tau < 1.0:
            raise ValueError(f"strategy 'detseg': tau={tau} must be in (0, 1)")
        if margin < 0 or crop_size < 4 or max_boxes < 1:
            raise ValueError(
                f"strategy 'detseg': margin={margin} >= 0, crop_size={crop_size} >= 4 and "
                f"max_boxes={max_boxes} >= 1 are required"
            )
        self.tau, self.margin, self.crop_size = float(tau), float(margin), int(crop_size)
        self.scores = scores
        self.loc_reading, self.seg_normalise, self.eps = loc_reading, seg_normalise, float(eps)
        self.min_score, self.max_boxes, self.seg_task = float(min_score), int(max_boxes), seg_task

    def check_model(self, model: Any) -> None:
        if not callable(getattr(model, "segment", None)):
            raise ValueError(
                f"strategy 'detseg' re-segments box crops and needs a model with a "
                f"`segment(image)` method (model 'detseg'); got {type(model).__name__}"
            )

    def image_scores(
        self, ctx: AcquisitionContext, batch: dict[str, Any]
    ) -> dict[str, torch.Tensor]:
        """Per-image summaries of one batch: ``score`` S, ``s_seg``, ``s_box``
        (max_box(S_loc + S_cls) over the enabled scores) and ``n_boxes``."""
        det_name, det = detection_task(dict(ctx.tasks))
        if self.seg_task not in ctx.tasks:
            raise ValueError(
                f"strategy 'detseg': seg_task={self.seg_task!r} is not among {list(ctx.tasks)}"
            )
        image = batch["image"]
        out = forward(ctx, batch)
        dets = filter_detections(det.decode(out.final[det_name]), self.min_score, self.max_boxes)
        seg_ids = torch.as_tensor(det.seg_classes, device=image.device)
        p_seg = out.final[self.seg_task].float().softmax(1)
        masks = bm.box_masks(
            ctx.model.segment,
            image,
            [d["boxes"] for d in dets],
            [seg_ids[d["labels"]] for d in dets],
            tau=self.tau,
            margin=self.margin,
            crop_size=self.crop_size,
        )
        h, w = image.shape[-2:]
        rows = []
        for b, (d, image_masks) in enumerate(zip(dets, masks)):
            loc, cls = [], []
            for box, probs, m in zip(d["boxes"], d["probs"], image_masks):
                loc.append(bm.s_loc(box.tolist(), m, self.loc_reading))
                a, y, c, e = m.region
                pix = p_seg[b, :, y:e, a:c].permute(1, 2, 0)[m.mask]
                q = bm.embed_class_distribution(probs, det.seg_classes, p_seg.shape[1], self.eps)
                cls.append(bm.s_cls(pix, q, self.eps))
            union = bm.paste_union(image_masks, int(h), int(w), image.device)
            seg = bm.s_seg(p_seg[b].argmax(0), union, det.seg_classes, self.seg_normalise)
            box_term = bm.combine(0.0, loc, cls, self.scores)
            total = bm.combine(seg, loc, cls, self.scores)
            rows.append([total, seg, box_term, float(len(loc))])
        values = torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)
        return {
            "score": values[:, 0],
            "s_seg": values[:, 1],
            "s_box": values[:, 2],
            "n_boxes": values[:, 3],
        }

    def acquire(self, ctx: AcquisitionContext, count: int, rng: np.random.Generator) -> Selection:
        self.check_model(ctx.model)
        det_name, _ = detection_task(dict(ctx.tasks))
        unl = np.asarray(ctx.pool.unlabelled_images(), dtype=np.int64)
        res = stream_summaries(ctx, unl, lambda batch: self.image_scores(ctx, batch))
        names = list(ctx.tasks)
        task_scores = np.full((len(unl), len(names)), np.nan)
        task_scores[:, names.index(self.seg_task)] = res["s_seg"].numpy()
        task_scores[:, names.index(det_name)] = res["s_box"].numpy()
        diag = {
            "mean_boxes": float(res["n_boxes"].mean()),
            "mean_s_seg": float(res["s_seg"].mean()),
            "mean_s_box": float(res["s_box"].mean()),
        }
        return self.image_selection(
            ctx, unl, res["score"].numpy(), count, rng, task_scores=task_scores, diagnostics=diag
        )
