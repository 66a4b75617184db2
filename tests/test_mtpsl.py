"""Multi-task partially-supervised learning (MTPSL, Li et al. CVPR 2022): the pair code A
and FiLM, the cosine consistency and regulariser, Eq. 1's normalisation, SSL, SegNet,
partial initial label sets, split files, and that no unlabelled target is ever read."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mtal.data.pool import LabelPool
from mtal.models.mtpsl import FiLM, JointTaskMapping, create_mapping, pair_matrix
from mtal.tasks import create_task
from mtal.training.partial import (
    PARTIAL_SUPERVISION,
    CropConsistency,
    CrossTaskConsistency,
    consistency_terms,
    cosine_distance,
    per_image_losses,
    per_task_losses,
)
from mtal.types import MultiTaskOutput

TASKS = ["semseg", "depth", "normals"]


def tasks3() -> dict:
    return {
        "semseg": create_task("semseg", num_classes=4),
        "depth": create_task("depth"),
        "normals": create_task("normals"),
    }


# -- A and FiLM --------------------------------------------------------------------------


def test_pair_matrix_is_the_asymmetric_one_hot_of_each_ordered_pair() -> None:
    k = 3
    seen = set()
    for s in range(k):
        for t in range(k):
            if s == t:
                with pytest.raises(ValueError, match="same task"):
                    pair_matrix(k, s, t)
                continue
            a = pair_matrix(k, s, t)
            assert a.shape == (3, 3) and a.sum() == 1 and a[s, t] == 1
            assert not torch.equal(a, a.T)  # asymmetric: (s, t) differs from (t, s)
            seen.add(tuple(a.flatten().tolist()))
    assert len(seen) == 6  # K(K-1) distinct codes
    with pytest.raises(ValueError, match="out of range"):
        pair_matrix(3, 0, 3)


def test_film_shapes_and_values_per_pair() -> None:
    k, c, b = 3, 5, 2
    film = FiLM(k, c)
    h = torch.randn(b, c, 4, 4)
    for s, t in [(0, 1), (1, 0), (2, 1)]:
        scale, shift = film.coefficients(pair_matrix(k, s, t).expand(b, -1, -1))
        assert scale.shape == (b, c) and shift.shape == (b, c)
        # initialised to the identity: scale 1, shift 0
        assert torch.equal(film(h, pair_matrix(k, s, t).expand(b, -1, -1)), h)
    # hand-set a_c, a_b: scale = W_c[:, s*K+t] + b_c, shift = W_b[:, s*K+t] + b_b
    with torch.no_grad():
        film.scale.weight.copy_(torch.arange(c * k * k, dtype=torch.float32).view(c, k * k))
        film.shift.weight.fill_(0.5)
        film.shift.bias.fill_(-1.0)
    out = film(torch.ones(1, c, 1, 1), pair_matrix(k, 1, 2))
    col = 1 * k + 2
    expected_scale = torch.tensor([row * 9 + col + 1.0 for row in range(c)])
    assert torch.allclose(out.view(c), expected_scale - 0.5)


def test_joint_mapping_shapes_per_pair_and_conditioning() -> None:
    torch.manual_seed(0)
    channels = {"semseg": 4, "depth": 1, "normals": 3}
    net = JointTaskMapping(channels, out_channels=12, channels=[6, 8])
    for m in net.modules():  # make FiLM non-trivial so that pairs differ
        if isinstance(m, FiLM):
            torch.nn.init.normal_(m.scale.weight)
    net.eval()
    x = torch.rand(2, 1, 16, 16)
    outs = {}
    for s, t in [(1, 0), (1, 2)]:
        pair = pair_matrix(3, s, t).expand(2, -1, -1)
        out = net(x, "depth", pair)
        assert out.shape == (2, 12, 4, 4)  # two levels, each with a 2x2 max-pool
        outs[(s, t)] = out
    assert not torch.allclose(outs[(1, 0)], outs[(1, 2)])  # conditioned on the pair
    plain = create_mapping(
        "joint_unconditioned", in_channels=channels, out_channels=12, channels=[6, 8]
    )
    assert not any(isinstance(m, FiLM) for m in plain.modules())
    assert any(isinstance(m, FiLM) for m in net.modules())


# -- L_ct and R --------------------------------------------------------------------------


def test_consistency_and_regulariser_hand_computed() -> None:
    ms = torch.tensor([[1.0, 0.0]]).view(1, 2, 1, 1)
    mt = torch.tensor([[0.0, 1.0]]).view(1, 2, 1, 1)
    f = torch.tensor([[1.0, 1.0]]).view(1, 2, 1, 1)
    l_ct, reg = consistency_terms(ms, mt, f)
    assert l_ct.item() == pytest.approx(1.0)  # orthogonal: 1 - 0
    assert reg.item() == pytest.approx(2 * (1 - 1 / math.sqrt(2)), abs=1e-6)
    # two pixels: cos 1 and cos 0 -> mean 0.5 -> distance 0.5
    a = torch.tensor([[[1.0, 1.0]], [[0.0, 0.0]]]).view(1, 2, 1, 2)
    b = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]]).view(1, 2, 1, 2)
    assert cosine_distance(a, b).item() == pytest.approx(0.5)
    # a pooled B×D feature is compared with every pixel
    assert cosine_distance(a, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(0.0)


class _FixedMapping(torch.nn.Module):
    """Maps every input to the same embedding, whatever the task: m^s = m^t."""

    def __init__(self, embedding: torch.Tensor) -> None:
        super().__init__()
        self.embedding = embedding

    def forward(self, x: torch.Tensor, task: str, pair: torch.Tensor) -> torch.Tensor:
        return self.embedding.expand(x.shape[0], -1, -1, -1) + 0 * x.mean()


def batch3(b: int = 4, size: int = 8) -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "image": torch.randn(b, 3, size, size, generator=g),
        "targets": {
            "semseg": torch.randint(0, 4, (b, size, size), generator=g),
            "depth": torch.rand(b, 1, size, size, generator=g) + 0.5,
            "normals": torch.nn.functional.normalize(
                torch.randn(b, 3, size, size, generator=g), dim=1
            ),
        },
        "labelled": torch.tensor([[1, 0, 0], [0, 1, 0], [1, 1, 1], [0, 1, 1]], dtype=torch.bool),
        "weight": torch.ones(b, 3),
        "index": torch.arange(b),
    }


def fake_output(b: int = 4, size: int = 8, feat: torch.Tensor | None = None) -> MultiTaskOutput:
    g = torch.Generator().manual_seed(1)
    final = {
        "semseg": torch.randn(b, 4, size, size, generator=g, requires_grad=True),
        "depth": torch.randn(b, 1, size, size, generator=g, requires_grad=True),
        "normals": torch.randn(b, 3, size, size, generator=g, requires_grad=True),
    }
    shared = feat if feat is not None else torch.randn(b, 2, 1, 1, generator=g)
    return MultiTaskOutput(final=final, embedding=shared.mean((2, 3)), extras={"shared": shared})


def test_coinciding_mapped_embeddings_give_zero_consistency() -> None:
    batch = batch3()
    emb = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    feat = torch.tensor([1.0, 1.0]).view(1, 2, 1, 1).expand(4, -1, -1, -1)
    out = fake_output(feat=feat)
    term = CrossTaskConsistency(
        tasks3(), feature_channels=2, weight=2.0, reg_weight=0.0, mapping_kwargs={"channels": [2]}
    )
    term.mapping = _FixedMapping(emb)
    loss = term(torch.nn.Module(), batch, out, batch["labelled"])
    assert loss.item() == 0.0
    # with R: per (s unlabelled, t labelled) pair R = 2·(1 − cos(m, f)) = 2·(1 − 1/√2);
    # pairs per image: [1,0,0] → 2, [0,1,0] → 2, [1,1,1] → 0, [0,1,1] → 2; mean over 4
    term.reg_weight = 0.5
    loss = term(torch.nn.Module(), batch, out, batch["labelled"])
    per_pair = 0.5 * 2 * (1 - 1 / math.sqrt(2))
    assert loss.item() == pytest.approx(2.0 * per_pair * (2 + 2 + 0 + 2) / 4, rel=1e-6)
    # the official code's ramp-up: linear over the first half of training (25% → 0.5)
    term.rampup = "linear"
    halfway = torch.nn.Module()
    halfway._trainer = type("T", (), {"estimated_stepping_batches": 100})()
    halfway.global_step = 25
    ramped = term(halfway, batch, out, batch["labelled"])
    assert ramped.item() == pytest.approx(0.5 * loss.item(), rel=1e-6)


# -- Eq. 1 --------------------------------------------------------------------------------


def test_eq1_per_image_normalisation_by_hand() -> None:
    losses = torch.tensor([[1.0, 2.0, float("nan")], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    labelled = torch.tensor([[1, 1, 0], [0, 0, 1], [0, 0, 0]], dtype=torch.bool)
    vec = per_image_losses(losses, labelled)
    # images with >= 1 label: N = 2; image 0: (1 + 2) / 2, image 1: 6 / 1
    assert vec.tolist() == pytest.approx([0.5 / 2, 1.0 / 2, 6.0 / 2])
    assert vec.sum().item() == pytest.approx((1.5 + 6.0) / 2)
    # the suite's per-task mean: task 0 over its 1 labelled sample, ...
    assert per_task_losses(losses, labelled).tolist() == pytest.approx([1.0, 2.0, 6.0])
    # sample weights s_nk multiply each term
    w = torch.full((3, 3), 2.0)
    assert per_image_losses(losses, labelled, w).sum().item() == pytest.approx(7.5)


# -- SSL (Eq. 2) --------------------------------------------------------------------------


class _ConstantNet(torch.nn.Module):
    """Predicts ``value`` everywhere for depth, whatever the input."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value
        self.global_step = 3

    def forward(self, image: torch.Tensor) -> MultiTaskOutput:
        return MultiTaskOutput(final={"depth": torch.full_like(image[:, :1], self.value)})


