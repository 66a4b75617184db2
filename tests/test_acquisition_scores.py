"""Acquisition scores against hand-computed references, on a fake model with known outputs.

The fake model reads each image's pool index from pixel (0, 0, 0) and returns preset
constant maps, so every score can be computed by hand (or by independent numpy code).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtal.acquisition import create_strategy
from mtal.acquisition import mtal_consistency as mc
from mtal.acquisition.base import AcquisitionContext, minmax
from mtal.acquisition.diversity import encode_all, train_autoencoder
from mtal.acquisition.equal import binary_kl, categorical_kl
from mtal.acquisition.rbal import average_ranks
from mtal.acquisition.scoring import stream_summaries
from mtal.data.pool import LabelPool
from mtal.types import MultiTaskOutput

H = W = 8


class FakeTask:
    """Regression stand-in: discrepancy = mean |a − b|, MC uncertainty = mean variance."""

    kind = "regression"

    def discrepancy(self, raw: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        return (raw - other).abs().flatten(1).mean(1)

    def mc_uncertainty(self, samples: torch.Tensor) -> torch.Tensor:
        return samples.var(dim=0, unbiased=False).flatten(1).mean(1)

    def loss(self, raw: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # no masking: an unlabelled (NaN) target makes the loss NaN, so it cannot hide
        return ((raw - target) ** 2).flatten(1).mean(1)

    def hflip(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(-1)


class FakeDataModule:
    """pool_loader over images whose pixel (0,0,0) holds the pool index."""

    def __init__(self, pool: LabelPool, batch_size: int = 3, size: int = H) -> None:
        self.pool = pool
        self.batch_size = batch_size
        n = pool.num_images
        self.images = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))
        self.images[:, 0, 0, 0] = torch.arange(n, dtype=torch.float32)
        self.calls: list[bool] = []

    def pool_loader(self, indices: np.ndarray, with_labels: bool = False) -> Iterator[dict]:
        self.calls.append(with_labels)
        idx = np.asarray(indices, dtype=np.int64)
        for start in range(0, len(idx), self.batch_size):
            chunk = torch.as_tensor(idx[start : start + self.batch_size])
            mask = (
                self.pool.labelled[chunk.numpy()]
                if with_labels
                else np.zeros((len(chunk), self.pool.num_tasks), bool)
            )
            yield {
                "image": self.images[chunk],
                "targets": {
                    t: chunk.float().view(-1, 1, 1, 1).expand(-1, 1, H, H).clone()
                    for t in self.pool.tasks
                },
                "labelled": torch.as_tensor(mask),
                "weight": torch.ones(len(chunk), self.pool.num_tasks),
                "index": chunk,
            }


class LabelledFakeDataModule(FakeDataModule):
    """Like ActiveDataModule: ``pool_loader`` snapshots the pool's mask when called and
    delivers a target only where the pool marks it labelled (NaN otherwise);
    ``attach_pool`` checks tasks/images as the real one and records what was attached."""

    def __init__(self, pool: LabelPool, batch_size: int = 3) -> None:
        super().__init__(pool, batch_size)
        self.attached: list[LabelPool] = []

    def attach_pool(self, pool: LabelPool) -> None:
        if tuple(pool.tasks) != tuple(self.pool.tasks) or pool.image_ids != self.pool.image_ids:
            raise ValueError("attach_pool: tasks or image ids differ")
        self.attached.append(pool)
        self.pool = pool

    def pool_loader(self, indices: np.ndarray, with_labels: bool = False) -> Iterator[dict]:
        self.calls.append(with_labels)
        idx = np.asarray(indices, dtype=np.int64)
        k = self.pool.num_tasks
        mask = self.pool.labelled[idx].copy() if with_labels else np.zeros((len(idx), k), bool)
        return self._batches(idx, mask)

    def _batches(self, idx: np.ndarray, mask: np.ndarray) -> Iterator[dict]:
        for start in range(0, len(idx), self.batch_size):
            chunk = torch.as_tensor(idx[start : start + self.batch_size])
            rows = torch.as_tensor(mask[start : start + self.batch_size])
            targets = {}
            for k, t in enumerate(self.pool.tasks):
                value = torch.where(rows[:, k], chunk.float(), torch.tensor(float("nan")))
                targets[t] = value.view(-1, 1, 1, 1).expand(-1, 1, H, H).clone()
            yield {
                "image": self.images[chunk],
                "targets": targets,
                "labelled": rows,
                "weight": torch.ones(len(chunk), self.pool.num_tasks),
                "index": chunk,
            }


class TableModel(torch.nn.Module):
    """Returns preset per-image constant maps: final/committee/features/embedding/etc."""

    def __init__(
        self,
        final: Mapping[str, np.ndarray],
        committee: Mapping[str, Mapping[str, np.ndarray]] | None = None,
        features: Mapping[str, np.ndarray] | None = None,
        embedding: np.ndarray | None = None,
        sigma: Mapping[str, np.ndarray] | None = None,
        big: int = 0,
        initial: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        super().__init__()
        self.drop = torch.nn.Dropout(0.5)
        self.final = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in final.items()}
        self.committee = committee
        self.features = features
        self.embedding = embedding
        self.sigma = sigma
        self.big = big
        self.initial = initial
        self.calls: list[dict[str, Any]] = []
        self.outputs: list[weakref.ref] = []

    def _maps(self, values: torch.Tensor, idx: torch.Tensor, size: int) -> torch.Tensor:
        return values[idx].view(-1, 1, 1, 1).expand(-1, 1, size, size).clone()

    def forward(self, image: torch.Tensor, **kw: Any) -> MultiTaskOutput:
        self.calls.append({"training": self.training, "batch": image.shape[0], **kw})
        idx = image[:, 0, 0, 0].round().long()
        size = image.shape[-1]
        final = {k: self._maps(v, idx, size) for k, v in self.final.items()}
        if kw.get("mc_dropout") and self.sigma is not None:
            b = len(torch.unique(idx))
            sign = torch.where((torch.arange(len(idx)) // b) % 2 == 0, 1.0, -1.0)
            for k in final:
                s = torch.as_tensor(self.sigma[k], dtype=torch.float32)[idx]
                final[k] = final[k] + (sign * s).view(-1, 1, 1, 1)
        committee = None
        if kw.get("committee") and self.committee is not None:
            committee = {
                k: {
                    m: self._maps(torch.as_tensor(v, dtype=torch.float32), idx, size)
                    for m, v in members.items()
                }
                for k, members in self.committee.items()
            }
        feats = None
        if self.features is not None:
            feats = {
                k: torch.as_tensor(v, dtype=torch.float32)[idx] for k, v in self.features.items()
            }
        emb = (
            None
            if self.embedding is None
            else torch.as_tensor(self.embedding, dtype=torch.float32)[idx]
        )
        if self.big:
            final = {k: v.expand(-1, self.big, -1, -1).clone() for k, v in final.items()}
        initial = None
        if self.initial is not None:
            initial = {
                k: self._maps(torch.as_tensor(v, dtype=torch.float32), idx, size)
                for k, v in self.initial.items()
            }
        out = MultiTaskOutput(
            final=final, initial=initial, committee=committee, task_features=feats, embedding=emb
        )
        for v in final.values():
            self.outputs.append(weakref.ref(v))
        return out


def make_ctx(
    model: torch.nn.Module,
    n: int,
    tasks: list[str],
    labelled: list[int],
    seed: int = 0,
    cycle: int = 1,
    state: dict | None = None,
) -> AcquisitionContext:
    pool = LabelPool([f"{i}" for i in range(n)], tasks)
    if labelled:
        pool.label_images(labelled, cycle=0)
    return AcquisitionContext(
        model=model,
        tasks={t: FakeTask() for t in tasks},
        pool=pool,
        datamodule=FakeDataModule(pool),
        device="cpu",
        cycle=cycle,
        seed=seed,
        state={} if state is None else state,
    )


# --------------------------------------------------------------------------- MTAL


def test_mtal_inconsistency_matches_hand_computation() -> None:
    # tasks a, b; images 0, 1 labelled; 2..5 unlabelled
    final = {"a": np.array([0, 0, 1, 2, 3, 4.0]), "b": np.array([0, 0, 5, 5, 5, 5.0])}
    committee = {
        "a": {"initial": final["a"] + 99, "b": np.array([0, 0, 1.5, 2, 3.5, 6])},
        "b": {"initial": final["b"] + 99, "a": np.array([0, 0, 5, 6, 8, 5.5])},
    }
    model = TableModel(final, committee)
    ctx = make_ctx(model, 6, ["a", "b"], [0, 1])
    sel = create_strategy(
        "mtal", variant="inconsistency", tie_break="index", anchor="final"
    ).select(ctx, 4)
    # ŝ_a = |final − member b| = [.5, 0, .5, 2] → s_a = [.25, 0, .25, 1]
    # ŝ_b = [0, 1, 3, .5] → s_b = [0, 1/3, 1, 1/6]; max_k s_k = [.25, 1/3, 1, 1]
    # top 2: images 4 and 5 tie at 1 → lowest index first
    assert sel.images.tolist() == [4, 5]
    np.testing.assert_allclose(sel.weights, [[0.25, 1.0], [1.0, 1 / 6]], rtol=1e-6)
    np.testing.assert_allclose(sel.scores, sel.weights)
    np.testing.assert_allclose(sel.diagnostics["selected_score"], [1.0, 1.0])
    assert all(c["committee"] == 1 for c in model.calls)
    # with the initial member (final + 99) it dominates: every ŝ_k = 99, s_k = 0 everywhere
    # (no task ranks), and a constant task keeps loss weight 1.0 (not 0) on bought images
    sel = create_strategy(
        "mtal", variant="inconsistency", include_initial=True, tie_break="index", anchor="final"
    ).select(ctx, 4)
    np.testing.assert_allclose(sel.scores, 0.0)
    np.testing.assert_allclose(sel.weights, 1.0)
    assert sel.images.tolist() == [2, 3]


def test_mtal_committee_max_over_all_partner_sets() -> None:
    rng = np.random.default_rng(1)
    n, names = 7, ["a", "b", "c"]
    final = {t: rng.normal(size=n) for t in names}
    committee = {
        t: {
            m: rng.normal(size=n)
            for m in [
                "initial",
                *[o for o in names if o != t],
                "+".join(o for o in names if o != t),
            ]
        }
        for t in names
    }
    model = TableModel(final, committee)
    ctx = make_ctx(model, n, names, [0])
    sel = create_strategy(
        "mtal", variant="inconsistency", committee=2, tie_break="index", anchor="final"
    ).select(ctx, 6)
    unl = np.arange(1, n)
    raw = np.stack(
        [
            np.max(
                [np.abs(final[t][unl] - v[unl]) for m, v in committee[t].items() if m != "initial"],
                axis=0,
            )
            for t in names
        ],
        axis=1,
    )
    lo, hi = raw.min(0), raw.max(0)
    s_k = (raw - lo) / (hi - lo)
    order = np.argsort(-s_k.max(1), kind="stable")[:2]
    assert sel.images.tolist() == unl[order].tolist()
    np.testing.assert_allclose(sel.weights, s_k[order], rtol=1e-5)
    assert all(c["committee"] == 2 for c in model.calls if "committee" in c and c["committee"])


def test_mtal_full_score_is_diversity_times_max_task_score(monkeypatch) -> None:
    final = {"a": np.array([0, 0, 1, 2, 3, 4.0]), "b": np.zeros(6)}
    committee = {
        "a": {"b": np.array([0, 0, 1.5, 2, 3.5, 6])},
        "b": {"a": np.array([0, 0, 1, 3, 0, 2.0])},
    }
    feats = {t: np.random.default_rng(0).normal(size=(6, 2, 3, 3)) for t in "ab"}
    model = TableModel(final, committee, features=feats)
    seen = {}

    def fake_div(strat, ctx, feats, n_lab, channels, seed):
        seen.update(feats=feats.shape, n_lab=n_lab, channels=channels)
        return np.array([4.0, 1.0, 2.0, 0.5])

    monkeypatch.setitem(mc.VARIANTS, "full", (True, fake_div))
    ctx = make_ctx(model, 6, ["a", "b"], [0, 1])
    sel = create_strategy("mtal", feature_pool=2, anchor="final").select(ctx, 2)
    # s_a = [.25, 0, .25, 1], s_b = [1/3, 1, 0, 2/3] → max = [1/3, 1, .25, 1]
    # s = div · max = [4/3, 1, .5, .5] → image 2
    assert sel.images.tolist() == [2]
    np.testing.assert_allclose(sel.diagnostics["selected_score"], [4 / 3], rtol=1e-6)
    np.testing.assert_allclose(sel.weights, [[0.25, 1 / 3]], rtol=1e-6)
    # features: two tasks × 2 channels pooled to 2×2 grid, standardised
    assert seen == {"feats": (6, 4, 2, 2), "n_lab": 2, "channels": [2, 2]}


def test_mtal_diversity_only_uses_no_committee_and_hook(monkeypatch) -> None:
    feats = {"a": np.random.default_rng(2).normal(size=(6, 3, 4, 4))}
    model = TableModel({"a": np.zeros(6)}, None, features=feats)
    ctx = make_ctx(model, 6, ["a"], [0, 1], seed=3)
    plain = create_strategy(
        "mtal", variant="diversity", code_dim=8, ae_hidden=4, ae_epochs=3, feature_pool=2
    ).select(ctx, 2)
    assert plain.weights is None and np.isnan(plain.scores).all()
    assert not any(c.get("committee") for c in model.calls)
    # the train_features hook replaces the labelled pass and gives the same result
    asked = []

    def hook(indices):
        asked.append(indices.tolist())
        x = torch.as_tensor(feats["a"], dtype=torch.float32)[torch.as_tensor(indices)]
        return F.adaptive_avg_pool2d(x, 2).flatten(1)

    n_calls = len(model.calls)
    ctx.train_features = hook
    hooked = create_strategy(
        "mtal", variant="diversity", code_dim=8, ae_hidden=4, ae_epochs=3, feature_pool=2
    ).select(ctx, 2)
    assert asked == [[0, 1]]
    assert sum(c["batch"] for c in model.calls[n_calls:]) == 4  # only the unlabelled pass
    assert hooked.images.tolist() == plain.images.tolist()


@pytest.mark.parametrize("block", [4096, 4])
def test_ae_distance_is_nearest_code_distance_and_ae_learns(monkeypatch, block) -> None:
    """Eq. 3 against cdist of the codes; ``block=4`` streams the 15 candidates' codes
    and their search in 4 blocks (the last one short) and must give the same distances."""
    monkeypatch.setattr(mc, "QUERY_BLOCK", block)
    strat = create_strategy("mtal", code_dim=6, ae_hidden=8, ae_epochs=40, ae_batch_size=8)
    g = torch.Generator().manual_seed(0)
    # 12-d features on a 2-d subspace: a 6-d code can reconstruct them
    feats = (torch.randn(20, 2, generator=g) @ torch.randn(2, 12, generator=g)).view(20, 3, 2, 2)
    ctx = make_ctx(TableModel({"a": np.zeros(1)}), 1, ["a"], [])
    div = mc.ae_distance(strat, ctx, feats, 5, [3], seed=11)
    ae, _, hist = train_autoencoder(torch.cat([feats[:5], feats[5:]]), strat.diversity_config, 11)
    codes = encode_all(ae, feats, 8, "cpu")
    ref = torch.cdist(codes[5:].double(), codes[:5].double()).min(dim=1).values.numpy()
    np.testing.assert_allclose(div, ref, rtol=1e-4, atol=1e-5)
    assert hist == strat.last_diagnostics["ae_loss"]
    assert hist[-1] < 0.3 * hist[0]


@pytest.mark.parametrize("block", [4096, 2])
def test_maxst_is_max_of_per_task_distances(monkeypatch, block) -> None:
    monkeypatch.setattr(mc, "QUERY_BLOCK", block)
    rng = np.random.default_rng(4)
    f = torch.as_tensor(rng.normal(size=(9, 5, 1, 1)), dtype=torch.float32)
    strat = create_strategy("mtal", variant="maxst", maxst_normalise=True)
    ctx = make_ctx(TableModel({"a": np.zeros(1)}), 1, ["a"], [])
    got = mc.maxst_distance(strat, ctx, f, 3, [2, 3], seed=0)
    x = f.numpy().reshape(9, 5).astype(np.float64)
    per = []
    for sl in (slice(0, 2), slice(2, 5)):
        d = np.sqrt(((x[3:, None, sl] - x[None, :3, sl]) ** 2).sum(-1)).min(1)
        per.append(d)
    norm = [(d - d.min()) / (d.max() - d.min()) for d in per]
    np.testing.assert_allclose(got, np.max(norm, axis=0), rtol=1e-4, atol=1e-5)
    # the paper's Max-ST (default): the max of the raw per-task distances
    raw = mc.maxst_distance(create_strategy("mtal", variant="maxst"), ctx, f, 3, [2, 3], 0)
    np.testing.assert_allclose(raw, np.max(per, axis=0), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fn", [mc.vaal_score, mc.ae_disc_score])
def test_discriminator_variants_prefer_samples_unlike_the_labelled(monkeypatch, fn) -> None:
    monkeypatch.setattr(mc, "QUERY_BLOCK", 5)  # 32 candidates: 7 blocks, the last short
    g = torch.Generator().manual_seed(0)
    lab = torch.randn(16, 2, 2, 2, generator=g) * 0.3 + 2.0
    near = torch.randn(16, 2, 2, 2, generator=g) * 0.3 + 2.0
    far = torch.randn(16, 2, 2, 2, generator=g) * 0.3 - 2.0
    strat = create_strategy(
        "mtal", code_dim=8, ae_hidden=8, ae_epochs=30, disc_epochs=60, ae_batch_size=16
    )
    ctx = make_ctx(TableModel({"a": np.zeros(1)}), 1, ["a"], [])
    score = fn(strat, ctx, torch.cat([lab, near, far]), len(lab), [2], seed=5)
    assert score.shape == (32,)
    if fn is mc.vaal_score:  # 1 − D: a probability
        assert ((score >= 0) & (score <= 1)).all()
        assert score[16:].mean() > score[:16].mean() + 0.2
    else:  # Eq. 3 distance of the adversarially trained AE's codes
        assert (score >= 0).all() and score[16:].mean() > 2 * score[:16].mean()


# --------------------------------------------------------------------------- MTAL sample weights

#: the first MTAL test's model: images 4 and 5 are bought with budget 4, s_k = [[.25, 1],
#: [1, 1/6]]; with targets y_k(i) = i the true losses (final − i)² are a: [1, 1], b: [1, 0]
WEIGHT_FINAL = {"a": np.array([0, 0, 1, 2, 3, 4.0]), "b": np.array([0, 0, 5, 5, 5, 5.0])}
WEIGHT_COMMITTEE = {
    "a": {"b": np.array([0, 0, 1.5, 2, 3.5, 6])},
    "b": {"a": np.array([0, 0, 5, 6, 8, 5.5])},
}


def make_label_ctx(model: torch.nn.Module, n: int, tasks: list[str], labelled: list[int]):
    ctx = make_ctx(model, n, tasks, labelled)
    ctx.datamodule = LabelledFakeDataModule(ctx.pool)
    return ctx


def weights_of(ctx: AcquisitionContext, budget: int = 4, **kw: Any):
    kw.setdefault("anchor", "final")
    return create_strategy("mtal", variant="inconsistency", tie_break="index", **kw).select(
        ctx, budget
    )


def test_mtal_sample_weights_inconsistency_is_the_default_and_none_gives_none() -> None:
    ctx = make_label_ctx(TableModel(WEIGHT_FINAL, WEIGHT_COMMITTEE), 6, ["a", "b"], [0, 1])
    default = weights_of(ctx)
    explicit = weights_of(ctx, sample_weights="inconsistency")
    assert default.images.tolist() == explicit.images.tolist() == [4, 5]
    np.testing.assert_allclose(default.weights, [[0.25, 1.0], [1.0, 1 / 6]], rtol=1e-6)
    np.testing.assert_array_equal(default.weights, explicit.weights)
    assert explicit.diagnostics["sample_weights"] == "inconsistency"
    none = weights_of(ctx, sample_weights="none")
    assert none.weights is None
    assert none.images.tolist() == [4, 5]  # the weighting never changes what is bought
    np.testing.assert_allclose(none.scores, default.scores)  # scores stay s_k
    # the inconsistency path never reads labels
    assert True not in ctx.datamodule.calls and ctx.datamodule.attached == []


def test_mtal_loss_weights_by_hand_and_pools_untouched() -> None:
    ctx = make_label_ctx(TableModel(WEIGHT_FINAL, WEIGHT_COMMITTEE), 6, ["a", "b"], [0, 1])
    dm = ctx.datamodule
    before = ctx.pool.copy()
    original = ctx.pool
    sel = weights_of(ctx, sample_weights="loss")
    assert sel.images.tolist() == [4, 5]
    # loss a = [(3−4)², (4−5)²] = [1, 1]: constant → 1.0 (not 0); b = [1, 0] → [1, 0]
    np.testing.assert_allclose(sel.weights, [[1.0, 1.0], [1.0, 0.0]])
    assert sel.weights.dtype == np.float32
    np.testing.assert_allclose(sel.scores, [[0.25, 1.0], [1.0, 1 / 6]], rtol=1e-6)
    assert sel.diagnostics["raw_loss_range"] == [[1.0, 0.0], [1.0, 1.0]]
    # the labels were read from a copy with images 4, 5 labelled at cycle + 1 ...
    copy = dm.attached[0]
    assert copy is not original and dm.calls[-1] is True
    assert np.flatnonzero(copy.labelled.all(1)).tolist() == [0, 1, 4, 5]
    assert (copy.cycle[[4, 5]] == ctx.cycle + 1).all()
    # ... and afterwards both the context's and the datamodule's pool are the original,
    # unchanged
    assert dm.attached[-1] is original and dm.pool is original and ctx.pool is original
    assert ctx.pool == before
    # weight_floor: f + (1 − f)·w
    floored = weights_of(ctx, sample_weights="loss", weight_floor=0.2)
    np.testing.assert_allclose(floored.weights, [[1.0, 1.0], [1.0, 0.2]], rtol=1e-6)
    floored = weights_of(ctx, weight_floor=0.5)
    np.testing.assert_allclose(floored.weights, [[0.625, 1.0], [1.0, 0.5 + 0.5 / 6]], rtol=1e-6)
    assert ctx.pool == before


def test_mtal_loss_weights_match_direct_task_losses() -> None:
    rng = np.random.default_rng(3)
    n, names = 9, ["a", "b", "c"]
    final = {t: rng.normal(size=n) * 3 for t in names}
    committee = {t: {o: rng.normal(size=n) for o in names if o != t} for t in names}
    model = TableModel(final, committee)
    ctx = make_label_ctx(model, n, names, [0, 2])
    sel = weights_of(ctx, budget=12, sample_weights="loss")  # 4 images
    assert len(sel.images) == 4
    # independent: the task objects on the model's outputs for those images vs y = index
    idx = torch.as_tensor(sel.images)
    out = model(ctx.datamodule.images[idx])
    target = idx.float().view(-1, 1, 1, 1).expand(-1, 1, H, H)
    raw = np.stack([ctx.tasks[t].loss(out.final[t], target).numpy() for t in names], axis=1).astype(
        np.float64
    )
    ref = (raw - raw.min(0)) / (raw.max(0) - raw.min(0))
    np.testing.assert_allclose(sel.weights, ref, rtol=1e-5, atol=1e-6)
    assert np.isclose(sel.weights.min(0), 0).all() and np.isclose(sel.weights.max(0), 1).all()


def test_mtal_loss_weights_restore_the_pool_when_the_pass_fails() -> None:
    class FailingModel(TableModel):
        def forward(self, image: torch.Tensor, **kw: Any) -> MultiTaskOutput:
            if not kw.get("committee"):  # only the loss pass runs without a committee
                raise RuntimeError("boom")
            return super().forward(image, **kw)

    ctx = make_label_ctx(FailingModel(WEIGHT_FINAL, WEIGHT_COMMITTEE), 6, ["a", "b"], [0, 1])
    before, original = ctx.pool.copy(), ctx.pool
    with pytest.raises(RuntimeError, match="boom"):
        weights_of(ctx, sample_weights="loss")
    assert ctx.datamodule.pool is original and ctx.pool == before


def test_mtal_loss_weights_need_the_bought_labels() -> None:
    # a datamodule that ignores the attached pool delivers no label: a clear error
    ctx = make_label_ctx(TableModel(WEIGHT_FINAL, WEIGHT_COMMITTEE), 6, ["a", "b"], [0, 1])
    ctx.datamodule.attach_pool = lambda pool: None
    with pytest.raises(RuntimeError, match="did not deliver every bought label"):
        weights_of(ctx, sample_weights="loss")
    ctx.datamodule = FakeDataModule(ctx.pool)  # no attach_pool at all
    with pytest.raises(TypeError, match="attach_pool"):
        weights_of(ctx, sample_weights="loss")


def test_mtal_sample_weight_options_are_checked() -> None:
    with pytest.raises(
        ValueError, match=r"sample_weights='los'.*\['inconsistency', 'loss', 'none'\]"
    ):
        create_strategy("mtal", sample_weights="los")
    with pytest.raises(ValueError, match="weight_floor=1.5"):
        create_strategy("mtal", weight_floor=1.5)
    assert set(mc.SAMPLE_WEIGHTS) == {"inconsistency", "none", "loss"}


def test_minmax_weights_constant_column_is_one() -> None:
    values = np.array([[1.0, 2, 5], [3, 2, 5], [2, 2, 7]])
    np.testing.assert_allclose(mc.minmax_weights(values), [[0, 1, 0], [1, 1, 0], [0.5, 1, 1]])
    np.testing.assert_allclose(minmax(values)[:, 1], 0.0)  # the score version maps to 0
    np.testing.assert_allclose(mc.minmax_weights(np.array([[4.0, 0.5]])), [[1.0, 1.0]])


def test_mtal_loss_weights_on_a_real_datamodule() -> None:
    from mtal.data.datamodule import ActiveDataModule
    from mtal.models import create_model

    kw = dict(
        dataset="synthetic",
        tasks=["semseg", "depth", "normals"],
        size=(32, 32),
        pool_size=8,
        val_size=1,
        eval_batch_size=4,
        dataset_kwargs={"cache": True},
    )
    dm = ActiveDataModule(initial=2, **kw)
    dm.setup("fit")
    torch.manual_seed(0)
    model = create_model("padnet", tasks=dm.task_objects, backbone="tiny_cnn")
    model.train()
    pool = dm.pool
    before = pool.copy()
    ctx = AcquisitionContext(
        model=model, tasks=dm.task_objects, pool=pool, datamodule=dm, device="cpu", cycle=1
    )
    sel = weights_of(ctx, budget=9, sample_weights="loss")  # 3 images
    assert dm.pool is pool and pool == before and model.training
    # independent reference: a datamodule whose pool is fully labelled
    full = ActiveDataModule(initial=1.0, **kw)
    full.setup("fit")
    rows = []
    model.eval()
    with torch.no_grad():
        for batch in full.pool_loader(sel.images, with_labels=True):
            assert batch["labelled"].all()
            out = model(batch["image"])
            rows.append(
                torch.stack(
                    [task.loss(out.final[t], batch["targets"][t]) for t, task in ctx.tasks.items()],
                    dim=1,
                )
            )
    raw = torch.cat(rows).numpy().astype(np.float64)
    assert (raw.max(0) > raw.min(0)).all()
    ref = (raw - raw.min(0)) / (raw.max(0) - raw.min(0))
    np.testing.assert_allclose(sel.weights, ref, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- coreset


def brute_force_k_center(x: np.ndarray, labelled: np.ndarray, budget: int) -> list[int]:
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    centres = list(np.flatnonzero(labelled))
    picks = []
    for _ in range(budget):
        nearest = d[:, centres].min(1)
        nearest[centres] = -1
        best = int(np.argmax(nearest))
        picks.append(best)
        centres.append(best)
    return picks


def test_coreset_equals_brute_force_k_center() -> None:
    n = 20
    emb = np.random.default_rng(7).normal(size=(n, 5))
    labelled = [0, 3, 11, 19]
    model = TableModel({"a": np.zeros(n), "b": np.zeros(n)}, embedding=emb)
    ctx = make_ctx(model, n, ["a", "b"], labelled)
    sel = create_strategy("coreset", features="embedding").select(ctx, 10)
    mask = np.zeros(n, bool)
    mask[labelled] = True
    assert sel.images.tolist() == brute_force_k_center(emb, mask, 5)
    assert sel.pairs.shape == (10, 2)


def test_coreset_default_runs_on_the_fused_map_pooled_to_a_grid() -> None:
    # WACV24: k-center on the pre-head (fused) map; pooled to 2×2 here by hand
    n = 14
    fused = np.random.default_rng(3).normal(size=(n, 3, 8, 8))
    emb = np.random.default_rng(4).normal(size=(n, 5))  # must not be used

    class FusedModel(TableModel):
        def forward(self, image, **kw):
            out = super().forward(image, **kw)
            idx = image[:, 0, 0, 0].round().long()
            out.extras["fused"] = torch.as_tensor(fused, dtype=torch.float32)[idx]
            return out

    labelled = [0, 5, 9]
    ctx = make_ctx(FusedModel({"a": np.zeros(n)}, embedding=emb), n, ["a"], labelled)
    sel = create_strategy("coreset", grid=2).select(ctx, 4)
    pooled = fused.reshape(n, 3, 2, 4, 2, 4).mean(axis=(3, 5)).reshape(n, -1)
    mask = np.zeros(n, bool)
    mask[labelled] = True
    assert sel.images.tolist() == brute_force_k_center(pooled, mask, 4)
    assert sel.images.tolist() != brute_force_k_center(emb, mask, 4)
    with pytest.raises(ValueError, match="features"):
        create_strategy("coreset", features="gap")
    assert sel.diagnostics["features"] == "fused"
    # a network without the fused map (a user's own) is scored on its embedding, and says so
    plain = create_strategy("coreset").select(
        make_ctx(TableModel({"a": np.zeros(n)}, embedding=emb), n, ["a"], labelled), 4
    )
    assert plain.images.tolist() == brute_force_k_center(emb, mask, 4)
    assert plain.diagnostics["features"].startswith("embedding")
    with pytest.raises(ValueError, match="neither"):
        create_strategy("coreset").select(
            make_ctx(TableModel({"a": np.zeros(n)}), n, ["a"], [0]), 1
        )


# --------------------------------------------------------------------------- PartAL


def test_partal_normalisation_frozen_after_first_cycle_and_gt_substituted() -> None:
    n, names = 6, ["a", "b"]
    sigma0 = {"a": np.array([1, 2, 3, 4, 5, 6.0]), "b": np.array([0.5, 1, 1, 1, 2, 3.0])}
    model = TableModel({t: np.zeros(n) for t in names}, sigma=sigma0)
    state: dict = {}
    ctx = make_ctx(model, n, names, [0], cycle=1, state=state)
    ctx.pool.label_pairs([[1, 0]], cycle=0)  # image 1 has task a only
    strat = create_strategy("partal", mc_samples=4, tie_break="index")
    sel = strat.select(ctx, 3)
    # u = σ²; unlabelled pairs: a: images 2..5 → [9..36]; b: images 1..5 → [1, 1, 1, 4, 9]
    assert state["partal"]["min"] == [9.0, 1.0] and state["partal"]["max"] == [36.0, 9.0]
    # normalised a: (u−9)/27 = [0, 7/27, 16/27, 1]; b: (u−1)/8 = [0,0,0,3/8,1]
    assert sel.pairs.tolist() == [[5, 0], [5, 1], [4, 0]]
    assert sel.images.tolist() == [5, 4]
    np.testing.assert_allclose(sel.scores, [[1, 1], [16 / 27, np.nan]], rtol=1e-6)
    # ground truth substituted: the labelled mask of the (replicated) batch was passed
    assert all(c["mc_dropout"] for c in model.calls)
    assert ctx.datamodule.calls == [True]
    mask_calls = [c["gt_mask"] for c in model.calls]
    assert any(bool(m[:, 0].any()) for m in mask_calls)  # image 1's task a
    assert all(m.shape[0] == c["batch"] for m, c in zip(mask_calls, model.calls))
    # cycle 2: the network changed (σ doubled); min/max stay those of cycle 1
    ctx.pool.label_pairs(sel.pairs, cycle=1)
    model.sigma = {t: 2 * v for t, v in sigma0.items()}
    ctx2 = AcquisitionContext(
        model=model,
        tasks=ctx.tasks,
        pool=ctx.pool,
        datamodule=ctx.datamodule,
        cycle=2,
        seed=0,
        state=state,
    )
    sel2 = strat.select(ctx2, 1)
    assert state["partal"]["min"] == [9.0, 1.0] and state["partal"]["max"] == [36.0, 9.0]
    assert state["partal"]["cycle"] == 1
    # a: images 2, 3 → u = 4·[9, 16] → [1, 55/27]; b: images 1..4 → [3/8, 3/8, 3/8, 15/8]
    # (outside [0, 1], as the frozen min/max are those of the cycle-1 network)
    assert sel2.pairs.tolist() == [[3, 0]]
    np.testing.assert_allclose(sel2.scores[0, 0], 55 / 27, rtol=1e-6)


def test_partal_without_normalisation_ranks_raw_uncertainty() -> None:
    # PartAL Fig. 12 ablation: u = σ²; a: images 2..5 → 9, 16, 25, 36; b: 1..5 → 1, 1, 1, 4, 9
    n, names = 6, ["a", "b"]
    sigma = {"a": np.array([1, 2, 3, 4, 5, 6.0]), "b": np.array([0.5, 1, 1, 1, 2, 3.0])}
    ctx = make_ctx(TableModel({t: np.zeros(n) for t in names}, sigma=sigma), n, names, [0])
    ctx.pool.label_pairs([[1, 0]], cycle=0)
    sel = create_strategy("partal", mc_samples=4, normalise=False, tie_break="index").select(ctx, 3)
    assert sel.pairs.tolist() == [[5, 0], [4, 0], [3, 0]]
    np.testing.assert_allclose(sel.scores[:, 0], [36, 25, 16], rtol=1e-5)


def test_partal_refuses_state_of_other_tasks() -> None:
    model = TableModel({"a": np.zeros(4)}, sigma={"a": np.ones(4)})
    ctx = make_ctx(model, 4, ["a"], [], state={"partal": {"tasks": ["x"], "min": [0], "max": [1]}})
    with pytest.raises(ValueError, match="frozen for tasks"):
        create_strategy("partal", mc_samples=2).select(ctx, 1)


# --------------------------------------------------------------------------- others


def test_ll4al_sums_predicted_losses() -> None:
    class LossModel(TableModel):
        def forward(self, image, **kw):
            out = super().forward(image, **kw)
            idx = image[:, 0, 0, 0].round().long()
            out.loss_pred = torch.stack([idx.float() % 3, (5 - idx.float()) * 0.1], 1)
            return out

    ctx = make_ctx(LossModel({"a": np.zeros(6), "b": np.zeros(6)}), 6, ["a", "b"], [0])
    sel = create_strategy("ll4al").select(ctx, 4)
    # sums for images 1..5: 1.4, 2.3, .2, 1.1, 2.0 → 2 then 5
    assert sel.images.tolist() == [2, 5]
    np.testing.assert_allclose(sel.scores, [[2, 0.3], [2, 0]], atol=1e-6)
    # WACV24: Σ_k w_k l̂_k with the config's task weights; b ×20: 9, 8, 4, 3, 2 → 1 then 2
    ctx.task_weights = {"a": 1.0, "b": 20.0}
    sel = create_strategy("ll4al").select(ctx, 4)
    assert sel.images.tolist() == [1, 2]
    np.testing.assert_allclose(sel.diagnostics["selected_score"], [9, 8], rtol=1e-5)


def test_flip_divergences_by_hand() -> None:
    p = torch.tensor([[[[0.0]], [[0.0]]]])  # softmax = (.5, .5)
    q = torch.tensor([[[[np.log(3.0)]], [[0.0]]]], dtype=torch.float32)  # (.75, .25)
    expected = 0.5 * np.log(0.5 / 0.75) + 0.5 * np.log(0.5 / 0.25)
    assert categorical_kl(None, p, q).item() == pytest.approx(expected, rel=1e-5)
    a = torch.zeros(1, 1, 1, 1)
    b = torch.full((1, 1, 1, 1), float(np.log(3.0)))  # σ = .75
    assert binary_kl(None, a, b).item() == pytest.approx(expected, rel=1e-5)


def test_equal_is_zero_for_an_equivariant_model_and_unflips() -> None:
    class PixelModel(torch.nn.Module):
        """Pixelwise (flip-equivariant) map plus an optional column bias."""

        def __init__(self, bias: float) -> None:
            super().__init__()
            self.bias = bias

        def forward(self, image, **kw):
            ramp = torch.linspace(0, 1, image.shape[-1]) * self.bias
            raw = image[:, 1:2] + ramp
            return MultiTaskOutput(final={"a": raw, "b": 2 * raw})

    ctx = make_ctx(PixelModel(0.0), 6, ["a", "b"], [0])
    sel = create_strategy("equal", task="a").select(ctx, 4)
    np.testing.assert_allclose(sel.scores[:, 0], 0.0, atol=1e-6)
    assert np.isnan(sel.scores[:, 1]).all()
    ctx.model = PixelModel(1.0)
    sel = create_strategy("equal", task="b").select(ctx, 2)
    # D = mean|2(x + r) − 2(x + flip(r))| = 2·mean|r − flip(r)| = 2·32/56
    np.testing.assert_allclose(sel.scores[:, 1], 8 / 7, rtol=1e-5)
    with pytest.raises(ValueError, match="not among the run's tasks"):
        create_strategy("equal-depth").select(ctx, 2)


def test_rbal_ranks_sum() -> None:
    u = np.array([[0.1, 5.0], [0.3, 1.0], [0.3, 2.0], [0.2, 9.0]])
    np.testing.assert_allclose(average_ranks(u), [[1, 3], [3.5, 1], [3.5, 2], [2, 4]])
    sigma = {"a": np.array([0, 0.1, 0.3, 0.3, 0.2]), "b": np.array([0, 5.0, 1, 2, 9])}
    model = TableModel({"a": np.zeros(5), "b": np.zeros(5)}, sigma=sigma)
    ctx = make_ctx(model, 5, ["a", "b"], [0])
    sel = create_strategy("rbal", uncertainty="mc", mc_samples=2, tie_break="index").select(ctx, 2)
    # rank sums: [4, 4.5, 5.5, 6] → image 4
    assert sel.images.tolist() == [4]
    np.testing.assert_allclose(sel.scores, [[0.04, 81]], rtol=1e-5)
    with pytest.raises(ValueError, match="regression"):
        create_strategy("rbal", uncertainty="mc", mc_samples=1).select(ctx, 2)
    with pytest.raises(ValueError, match="uncertainty"):
        create_strategy("rbal", uncertainty="entropy")


def test_rbal_default_ranks_per_task_equal_scores_by_hand() -> None:
    # WACV24's RBAL: ranks of per-task EquAL scores. The image index is the max of channel
    # 0 (flip-invariant); raw_t = x + c_t(i)·ramp, so EquAL_t = |c_t(i)|·mean|r − flip r|
    # = 4/7·|c_t(i)| on 8 columns.
    coef = {"a": torch.tensor([0, 1, 3, 2, 4.0]), "b": torch.tensor([0, 4, 1, 3, 2.0])}

    class RampModel(torch.nn.Module):
        def forward(self, image, **kw):
            idx = image[:, 0].amax(dim=(1, 2)).floor().long()
            ramp = torch.linspace(0, 1, image.shape[-1])
            return MultiTaskOutput(
                final={t: image[:, 1:2] + c[idx].view(-1, 1, 1, 1) * ramp for t, c in coef.items()}
            )

    ctx = make_ctx(RampModel(), 5, ["a", "b"], [0])
    sel = create_strategy("rbal", tie_break="index").select(ctx, 2)
    # ranks a: 1 3 2 4, b: 4 1 3 2 → sums 5 4 5 6 → image 4, scores 4/7·(4, 2)
    assert sel.images.tolist() == [4]
    np.testing.assert_allclose(sel.scores, [[16 / 7, 8 / 7]], rtol=1e-5)
    assert sel.diagnostics["uncertainty"] == "equal"


def test_minmax_constant_column_is_zero() -> None:
    np.testing.assert_allclose(minmax(np.array([[1.0, 2], [3, 2]])), [[0, 0], [1, 0]])


# --------------------------------------------------------------------------- scoring pass


def test_scoring_keeps_only_summaries_and_restores_mode() -> None:
    n = 12
    model = TableModel({"a": np.arange(n, dtype=float)}, big=64)
    model.train()
    model.drop.eval()  # a mixed-mode module tree must come back exactly
    ctx = make_ctx(model, n, ["a"], [])
    alive_at_call = []

    def summarise(batch):
        alive_at_call.append(sum(r() is not None for r in model.outputs))
        out = model(batch["image"])
        return {"mean": out.final["a"].mean(dim=(1, 2, 3)).unsqueeze(1)}

    idx = np.array([5, 2, 9, 0, 11, 7, 1])
    got = stream_summaries(ctx, idx, summarise)
    assert got["mean"].shape == (7, 1)
    np.testing.assert_allclose(got["mean"][:, 0].numpy(), idx)  # rows follow `indices`
    # every full-resolution output died with its batch
    assert alive_at_call == [0, 0, 0]
    assert all(r() is None for r in model.outputs)
    assert not any(c["training"] for c in model.calls)
    assert model.training and not model.drop.training

    def keep_everything(batch):
        return {"raw": model(batch["image"]).final["a"]}

    with pytest.raises(ValueError, match="values per sample"):
        stream_summaries(ctx, idx, keep_everything, max_values_per_sample=1000)
    assert model.training and not model.drop.training


def test_scoring_rows_follow_indices_whatever_order_the_loader_yields() -> None:
    """Summaries land in the row of their index even when the loader reorders the
    batches; a repeated index is scored once and its row repeated; a loader that drops or
    repeats an index is an error; the result is a plain (trainable) tensor."""
    n = 12
    model = TableModel({"a": np.arange(n, dtype=float)})
    ctx = make_ctx(model, n, ["a"], [])
    inner = ctx.datamodule.pool_loader

    def summarise(batch):
        return {"v": model(batch["image"]).final["a"].mean(dim=(1, 2, 3)).unsqueeze(1)}

    ctx.datamodule.pool_loader = lambda idx, with_labels=False: reversed(list(inner(idx)))
    idx = np.array([5, 2, 9, 0, 11, 7, 1])
    got = stream_summaries(ctx, idx, summarise)
    np.testing.assert_allclose(got["v"][:, 0].numpy(), idx)
    got["v"].requires_grad_()  # an inference-mode tensor would refuse this
    ctx.datamodule.pool_loader = inner
    seen: list[int] = []
    ctx.datamodule.pool_loader = lambda i, with_labels=False: (seen.extend(i), inner(i))[1]
    twice = stream_summaries(ctx, np.array([3, 4, 3, 8]), summarise)
    np.testing.assert_allclose(twice["v"][:, 0].numpy(), [3, 4, 3, 8])
    assert seen == [3, 4, 8]
    ctx.datamodule.pool_loader = lambda i, with_labels=False: inner(i[:-1])
    with pytest.raises(RuntimeError, match=r"returned 6 samples for 7 requested"):
        stream_summaries(ctx, idx, summarise)
    ctx.datamodule.pool_loader = lambda i, with_labels=False: inner(np.r_[i, i[:1]])
    with pytest.raises(RuntimeError, match="or twice"):
        stream_summaries(ctx, idx, summarise)


def _two_summaries():
    """A 12-image context whose images score ``i``, and a pass summarising each image as
    ``v = [i, −i]`` and ``w = [i]``."""
    n = 12
    model = TableModel({"a": np.arange(n, dtype=float)})
    ctx = make_ctx(model, n, ["a"], [])

    def summarise(batch):
        v = model(batch["image"]).final["a"].mean(dim=(1, 2, 3))
        return {"v": torch.stack([v, -v], dim=1), "w": v.unsqueeze(1)}

    return ctx, summarise


def test_scoring_lead_rows_sit_in_front_of_the_streamed_rows() -> None:
    """``lead`` rows come first in the same buffer, the streamed rows behind them in
    ``indices`` order (also for repeated and empty indices); a lead of the wrong shape or
    for a summary the pass does not produce is an error naming it."""
    ctx, summarise = _two_summaries()

    lead = torch.tensor([[100.0, 101.0], [102.0, 103.0]], dtype=torch.float64)
    got = stream_summaries(ctx, np.array([5, 2, 9]), summarise, lead={"v": lead})
    assert got["v"].dtype == torch.float32
    np.testing.assert_array_equal(
        got["v"].numpy(), [[100, 101], [102, 103], [5, -5], [2, -2], [9, -9]]
    )
    np.testing.assert_array_equal(got["w"][:, 0].numpy(), [5, 2, 9])  # no lead: as before
    twice = stream_summaries(ctx, np.array([3, 3]), summarise, lead={"v": lead})
    np.testing.assert_array_equal(twice["v"][:, 0].numpy(), [100, 102, 3, 3])
    empty = stream_summaries(ctx, np.array([], dtype=np.int64), summarise, lead={"v": lead})
    np.testing.assert_array_equal(empty["v"].numpy(), lead.numpy())
    with pytest.raises(ValueError, match=r"lead rows of 'v' have shape \(3,\)"):
        stream_summaries(ctx, np.array([1]), summarise, lead={"v": torch.zeros(1, 3)})
    with pytest.raises(ValueError, match=r"lead rows were given for \['x'\]"):
        stream_summaries(ctx, np.array([1]), summarise, lead={"x": torch.zeros(1, 2)})


def test_mc_passes_are_seeded_and_leave_global_rng_alone() -> None:
    class NoisyModel(torch.nn.Module):
        def forward(self, image, **kw):
            noise = torch.rand(image.shape[0], 1, 1, 1)  # dropout-like randomness
            return MultiTaskOutput(final={"a": image[:, 1:2] * noise})

    ctx = make_ctx(NoisyModel(), 8, ["a"], [0])
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first = create_strategy("rbal", uncertainty="mc", mc_samples=3).select(ctx, 3)
    assert torch.equal(torch.rand(3), expected)
    second = create_strategy("rbal", uncertainty="mc", mc_samples=3).select(ctx, 3)
    np.testing.assert_array_equal(first.scores, second.scores)
    ctx.seed = 1
    third = create_strategy("rbal", uncertainty="mc", mc_samples=3).select(ctx, 3)
    assert not np.array_equal(first.scores, third.scores)


def test_mtal_eq1_anchors_on_the_initial_prediction_by_hand() -> None:
    # WACV24 Eq. 1: ŝ_k = max_j L_k(ŷ_k initial, ŷ_kj); tasks a, b, c; image 0 labelled
    initial = {"a": np.array([0, 1, 2, 3.0]), "b": np.zeros(4), "c": np.array([0, 0, 4, 1.0])}
    final = {t: v + 50 for t, v in initial.items()}  # far away: must not be the anchor
    committee = {
        "a": {"initial": initial["a"], "b": np.array([0, 2, 2, 3.0]), "c": [0, 1, 5, 3.0]},
        "b": {"initial": initial["b"], "a": np.array([0, 0, 1, 0.0]), "c": [0, 2, 0, 0.0]},
        "c": {"initial": initial["c"], "a": np.array([0, 0, 4, 1.0]), "b": [0, 3, 4, 1.0]},
    }
    model = TableModel(final, committee, initial=initial)
    ctx = make_ctx(model, 4, ["a", "b", "c"], [0])
    sel = create_strategy("mtal", variant="inconsistency", tie_break="index").select(ctx, 3)
    # unlabelled 1, 2, 3: ŝ_a = max(|1−2|, |1−1|), max(0, 3), max(0, 0) = [1, 3, 0]
    # ŝ_b = [max(0, 2), max(1, 0), 0] = [2, 1, 0]; ŝ_c = [max(0, 3), 0, 0] = [3, 0, 0]
    # s_a = [1/3, 1, 0], s_b = [1, .5, 0], s_c = [1, 0, 0]; max = [1, 1, 0] → image 1
    assert sel.images.tolist() == [1]
    np.testing.assert_allclose(sel.scores, [[1 / 3, 1.0, 1.0]], rtol=1e-6)
    assert all(c.get("committee_mode") == "learnable" for c in model.calls if c.get("committee"))
    # anchor=final measures against final (= initial + 50): ŝ_k ≈ 50 everywhere, differs
    fin = create_strategy("mtal", variant="inconsistency", tie_break="index", anchor="final")
    assert fin.select(ctx, 3).scores.tolist() != sel.scores.tolist()
    with pytest.raises(ValueError, match="anchor"):
        create_strategy("mtal", anchor="refined")
    with pytest.raises(ValueError, match="committee_mode"):
        create_strategy("mtal", committee_mode="pairs")


def test_vaal_vae_kl_term_matches_torch_distributions() -> None:
    from torch.distributions import Normal, kl_divergence

    from mtal.acquisition.diversity import FeatureAutoEncoder, gaussian_kl

    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    ref = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(1).mean()
    torch.testing.assert_close(gaussian_kl(mu, logvar), ref)
    vae = FeatureAutoEncoder(2, 2, code_dim=4, hidden=3, variational=True)
    x = torch.randn(6, 2, 2, 2, generator=g)
    m, lv = vae.posterior(x)
    assert m.shape == lv.shape == (6, 4)
    torch.testing.assert_close(vae.encode(x), m)  # codes are the posterior means


def _mapped(folder: Path) -> int:
    """How many of this process's memory maps are files in ``folder`` (deleted or not)."""
    text = Path("/proc/self/maps").read_text()
    return sum(str(folder) in line for line in text.splitlines())


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_summary_buffer_on_disk_is_an_unnamed_mapped_file(tmp_path) -> None:
    """``float32_buffer(shape, folder)``: a float32 array mapped onto a file in ``folder``
    that has no name there and is gone once the last view of the array is; in memory
    without a folder; a missing folder is an error naming the setting."""
    import gc

    from mtal.buffers import float32_buffer

    plain = float32_buffer((3, 4))
    assert type(plain) is np.ndarray and plain.dtype == np.float32
    buf = float32_buffer((50, 8), str(tmp_path))
    assert isinstance(buf, np.memmap) and buf.shape == (50, 8) and buf.dtype == np.float32
    buf[:] = np.arange(400, dtype=np.float32).reshape(50, 8)
    view = torch.from_numpy(buf)[10:12]  # a tensor view keeps the map alive
    assert list(tmp_path.iterdir()) == []  # no name on disk
    del buf
    gc.collect()
    assert _mapped(tmp_path) == 1
    np.testing.assert_array_equal(view.numpy(), np.arange(80, 96).reshape(2, 8))
    del view
    gc.collect()
    assert _mapped(tmp_path) == 0  # the OS has dropped the file with its last view
    assert float32_buffer((0, 8), str(tmp_path)).shape == (0, 8)
    with pytest.raises(FileNotFoundError, match="loop.summary_dir"):
        float32_buffer((2, 2), str(tmp_path / "missing"))


