"""Tasks: registry, losses, discrepancies, MC uncertainties, encodings and flips, each
checked against numbers computed by hand in the test."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mtal.registry import UnknownNameError
from mtal.tasks import TASKS, create_task, task_class
from mtal.tasks.base import Task

LN2PIE = math.log(2 * math.pi * math.e)
ALL = ("semseg", "parts", "depth", "normals", "edge", "saliency")


def make(name: str, **options) -> Task:
    return create_task(name, num_classes=3 if name in ("semseg", "parts") else None, **options)


def binary_entropy(p: float) -> float:
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def random_target(task: Task, b: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """A random valid target in the task's layout."""
    if task.kind == "categorical":
        return torch.randint(0, task.out_channels, (b, h, w), generator=gen)
    if task.kind == "binary":
        return torch.randint(0, 2, (b, 1, h, w), generator=gen).float()
    if task.name == "depth":
        return torch.rand(b, 1, h, w, generator=gen) + 0.5
    return torch.nn.functional.normalize(torch.randn(b, 3, h, w, generator=gen), dim=1)


# ----------------------------------------------------------------------------- registry


def test_registry_lists_builtin_tasks_and_builds_each():
    assert set(ALL) <= set(TASKS.names())
    for name in ALL:
        task = make(name)
        assert isinstance(task, task_class(name))
        assert task.name == name


def test_importing_the_registry_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, mtal.tasks; print('torch' in sys.modules, len(mtal.tasks.TASKS))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "7"]  # 6 dense tasks + boxes


def test_unknown_task_name_lists_known_ones():
    with pytest.raises(UnknownNameError) as err:
        create_task("segmantic")
    message = str(err.value)
    assert "segmantic" in message
    for name in ALL:
        assert name in message


def test_unknown_option_and_missing_num_classes_are_reported():
    with pytest.raises(TypeError, match="pos_weigth"):
        create_task("edge", pos_weigth=0.8)
    with pytest.raises(ValueError, match="num_classes"):
        create_task("semseg")
    with pytest.raises(ValueError, match="discrepancy_target"):
        create_task("edge", discrepancy_target="medium")


def test_channels_kinds_ignore_and_headlines():
    expected = {
        "semseg": (3, "categorical", 255, ("miou", True)),
        "parts": (3, "categorical", 255, ("miou", True)),
        "depth": (1, "regression", 0, ("rmse", False)),
        "normals": (3, "regression", 0, ("mean", False)),
        "edge": (1, "binary", 255, ("odsf", True)),
        "saliency": (1, "binary", 255, ("maxf", True)),
    }
    for name, (ch, kind, ignore, headline) in expected.items():
        task = make(name)
        assert (task.out_channels, task.kind, task.ignore_value, task.headline) == (
            ch,
            kind,
            ignore,
            headline,
        )
    assert make("edge", metric_mode="approx").headline == ("odsf_approx", True)


@pytest.mark.parametrize("name", ALL)
def test_headline_key_is_produced_by_the_metric(name):
    gen = torch.Generator().manual_seed(0)
    task = make(name, **({"thresholds": 9} if name in ("edge", "saliency") else {}))
    target = random_target(task, 2, 12, 12, gen)
    raw = torch.randn(2, task.out_channels, 12, 12, generator=gen)
    metric = task.metric()
    metric.update(raw, target)
    result = metric.compute()
    key, _ = task.headline
    assert key in result and math.isfinite(float(result[key]))


# ---------------------------------------------------------------------- categorical


def test_semseg_loss_hand_computed_with_ignore():
    task = create_task("semseg", num_classes=2)
    # one sample, 1×2 pixels: logits (1, 0) and (0, 2), both labelled 0
    raw = torch.tensor([[[[1.0, 0.0]], [[0.0, 2.0]]]])
    target = torch.tensor([[[0, 0]]])
    ce0 = math.log(1 + math.exp(-1))
    ce1 = math.log(1 + math.exp(2))
    assert task.loss(raw, target).item() == pytest.approx((ce0 + ce1) / 2, rel=1e-6)
    target_ign = torch.tensor([[[0, 255]]])
    assert task.loss(raw, target_ign).item() == pytest.approx(ce0, rel=1e-6)