def test_ssl_crop_consistency_hand_computed() -> None:
    tasks = {"depth": create_task("depth")}
    term = CropConsistency(tasks, weight=1.0, max_scale=1.5, seed=0)
    image = torch.randn(3, 3, 12, 12)
    labelled = torch.tensor([[True], [False], [False]])
    full = MultiTaskOutput(final={"depth": torch.full((3, 1, 12, 12), 2.0)})
    # crops of a constant map stay constant: per unlabelled image (0 − 2)² = 4; mean over 3
    loss = term(_ConstantNet(0.0), {"image": image}, full, labelled)
    assert loss.item() == pytest.approx((0 + 4 + 4) / 3)
    # a prediction that agrees with the cropped full prediction costs nothing
    assert term(_ConstantNet(2.0), {"image": image}, full, labelled).item() == 0.0


# -- no unlabelled target is ever read ----------------------------------------------------


def poisoned(batch: dict) -> dict:
    """Every target of an unlabelled pair replaced by poison: NaN for regression, a
    different valid class for semseg (an out-of-range class would already stop the
    per-sample SL loss, which runs on every row before masking)."""
    bad = copy.deepcopy(batch)
    for k, name in enumerate(TASKS):
        rows = ~bad["labelled"][:, k]
        y = bad["targets"][name]
        y[rows] = (y[rows] + 1) % 4 if name == "semseg" else float("nan")
    return bad