def test_scoring_on_disk_gives_the_same_rows_as_in_memory(tmp_path) -> None:
    """``ctx.summary_dir`` changes where the rows live, not what they are: the plain,
    lead, repeated-index and empty paths give the same float32 rows as in memory, the
    mapped buffers sit in that folder while held, and nothing is left there after."""
    import gc

    ctx, summarise = _two_summaries()

    lead = torch.tensor([[100.0, 101.0], [102.0, 103.0]])
    calls = [
        (np.array([5, 2, 9, 0, 7]), None),
        (np.array([5, 2, 9]), {"v": lead}),
        (np.array([3, 3]), {"v": lead}),
        (np.array([], dtype=np.int64), {"v": lead}),
    ]
    for idx, lead_rows in calls:
        ctx.summary_dir = None
        want = stream_summaries(ctx, idx, summarise, lead=lead_rows)
        ctx.summary_dir = str(tmp_path)
        got = stream_summaries(ctx, idx, summarise, lead=lead_rows)
        assert sorted(got) == sorted(want)
        for key in want:
            assert got[key].dtype == torch.float32
            assert torch.equal(got[key], want[key]), (idx, key)
        if idx.size:
            assert _mapped(tmp_path) >= 1  # the rows are in the folder's mapped files
        del got
        gc.collect()
        assert _mapped(tmp_path) == 0
    assert list(tmp_path.iterdir()) == []
