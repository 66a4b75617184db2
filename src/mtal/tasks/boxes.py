"""Object detection (``boxes``): an anchor-free, single-level FCOS-style dense head.

The network's raw output for ``boxes`` is a dense map at ``stride`` (the fused 1/4
encoder map, not the input resolution) with ``C_det + 6`` channels per location:

==========  =========================================================================
channels    meaning
==========  =========================================================================
0           background logit
1..C_det    class logits (softmax over background + C_det classes)
C_det+1..4  log-distances ``(l, t, r, b)`` in strides from the location to the box sides
C_det+5     centre-ness logit
==========  =========================================================================

Targets (FCOS, Tian et al. ICCV 2019, Sec. 3.1–3.3): a location (centre
``((j+½)·s, (i+½)·s)``) inside a ground-truth box is positive for the smallest such box
(a box that contains no location centre gets the location nearest to its centre, so
small objects at stride 4 are never dropped); its regression target is the distances
to the four sides, its centre-ness ``sqrt(min(l,r)/max(l,r) · min(t,b)/max(t,b))``.

Per-sample loss (FCOS Eq. 2, averaged per image so it fits the ``L[B,K]`` contract)::

    L = 1/N_pos Σ_loc FL(p_loc, c*) + λ/N_pos Σ_pos GIoU(b̂, b*) + 1/N_pos Σ_pos BCE(ĉ, c*)

with ``N_pos = max(#positives, 1)``. **Deviation from FCOS** (documented, option
``focal_gamma``): classification is a *softmax* focal loss over background + C_det
classes instead of C_det sigmoids, so every detection carries a full class distribution
``p̃_cls`` over C_det (needed by the consistency score S_cls of Hekimoglu et al.).

Decoding: ``p = softmax(cls)``, ``p̃_cls = p[1:] / Σ p[1:]``, label = argmax p̃_cls,
score = ``sqrt(max_c p_c · σ(centre-ness))`` (FCOS's inference score), pre-NMS top-k,
class-wise NMS (``torchvision.ops.batched_nms``), at most ``max_detections``.

Class mapping: ``classes`` lists, for each detection class, the **semantic
segmentation class id** it corresponds to (C_det ⊆ C_seg). Datasets emit
``box_labels`` as segmentation class ids; :meth:`BoxesTask.target_from_boxes` maps
them to detection indices and drops boxes of unmapped classes.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from mtal.tasks._common import OptionsTask

#: key of a detection list entry
Detections = dict[str, torch.Tensor]


class BoxesTask(OptionsTask):
    """2D object detection with an FCOS-style dense head; headline mAP (torchmetrics).

    Options: ``classes`` (seg class id per detection class; default ``range(num_classes)``),
    ``class_names``, ``stride`` (4), ``focal_gamma`` (2.0; 0 = plain cross-entropy),
    ``focal_alpha`` (0.25: weight of the positive locations, 1 − α for background),
    ``reg_weight`` λ (1.0), ``score_threshold`` (0.05), ``nms_iou`` (0.6),
    ``pre_nms_topk`` (1000), ``max_detections`` (100), ``map_backend`` ("pycocotools").
    """

    name: ClassVar[str] = "boxes"
    kind: ClassVar[str] = "detection"
    default_options: ClassVar[dict[str, Any]] = {
        "classes": None,
        "class_names": None,
        "stride": 4,
        "focal_gamma": 2.0,
        "focal_alpha": 0.25,
        "reg_weight": 1.0,
        "score_threshold": 0.05,
        "nms_iou": 0.6,
        "pre_nms_topk": 1000,
        "max_detections": 100,
        "map_backend": "pycocotools",
    }

    def __init__(self, num_classes: int | None = None, **options: Any) -> None:
        classes = options.get("classes")
        if classes is None:
            if num_classes is None:
                raise ValueError(
                    "task 'boxes' needs its class mapping: set task_options.boxes.classes to "
                    "the segmentation class id of each detection class (e.g. [3, 4, 5]) or "
                    "give num_classes for the identity mapping"
                )
            classes = list(range(int(num_classes)))
        classes = [int(c) for c in classes]
        if not classes or len(set(classes)) != len(classes):
            raise ValueError(
                f"task 'boxes': classes={classes} must be a non-empty list of distinct "
                "segmentation class ids (one per detection class)"
            )
        if num_classes is not None and int(num_classes) != len(classes):
            raise ValueError(
                f"task 'boxes': num_classes={num_classes} but classes lists {len(classes)} "
                "detection classes; make them agree (or drop num_classes)"
            )
        options["classes"] = classes
        super().__init__(num_classes=len(classes), **options)
        self.seg_classes: list[int] = classes
        self._seg_to_det = {c: i for i, c in enumerate(classes)}

    def _check_options(self) -> None:
        super()._check_options()
        if int(self.options["stride"]) < 1:
            raise ValueError(f"task 'boxes': stride={self.options['stride']} must be >= 1")
        names = self.options["class_names"]
        if names is not None and len(names) != len(self.options["classes"]):
            raise ValueError(
                f"task 'boxes': class_names has {len(names)} entries, classes "
                f"{len(self.options['classes'])}"
            )
        if self.options["map_backend"] not in ("pycocotools", "faster_coco_eval"):
            raise ValueError(
                f"task 'boxes': map_backend={self.options['map_backend']!r}; use "
                "'pycocotools' (installed with mtal) or 'faster_coco_eval'"
            )

    # -- shapes and encoding ---------------------------------------------------------
    @property
    def num_det(self) -> int:
        """C_det: the number of detection classes."""
        assert self.num_classes is not None
        return self.num_classes

    @property
    def stride(self) -> int:
        """Reduction of the dense output map w.r.t. the image."""
        return int(self.options["stride"])

    @property
    def out_channels(self) -> int:
        return self.num_det + 6

    @property
    def ignore_value(self) -> float:
        return -1

    def empty_target(self, height: int, width: int) -> Detections:  # type: ignore[override]
        return {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64)}

    def target_from_boxes(self, boxes: np.ndarray, seg_labels: np.ndarray) -> Detections:
        """xyxy pixel boxes and their segmentation class ids → ``{"boxes", "labels"}``
        with detection indices; boxes of classes outside ``classes`` are dropped."""
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        seg_labels = np.asarray(seg_labels, dtype=np.int64).reshape(-1)
        if len(boxes) != len(seg_labels):
            raise ValueError(f"task 'boxes': {len(boxes)} boxes but {len(seg_labels)} box_labels")
        det = np.array([self._seg_to_det.get(int(c), -1) for c in seg_labels], dtype=np.int64)
        keep = (det >= 0) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        return {
            "boxes": torch.from_numpy(boxes[keep].copy()),
            "labels": torch.from_numpy(det[keep].copy()),
        }

    def target_from_numpy(self, array: np.ndarray) -> Detections:  # type: ignore[override]
        """An N×5 array ``(x1, y1, x2, y2, seg_class)`` → a detection target."""
        arr = np.asarray(array, dtype=np.float32).reshape(-1, 5)
        return self.target_from_boxes(arr[:, :4], arr[:, 4].astype(np.int64))

    def valid_mask(self, target: Any) -> torch.Tensor:
        """Detection targets have no pixels; every labelled sample is valid (B bool)."""
        return torch.ones(len(target), dtype=torch.bool)

    def split(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Raw map → (class logits B×(C+1)×h×w, log-distances B×4×h×w, centre-ness B×1×h×w)."""
        if raw.dim() != 4 or raw.shape[1] != self.out_channels:
            raise ValueError(
                f"task 'boxes': raw must be B×{self.out_channels}×h×w (C_det={self.num_det} + 6), "
                f"got {tuple(raw.shape)}; check the detection head's out_channels"
            )
        c = self.num_det + 1
        return raw[:, :c], raw[:, c : c + 4], raw[:, c + 4 :]

    def activate(self, raw: torch.Tensor) -> torch.Tensor:
        """Class softmax, distances in pixels and centre-ness probability, concatenated."""
        cls, reg, ctr = self.split(raw)
        dist = reg.clamp(max=20.0).exp() * self.stride
        return torch.cat([cls.softmax(1), dist, ctr.sigmoid()], dim=1)

    def encode_target(self, target: Any) -> torch.Tensor:
        raise ValueError(
            "task 'boxes' cannot substitute ground truth for its prediction (PartAL's "
            "gt_substitution needs dense tasks); drop boxes from the tasks or the option"
        )

    # -- geometry ------------------------------------------------------------------------
    def locations(self, h: int, w: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Pixel centres ``(x, y)`` of the ``h×w`` output locations, (h·w)×2 row-major."""
        s = self.stride
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * s
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * s
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)

    def assign(
        self, target: Detections, h: int, w: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """FCOS targets of one image: class per location (0 = background, c+1 = class c),
        ltrb distances (pixels, (h·w)×4) and centre-ness ((h·w)), see module docstring."""
        return self._assign(target, h, w)[:3]

    def _assign(
        self, target: Detections, h: int, w: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`assign` plus the matched box index of each location."""
        boxes = target["boxes"].to(torch.float32)
        labels = target["labels"].to(torch.int64)
        device = boxes.device
        loc = self.locations(h, w, device)
        n = loc.shape[0]
        cls = torch.zeros(n, dtype=torch.int64, device=device)
        ltrb = torch.zeros(n, 4, device=device)
        if boxes.shape[0] == 0:
            return cls, ltrb, torch.zeros(n, device=device), cls.clone()
        x, y = loc[:, :1], loc[:, 1:]
        d = torch.stack(
            [x - boxes[:, 0], y - boxes[:, 1], boxes[:, 2] - x, boxes[:, 3] - y], dim=2
        )  # n×M×4
        inside = d.min(dim=2).values > 0
        # every box gets at least the location nearest to its centre
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        nearest = torch.cdist(centre, loc).argmin(dim=1)
        forced = torch.zeros_like(inside)
        forced[nearest, torch.arange(boxes.shape[0], device=device)] = True
        cand = inside | forced
        area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).expand(n, -1)
        area = torch.where(cand, area, torch.full_like(area, math.inf))
        best_area, best = area.min(dim=1)
        pos = torch.isfinite(best_area)
        cls[pos] = labels[best[pos]] + 1
        ltrb = d[torch.arange(n, device=device), best].clamp(min=0.0)
        lr, tb = ltrb[:, [0, 2]], ltrb[:, [1, 3]]
        ctr = torch.sqrt(
            (lr.min(1).values / lr.max(1).values.clamp(min=1e-6))
            * (tb.min(1).values / tb.max(1).values.clamp(min=1e-6))
        )
        ltrb = torch.where(pos[:, None], ltrb, torch.zeros_like(ltrb))
        return cls, ltrb, torch.where(pos, ctr, torch.zeros_like(ctr)), best

    def boxes_from(self, dist: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Pixel ltrb distances ``(h·w)×4`` → xyxy boxes around the locations."""
        loc = self.locations(h, w, dist.device)
        return torch.cat([loc - dist[:, :2], loc + dist[:, 2:]], dim=1)

    # -- losses --------------------------------------------------------------------------
    def _image_loss(self, raw: torch.Tensor, target: Detections) -> torch.Tensor:
        from torchvision.ops import generalized_box_iou_loss

        cls_logits, reg, ctr = self.split(raw.unsqueeze(0))
        h, w = raw.shape[-2:]
        cls_t, _, ctr_t, match = self._assign(target, h, w)
        logits = cls_logits[0].flatten(1).T  # n×(C+1)
        logp = logits.float().log_softmax(1)
        logp_t = logp.gather(1, cls_t[:, None]).squeeze(1)
        gamma, alpha = float(self.options["focal_gamma"]), float(self.options["focal_alpha"])
        pos = cls_t > 0
        focal = -((1 - logp_t.exp()).clamp(min=0) ** gamma) * logp_t
        balance = torch.where(pos, torch.full_like(focal, alpha), torch.full_like(focal, 1 - alpha))
        n_pos = pos.sum().clamp(min=1).to(focal.dtype)
        loss = (balance * focal).sum() / n_pos
        if bool(pos.any()):
            dist = reg[0].flatten(1).T.float().clamp(max=20.0).exp() * self.stride
            pred_boxes = self.boxes_from(dist, h, w)[pos]
            # the matched ground-truth box itself (exact also for a location outside a
            # tiny box, whose clamped distances would not rebuild it)
            gt_boxes = target["boxes"].to(pred_boxes)[match[pos]]
            giou = generalized_box_iou_loss(pred_boxes, gt_boxes, reduction="sum")
            bce = F.binary_cross_entropy_with_logits(
                ctr[0].flatten()[pos].float(), ctr_t[pos], reduction="sum"
            )
            loss = loss + (float(self.options["reg_weight"]) * giou + bce) / n_pos
        return loss

    def loss(self, raw: torch.Tensor, target: Any) -> torch.Tensor:  # type: ignore[override]
        """Per-sample FCOS loss ``[B]`` (module docstring); an image without boxes has the
        background term only."""
        if len(target) != raw.shape[0]:
            raise ValueError(
                f"task 'boxes': {raw.shape[0]} predictions but {len(target)} box targets"
            )
        return torch.stack([self._image_loss(r, t) for r, t in zip(raw, target)])

    def discrepancy(self, raw: torch.Tensor, other_raw: torch.Tensor) -> torch.Tensor:
        """Per-sample location-mean cross-entropy of ``raw``'s class softmax against
        ``other_raw``'s, plus the L1 gap of the log-distances weighted by the other's
        object probability (a soft "task loss against the other prediction")."""
        cls, reg, _ = self.split(raw)
        ocls, oreg, _ = self.split(other_raw.detach())
        soft = ocls.softmax(1)
        ce = -(soft * cls.log_softmax(1)).sum(1).flatten(1).mean(1)
        obj = 1.0 - soft[:, 0]
        l1 = ((reg - oreg).abs().mean(1) * obj).flatten(1).sum(1) / obj.flatten(1).sum(1).clamp(
            min=1e-6
        )
        return ce + l1

    def mc_uncertainty(self, raw_samples: torch.Tensor) -> torch.Tensor:
        """Location-mean Shannon entropy of the MC-mean class softmax ``[B]``."""
        c = self.num_det + 1
        mean = raw_samples[:, :, :c].softmax(2).mean(0)
        return (-torch.special.xlogy(mean, mean).sum(1)).flatten(1).mean(1)

    def hflip(self, x: torch.Tensor) -> torch.Tensor:
        """Mirror a raw map: flip columns and swap the l and r distance channels (exact
        when the image width is a multiple of ``stride``)."""
        out = x.flip(-1)
        c = self.num_det + 1
        perm = list(range(x.shape[1]))
        perm[c], perm[c + 2] = c + 2, c
        return out[:, perm]

    # -- decoding ------------------------------------------------------------------------
    def decode(self, raw: torch.Tensor) -> list[Detections]:
        """Raw maps → per image ``{"boxes" N×4, "scores" N, "labels" N, "probs" N×C_det}``
        after score threshold, top-k and class-wise NMS (module docstring)."""
        from torchvision.ops import batched_nms, clip_boxes_to_image

        cls, reg, ctr = self.split(raw)
        h, w = raw.shape[-2:]
        size = (h * self.stride, w * self.stride)
        out: list[Detections] = []
        for b in range(raw.shape[0]):
            p = cls[b].float().flatten(1).T.softmax(1)  # n×(C+1)
            obj = p[:, 1:]
            best, label = obj.max(1)
            score = torch.sqrt(best * ctr[b].float().flatten().sigmoid())
            keep = score > float(self.options["score_threshold"])
            idx = keep.nonzero().squeeze(1)
            topk = int(self.options["pre_nms_topk"])
            if idx.numel() > topk:
                idx = idx[score[idx].topk(topk).indices]
            dist = reg[b].float().flatten(1).T[idx].clamp(max=20.0).exp() * self.stride
            loc = self.locations(h, w, raw.device)[idx]
            boxes = clip_boxes_to_image(torch.cat([loc - dist[:, :2], loc + dist[:, 2:]], 1), size)
            kept = batched_nms(boxes, score[idx], label[idx], float(self.options["nms_iou"]))
            kept = kept[: int(self.options["max_detections"])]
            sel = idx[kept]
            probs = obj[sel] / obj[sel].sum(1, keepdim=True).clamp(min=1e-12)
            out.append(
                {"boxes": boxes[kept], "scores": score[sel], "labels": label[sel], "probs": probs}
            )
        return out

    # -- evaluation ----------------------------------------------------------------------
    def metric(self) -> Any:
        from mtal.metrics.detection import DetectionMAP

        return DetectionMAP(self, backend=self.options["map_backend"])

    @property
    def headline(self) -> tuple[str, bool]:
        return ("map", True)
