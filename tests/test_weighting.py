"""Loss weighting schemes against their papers' formulas on hand-computed numbers."""

from __future__ import annotations

import math

import pytest
import torch

from mtal.registry import UnknownNameError
from mtal.training.weighting import (
    WEIGHTINGS,
    DynamicWeightAverage,
    GradNorm,
    UncertaintyWeighting,
    create_weighting,
)


def t(x: float) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float32)


def test_registry_lists_schemes_and_rejects_unknown() -> None:
    assert {"fixed", "equal", "dwa", "uncertainty", "gradnorm"} <= set(WEIGHTINGS.names())
    with pytest.raises(UnknownNameError, match="known weightings: .*dwa"):
        create_weighting("nope", ["a"])


def test_fixed_weights_and_default_one() -> None:
    w = create_weighting("fixed", ["a", "b", "c"], weights={"a": 2.0, "c": 0.5})
    total, eff = w({"a": t(3.0), "b": t(4.0), "c": t(10.0)})
    assert total.item() == pytest.approx(2 * 3 + 4 + 0.5 * 10)
    assert eff == {"a": 2.0, "b": 1.0, "c": 0.5}


def test_fixed_names_unknown_and_missing_tasks() -> None:
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['depht'\]"):
        create_weighting("fixed", ["depth"], weights={"depht": 1.0})
    w = create_weighting("fixed", ["a", "b"])
    with pytest.raises(ValueError, match=r"missing task\(s\) \['b'\]"):
        w({"a": t(1.0)})
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['z'\]"):
        w({"a": t(1.0), "b": t(1.0), "z": t(1.0)})


def test_equal_sums_losses_and_keeps_gradient() -> None:
    a = torch.tensor(1.5, requires_grad=True)
    total, eff = create_weighting("equal", ["a", "b"])({"a": a * 2, "b": t(0.25)})
    total.backward()
    assert total.item() == pytest.approx(3.25)
    assert a.grad.item() == pytest.approx(2.0)
    assert eff == {"a": 1.0, "b": 1.0}


def test_dwa_three_epochs_hand_numbers() -> None:
    dwa = create_weighting("dwa", ["a", "b"])  # K = 2, T = 2
    losses = {"a": t(1.0), "b": t(1.0)}
    # epochs 0 and 1: weights 1
    assert dwa(losses)[1] == {"a": 1.0, "b": 1.0}
    dwa.on_train_epoch_end({"a": 2.0, "b": 1.0})
    assert dwa(losses)[1] == {"a": 1.0, "b": 1.0}
    dwa.on_train_epoch_end({"a": 1.0, "b": 1.0})
    # epoch 2: r = (1/2, 1/1); w_a = 2 e^{0.25} / (e^{0.25} + e^{0.5})
    #   e^0.25 = 1.2840254, e^0.5 = 1.6487213 → w_a = 0.8756470, w_b = 1.1243530
    total, eff = dwa({"a": t(2.0), "b": t(3.0)})
    assert eff["a"] == pytest.approx(0.8756470, abs=1e-6)
    assert eff["b"] == pytest.approx(1.1243530, abs=1e-6)
    assert total.item() == pytest.approx(0.8756470 * 2 + 1.1243530 * 3, abs=1e-5)
    dwa.on_train_epoch_end({"a": 0.5, "b": 0.8})
    # epoch 3: r = (0.5/1, 0.8/1) → w_a = 2 e^{0.25} / (e^{0.25} + e^{0.4}) = 0.9251403
    eff = dwa(losses)[1]
    assert eff["a"] == pytest.approx(0.9251403, abs=1e-6)
    assert eff["a"] + eff["b"] == pytest.approx(2.0)


def test_dwa_base_weights_temperature_and_state_roundtrip() -> None:
    dwa = DynamicWeightAverage(["a", "b"], temperature=1.0, base_weights={"b": 10.0})
    dwa.on_train_epoch_end({"a": 1.0, "b": 1.0})
    dwa.on_train_epoch_end({"a": 2.0, "b": 1.0})
    # r = (2, 1), T = 1: w_a = 2 e^2 / (e^2 + e) = 1.4621172, w_b = 0.5378828 (× 10)
    eff = dwa({"a": t(1.0), "b": t(1.0)})[1]
    assert eff["a"] == pytest.approx(1.4621172, abs=1e-6)
    assert eff["b"] == pytest.approx(5.378828, abs=1e-5)
    fresh = DynamicWeightAverage(["a", "b"], temperature=1.0, base_weights={"b": 10.0})
    fresh.load_state_dict(dwa.state_dict())
    assert fresh({"a": t(1.0), "b": t(1.0)})[1] == pytest.approx(eff)