def test_semseg_discrepancy_soft_and_hard():
    raw = torch.tensor([[[[1.0, 0.0]], [[0.0, 2.0]]]], requires_grad=True)
    other = torch.tensor([[[[0.0, 3.0]], [[math.log(3.0), 0.0]]]], requires_grad=True)
    # softmax(other): pixel 0 → (1/4, 3/4); pixel 1 → (e³/(e³+1), 1/(e³+1))
    ls0 = (-math.log(1 + math.exp(-1)), -1 - math.log(1 + math.exp(-1)))  # log_softmax(1, 0)
    ls1 = (-2 - math.log(1 + math.exp(-2)), -math.log(1 + math.exp(-2)))  # log_softmax(0, 2)
    q1 = math.exp(3) / (math.exp(3) + 1)
    soft = (-(0.25 * ls0[0] + 0.75 * ls0[1]) - (q1 * ls1[0] + (1 - q1) * ls1[1])) / 2
    task = create_task("semseg", num_classes=2)
    value = task.discrepancy(raw, other)
    assert value.item() == pytest.approx(soft, rel=1e-6)
    value.sum().backward()
    assert other.grad is None and raw.grad is not None
    hard = create_task("semseg", num_classes=2, discrepancy_target="hard")
    # argmax(other) = (1, 0)
    assert hard.discrepancy(raw, other).item() == pytest.approx((-ls0[1] - ls1[0]) / 2, rel=1e-6)


def test_categorical_mc_uncertainty_is_entropy_of_mean_softmax():
    task = create_task("parts", num_classes=2)
    # S=2 samples of a single pixel: softmax (1/2, 1/2) and (3/4, 1/4) → mean (5/8, 3/8)
    samples = torch.tensor([[[[[0.0]], [[0.0]]]], [[[[math.log(3.0)]], [[0.0]]]]])
    assert samples.shape == (2, 1, 2, 1, 1)
    assert task.mc_uncertainty(samples).item() == pytest.approx(binary_entropy(5 / 8), rel=1e-6)


def test_categorical_encoding_and_numpy_conversion():
    task = create_task("semseg", num_classes=3)
    target = task.target_from_numpy(np.array([[0, 2], [255, 1]], dtype=np.uint8))
    assert target.dtype == torch.int64 and target.shape == (2, 2)
    onehot = task.encode_target(target.unsqueeze(0))
    assert onehot.shape == (1, 3, 2, 2)
    expected = torch.zeros(1, 3, 2, 2)
    expected[0, 0, 0, 0] = expected[0, 2, 0, 1] = expected[0, 1, 1, 1] = 1
    torch.testing.assert_close(onehot, expected)
    assert task.valid_mask(target).tolist() == [[True, True], [False, True]]
    empty = task.empty_target(4, 5)
    assert empty.shape == (4, 5) and bool((empty == 255).all())
    with pytest.raises(ValueError, match="outside 0..2"):
        task.target_from_numpy(np.array([[7, 0]], dtype=np.uint8))
    probs = task.activate(torch.randn(2, 3, 4, 4))
    torch.testing.assert_close(probs.sum(1), torch.ones(2, 4, 4))


# --------------------------------------------------------------------------- binary


def test_edge_balanced_bce_hand_computed():
    task = create_task("edge")  # pos_weight 0.95
    raw = torch.tensor([[[[0.0, math.log(3.0), 5.0]]]])
    target = torch.tensor([[[[1.0, 0.0, 255.0]]]])
    # pixel 0: −0.95·log σ(0) = 0.95·log 2; pixel 1: −0.05·log(1 − 3/4) = 0.05·log 4
    expected = (0.95 * math.log(2) + 0.05 * math.log(4)) / 2
    assert task.loss(raw, target).item() == pytest.approx(expected, rel=1e-6)
    nyud = create_task("edge", pos_weight=0.8)
    expected_nyud = (0.8 * math.log(2) + 0.2 * math.log(4)) / 2
    assert nyud.loss(raw, target).item() == pytest.approx(expected_nyud, rel=1e-6)


def test_saliency_weight_is_per_image_fraction_of_negatives():
    task = create_task("saliency")
    raw = torch.tensor([[[[0.0, 0.0, math.log(3.0), 1.0]]], [[[0.0, 0.0, 0.0, 0.0]]]])
    target = torch.tensor([[[[1.0, 0.0, 0.0, 255.0]]], [[[1.0, 1.0, 1.0, 0.0]]]])
    # image 0: 3 valid, 2 negatives → w = 2/3
    w0 = 2 / 3
    img0 = (w0 * math.log(2) + (1 - w0) * math.log(2) + (1 - w0) * math.log(4)) / 3
    # image 1: 4 valid, 1 negative → w = 1/4, all logits 0 → every pixel costs log 2 × weight
    w1 = 1 / 4
    img1 = (3 * w1 * math.log(2) + (1 - w1) * math.log(2)) / 4
    loss = task.loss(raw, target)
    torch.testing.assert_close(loss, torch.tensor([img0, img1]), rtol=1e-6, atol=1e-7)
    fixed = create_task("saliency", pos_weight=0.5)
    expected_fixed = 0.5 * (math.log(2) + math.log(2) + math.log(4)) / 3
    assert fixed.loss(raw, target)[0].item() == pytest.approx(expected_fixed, rel=1e-6)


