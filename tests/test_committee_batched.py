"""Issue 16.2: the learnable committee's scoring path — members written out by hand from
the module weights (C5, C11), the stacked-kernel path, and ``refine=False``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtal.acquisition import AcquisitionContext, create_strategy
from mtal.acquisition.mtal_consistency import accepts_refine
from mtal.data.datamodule import ActiveDataModule
from mtal.models import create_model
from mtal.models.padnet.distillation import committee_partner_sets, member_name
from mtal.tasks import create_task

PASCAL = ("semseg", "parts", "saliency", "normals", "edge")
NUM_CLASSES = {"semseg": 5, "parts": 4}


def padnet(names=PASCAL, **kw: Any) -> torch.nn.Module:
    """A tiny PAD-Net whose BatchNorms carry non-trivial running statistics (eval mode)."""
    torch.manual_seed(0)
    tasks = {n: create_task(n, num_classes=NUM_CLASSES.get(n)) for n in names}
    kw = {"head_channels": 8, "encoder_channels": 16, **kw}
    net = create_model("padnet", tasks, backbone="tiny_cnn", **kw)
    g = torch.Generator().manual_seed(3)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.rand(c, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(c, generator=g) - 0.5)
    return net.eval()


def image(b: int = 2, h: int = 32, w: int = 40) -> torch.Tensor:
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(1))


def by_hand(net: torch.nn.Module, feats: dict[str, torch.Tensor], order: int, size) -> dict:
    """ŷ_{k,S} = up(cls_{k,S}(body_{k,S}(F_k + Σ_{a∈S} conv_m(F_a)·σ(conv_g(F_a))))) with
    every convolution, eval BatchNorm ((x − μ)/√(σ²+ε)·γ + β) and ReLU written out."""
    com = net.learnable_committee
    out: dict[str, dict[str, torch.Tensor]] = {}
    for k in PASCAL:
        out[k] = {}
        for s in committee_partner_sets(list(PASCAL), k, order):
            name = member_name(s)
            r = feats[k]
            for a in s:
                sa = com.attention[k][name][a]
                msg = F.conv2d(feats[a], sa.message.weight, sa.message.bias, padding=1)
                gate = F.conv2d(feats[a], sa.gate.weight, sa.gate.bias, padding=1)
                r = r + msg * torch.sigmoid(gate)
            head = com.heads[k][name]
            for conv, bn, _ in head.body:
                y = F.conv2d(r, conv.weight, padding=1)
                shape = (1, -1, 1, 1)
                y = (y - bn.running_mean.view(shape)) / torch.sqrt(
                    bn.running_var.view(shape) + bn.eps
                ) * bn.weight.view(shape) + bn.bias.view(shape)
                r = torch.clamp_min(y, 0.0)
            raw = F.conv2d(r, head.classifier.weight, head.classifier.bias)
            out[k][name] = F.interpolate(raw, size=size, mode="bilinear", align_corners=False)
    return out


@pytest.mark.parametrize(("order", "members"), [(1, 4), (2, 10)])
@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("refine", [True, False])
def test_members_match_the_formula_c5_c11(order, members, batched, refine) -> None:
    net = padnet(committee_order=order, committee_batched=batched)
    x = image()
    with torch.no_grad():
        out = net(x, committee=order, refine=refine)
        ref = by_hand(net, out.task_features, order, x.shape[-2:])
    for k in PASCAL:
        got = {m: v for m, v in out.committee[k].items() if m != "initial"}
        assert list(got) == list(ref[k]) and len(got) == members
        for m, v in got.items():
            torch.testing.assert_close(v, ref[k][m], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out.committee[k]["initial"], out.initial[k])


def test_batched_and_member_by_member_agree_and_load_the_same_state() -> None:
    loop = padnet(committee_order=2)
    stacked = padnet(committee_order=2, committee_batched=True)
    # same modules, same keys: a state dict saved by one loads into the other
    assert list(loop.state_dict()) == list(stacked.state_dict())
    stacked.load_state_dict(loop.state_dict())
    x = image(3)
    with torch.no_grad():
        a, b = loop(x, committee=2), stacked(x, committee=2)
    for k in PASCAL:
        for m in a.committee[k]:
            torch.testing.assert_close(a.committee[k][m], b.committee[k][m])
        torch.testing.assert_close(a.final[k], b.final[k])


def test_batched_committee_trains_member_by_member() -> None:
    net = padnet(("semseg", "depth", "normals"), committee_batched=True).train()
    calls = [0]
    for blocks in net.learnable_committee.attention.values():
        for sas in blocks.values():
            for sa in sas.values():
                sa.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    out = net(image(), committee=1)
    assert calls[0] == 6  # K·(K−1) SA blocks called one by one in training mode
    loss = sum(v.square().mean() for ms in out.committee.values() for v in ms.values())
    loss.backward()
    grads = [p.grad for p in net.learnable_committee.parameters()]
    assert all(g is not None and bool(g.abs().sum() > 0) for g in grads)
    # detached inputs: nothing reaches the main network
    assert all(p.grad is None for p in net.final_heads.parameters())


@pytest.mark.parametrize("mode", ["learnable", "shared"])
def test_refine_false_skips_only_the_distillation_and_final_heads(mode) -> None:
    net = padnet(committee_mode=mode)
    calls = {"distillation": 0, "final": 0}
    for blocks in net.distillation.attention.values():
        for sa in blocks.values():
            sa.register_forward_hook(lambda *_: calls.__setitem__("distillation", 1))
    for head in net.final_heads.values():
        head.register_forward_hook(lambda *_: calls.__setitem__("final", 1))
    x = image()
    with torch.no_grad():
        full = net(x, committee=1)
        calls.update(distillation=0, final=0)
        fast = net(x, committee=1, refine=False)
    assert fast.final == {}
    # the shared committee is built from the main messages and final heads: they still run
    expected = (
        {"distillation": 0, "final": 0}
        if mode == "learnable"
        else {
            "distillation": 1,
            "final": 1,
        }
    )
    assert calls == expected
    for k in PASCAL:
        torch.testing.assert_close(fast.initial[k], full.initial[k])
        torch.testing.assert_close(fast.task_features[k], full.task_features[k])
        assert list(fast.committee[k]) == list(full.committee[k])
        for m in full.committee[k]:
            torch.testing.assert_close(fast.committee[k][m], full.committee[k][m])
    torch.testing.assert_close(fast.embedding, full.embedding)


class HideRefine(torch.nn.Module):
    """The same network behind a ``forward(image, **kw)`` that declares no ``refine``."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net_ = net

    def forward(self, image: torch.Tensor, **kw: Any) -> Any:
        return self.net_(image, **kw)