def test_dwa_missing_task_ratio_is_one() -> None:
    dwa = DynamicWeightAverage(["a", "b"])
    dwa.on_train_epoch_end({"a": 1.0})  # b had no labelled sample
    dwa.on_train_epoch_end({"a": 1.0, "b": 3.0})
    eff = dwa({"a": t(1.0), "b": t(1.0)})[1]
    assert eff == pytest.approx({"a": 1.0, "b": 1.0})


def test_uncertainty_forms_per_task_kind() -> None:
    w = UncertaintyWeighting(
        ["d", "s", "e"], task_kinds={"d": "regression", "s": "categorical", "e": "binary"}
    )
    with torch.no_grad():
        w.log_vars.copy_(torch.tensor([math.log(2.0), 0.0, math.log(4.0)]))
    total, eff = w({"d": t(4.0), "s": t(3.0), "e": t(2.0)})
    # regression: 0.5·e^{-s}·L + 0.5·s = 0.5·0.5·4 + 0.5·ln2
    # categorical: 1·1·3 + 0;  binary: 0.25·2 + 0.5·ln4
    expected = 1.0 + 0.5 * math.log(2) + 3.0 + 0.5 + 0.5 * math.log(4)
    assert total.item() == pytest.approx(expected, rel=1e-6)
    assert eff == pytest.approx({"d": 0.25, "s": 1.0, "e": 0.25})
    total.backward()
    # d/ds (c e^{-s} L + s/2) = −c e^{-s} L + 1/2
    assert w.log_vars.grad.tolist() == pytest.approx([-1.0 + 0.5, -3.0 + 0.5, -0.5 + 0.5])


def test_uncertainty_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        UncertaintyWeighting(["a"], task_kinds={"a": "ordinal"})


def _toy(w_value: float) -> tuple[torch.nn.Parameter, dict[str, torch.Tensor]]:
    shared = torch.nn.Parameter(torch.tensor([w_value]))
    # L1 = 3 W², L2 = W → ∇L1 = 6W, ∇L2 = 1
    return shared, {"a": 3 * shared.pow(2).sum(), "b": shared.sum()}


def test_gradnorm_loss_and_weight_update_direction() -> None:
    gn = GradNorm(["a", "b"], alpha=1.5)
    shared, losses = _toy(1.0)
    total, eff = gn(losses)
    assert total.item() == pytest.approx(4.0) and eff == {"a": 1.0, "b": 1.0}
    # first step: L(0) = (3, 1), r = (1, 1); G = (6, 1), Ḡ = 3.5 → |6−3.5| + |1−3.5| = 5
    loss = gn.gradnorm_step(losses, [shared])
    assert loss.item() == pytest.approx(5.0)
    (grad,) = torch.autograd.grad(loss, [gn.task_weights])
    # ∂/∂w_a = +6 (G_a above target), ∂/∂w_b = −1 (below)
    assert grad.tolist() == pytest.approx([6.0, -1.0])
    with torch.no_grad():
        gn.task_weights -= 0.1 * grad
    gn.renormalize()
    assert gn.task_weights[0] < 1.0 < gn.task_weights[1]
    assert gn.task_weights.sum().item() == pytest.approx(2.0)
    # the network loss never gives the weights a gradient
    total.backward()
    assert gn.task_weights.grad is None
    assert gn.initial_losses.tolist() == pytest.approx([3.0, 1.0])


def test_gradnorm_uses_initial_losses_and_alpha() -> None:
    gn = GradNorm(["a", "b"], alpha=1.5)
    shared, losses = _toy(1.0)
    gn.gradnorm_step(losses, [shared])  # records L(0) = (3, 1)
    shared, losses = _toy(2.0)  # L = (12, 2): L̃ = (4, 2), r = (4/3, 2/3); G = (12, 1)
    loss = gn.gradnorm_step(losses, [shared])
    g_bar = 6.5
    target = [g_bar * (4 / 3) ** 1.5, g_bar * (2 / 3) ** 1.5]
    assert loss.item() == pytest.approx(abs(12 - target[0]) + abs(1 - target[1]), rel=1e-5)


def test_gradnorm_skips_task_without_loss_and_renormalizes() -> None:
    gn = GradNorm(["a", "b"])
    shared, losses = _toy(1.0)
    losses["b"] = losses["b"] * 0.0  # no labelled sample of b in this batch
    loss = gn.gradnorm_step(losses, [shared])
    assert loss.item() == pytest.approx(0.0)  # one active task is its own target
    assert math.isnan(gn.initial_losses[1].item())
    with torch.no_grad():
        gn.task_weights.copy_(torch.tensor([0.5, 2.5]))
    gn.renormalize()
    assert gn.task_weights.tolist() == pytest.approx([1 / 3, 5 / 3])
    with pytest.raises(ValueError, match="gradnorm_layer"):
        gn.gradnorm_step(losses, [])
