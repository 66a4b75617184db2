"""Hekimoglu et al. (ICCVW 2023) Eqs. 1-3 and the combination, against hand-computed
values on tiny constructed predictions; BoxMask on a constructed segmenter."""

from __future__ import annotations

import math

import pytest
import torch

from mtal.acquisition import boxmask as bm


def _mask(region: tuple[int, int, int, int], rows: list[str]) -> bm.BoxMask:
    grid = torch.tensor([[c == "#" for c in r] for r in rows])
    return bm.BoxMask(region=region, mask=grid)


def test_s_loc_agreeing_box_scores_lower_than_disagreeing() -> None:
    # box 2..6 × 1..4; its BoxMask fills exactly the box → IoU 1 → S_loc = 0
    good = _mask((1, 0, 7, 5), ["......", ".####.", ".####.", ".####.", "......"])
    assert bm.tight_box(good) == (2, 1, 6, 4)
    assert bm.s_loc([2, 1, 6, 4], good) == pytest.approx(0.0)
    # mask covers only columns 2..3 (2×3 = 6 px of the 12-px box): IoU = 6 / 12 = 0.5
    half = _mask((1, 0, 7, 5), ["......", ".##...", ".##...", ".##...", "......"])
    assert bm.s_loc([2, 1, 6, 4], half) == pytest.approx(0.5)
    assert bm.s_loc([2, 1, 6, 4], half, reading="agreement") == pytest.approx(0.5)
    # mask spills into the margin: tight box 1..7 × 0..5 (30 px) ⊃ box (12 px): IoU 0.4
    spill = _mask((1, 0, 7, 5), ["######"] * 5)
    assert bm.s_loc([2, 1, 6, 4], spill) == pytest.approx(1 - 12 / 30)
    assert bm.s_loc([2, 1, 6, 4], spill, reading="agreement") == pytest.approx(12 / 30)
    # empty BoxMask: no agreement at all
    empty = _mask((1, 0, 7, 5), ["......"] * 5)
    assert bm.s_loc([2, 1, 6, 4], empty) == pytest.approx(1.0)


def test_s_cls_symmetric_kl_by_hand() -> None:
    # C_seg = 3, C_det = 1 (seg class 2); eps makes classes 0, 1 negligible
    q = bm.embed_class_distribution(torch.tensor([1.0]), [2], 3, eps=0.01)
    torch.testing.assert_close(q, torch.tensor([0.01, 0.01, 1.0]) / 1.02)
    # a pixel that agrees (p = q) scores 0; a pixel p = (0.5, 0.25, 0.25) scores
    # Σ p log(p/q) + Σ q log(q/p)
    p = torch.tensor([0.5, 0.25, 0.25])
    qq = torch.tensor([0.01, 0.01, 1.0]) / 1.02
    expected = sum(
        float(p[i] * math.log(p[i] / qq[i]) + qq[i] * math.log(qq[i] / p[i])) for i in range(3)
    )
    assert bm.s_cls(qq[None], qq) == pytest.approx(0.0, abs=1e-6)
    assert bm.s_cls(p[None], qq) == pytest.approx(expected, rel=1e-5)
    # mean over the BoxMask's pixels
    assert bm.s_cls(torch.stack([qq, p]), qq) == pytest.approx(expected / 2, rel=1e-5)
    assert bm.s_cls(torch.zeros(0, 3), qq) == 0.0


def test_s_seg_counts_object_pixels_outside_the_boxmasks() -> None:
    seg = torch.tensor([[0, 3, 3, 0], [0, 3, 4, 0], [0, 0, 0, 4]])  # 5 object px (3, 4)
    union = torch.zeros(3, 4, dtype=torch.bool)
    union[0:2, 1:3] = True  # covers 4 of them
    assert bm.s_seg(seg, union, [3, 4]) == pytest.approx(1 / 12)
    assert bm.s_seg(seg, union, [3, 4], normalise="objects") == pytest.approx(1 / 5)
    assert bm.s_seg(seg, torch.zeros_like(union), [3]) == pytest.approx(3 / 12)


def test_combination_and_ablations() -> None:
    # S = S_seg + max_box(S_loc + S_cls): boxes (0.2, 0.5) and (0.6, 0.0) → 0.1 + 0.7
    assert bm.combine(0.1, [0.2, 0.6], [0.5, 0.0], bm.SCORE_NAMES) == pytest.approx(0.8)
    assert bm.combine(0.1, [0.2, 0.6], [0.5, 0.0], ["loc"]) == pytest.approx(0.6)
    assert bm.combine(0.1, [0.2, 0.6], [0.5, 0.0], ["cls", "seg"]) == pytest.approx(0.6)
    # no detection: only S_seg
    assert bm.combine(0.3, [], [], bm.SCORE_NAMES) == pytest.approx(0.3)


