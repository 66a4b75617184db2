"""``model: smp``: segmentation_models_pytorch encoder-decoders as the shared trunk with
mtal's per-task heads (random encoder weights: nothing is downloaded)."""

from __future__ import annotations

import pytest
import torch

from mtal.models import create_model
from mtal.tasks import create_task

TASKS = ("semseg", "depth", "normals")


def build(arch: str = "fpn", **kw):
    torch.manual_seed(0)
    tasks = {n: create_task(n, num_classes=5 if n == "semseg" else None) for n in TASKS}
    kw.setdefault("head_channels", 8)
    return create_model("smp", tasks, backbone="resnet18", arch=arch, **kw)


def image(b: int = 2, h: int = 32, w: int = 40) -> torch.Tensor:
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(
    ("arch", "channels", "feature_size"),
    [("fpn", 128, (8, 16)), ("deeplabv3plus", 256, (8, 12)), ("unet", 16, (32, 64))],
)
def test_shapes_per_architecture(arch, channels, feature_size):
    # 32x40 is not a multiple of resnet18's stride (32 for fpn/unet, 16 for DeepLabV3+):
    # padded to 32x64 / 32x48, outputs cropped back to 32x40
    model = build(arch, loss_prediction=True).eval()
    out = model(image())
    assert model.decoder_channels == channels
    assert {n: tuple(v.shape) for n, v in out.final.items()} == {
        "semseg": (2, 5, 32, 40),
        "depth": (2, 1, 32, 40),
        "normals": (2, 3, 32, 40),
    }
    assert {tuple(f.shape) for f in out.task_features.values()} == {(2, 8, *feature_size)}
    assert out.embedding.shape == (2, 512) and out.loss_pred.shape == (2, 3)
    assert out.committee is None and out.initial is None


def test_divisible_input_is_trunk_then_head():
    # a side divisible by the stride is not padded: output = head(decoder(encoder(x)))
    model = build("unet").eval()
    x = image(1, 32, 32)
    with torch.no_grad():
        out = model(x)
        trunk = model.decoder(model.encoder(x))
        _, raw = model.heads["depth"](trunk)
    torch.testing.assert_close(out.final["depth"], model.upsample(raw, (32, 32)))


def test_gradients_reach_every_parameter():
    model = build("fpn", loss_prediction=True).train()
    out = model(image(2, 32, 32))
    loss = sum((v**2).mean() for v in out.final.values()) + (out.loss_pred**2).mean()
    loss.backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert dead == []


def test_mc_dropout_only_when_asked():
    model = build("fpn", dropout=0.5).eval()
    x = image(1, 32, 32)
    with torch.no_grad():
        a, b = model(x), model(x)
        m1, m2 = model(x, mc_dropout=True), model(x, mc_dropout=True)
    torch.testing.assert_close(a.final["depth"], b.final["depth"])
    assert not torch.allclose(m1.final["depth"], m2.final["depth"])


def test_errors_name_the_field():
    with pytest.raises(ValueError, match="model.backbone='tiny_cnn' is not an smp encoder"):
        create_model("smp", {"depth": create_task("depth")}, backbone="tiny_cnn")
    with pytest.raises(ValueError, match="arch='segformer9'"):
        build("segformer9")
    with pytest.raises(ValueError, match="no cross-task committee"):
        build()(image(), committee=1)


def test_pretrained_means_imagenet_unless_encoder_weights(monkeypatch):
    import mtal.models.smp.model as smp_model

    asked = []
    real = smp_model.build_trunk

    def spy(arch, name, weights, depth, decoder):
        asked.append(weights)
        return real(arch, name, None, depth, decoder)  # never download

    monkeypatch.setattr(smp_model, "build_trunk", spy)
    build(pretrained=True)
    build(pretrained=True, encoder_weights="ssl")
    build(pretrained=False)
    assert asked == ["imagenet", "ssl", None]


def test_smp_model_through_the_cli_config():
    from mtal.cli import run_cli

    cli = run_cli(
        ["fit", "--config", "configs/synthetic/smoke.yaml", "--model.model", "smp",
         "--model.backbone", "resnet18", "--model.model_kwargs", '{"arch": "unet"}'],
        execute=False,
    )  # fmt: skip
    assert type(cli.model.net).__name__ == "SMPNet"
    assert list(cli.model.net.heads) == ["semseg", "depth", "normals"]