def mtal_ctx(model: torch.nn.Module) -> AcquisitionContext:
    names = ["semseg", "normals", "edge"]
    dm = ActiveDataModule(
        dataset="synthetic",
        tasks=names,
        size=(32, 40),
        pool_size=10,
        val_size=2,
        initial=3,
        eval_batch_size=4,
    )
    dm.setup("fit")
    return AcquisitionContext(
        model=model, tasks=dm.task_objects, pool=dm.pool, datamodule=dm, cycle=1, seed=0
    )


@pytest.mark.parametrize("anchor", ["initial", "final"])
def test_mtal_select_skips_final_only_for_the_initial_anchor(anchor) -> None:
    torch.manual_seed(0)
    ctx = mtal_ctx(torch.nn.Identity())
    net = create_model(
        "padnet", ctx.tasks, backbone="tiny_cnn", head_channels=8, encoder_channels=16
    ).eval()
    seen: list[Any] = []
    net.register_forward_pre_hook(
        lambda _m, _a, kw: seen.append(kw.get("refine", True)), with_kwargs=True
    )
    assert accepts_refine(net) and not accepts_refine(HideRefine(net))
    kw = {"anchor": anchor, "ae_epochs": 2, "code_dim": 8, "ae_hidden": 4, "feature_pool": 2}
    ctx.model = net
    fast = create_strategy("mtal", **kw).select(ctx, 6)
    # the labelled-features pass runs first (its rows lead the joint feature buffer) and
    # never needs `final`; the unlabelled pass needs it for the final anchor only
    assert len(seen) == 3 and seen[0] is False
    assert all(r is (anchor == "final") for r in seen[1:])
    seen.clear()
    ctx.model = HideRefine(net)
    plain = create_strategy("mtal", **kw).select(ctx, 6)
    assert seen and all(r is True for r in seen)
    assert fast.images.tolist() == plain.images.tolist()
    np.testing.assert_allclose(fast.scores, plain.scores, rtol=1e-6)
    np.testing.assert_allclose(fast.weights, plain.weights, rtol=1e-6)