PARTIAL_CASES = {
    "none": ("none", {}),
    "ssl": ("ssl", {"seed": 0}),
    "mtpsl": ("mtpsl", {"mapping_kwargs": {"channels": [4, 8]}}),
    "mtpsl-nocond": (
        "mtpsl",
        {"mapping": "joint_unconditioned", "mapping_kwargs": {"channels": [4]}},
    ),
    "direct": ("mtpsl", {"mapping": "direct", "mapping_kwargs": {"channels": [4]}}),
    "perceptual": (
        "mtpsl",
        {"mapping": "perceptual", "mapping_kwargs": {"channels": [4], "perceptual_channels": [4]}},
    ),
    "contrastive": (
        "mtpsl",
        {"consistency": "contrastive", "mapping_kwargs": {"channels": [4, 8]}},
    ),
    "discriminator": (
        "mtpsl",
        {
            "consistency": "discriminator",
            "consistency_kwargs": {"channels": [4]},
            "mapping_kwargs": {"channels": [4, 8]},
        },
    ),
}


@pytest.mark.parametrize("case", sorted(PARTIAL_CASES))
def test_poisoned_unlabelled_targets_change_nothing(case: str) -> None:
    from mtal.training.module import MultiTaskModule

    name, kwargs = PARTIAL_CASES[case]
    torch.manual_seed(0)
    module = MultiTaskModule(
        tasks=TASKS,
        num_classes={"semseg": 4},
        model="segnet",
        backbone="segnet",
        model_kwargs={"filters": [4, 8]},
        partial_supervision=name,
        partial_kwargs=kwargs,
        sl_normalisation="per_image",
    )
    clean_batch = batch3(size=16)
    results = []
    for batch in (clean_batch, poisoned(clean_batch)):
        m = copy.deepcopy(module)
        res = m.compute_losses(batch)
        res["total"].backward()
        grads = [p.grad.clone() if p.grad is not None else None for p in m.parameters()]
        results.append((res["total"].detach(), grads))
    assert torch.isfinite(results[1][0])
    assert torch.equal(results[0][0], results[1][0]), case
    for g0, g1 in zip(results[0][1], results[1][1]):
        assert (g0 is None and g1 is None) or torch.equal(g0, g1), case
    if name != "none":
        assert module.partial is not None and results[0][0] > 0


