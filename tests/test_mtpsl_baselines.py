"""MTPSL's Contrastive-Loss and Discriminator-Loss baselines (``partial_kwargs.consistency``):
InfoNCE and GAN losses against hand values, the gradient split of the simultaneous GAN
update, the discriminator's parameter group, errors, and a CLI training step for both."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from mtal.tasks import create_task
from mtal.training.consistency import (
    CONSISTENCY_LOSSES,
    ContrastiveConsistency,
    DiscriminatorConsistency,
    discriminator_loss,
    generator_loss,
)
from mtal.training.partial import CrossTaskConsistency
from mtal.types import MultiTaskOutput

ROOT = Path(__file__).resolve().parents[1]


def maps(rows: list[list[float]]) -> torch.Tensor:
    """n embeddings as n×C×1×1 maps."""
    return torch.tensor(rows).view(len(rows), -1, 1, 1)


# -- Contrastive-Loss ---------------------------------------------------------------------


def test_contrastive_infonce_hand_computed() -> None:
    # cosines S[i, j] = cos(m_s[i], m_t[j]):
    #   m_s = (1,0), (0,1), (1,1);  m_t = (1,0), (1,1), (0,1)
    #   S = [[1, 1/√2, 0], [0, 1/√2, 1], [1/√2, 1, 1/√2]];  τ = 0.5 → S/τ rows
    #   [2, √2, 0], [0, √2, 2], [√2, 2, √2];  l_i = −S_ii/τ + log Σ_j exp(S_ij/τ)
    #   l_0 = −2 + log(e² + e^√2 + 1)   = 0.5259131455
    #   l_1 = −√2 + log(1 + e^√2 + e²)  = 1.1116995831
    #   l_2 = −√2 + log(2e^√2 + e²)     = 1.3340540894
    m_s = maps([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    m_t = maps([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    loss, side = ContrastiveConsistency(2, 3, temperature=0.5)(m_s, m_t, torch.zeros(3, 3, 3))
    assert side is None
    assert loss.tolist() == pytest.approx([0.5259131455, 1.1116995831, 1.3340540894], abs=1e-6)
    # symmetric: the label→prediction direction uses the columns of S/τ:
    # [2, 0, √2] → 0.5259131455, [√2, √2, 2] → 1.3340540894, [0, 2, √2] → 1.1116995831
    sym, _ = ContrastiveConsistency(2, 3, temperature=0.5, symmetric=True)(m_s, m_t, None)
    expected = [0.5259131455, (1.1116995831 + 1.3340540894) / 2, (1.3340540894 + 1.1116995831) / 2]
    assert sym.tolist() == pytest.approx(expected, abs=1e-6)


def test_contrastive_identical_positives_orthogonal_negatives() -> None:
    # S_ii = 1, S_ij = 0: l = −1/τ + log(e^{1/τ} + (n − 1)) = log(1 + (n − 1)e^{−1/τ});
    # n = 3, τ = 0.1: log(1 + 2e^{−10}) = 9.079573747e-05
    eye = maps([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    term = ContrastiveConsistency(3, 3, temperature=0.1)
    loss, _ = term(eye, eye.clone(), None)
    assert loss.tolist() == pytest.approx([9.079573747e-05] * 3, abs=1e-7)  # float32
    # the same per pixel: two pixels, both with identical positives and orthogonal negatives
    two = torch.cat([eye, eye.roll(1, dims=0)], dim=3)  # n×3×1×2
    assert term(two, two.clone(), None)[0].tolist() == pytest.approx([9.08e-05] * 3, abs=1e-7)
    # a negative turned toward image 0's anchor raises image 0's loss:
    # S_01 = cos((1,0,0), (1,1,0)) = 1/√2 → l_0 = −10 + log(e^10 + e^{10/√2} + 1) = 0.0521174
    closer = eye.clone()
    closer[1, 0] = 1.0
    assert term(eye, closer, None)[0][0].item() == pytest.approx(0.0521174, rel=1e-4)
    # one selected image: no negative, log 1 = 0
    assert term(eye[:1], eye[:1].clone(), None)[0].tolist() == [0.0]
    with pytest.raises(ValueError, match="temperature"):
        ContrastiveConsistency(3, 3, temperature=0.0)


# -- Discriminator-Loss -------------------------------------------------------------------


def test_discriminator_and_generator_losses_hand_computed() -> None:
    # one image, two pixels: real logits (2, 0), fake logits (−1, 0); softplus(x) = log(1+e^x)
    # D: mean[softplus(−r) + softplus(f)] = ((0.126928 + 0.313262) + (0.693147 + 0.693147)) / 2
    #    = 0.9132420298;  G: mean[softplus(−f)] = (1.313262 + 0.693147) / 2 = 1.0032044340
    real = torch.tensor([2.0, 0.0]).view(1, 1, 1, 2)
    fake = torch.tensor([-1.0, 0.0]).view(1, 1, 1, 2)
    assert discriminator_loss(real, fake).item() == pytest.approx(0.9132420298, abs=1e-7)
    assert generator_loss(fake).item() == pytest.approx(1.0032044340, abs=1e-7)


def test_discriminator_gradients_reach_each_player_only() -> None:
    torch.manual_seed(0)
    term = DiscriminatorConsistency(4, 3, channels=[5])
    m_s = torch.randn(2, 4, 3, 3, requires_grad=True)
    m_t = torch.randn(2, 4, 3, 3, requires_grad=True)
    pair = torch.zeros(2, 3, 3)
    pair[:, 0, 1] = 1.0
    l_ct, side = term(m_s, m_t, pair)
    assert l_ct.shape == (2,) and side is not None and side.shape == (2,)
    d_params = list(term.discriminator.parameters())
    # the generator side: gradient to the mapped prediction, none to D or the mapped label
    grads = torch.autograd.grad(l_ct.sum(), [m_s, m_t, *d_params], allow_unused=True)
    assert grads[0] is not None and grads[0].abs().sum() > 0
    assert all(g is None for g in grads[1:])
    # the discriminator side: gradient to D only
    grads = torch.autograd.grad(side.sum(), [m_s, m_t, *d_params], allow_unused=True)
    assert grads[0] is None and grads[1] is None
    assert all(g is not None for g in grads[2:])
    # D is conditioned on the pair: another pair scores the same maps differently
    other = torch.zeros(2, 3, 3)
    other[:, 1, 0] = 1.0
    with torch.no_grad():
        for p in term.discriminator.parameters():
            p.normal_()
    assert not torch.allclose(term(m_s, m_t, pair)[0], term(m_s, m_t, other)[0])


# -- the mtpsl term -----------------------------------------------------------------------


def tasks3() -> dict:
    return {
        "semseg": create_task("semseg", num_classes=4),
        "depth": create_task("depth"),
        "normals": create_task("normals"),
    }


class _SameEmbedding(torch.nn.Module):
    """Maps every input to the same embedding: every cosine in the batch is 1."""

    def forward(self, x: torch.Tensor, task: str, pair: torch.Tensor) -> torch.Tensor:
        return torch.ones(x.shape[0], 2, 1, 1) + 0 * x.mean()


def test_contrastive_term_sums_pairs_per_image_by_hand() -> None:
    b, size = 4, 8
    g = torch.Generator().manual_seed(0)
    batch = {
        "image": torch.randn(b, 3, size, size, generator=g),
        "targets": {
            "semseg": torch.randint(0, 4, (b, size, size), generator=g),
            "depth": torch.rand(b, 1, size, size, generator=g) + 0.5,
            "normals": torch.nn.functional.normalize(torch.randn(b, 3, size, size), dim=1),
        },
        "labelled": torch.tensor([[1, 0, 0], [0, 1, 0], [1, 1, 1], [0, 1, 1]], dtype=torch.bool),
    }
    out = MultiTaskOutput(
        final={
            "semseg": torch.randn(b, 4, size, size),
            "depth": torch.randn(b, 1, size, size),
            "normals": torch.randn(b, 3, size, size),
        },
        extras={"shared": torch.randn(b, 2, 1, 1)},
    )
    term = CrossTaskConsistency(
        tasks3(),
        feature_channels=2,
        weight=2.0,
        reg_weight=0.0,
        consistency="contrastive",
        mapping_kwargs={"channels": [2]},
    )
    term.mapping = _SameEmbedding()
    # all similarities equal → each anchor costs log n for a pair with n selected images.
    # pairs (s unlabelled, t labelled): (semseg, depth) selects images 1, 3 → log 2 each;
    # every other pair selects one image (0) or none (0). Per image: 0, log2, 0, log2;
    # mean over 4 images, times weight 2: log 2
    loss = term(torch.nn.Module(), batch, out, batch["labelled"])
    assert loss.item() == pytest.approx(math.log(2.0), rel=1e-6)


def test_discriminator_has_its_own_parameter_group() -> None:
    term = CrossTaskConsistency(
        tasks3(),
        feature_channels=8,
        mapping_kwargs={"channels": [4]},
        film_lr=1e-3,
        consistency="discriminator",
        consistency_kwargs={"channels": [6], "lr": 2e-4},
    )
    groups = term.param_groups(1e-4)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(term.parameters()))  # each parameter once
    disc = {id(p) for p in term.consistency.discriminator.parameters()}
    by_lr = {g["lr"]: {id(p) for p in g["params"]} for g in groups}
    assert by_lr[2e-4] == disc and 1e-3 in by_lr and 1e-4 in by_lr
    assert not disc & by_lr[1e-4]


def test_baseline_option_errors_name_the_field() -> None:
    assert {"cosine", "contrastive", "discriminator"} <= set(CONSISTENCY_LOSSES.names())
    with pytest.raises(ValueError, match=r"consistency='contrastive'.*mapping='direct'"):
        CrossTaskConsistency(tasks3(), 8, mapping="direct", consistency="contrastive")
    with pytest.raises(KeyError, match="measures: contrastive, cosine, discriminator"):
        CrossTaskConsistency(tasks3(), 8, mapping_kwargs={"channels": [4]}, consistency="gan")
    with pytest.raises(ValueError, match=r"consistency_kwargs \['tau'\]"):
        CrossTaskConsistency(
            tasks3(),
            8,
            mapping_kwargs={"channels": [4]},
            consistency="contrastive",
            consistency_kwargs={"tau": 0.1},
        )


# -- the CLI path -------------------------------------------------------------------------


def _cli_args(consistency: str, root: Path) -> list[str]:
    kwargs = {
        "mapping": "joint",
        "mapping_kwargs": {"channels": [8, 16]},
        "consistency": consistency,
        "consistency_kwargs": {"channels": [8]} if consistency == "discriminator" else {},
        "seed": 0,
    }
    return [
        "fit",
        "--config",
        str(ROOT / "configs/synthetic/smoke.yaml"),
        "--model.model=segnet",
        "--model.backbone=segnet",
        "--model.model_kwargs",
        json.dumps({"filters": [8, 16]}),
        "--model.sl_normalisation=per_image",
        "--model.partial_supervision=mtpsl",
        "--model.partial_kwargs",
        json.dumps(kwargs),
        "--data.initial_labels=one",
        "--data.initial=0.5",
        "--trainer.max_steps=2",
        "--trainer.limit_val_batches=0",
        "--trainer.logger=false",
        "--trainer.enable_checkpointing=false",
        f"--trainer.default_root_dir={root}",
    ]


@pytest.mark.parametrize("consistency", ["contrastive", "discriminator"])
def test_cli_training_step_runs(consistency: str, tmp_path: Path) -> None:
    from mtal.cli import run_cli

    built = run_cli(_cli_args(consistency, tmp_path), execute=False)  # same seed, not run
    before = {k: v.clone() for k, v in built.model.partial.state_dict().items()}
    cli = run_cli(_cli_args(consistency, tmp_path))
    module = cli.model
    assert module.partial.consistency_name == consistency
    assert module.trainer.global_step == 2
    assert math.isfinite(float(module.trainer.callback_metrics["train/mtpsl_loss"]))
    after = module.partial.state_dict()
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k].cpu())}
    assert any(k.startswith("mapping.") for k in changed)  # the mapping trained
    if consistency == "discriminator":  # and the discriminator, through its own group
        assert any(k.startswith("consistency.discriminator.") for k in changed)
        assert len(module.trainer.optimizers[0].param_groups) == 4


@pytest.mark.parametrize("smoke", [False, True], ids=["full", "smoke"])
def test_grid_rows_build_the_baselines(smoke: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every Contrastive-Loss / Discriminator-Loss row of the three paper grids builds its
    term; Cityscapes (two tasks) has the one-label rows only."""
    from mtal.experiment import load_grid

    monkeypatch.chdir(ROOT)
    built = set()
    for name in ("nyuv2", "cityscapes", "pascal"):
        grid = load_grid(f"experiments/mtpsl_{name}.yaml", smoke=smoke)
        for variant, cell in grid.variants.items():
            kwargs = dict(cell.get("model.partial_kwargs") or {})
            consistency = kwargs.get("consistency", "cosine")
            if consistency == "cosine":
                continue
            assert variant == f"{consistency}-{cell['data.initial_labels']}"
            term = CrossTaskConsistency(tasks3(), feature_channels=16, **kwargs)
            assert term.consistency_name == consistency and term.mapping_name == "joint"
            assert term.reg_weight == 0.5 and term.weight == 2.0  # as ours: only L_ct differs
            built.add((name, variant))
    settings = {"nyuv2": ("one", "random"), "cityscapes": ("one",), "pascal": ("one", "random")}
    assert built == {
        (g, f"{c}-{s}")
        for g, ss in settings.items()
        for s in ss
        for c in CONSISTENCY_LOSSES
        if c != "cosine"
    }
