"""The boxes task (FCOS-style targets, loss, decoding), DetectionMAP, the detseg model,
and the CALD / CDAL formulas against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mtal.acquisition.cald import aug_flip, box_consistency, image_consistency, js_divergence
from mtal.acquisition.cdal import class_mixtures, contextual_distance
from mtal.models import create_model
from mtal.tasks import create_task


def _task(**kw):
    return create_task("boxes", classes=[3, 5], **kw)


def test_class_mapping_and_errors() -> None:
    task = _task()
    t = task.target_from_boxes(np.array([[0, 0, 4, 4], [1, 1, 3, 3], [2, 2, 6, 6]]), [5, 0, 3])
    assert t["labels"].tolist() == [1, 0]  # seg 5 → det 1, seg 0 dropped, seg 3 → det 0
    assert task.out_channels == 2 + 6
    with pytest.raises(ValueError, match="classes"):
        create_task("boxes")
    with pytest.raises(TypeError, match="known options"):
        _task(tau=1)


def test_fcos_assignment_by_hand() -> None:
    task = _task()
    # 2×2 locations at stride 4: centres (2, 2), (6, 2), (2, 6), (6, 6)
    target = {"boxes": torch.tensor([[0.0, 0.0, 8.0, 4.0]]), "labels": torch.tensor([1])}
    cls, ltrb, ctr = task.assign(target, 2, 2)
    assert cls.tolist() == [2, 2, 0, 0]
    torch.testing.assert_close(ltrb[0], torch.tensor([2.0, 2.0, 6.0, 2.0]))
    assert float(ctr[0]) == pytest.approx(math.sqrt(2 / 6 * 2 / 2))
    # a tiny box containing no location centre still gets its nearest location
    tiny = {"boxes": torch.tensor([[4.5, 4.5, 5.5, 5.5]]), "labels": torch.tensor([0])}
    cls, _, _ = task.assign(tiny, 2, 2)
    assert int((cls > 0).sum()) == 1


def test_loss_is_per_sample_and_lower_for_a_matching_prediction() -> None:
    task = _task(focal_gamma=0.0)
    target = {"boxes": torch.tensor([[0.0, 0.0, 8.0, 8.0]]), "labels": torch.tensor([0])}
    good = torch.zeros(1, 8, 2, 2)
    good[:, 0] = -5.0  # background off
    good[:, 1] = 5.0  # class 0 on
    good[:, 3:7] = 0.0  # distances exp(0)·4 = 4 px
    # the centre-ness logit is irrelevant to the ranking; the box of each location is
    # 4 px in every direction, i.e. partly matching (0, 0, 8, 8)
    bad = torch.zeros(1, 8, 2, 2)
    bad[:, 0] = 5.0
    losses = task.loss(torch.cat([good, bad]), [target, target])
    assert losses.shape == (2,) and bool(losses[0] < losses[1])
    empty = task.loss(bad, [task.empty_target(8, 8)])
    assert float(empty) >= 0 and torch.isfinite(empty).all()


def test_decode_gives_box_score_class_distribution_and_nms() -> None:
    task = _task(score_threshold=0.1)
    raw = torch.full((1, 8, 2, 2), -10.0)
    raw[0, 0] = 10.0  # background everywhere …
    raw[0, 0, 0, :] = -10.0  # … except the top row, which says class 1
    raw[0, 2, 0, :] = 10.0
    raw[0, 3:7] = 0.0  # every box: location ± 4 px
    raw[0, 7] = 10.0  # centre-ness ≈ 1
    (det,) = task.decode(raw)
    # two overlapping boxes (IoU 1/3 < 0.6) of class 1 at (2,2)±4 → clipped (0,0,6,6), (2,0,8,6)
    assert det["labels"].tolist() == [1, 1]
    assert det["probs"].shape == (2, 2)
    torch.testing.assert_close(det["probs"].sum(1), torch.ones(2))
    assert float(det["scores"].min()) == pytest.approx(1.0, abs=1e-3)
    strict = _task(score_threshold=0.1, nms_iou=0.2)
    assert len(strict.decode(raw)[0]["boxes"]) == 1


def test_detection_map_perfect_prediction() -> None:
    task = _task(score_threshold=0.1)
    raw = torch.full((1, 8, 4, 4), -10.0)
    raw[0, 0] = 10.0
    raw[0, 0, 1, 1] = -10.0
    raw[0, 1, 1, 1] = 10.0  # class 0 at location (1, 1), centre (6, 6)
    raw[0, 3:7, 1, 1] = math.log(4.0 / 4)  # 4 px → box (2, 2, 10, 10)
    raw[0, 7] = 10.0
    metric = task.metric()
    metric.update(
        raw, [{"boxes": torch.tensor([[2.0, 2.0, 10.0, 10.0]]), "labels": torch.tensor([0])}]
    )
    assert float(metric.compute()["map"]) == pytest.approx(1.0)


def test_detseg_model_shapes_and_segment() -> None:
    tasks = {"semseg": create_task("semseg", num_classes=6), "boxes": _task()}
    net = create_model(
        "detseg",
        tasks,
        backbone="tiny_cnn",
        head_channels=8,
        encoder_channels=16,
        loss_prediction=True,
    )
    out = net(torch.randn(2, 3, 32, 40))
    assert out.final["semseg"].shape == (2, 6, 32, 40)
    assert out.final["boxes"].shape == (2, 8, 8, 10)
    assert out.loss_pred.shape == (2, 2) and len(net.loss_pred_modules) == 2
    assert net.segment(torch.randn(3, 3, 16, 16)).shape == (3, 6, 16, 16)
    with pytest.raises(ValueError, match="stride"):
        create_model(
            "detseg", {"semseg": tasks["semseg"], "boxes": _task(stride=8)}, backbone="tiny_cnn"
        )


def test_cald_box_consistency_by_hand() -> None:
    p = torch.tensor([0.5, 0.5])
    same = {
        "boxes": torch.tensor([[0.0, 0.0, 4.0, 4.0]]),
        "probs": p[None],
        "scores": torch.tensor([0.8]),
    }
    # identical box and distribution: |1 + ½(0.8 + 0.8)(1 − 0) − 1.3| = 0.5
    assert box_consistency(torch.tensor([0.0, 0.0, 4.0, 4.0]), p, 0.8, same, 1.3) == pytest.approx(
        0.5
    )
    # half-overlapping box (IoU 1/3), q = (1, 0): JS(p, q) by hand
    q = torch.tensor([1.0, 0.0])
    m = (p + q) / 2
    js = 0.5 * (0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)) + 0.5 * math.log(1 / 0.75)
    assert float(js_divergence(p, q)) == pytest.approx(js, rel=1e-5)
    other = {
        "boxes": torch.tensor([[2.0, 0.0, 6.0, 4.0]]),
        "probs": q[None],
        "scores": torch.tensor([0.6]),
    }
    value = box_consistency(torch.tensor([0.0, 0.0, 4.0, 4.0]), p, 0.8, other, 1.3)
    assert value == pytest.approx(abs(1 / 3 + 0.5 * 1.4 * (1 - js) - 1.3), rel=1e-5)
    assert float(m.sum()) == pytest.approx(1.0)
    # image consistency: no reference box → 0; min over boxes, mean over augmentations
    assert image_consistency({"boxes": torch.zeros(0, 4)}, [], 1.3) == 0.0
    ref = {"boxes": same["boxes"], "probs": p[None], "scores": torch.tensor([0.8])}
    empty = {"boxes": torch.zeros(0, 4)}
    assert image_consistency(
        ref, [(same, same["boxes"]), (empty, same["boxes"])], 1.3
    ) == pytest.approx(0.25)
    img, flipped = aug_flip(
        torch.zeros(3, 4, 10), torch.tensor([[1.0, 0.0, 3.0, 2.0]]), torch.Generator()
    )
    assert flipped.tolist() == [[7.0, 0.0, 9.0, 2.0]]


def test_cdal_mixture_and_distance_by_hand() -> None:
    # one image, 2 classes, 2 pixels both predicted class 0 with P = (0.9, 0.1), (0.6, 0.4)
    prob = torch.tensor([[0.9, 0.6], [0.1, 0.4]]).reshape(1, 2, 1, 2)
    mix, present = class_mixtures(prob)
    h = lambda v: -sum(x * math.log(x) for x in v)  # noqa: E731
    w1, w2 = h([0.9, 0.1]), h([0.6, 0.4])
    expected = [(w1 * 0.9 + w2 * 0.6) / (w1 + w2), (w1 * 0.1 + w2 * 0.4) / (w1 + w2)]
    torch.testing.assert_close(mix[0, 0], torch.tensor(expected), rtol=1e-5, atol=1e-6)
    assert present.tolist() == [[True, False]]
    other = torch.tensor([[0.5, 0.5], [0.5, 0.5]]).reshape(1, 2, 1, 2)
    mix2, present2 = class_mixtures(other)
    a, b = torch.tensor(expected), torch.tensor([0.5, 0.5])
    sym = 0.5 * float((a * (a / b).log()).sum()) + 0.5 * float((b * (b / a).log()).sum())
    d = contextual_distance(mix, present, mix2, present2)
    assert float(d[0, 0]) == pytest.approx(sym, rel=1e-4)
    assert float(contextual_distance(mix, present, mix, present)[0, 0]) == pytest.approx(
        0.0, abs=1e-6
    )
