"""WACV24's learnable committee: it trains on the labelled set, and, detached, leaves the
main PAD-Net exactly as a run without it."""

from __future__ import annotations

from typing import Any

import torch

from mtal.tasks import create_task
from mtal.training.module import MultiTaskModule

TASKS = ["semseg", "depth", "normals"]
NUM_CLASSES = {"semseg": 3}
SIZE = 16


def module(**model_kwargs: Any) -> MultiTaskModule:
    torch.manual_seed(0)
    kw = {"head_channels": 8, "encoder_channels": 8, **model_kwargs}
    return MultiTaskModule(
        tasks=TASKS,
        num_classes=NUM_CLASSES,
        model="padnet",
        backbone="tiny_cnn",
        model_kwargs=kw,
        scheduler="none",
        lr=1e-2,
    )


def batches(n: int = 2, b: int = 4) -> list[dict[str, Any]]:
    g = torch.Generator().manual_seed(7)
    out = []
    for i in range(n):
        image = torch.randn(b, 3, SIZE, SIZE, generator=g)
        # targets tied to the image so a member can learn them
        sem = (image[:, 0] > 0).long() + (image[:, 1] > 0).long()
        depth = image[:, 2:3].abs() + 0.5
        normals = torch.nn.functional.normalize(image, dim=1)
        labelled = torch.ones(b, 3, dtype=torch.bool)
        labelled[i % b, 1] = False  # one unlabelled pair, as in a partial pool
        depth[i % b] = create_task("depth").empty_target(SIZE, SIZE)
        out.append(
            {
                "image": image,
                "targets": {"semseg": sem, "depth": depth, "normals": normals},
                "labelled": labelled,
                "weight": torch.ones(b, 3),
                "index": torch.arange(b),
            }
        )
    return out


def train(m: MultiTaskModule, steps: int) -> list[float]:
    """Plain Adam steps on ``compute_losses``; returns the committee loss of each step."""
    m.train()
    torch.manual_seed(1)  # the same dropout masks for every run
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    data = batches()
    history = []
    for step in range(steps):
        res = m.compute_losses(data[step % len(data)])
        opt.zero_grad()
        res["total"].backward()
        opt.step()
        history.append(float(res["committee"]) if res["committee"] is not None else float("nan"))
    return history


def final_outputs(m: MultiTaskModule) -> dict[str, torch.Tensor]:
    m.eval()
    with torch.no_grad():
        return m(batches()[0]["image"]).final


def test_learnable_committee_loss_falls_and_detached_final_is_unchanged() -> None:
    learn = module(committee_mode="learnable")
    shared = module(committee_mode="shared")
    assert sum(p.numel() for p in learn.net.learnable_committee.parameters()) > 0
    assert shared.net.learnable_committee is None
    hist = train(learn, 40)
    train(shared, 40)
    assert hist[-1] < 0.75 * hist[0], hist
    a, b = final_outputs(learn), final_outputs(shared)
    for t in TASKS:  # same seed, with and without the committee: identical main network
        torch.testing.assert_close(a[t], b[t], rtol=0, atol=0)
    # the test can fail: with gradients into the shared network the main outputs move
    coupled = module(committee_mode="learnable", committee_detach=False)
    train(coupled, 5)
    c = final_outputs(coupled)
    assert any(not torch.equal(a[t], c[t]) for t in TASKS)


def test_committee_loss_is_task_loss_of_members_over_labelled_by_hand() -> None:
    m = module(committee_mode="learnable")
    batch = batches()[0]
    res = m.compute_losses(batch)
    members = res["output"].committee
    expected = 0.0
    for k, t in enumerate(TASKS):
        task = m.task_objects[t]
        lab = batch["labelled"][:, k]
        for name, raw in members[t].items():
            if name == "initial":
                continue
            per = task.loss(raw, batch["targets"][t])
            expected += float(per[lab].sum() / lab.sum())
    assert abs(float(res["committee"]) - expected) < 1e-5 * max(1.0, expected)
    assert {t: sorted(ms) for t, ms in members.items()} == {
        "semseg": ["depth", "initial", "normals"],
        "depth": ["initial", "normals", "semseg"],
        "normals": ["depth", "initial", "semseg"],
    }


def test_discrepancy_kl_option_against_torch_kl_div() -> None:
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    raw, other = torch.randn(2, 4, 3, 3, generator=g), torch.randn(2, 4, 3, 3, generator=g)
    sem = create_task("semseg", num_classes=4, discrepancy_target="kl")
    ref = F.kl_div(raw.log_softmax(1), other.softmax(1), reduction="none").sum(1).mean((1, 2))
    torch.testing.assert_close(sem.discrepancy(raw, other), ref)
    # soft = KL + H(member): the member's own entropy is part of the default
    soft = create_task("semseg", num_classes=4).discrepancy(raw, other)
    entropy = -(other.softmax(1) * other.log_softmax(1)).sum(1).mean((1, 2))
    torch.testing.assert_close(soft, ref + entropy)
    # binary (fixed pos_weight w = 0.5): KL of Bernoulli(σ(o)) to Bernoulli(σ(r)) times 0.5
    edge = create_task("edge", pos_weight=0.5, discrepancy_target="kl")
    r, o = torch.zeros(1, 1, 1, 1), torch.full((1, 1, 1, 1), float(torch.log(torch.tensor(3.0))))
    p, q = 0.75, 0.5  # σ(o), σ(r)
    kl = p * torch.log(torch.tensor(p / q)) + (1 - p) * torch.log(torch.tensor((1 - p) / (1 - q)))
    torch.testing.assert_close(edge.discrepancy(r, o), 0.5 * kl.view(1))
    assert float(edge.discrepancy(o, o)) == 0.0


def test_training_time_gt_substitution_option_feeds_the_labels() -> None:
    """PartAL option (off by default): labelled tasks' ground truth enters the distillation
    input in training; unlabelled pairs (sample i % b of depth) are never substituted."""
    kw = {"gt_substitution": True, "committee_mode": "shared"}
    off, on = (
        module(**kw),
        MultiTaskModule(
            tasks=TASKS,
            num_classes=NUM_CLASSES,
            model="padnet",
            backbone="tiny_cnn",
            model_kwargs={"head_channels": 8, "encoder_channels": 8, **kw},
            scheduler="none",
            train_gt_substitution=True,
        ),
    )
    on.net.load_state_dict(off.net.state_dict())
    seen = {}
    original = on.net.forward

    def spy(image, **k):
        seen.update(k)
        return original(image, **k)

    on.net.forward = spy
    batch = batches()[0]
    off.eval(), on.eval()  # no dropout: the outputs differ only by the substitution
    a, b = off.compute_losses(batch)["output"], on.compute_losses(batch)["output"]
    assert torch.equal(seen["gt_mask"], batch["labelled"])
    assert any(not torch.equal(a.final[t], b.final[t]) for t in TASKS)
    for t in TASKS:  # initial predictions never see the ground truth
        torch.testing.assert_close(a.initial[t], b.initial[t])