# -- SegNet -------------------------------------------------------------------------------


def test_segnet_shapes_and_shared_feature() -> None:
    from mtal.models import create_model

    net = create_model("segnet", tasks3(), filters=[4, 8, 8])
    out = net(torch.randn(2, 3, 24, 40))  # padded to 24x40 -> 24x40 (multiples of 8)
    assert out.final["semseg"].shape == (2, 4, 24, 40)
    assert out.final["depth"].shape == (2, 1, 24, 40)
    assert out.final["normals"].shape == (2, 3, 24, 40)
    assert out.extras["shared"].shape == (2, 8, 3, 5) and out.embedding.shape == (2, 8)
    odd = net(torch.randn(1, 3, 20, 30))  # not a multiple of 8: padded and cropped back
    assert odd.final["depth"].shape == (1, 1, 20, 30)
    with pytest.raises(ValueError, match="pretrained"):
        create_model("segnet", tasks3(), pretrained=True)


def test_depth_abs_err_by_hand() -> None:
    metric = create_task("depth").metric()
    pred = torch.tensor([1.0, 2.0, 5.0, 9.0]).view(1, 1, 2, 2)
    target = torch.tensor([2.0, 2.0, 3.0, 0.0]).view(1, 1, 2, 2)  # last pixel invalid
    metric.update(pred, target)
    assert metric.compute()["abs_err"].item() == pytest.approx((1 + 0 + 2) / 3)


# -- partial initial sets and split files -------------------------------------------------


def test_pool_one_and_random_label_settings() -> None:
    ids = [str(i) for i in range(40)]
    full, one, rnd = (LabelPool(ids, TASKS) for _ in range(3))
    chosen = full.initialise(count=20, seed=5)
    assert np.array_equal(one.initialise(count=20, seed=5, labels="one"), chosen)
    assert np.array_equal(rnd.initialise(count=20, seed=5, labels="random"), chosen)
    assert (one.labelled[chosen].sum(1) == 1).all() and one.num_labels == 20
    counts = rnd.labelled[chosen].sum(1)
    assert set(counts.tolist()) == {1, 2}  # 1 … K−1 with K = 3
    assert not one.labelled[np.setdiff1d(np.arange(40), chosen)].any()
    again = LabelPool(ids, TASKS)
    again.initialise(count=20, seed=5, labels="random")
    assert again == rnd  # seeded
    with pytest.raises(ValueError, match="random"):
        LabelPool(ids, ["depth"]).initialise(count=2, seed=0, labels="random")
    with pytest.raises(KeyError, match="known initial label settings"):
        LabelPool(ids, TASKS).initialise(count=2, seed=0, labels="two")


def _dm(**kw):
    from mtal.data.datamodule import ActiveDataModule

    return ActiveDataModule(
        "synthetic",
        tasks=["semseg", "depth"],
        dataset_kwargs={"size": [16, 16], "length": 12},
        pool_size=10,
        **kw,
    )