def test_binary_discrepancy_soft_and_hard():
    raw = torch.tensor([[[[0.0, 2.0]]]])
    other = torch.tensor([[[[math.log(3.0), -1.0]]]])
    q = (0.75, 1 / (1 + math.e))
    w = 0.95

    def bce(x: float, y: float) -> float:
        return -(
            w * y * math.log(1 / (1 + math.exp(-x)))
            + (1 - w) * (1 - y) * math.log(1 / (1 + math.exp(x)))
        )

    soft = (bce(0.0, q[0]) + bce(2.0, q[1])) / 2
    assert create_task("edge").discrepancy(raw, other).item() == pytest.approx(soft, rel=1e-6)
    hard = (bce(0.0, 1.0) + bce(2.0, 0.0)) / 2
    task = create_task("edge", discrepancy_target="hard")
    assert task.discrepancy(raw, other).item() == pytest.approx(hard, rel=1e-6)


def test_binary_mc_uncertainty_is_entropy_of_mean_sigmoid():
    samples = torch.tensor([0.0, math.log(3.0)]).view(2, 1, 1, 1, 1)  # σ: 1/2 and 3/4
    value = create_task("saliency").mc_uncertainty(samples).item()
    assert value == pytest.approx(binary_entropy(5 / 8), rel=1e-6)


def test_binary_numpy_layout_keeps_ignore():
    task = create_task("edge")
    target = task.target_from_numpy(np.array([[0, 1], [255, 1]], dtype=np.uint8))
    assert target.dtype == torch.float32 and target.shape == (1, 2, 2)
    assert target.flatten().tolist() == [0.0, 1.0, 255.0, 1.0]
    assert task.encode_target(target).flatten().tolist() == [0.0, 1.0, 0.0, 1.0]
    assert task.valid_mask(target.unsqueeze(0)).flatten().tolist() == [True, True, False, True]
    with pytest.raises(ValueError, match="0, 1, 255"):
        task.target_from_numpy(np.array([[0, 2]], dtype=np.uint8))
    assert bool((task.empty_target(3, 2) == 255).all())


# ----------------------------------------------------------------------- regression


def test_depth_loss_discrepancy_and_uncertainty():
    task = create_task("depth")
    raw = torch.tensor([[[[1.0, 3.0, 0.5]]]])
    target = torch.tensor([[[[2.0, 0.0, 1.0]]]])  # middle pixel invalid
    assert task.loss(raw, target).item() == pytest.approx((1.0 + 0.5) / 2)
    other = torch.tensor([[[[2.0, 1.0, 0.5]]]])
    assert task.discrepancy(raw, other).item() == pytest.approx((1.0 + 2.0 + 0.0) / 3)
    samples = torch.tensor([[[[[1.0, 2.0]]]], [[[[3.0, 2.0]]]]])  # S=2, B=1, 1×1×2
    # pixel 0: unbiased var of (1, 3) = 2; pixel 1: var 0 → floor 1e-6
    expected = (0.5 * (LN2PIE + math.log(2.0)) + 0.5 * (LN2PIE + math.log(1e-6))) / 2
    assert task.mc_uncertainty(samples).item() == pytest.approx(expected, rel=1e-5)
    floored = create_task("depth", var_floor=1e-2).mc_uncertainty(samples).item()
    assert floored == pytest.approx(
        (0.5 * (LN2PIE + math.log(2.0)) + 0.5 * (LN2PIE + math.log(1e-2))) / 2, rel=1e-5
    )
    with pytest.raises(ValueError, match="at least 2"):
        task.mc_uncertainty(samples[:1])


def test_depth_numpy_layout():
    task = create_task("depth")
    arr = np.array([[1.5, 0.0], [np.nan, 2.0]], dtype=np.float32)
    target = task.target_from_numpy(arr)
    assert target.shape == (1, 2, 2) and target.dtype == torch.float32
    assert target.flatten().tolist() == [1.5, 0.0, 0.0, 2.0]
    assert task.valid_mask(target.unsqueeze(0)).flatten().tolist() == [True, False, False, True]
    assert bool((task.empty_target(2, 3) == 0).all())