def test_box_masks_resegment_the_crop_and_threshold_the_box_class() -> None:
    # image: red square at rows 4..11, cols 8..15 of a 16×24 image; the "segmenter"
    # gives class 1 a logit of +10 where the red channel is high, else −10
    image = torch.zeros(1, 3, 16, 24)
    image[0, 0, 4:12, 8:16] = 1.0

    def segment(x: torch.Tensor) -> torch.Tensor:
        logit = (x[:, 0] - 0.5) * 20
        return torch.stack([-logit, logit], dim=1)

    calls = []

    def counting(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return segment(x)

    boxes = [torch.tensor([[8.0, 4.0, 16.0, 12.0], [0.0, 0.0, 4.0, 4.0]])]
    out = bm.box_masks(
        counting, image, boxes, [torch.tensor([1, 1])], tau=0.3, margin=0.25, crop_size=32
    )
    assert calls == [2]  # both crops in one batch
    first, second = out[0]
    assert first.region == (6, 2, 18, 14)  # grown by 2 px each side
    assert bm.tight_box(first) == (8, 4, 16, 12)
    assert bm.s_loc([8, 4, 16, 12], first) == pytest.approx(0.0)
    assert not bool(second.mask.any())  # no red there: empty BoxMask
    union = bm.paste_union(out[0], 16, 24, torch.device("cpu"))
    assert int(union.sum()) == 64


class _RedNet(torch.nn.Module):
    """A constructed det+seg 'network': semseg class 1 where the red channel is high;
    one detection of class 1 (seg id 1) at the box (8, 8, 16, 16) in every image."""

    def __init__(self, boxes_task) -> None:
        super().__init__()
        self.boxes_task = boxes_task

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        logit = (x[:, 0] - 0.5) * 20
        return torch.stack([-logit, logit], dim=1)

    def forward(self, image: torch.Tensor):
        from mtal.types import MultiTaskOutput

        b, _, h, w = image.shape
        raw = torch.full((b, 7, h // 4, w // 4), -10.0)
        raw[:, 0] = 10.0
        # location (row 2, col 2) has centre (10, 10); distances l=t=2, r=b=6 px → (8, 8, 16, 16)
        raw[:, 0, 2, 2], raw[:, 1, 2, 2] = -10.0, 10.0
        raw[:, 2:6, 2, 2] = torch.log(torch.tensor([2.0, 2.0, 6.0, 6.0]) / 4)
        raw[:, 6] = 10.0
        return MultiTaskOutput(final={"semseg": self.segment(image), "boxes": raw})


def test_strategy_scores_a_consistent_image_lower_than_an_inconsistent_one() -> None:
    from mtal.acquisition import AcquisitionContext, create_strategy
    from mtal.tasks import create_task

    tasks = {
        "semseg": create_task("semseg", num_classes=2),
        "boxes": create_task("boxes", classes=[1], score_threshold=0.5),
    }
    image = torch.zeros(2, 3, 24, 24)
    image[0, 0, 8:16, 8:16] = 1.0  # the object fills the detected box
    image[1, 0, 4:12, 2:10] = 1.0  # the object is elsewhere: tasks disagree
    ctx = AcquisitionContext(model=_RedNet(tasks["boxes"]), tasks=tasks, pool=None, datamodule=None)
    strategy = create_strategy("detseg", margin=0.5, crop_size=32)
    with torch.no_grad():
        out = strategy.image_scores(ctx, {"image": image, "index": torch.arange(2)})
    assert out["n_boxes"].tolist() == [1.0, 1.0]
    # consistent image: S_loc = 0, S_cls ≈ 0 (seg and box agree on class 1), S_seg = 0
    assert float(out["score"][0]) == pytest.approx(0.0, abs=1e-2)
    # inconsistent: the BoxMask is the part of the red square inside the crop
    # (4..12 × 4..10), IoU with the box 8..16 × 8..16 = 4·2 / (64 + 48 − 8) → S_loc ≈ 0.92;
    # object pixels outside every BoxMask: columns 2..3 of rows 4..11 → 16 / 576
    assert float(out["s_seg"][1]) == pytest.approx(16 / 576, abs=1e-6)
    assert float(out["s_box"][1]) > 0.9
    assert float(out["score"][1]) > float(out["score"][0]) + 0.9