def test_mtpsl_split_files_are_read(tmp_path: Path) -> None:
    weights = torch.zeros(12, 3)
    weights[torch.arange(12), torch.arange(12) % 3] = 1.0  # one label: seg, depth, normal, …
    pth = tmp_path / "onelabel.pth"
    torch.save({"labels_weights": weights}, pth)
    pool = _dm(initial_labels_file=str(pth)).pool
    # columns semseg, depth picked from MTPSL's semantic/depth/normal; rows 0..9 (pool)
    expected = weights[:10, :2].numpy().astype(bool)
    assert np.array_equal(pool.labelled, expected)
    assert (pool.cycle[pool.labelled] == 0).all()
    npy = tmp_path / "split.npy"
    np.save(npy, weights[:, [1, 0]].numpy())
    pool = _dm(initial_labels_file=str(npy), initial_labels_columns=["depth", "semseg"]).pool
    assert np.array_equal(pool.labelled, expected)
    np.save(tmp_path / "short.npy", weights[:5].numpy())
    with pytest.raises(ValueError, match=r"short\.npy: has 5 rows but the training split has 12"):
        _ = _dm(initial_labels_file=str(tmp_path / "short.npy")).pool
    torch.save({"other": weights}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="labels_weights"):
        _ = _dm(initial_labels_file=str(tmp_path / "bad.pth")).pool
    with pytest.raises(ValueError, match="both set"):
        _dm(initial_labels="one", initial_labels_file=str(pth))


def test_unknown_partial_supervision_lists_the_known_ones() -> None:
    from mtal.training.module import MultiTaskModule

    assert {"none", "ssl", "mtpsl"} <= set(PARTIAL_SUPERVISION.names())
    with pytest.raises(KeyError, match="mtpsl"):
        MultiTaskModule(tasks=TASKS, num_classes={"semseg": 4}, partial_supervision="mpl")
    with pytest.raises(ValueError, match="mapping"):
        MultiTaskModule(
            tasks=TASKS,
            num_classes={"semseg": 4},
            partial_supervision="mtpsl",
            partial_kwargs={"mapping": "diagonal"},
        )


def _fit_partial(
    poisoned_data: bool, monkeypatch: pytest.MonkeyPatch, consistency: str = "cosine"
) -> dict:
    """One epoch of SegNet + MTPSL (and SSL's crops) on one-label images; with
    ``poisoned_data`` every stored target of a pair the pool has not bought is poison."""
    import lightning as L

    from mtal.data import DATASETS
    from mtal.data.datamodule import ActiveDataModule
    from mtal.data.synthetic import SyntheticScenes
    from mtal.training.module import MultiTaskModule

    holder: dict = {}

    class Scenes(SyntheticScenes):
        def load(self, index: int, tasks):  # type: ignore[override]
            out = super().load(index, tasks)
            pool = holder.get("pool")
            if self.split == "train" and pool is not None:
                for t in tasks:
                    if not pool.labelled[index, TASKS.index(t)]:
                        out[t] = np.full_like(out[t], 200 if t == "semseg" else np.nan)
            return out

    monkeypatch.setitem(DATASETS._entries, "poisoned_scenes", Scenes)
    dm = ActiveDataModule(
        "poisoned_scenes",
        tasks=TASKS,
        dataset_kwargs={"size": [16, 16], "cache": False},
        pool_size=8,
        val_size=2,
        initial=1.0,
        initial_labels="one",
        batch_size=4,
        augment=False,
    )
    if poisoned_data:
        holder["pool"] = dm.pool
        i, k = (int(v) for v in dm.pool.unlabelled_pairs()[0])  # the poison is live
        target = dm.train_dataset.load(i, [TASKS[k]])[TASKS[k]]
        assert (target == 200).all() if TASKS[k] == "semseg" else np.isnan(target).all()
    torch.manual_seed(0)
    module = MultiTaskModule(
        tasks=TASKS,
        num_classes=dm.num_classes,
        model="segnet",
        backbone="segnet",
        model_kwargs={"filters": [4, 8]},
        partial_supervision="mtpsl",
        partial_kwargs={"mapping_kwargs": {"channels": [4, 8]}, "consistency": consistency},
        sl_normalisation="per_image",
    )
    L.seed_everything(0, verbose=False)
    L.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        accelerator="cpu",
    ).fit(module, datamodule=dm)
    return {k: v.clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("consistency", ["cosine", "contrastive", "discriminator"])
def test_fit_on_poisoned_dataset_equals_the_clean_fit(
    consistency: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean = _fit_partial(False, monkeypatch, consistency)
    dirty = _fit_partial(True, monkeypatch, consistency)
    assert any(k.startswith("partial.mapping") for k in dirty)  # the mapping trained too
    if consistency == "discriminator":
        assert any(k.startswith("partial.consistency.discriminator") for k in dirty)
    for key, value in dirty.items():
        assert torch.isfinite(value.float()).all(), key
        assert torch.equal(value, clean[key]), key