def test_normals_losses_hand_computed():
    raw = torch.zeros(1, 3, 1, 2)
    raw[0, 0, 0, 0] = 2.0  # → unit (1, 0, 0)
    raw[0, 2, 0, 1] = 1.0  # → unit (0, 0, 1), but its target is invalid
    target = torch.zeros(1, 3, 1, 2)
    target[0, 1, 0, 0] = 1.0  # (0, 1, 0); pixel 1 stays the zero vector (invalid)
    l1 = create_task("normals")
    assert l1.loss(raw, target).item() == pytest.approx(2.0 / 3.0)
    l1_sum = create_task("normals", l1_channel_reduction="sum")
    assert l1_sum.loss(raw, target).item() == pytest.approx(2.0)
    cosine = create_task("normals", loss="cosine")
    assert cosine.loss(raw, target).item() == pytest.approx(1.0)
    # discrepancy: pixel 0 (1,0,0) vs (1,1,0)/√2; pixel 1 (0,0,1) vs (0,0,1)
    other = torch.zeros(1, 3, 1, 2)
    other[0, 0, 0, 0] = other[0, 1, 0, 0] = 5.0
    other[0, 2, 0, 1] = 3.0
    s = 1 / math.sqrt(2)
    expected_l1 = ((1 - s) + s) / 3 / 2
    assert l1.discrepancy(raw, other).item() == pytest.approx(expected_l1, rel=1e-6)
    assert cosine.discrepancy(raw, other).item() == pytest.approx((1 - s) / 2, rel=1e-6)


def test_normals_uncertainty_diagonal_gaussian():
    task = create_task("normals")
    samples = torch.zeros(2, 1, 3, 1, 1)
    samples[0, 0, 0] = 4.0  # unit (1, 0, 0)
    samples[1, 0, 1] = 0.5  # unit (0, 1, 0)
    # unbiased per-channel variances: 1/2, 1/2, 0 → floored at 1e-6
    expected = 0.5 * (3 * LN2PIE + 2 * math.log(0.5) + math.log(1e-6))
    assert task.mc_uncertainty(samples).item() == pytest.approx(expected, rel=1e-5)


def test_normals_flip_negates_x_and_is_an_involution():
    task = create_task("normals")
    x = torch.arange(2 * 3 * 2 * 3, dtype=torch.float32).view(2, 3, 2, 3)
    flipped = task.hflip(x)
    torch.testing.assert_close(flipped[:, 0], -x[:, 0].flip(-1))
    torch.testing.assert_close(flipped[:, 1:], x[:, 1:].flip(-1))
    torch.testing.assert_close(task.hflip(flipped), x)
    single = task.hflip(x[0])  # one sample, 3×H×W
    torch.testing.assert_close(single, flipped[0])
    semseg = create_task("semseg", num_classes=3)
    labels = torch.tensor([[[0, 1, 2]]])
    assert semseg.hflip(labels).tolist() == [[[2, 1, 0]]]
    torch.testing.assert_close(semseg.hflip(semseg.hflip(labels)), labels)


def test_normals_numpy_layout_and_encoding():
    task = create_task("normals")
    arr = np.zeros((2, 2, 3), dtype=np.float32)
    arr[0, 0] = (0.0, 0.0, 2.0)
    arr[1, 1] = (0.6, 0.8, 0.0)
    target = task.target_from_numpy(arr)
    assert target.shape == (3, 2, 2)
    assert target[:, 1, 1].tolist() == pytest.approx([0.6, 0.8, 0.0])
    encoded = task.encode_target(target)
    assert encoded[:, 0, 0].tolist() == [0.0, 0.0, 1.0]
    assert encoded[:, 0, 1].tolist() == [0.0, 0.0, 0.0]
    assert task.valid_mask(target.unsqueeze(0))[0].tolist() == [[True, False], [False, True]]
    unit = task.activate(torch.randn(2, 3, 4, 4))
    torch.testing.assert_close(unit.norm(dim=1), torch.ones(2, 4, 4))


# ------------------------------------------------------------- shared guarantees


