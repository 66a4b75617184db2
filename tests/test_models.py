"""Tests of mtal.models: HPS, PAD-Net (committee, GT substitution, MC-dropout), LL4AL."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mtal.models import MODELS, create_model, ll4al_ranking_loss
from mtal.models.backbones import Encoder, PretrainedWeightsError, create_backbone
from mtal.models.ll4al import LossPredictionModule
from mtal.registry import UnknownNameError
from mtal.tasks import create_task

NYUD = ("semseg", "depth", "normals")
PASCAL = ("semseg", "parts", "saliency", "normals", "edge")
NUM_CLASSES = {"semseg": 5, "parts": 4}


def make_tasks(names: tuple[str, ...]) -> dict:
    return {n: create_task(n, num_classes=NUM_CLASSES.get(n)) for n in names}


def build(name: str = "padnet", names=NYUD, backbone: str = "tiny_cnn", **kw):
    torch.manual_seed(0)
    kw.setdefault("head_channels", 16)
    kw.setdefault("encoder_channels", 32)
    return create_model(name, make_tasks(names), backbone=backbone, **kw)


def image(b: int = 2, h: int = 32, w: int = 40) -> torch.Tensor:
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(1))


# -- shapes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("model_name", ["hps", "padnet"])
@pytest.mark.parametrize(
    ("backbone", "names", "size"),
    [
        ("tiny_cnn", NYUD, (32, 40)),
        ("tiny_cnn", PASCAL, (36, 44)),
        ("resnet18", NYUD, (36, 44)),
        ("resnet18", PASCAL, (64, 64)),
    ],
)
def test_output_shapes(model_name, backbone, names, size):
    model = build(model_name, names, backbone, loss_prediction=True)
    h, w = size
    out = model(image(2, h, w))
    tasks = model.tasks
    assert list(out.final) == list(names)
    for n in names:
        assert out.final[n].shape == (2, tasks[n].out_channels, h, w)
        assert out.task_features[n].shape == (2, 16, -(-h // 4), -(-w // 4))
    if model_name == "padnet":
        assert {n: out.initial[n].shape for n in names} == {
            n: (2, tasks[n].out_channels, h, w) for n in names
        }
    else:
        assert out.initial is None
    assert out.committee is None
    assert out.embedding.shape == (2, model.encoder.embedding_dim)
    assert model.encoder.embedding_dim == (512 if backbone == "resnet18" else 64)
    assert out.loss_pred.shape == (2, len(names))


def test_hrnet_pads_sizes_not_divisible_by_32():
    # timm HRNet crashes on 36×44 inputs; the encoder pads and crops back
    enc = Encoder("hrnet_w18_small", out_channels=8)
    assert enc.level_channels == [16, 32, 64, 128]  # raw branches, not the "incre" head
    out = enc(image(1, 36, 44))
    assert out.fused.shape == (1, 8, 9, 11)
    assert [f.shape[1] for f in out.levels] == [16, 32, 64, 128]


def test_tiny_backbone_levels():
    bb = create_backbone("tiny_cnn")
    feats = bb(image(1, 32, 48))
    assert [tuple(f.shape[-2:]) for f in feats] == [(8, 12), (4, 6), (2, 3)]
    assert [f.shape[1] for f in feats] == bb.channels
    assert bb.reductions == [4, 8, 16]


# -- committee ------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["learnable", "shared"])
@pytest.mark.parametrize(("order", "count"), [(1, 5), (2, 11), (3, 15)])
def test_committee_member_counts_and_names(order, count, mode):
    model = build("padnet", PASCAL, committee_mode=mode, committee_order=order).eval()
    with torch.no_grad():
        out = model(image(2, 32, 32), committee=order)
    assert set(out.committee) == set(PASCAL)
    for k, members in out.committee.items():
        assert len(members) == count
        for raw in members.values():
            assert raw.shape == out.final[k].shape
        torch.testing.assert_close(members["initial"], out.initial[k])
    pairs = ["initial", "semseg", "saliency", "normals", "edge"]
    triplets = [
        "semseg+saliency",
        "semseg+normals",
        "semseg+edge",
        "saliency+normals",
        "saliency+edge",
        "normals+edge",
    ]
    quads = ["semseg+saliency+normals", "semseg+saliency+edge", "semseg+normals+edge"]
    quads += ["saliency+normals+edge"]
    expected = (pairs + triplets + quads)[:count]
    assert list(out.committee["parts"]) == expected


def _count_calls(modules) -> list[int]:
    calls = [0]

    def hook(*_):
        calls[0] += 1

    for m in modules:
        m.register_forward_hook(hook)
    return calls


def test_committee_zero_runs_no_extra_modules():
    model = build("padnet", PASCAL, committee_mode="shared").eval()
    k = len(PASCAL)
    sa = [m for row in model.distillation.attention.values() for m in row.values()]
    sa_calls = _count_calls(sa)
    head_calls = _count_calls(model.final_heads.values())
    with torch.no_grad():
        out = model(image())
    assert out.committee is None
    assert sa_calls[0] == k * (k - 1) and head_calls[0] == k
    sa_calls[0] = head_calls[0] = 0
    with torch.no_grad():
        model(image(), committee=1)
    # messages are shared with the main pass; only the extra head evaluations are added,
    # one batched call per task holding its K-1 members
    assert sa_calls[0] == k * (k - 1) and head_calls[0] == k + k


def test_committee_pair_equals_manual_computation():
    model = build("padnet", NYUD, committee_mode="shared").eval()
    x = image(2, 32, 40)
    with torch.no_grad():
        out = model(x, committee=2)
        feats = out.task_features
        for k in NYUD:
            for j in NYUD:
                if j == k:
                    continue
                refined = feats[k] + model.distillation.attention[k][j](feats[j])
                raw = model.final_heads[k](refined)[1]
                manual = F.interpolate(raw, size=(32, 40), mode="bilinear", align_corners=False)
                torch.testing.assert_close(out.committee[k][j], manual)
            # the member with every other task is the plain PAD-Net output
            full = "+".join(t for t in NYUD if t != k)
            torch.testing.assert_close(out.committee[k][full], out.final[k])
        # and the committee pass does not change the plain outputs
        plain = model(x)
    for k in NYUD:
        torch.testing.assert_close(plain.final[k], out.final[k])


def test_committee_order_is_validated():
    model = build("padnet", NYUD)
    with pytest.raises(ValueError, match="committee must be between 0 and K-1=2"):
        model(image(), committee=3)
    with pytest.raises(ValueError, match="use model 'padnet'"):
        build("hps", NYUD)(image(), committee=1)


# -- ground-truth substitution ----------------------------------------------------------------
@pytest.mark.parametrize("mode", ["add", "replace"])
def test_gt_substitution_changes_only_masked_samples(mode):
    model = build("padnet", NYUD, gt_substitution=True, gt_embed=mode).eval()
    b, h, w = 4, 32, 40
    x = image(b, h, w)
    g = torch.Generator().manual_seed(3)
    gt = {
        "semseg": torch.randint(0, 5, (b, h, w), generator=g),
        "depth": torch.rand(b, 1, h, w, generator=g) * 5,
        "normals": F.normalize(torch.randn(b, 3, h, w, generator=g), dim=1),
    }
    mask = torch.zeros(b, 3, dtype=torch.bool)
    mask[[0, 2], 0] = True  # samples 0 and 2 carry the semseg label
    with torch.no_grad():
        base = model(x)
        sub = model(x, gt=gt, gt_mask=mask, committee=1)
    changed = torch.tensor([True, False, True, False])
    for t in ("depth", "normals"):
        diff = (sub.final[t] - base.final[t]).flatten(1).abs().amax(1)
        assert torch.all(diff[changed] > 1e-4), t
        assert torch.all(diff[~changed] < 1e-6), t
        # committee members built from semseg see the substitution too
        cdiff = (sub.committee[t]["semseg"] - base.final[t]).flatten(1).abs().amax(1)
        assert torch.all(cdiff[changed] > 1e-4)
    for t in NYUD:  # initial predictions never see the ground truth
        torch.testing.assert_close(sub.initial[t], base.initial[t])
    # an all-False mask is the plain prediction path
    with torch.no_grad():
        none = model(x, gt=gt, gt_mask=torch.zeros(b, 3, dtype=torch.bool))
    torch.testing.assert_close(none.final["depth"], base.final["depth"])


def test_gt_substitution_uses_encoded_target():
    # substituting the one-hot of the model's own argmax ≈ feeding a sharpened prediction:
    # check the exact value by making the initial head output that one-hot's logits
    model = build("padnet", ("semseg", "depth"), gt_substitution=True).eval()
    x = image(2, 32, 32)
    labels = torch.randint(0, 5, (2, 32, 32), generator=torch.Generator().manual_seed(5))
    onehot_low = F.adaptive_avg_pool2d(F.one_hot(labels, 5).permute(0, 3, 1, 2).float(), (8, 8))
    head = model.initial_heads["semseg"]
    orig = head.forward

    def forced(inp, mc_dropout=False):
        feats, _ = orig(inp, mc_dropout)
        return feats, torch.log(onehot_low.clamp_min(1e-30))  # softmax(log p) = p

    mask = torch.tensor([[True, False], [True, False]])
    with torch.no_grad():
        sub = model(x, gt={"semseg": labels}, gt_mask=mask)
        head.forward = forced
        forced_out = model(x)
    torch.testing.assert_close(sub.final["depth"], forced_out.final["depth"], atol=1e-5, rtol=1e-4)


def test_gt_arguments_are_validated():
    plain = build("padnet", NYUD)
    mask = torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="gt_substitution: true"):
        plain(image(), gt={}, gt_mask=mask)
    model = build("padnet", NYUD, gt_substitution=True)
    with pytest.raises(ValueError, match="bool tensor of shape"):
        model(image(), gt={}, gt_mask=torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="no entry for them"):
        model(image(), gt={"semseg": torch.zeros(2, 32, 40, dtype=torch.long)}, gt_mask=mask)
    with pytest.raises(ValueError, match="needs both"):
        model(image(), gt={})
    with pytest.raises(ValueError, match="gt_embed must be one of"):
        build("padnet", NYUD, gt_substitution=True, gt_embed="concat")


# -- MC dropout -------------------------------------------------------------------------------
@pytest.mark.parametrize("model_name", ["hps", "padnet"])
def test_mc_dropout_only_when_asked_in_eval(model_name):
    model = build(model_name, NYUD, dropout=0.5).eval()
    x = image()
    with torch.no_grad():
        a, b = model(x), model(x)
        m1, m2 = model(x, mc_dropout=True), model(x, mc_dropout=True)
    for t in NYUD:
        torch.testing.assert_close(a.final[t], b.final[t])
        assert not torch.allclose(m1.final[t], m2.final[t])
        assert not torch.allclose(m1.final[t], a.final[t])
    torch.testing.assert_close(m1.embedding, a.embedding)  # BatchNorm stays in eval mode
    assert not model.training
    model.train()
    with torch.no_grad():
        t1, t2 = model(x), model(x)
    assert not torch.allclose(t1.final["depth"], t2.final["depth"])


# -- LL4AL ------------------------------------------------------------------------------------
def test_ranking_loss_hand_computed():
    pred = torch.tensor([1.0, 2.0, 0.5, 1.5], requires_grad=True)
    target = torch.tensor([3.0, 1.0, 2.0, 4.0], requires_grad=True)
    # pairs (0,3): sign(3-4)=-1, max(0, 1-(-1)(1-1.5)) = 0.5
    # pairs (1,2): sign(1-2)=-1, max(0, 1-(-1)(2-0.5)) = 2.5  → mean 1.5
    loss = ll4al_ranking_loss(pred, target)
    assert loss.item() == pytest.approx(1.5)
    loss.backward()
    assert target.grad is None  # target losses are detached
    # both terms are 1 + (l̂_i − l̂_j) > 0: d/dl̂_i = +1/2, d/dl̂_j = −1/2
    assert pred.grad.tolist() == pytest.approx([0.5, 0.5, -0.5, -0.5])
    # margin 0.2: pair terms max(0, 0.2-0.5)=0 and 0.2+1.5=1.7 → mean 0.85
    assert ll4al_ranking_loss(pred, target, margin=0.2).item() == pytest.approx(0.85)
    # a tie counts as "not greater" (𝟙 = −1)
    tie = ll4al_ranking_loss(torch.tensor([0.0, 3.0]), torch.tensor([2.0, 2.0]))
    assert tie.item() == pytest.approx(max(0.0, 1 + (0.0 - 3.0)))


def test_ranking_loss_matches_torch_margin_ranking_loss():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(7, 3, generator=g), torch.randn(7, 3, generator=g)
    i, j = torch.arange(3), torch.tensor([6, 5, 4])  # odd B: the middle sample is unpaired
    y = torch.where(target[i] > target[j], 1.0, -1.0)
    ref = F.margin_ranking_loss(pred[i], pred[j], y, margin=0.7)
    torch.testing.assert_close(ll4al_ranking_loss(pred, target, margin=0.7), ref)
    with pytest.raises(ValueError, match="at least 2"):
        ll4al_ranking_loss(torch.zeros(1), torch.zeros(1))


@pytest.mark.parametrize("per_task", [True, False])
def test_loss_prediction_module_matches_manual(per_task):
    torch.manual_seed(0)
    mod = LossPredictionModule([4, 6], num_tasks=3, hidden=5, per_task=per_task)
    levels = [torch.randn(2, 4, 3, 3), torch.randn(2, 6, 2, 2)]
    cols = []
    for head in mod.heads:  # one independent module per task (WACV24), or one for all
        fcs = head.fcs
        hidden = [torch.relu(fc[0](f.mean(dim=(2, 3)))) for fc, f in zip(fcs, levels, strict=True)]
        cols.append(head.out(torch.cat(hidden, dim=1)))
    manual = torch.cat(cols, dim=1)
    assert len(mod.heads) == (3 if per_task else 1)
    torch.testing.assert_close(mod(levels), manual)
    assert mod(levels).shape == (2, 3)
    if per_task:  # task 0's loss depends on task 0's module only
        mod(levels)[:, 0].sum().backward()
        assert not mod.heads[1].out.weight.grad.any() and mod.heads[0].out.weight.grad.any()


def test_loss_prediction_detach_stops_backbone_gradient():
    model = build("hps", NYUD, loss_prediction=True)
    assert build("hps", NYUD).loss_pred_module is None
    assert build("padnet", NYUD)(image()).loss_pred is None
    model.loss_pred_detach = True
    model(image()).loss_pred.sum().backward()
    assert all(p.grad is None for p in model.encoder.backbone.parameters())
    assert all(p.grad is not None for p in model.loss_pred_module.parameters())


# -- gradients --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("model_name", "kw"),
    [("hps", {}), ("padnet", {}), ("padnet", {"gt_substitution": True})],
)
def test_gradients_reach_every_parameter(model_name, kw):
    model = build(model_name, NYUD, loss_prediction=True, **kw).train()
    out = model(image(4, 32, 32), committee=1 if model_name == "padnet" else 0)
    loss = sum((v**2).mean() for v in out.final.values())
    if out.initial is not None:
        loss = loss + sum((v**2).mean() for v in out.initial.values())
    if out.committee is not None:  # the learnable committee's blocks
        loss = loss + sum((v**2).mean() for m in out.committee.values() for v in m.values())
    loss = loss + (out.loss_pred**2).mean()
    loss.backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert dead == []


def test_final_outputs_alone_train_the_distillation_and_encoder():
    model = build("padnet", NYUD).train()
    out = model(image(4, 32, 32))
    sum((v**2).mean() for v in out.final.values()).backward()
    used = ["encoder.", "distillation.", "final_heads.", "initial_heads.semseg.body"]
    for name, p in model.named_parameters():
        if any(name.startswith(u) for u in used):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        if name.startswith("initial_heads.") and ".classifier." in name:
            assert p.grad is None, name  # initial predictions are deep supervision only


# -- registry and backbone errors ---------------------------------------------------------------
def test_unknown_model_lists_known_models():
    with pytest.raises(UnknownNameError, match="known models: detseg, hps, padnet"):
        create_model("pad-net", make_tasks(NYUD))
    assert {"hps", "padnet"} <= set(MODELS.names())


def test_unknown_backbone_is_explained():
    with pytest.raises(ValueError, match="neither built in .*tiny_cnn.* nor a timm model"):
        build("hps", NYUD, backbone="resnet_does_not_exist")


def test_pretrained_without_network_gives_clear_error(monkeypatch):
    import timm

    real = timm.create_model

    def offline(name, pretrained=False, **kw):
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return real(name, pretrained=False, **kw)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(PretrainedWeightsError) as err:
        build("padnet", NYUD, backbone="resnet18", pretrained=True)
    msg = str(err.value)
    assert "'resnet18'" in msg and "could not be downloaded" in msg
    assert "pretrained: false" in msg and "cache" in msg
    build("padnet", NYUD, backbone="resnet18", pretrained=False)  # unaffected
    with pytest.raises(PretrainedWeightsError, match="tiny_cnn' has no pretrained weights"):
        build("hps", NYUD, pretrained=True)