@pytest.mark.parametrize("name", ALL)
def test_sample_without_valid_pixel_gives_zero_loss_and_zero_grad(name):
    task = make(name)
    gen = torch.Generator().manual_seed(1)
    target = random_target(task, 2, 4, 4, gen)
    target[1] = task.empty_target(4, 4)
    raw = torch.randn(2, task.out_channels, 4, 4, generator=gen, requires_grad=True)
    loss = task.loss(raw, target)
    assert loss.shape == (2,)
    assert torch.isfinite(loss).all()
    assert loss[1].item() == 0.0 and loss[0].item() > 0.0
    loss.sum().backward()
    assert torch.isfinite(raw.grad).all()
    assert bool((raw.grad[1] == 0).all()) and bool((raw.grad[0] != 0).any())


@pytest.mark.parametrize("name", ALL)
def test_per_sample_shapes_and_detached_other(name):
    task = make(name)
    gen = torch.Generator().manual_seed(2)
    raw = torch.randn(3, task.out_channels, 5, 4, generator=gen, requires_grad=True)
    other = torch.randn(3, task.out_channels, 5, 4, generator=gen, requires_grad=True)
    disc = task.discrepancy(raw, other)
    assert disc.shape == (3,) and torch.isfinite(disc).all()
    disc.sum().backward()
    assert other.grad is None
    samples = torch.randn(4, 3, task.out_channels, 5, 4, generator=gen)
    unc = task.mc_uncertainty(samples)
    assert unc.shape == (3,) and torch.isfinite(unc).all()
    # encode_target(gt) has the shape of activate(raw)
    target = random_target(task, 3, 5, 4, gen)
    assert task.encode_target(target).shape == task.activate(raw).shape
    # a head with the wrong channel count is named in the error
    with pytest.raises(ValueError, match="B×"):
        task.loss(raw[:, :1].expand(3, 2, 5, 4), target)


@pytest.mark.parametrize("name", ("semseg", "edge", "saliency"))
def test_discrepancy_of_a_confident_prediction_with_itself_is_small(name):
    task = make(name, discrepancy_target="hard")
    gen = torch.Generator().manual_seed(3)
    raw = 30 * task.encode_target(random_target(task, 2, 4, 4, gen)) - 15  # logits ±15
    assert task.discrepancy(raw, raw).max().item() < 1e-3
    assert task.discrepancy(raw, -raw).min().item() > 1.0


DISCREPANCY_CASES = [
    *((n, t) for n in ("semseg", "parts", "edge", "saliency") for t in ("soft", "hard", "kl")),
    ("normals", None),  # regression tasks have no discrepancy_target
    ("depth", None),
]


@pytest.mark.parametrize(("name", "target"), DISCREPANCY_CASES)
def test_discrepancies_equal_one_discrepancy_per_member(name: str, target: str | None) -> None:
    """The committee path (``discrepancies``: the anchor's side computed once; the single
    ``discrepancy`` is its one-member case) equals each task's formula written out per
    member."""
    kwargs: dict = {"num_classes": 4} if name in ("semseg", "parts") else {}
    if target is not None:
        kwargs["discrepancy_target"] = target
    task = create_task(name, **kwargs)
    g = torch.Generator().manual_seed(3)
    c = task.out_channels
    raw = torch.randn(2, c, 6, 7, generator=g)
    members = [torch.randn(2, c, 6, 7, generator=g) for _ in range(3)]
    got = task.discrepancies(raw, members)
    assert got.shape == (3, 2)
    want = torch.stack([_one_discrepancy(task, target, raw, m) for m in members])
    torch.testing.assert_close(got, want)


def _one_discrepancy(task, target: str | None, raw: torch.Tensor, other: torch.Tensor):
    """Each task's discrepancy of ``raw`` against one member, written out per formula."""
    F = torch.nn.functional
    if task.name in ("semseg", "parts"):
        if target == "hard":
            return F.cross_entropy(raw, other.argmax(1), reduction="none").flatten(1).mean(1)
        soft = other.softmax(1)
        per_pixel = -(soft * raw.log_softmax(1)).sum(1)
        if target == "kl":
            per_pixel = per_pixel - torch.special.entr(soft).sum(1)
        return per_pixel.flatten(1).mean(1)
    if task.name in ("edge", "saliency"):
        prob = other.sigmoid()
        if target == "hard":
            prob = (prob >= 0.5).float()
        out = task.balanced_bce(raw, prob)  # the task's loss with a soft target
        return out - task.balanced_bce(other, prob) if target == "kl" else out
    if task.name == "normals":
        units = F.normalize(raw, dim=1), F.normalize(other, dim=1)
        return task.pixel_loss(*units).flatten(1).mean(1)
    return (raw - other).abs().flatten(1).mean(1)  # depth: L1
