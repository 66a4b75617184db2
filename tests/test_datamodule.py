"""Joint transforms and ActiveDataModule: alignment, batch contract, no unlabelled reads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch

from mtal.data import DATASETS, LabelPool
from mtal.data.datamodule import ActiveDataModule, SeededSampler, collate_batch
from mtal.data.synthetic import SyntheticScenes
from mtal.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DenseTransform,
    hflip_sample,
    to_tensors,
)
from mtal.tasks import create_task

ALL = ("semseg", "depth", "normals", "edge", "saliency", "parts")
LEFT_N = np.array([0.6, 0.0, 0.8], dtype=np.float32)
RIGHT_N = np.array([-0.28, 0.0, 0.96], dtype=np.float32)


# -- transforms ------------------------------------------------------------------------
def half_sample(h: int = 16, w: int = 24) -> dict[str, Any]:
    """Every target encodes the same geometry: the left half is 'object'."""
    left = np.zeros((h, w), dtype=bool)
    left[:, : w // 2] = True
    image = np.zeros((h, w, 3), dtype=np.uint8)
    image[left] = (200, 50, 10)
    image[~left] = (0, 100, 250)
    normals = np.where(left[..., None], LEFT_N, RIGHT_N).astype(np.float32)
    return {
        "image": image,
        "semseg": left.astype(np.uint8) * 3,
        "parts": left.astype(np.uint8) * 2,
        "edge": left.astype(np.uint8),
        "saliency": left.astype(np.uint8),
        "depth": np.where(left, 1.5, 4.0).astype(np.float32),
        "normals": normals,
        "boxes": np.array([[0, 0, w // 2, h]], dtype=np.float32),
        "box_labels": np.array([7], dtype=np.int64),
    }


def test_identity_and_forced_flip_are_exact() -> None:
    s = half_sample()
    keep = DenseTransform((16, 24), scale=(1.0, 1.0), flip_prob=0.0)(s, seed=1)
    for key in ("image", "semseg", "depth", "normals", "edge"):
        np.testing.assert_array_equal(keep[key], s[key])
    flip = DenseTransform((16, 24), scale=(1.0, 1.0), flip_prob=1.0)(s, seed=1)
    np.testing.assert_array_equal(flip["image"], s["image"][:, ::-1])
    np.testing.assert_array_equal(flip["semseg"], s["semseg"][:, ::-1])
    np.testing.assert_array_equal(flip["depth"], s["depth"][:, ::-1])
    # normals: mirrored and x negated: the left half now holds (+0.28, 0, 0.96)
    np.testing.assert_allclose(
        flip["normals"][:, 12:], np.broadcast_to(LEFT_N * [-1, 1, 1], (16, 12, 3))
    )
    np.testing.assert_allclose(
        flip["normals"][:, :12], np.broadcast_to(RIGHT_N * [-1, 1, 1], (16, 12, 3))
    )
    np.testing.assert_allclose(flip["boxes"], [[12, 0, 24, 16]])
    twice = hflip_sample(hflip_sample(s))
    for key in ("image", "semseg", "depth", "normals", "boxes"):
        np.testing.assert_array_equal(twice[key], s[key])


def test_scale_crop_flip_keep_all_targets_aligned() -> None:
    s = half_sample()
    transform = DenseTransform((16, 24), scale=(0.5, 1.6), flip_prob=0.5)
    flips = set()
    for seed in range(24):
        out = transform(s, seed=seed)
        sem = out["semseg"]
        pad = sem == 255
        obj = sem == 3
        assert sem.shape == (16, 24) and out["normals"].shape == (16, 24, 3)
        for key, value in (("parts", 2), ("edge", 1), ("saliency", 1)):
            np.testing.assert_array_equal(out[key] == 255, pad, err_msg=key)
            np.testing.assert_array_equal(out[key] == value, obj, err_msg=key)
        np.testing.assert_array_equal(out["depth"] == 0, pad)
        np.testing.assert_array_equal(out["depth"] == 1.5, obj)
        np.testing.assert_array_equal(np.abs(out["normals"]).sum(-1) == 0, pad)
        assert set(np.unique(out["depth"])) <= {0.0, 1.5, 4.0}  # nearest: no blending
        cols = np.arange(24)[None].repeat(16, 0)
        flipped = cols[obj].mean() > cols[sem == 0].mean()
        flips.add(bool(flipped))
        sign = -1.0 if flipped else 1.0
        np.testing.assert_allclose(
            out["normals"][obj], np.broadcast_to(LEFT_N * [sign, 1, 1], (obj.sum(), 3))
        )
        # the image agrees with the labels away from the object border
        interior = obj.copy()
        interior[:, 1:] &= obj[:, :-1]
        interior[:, :-1] &= obj[:, 1:]
        assert np.abs(out["image"][interior].astype(int) - [200, 50, 10]).max() <= 2
        assert (out["image"][pad] == 0).all()
        # the box follows the object
        assert out["box_labels"].tolist() == [7]
        x1, y1, x2, y2 = out["boxes"][0]
        obj_cols = cols[obj]
        assert abs(x1 - obj_cols.min()) <= 1 and abs(x2 - (obj_cols.max() + 1)) <= 1
        assert 0 <= x1 < x2 <= 24 and 0 <= y1 < y2 <= 16
        # the same seed gives the same sample
        again = transform(s, seed=seed)
        np.testing.assert_array_equal(again["image"], out["image"])
    assert flips == {True, False}


def test_downscale_pads_with_ignore_values() -> None:
    s = half_sample()
    out = DenseTransform((16, 24), scale=(0.5, 0.5), flip_prob=0.0)(s, seed=0)
    valid = np.zeros((16, 24), dtype=bool)
    valid[4:12, 6:18] = True  # an 8×12 image centred in 16×24
    np.testing.assert_array_equal(out["semseg"] != 255, valid)
    np.testing.assert_array_equal(out["depth"] != 0, valid)
    np.testing.assert_array_equal(out["normals"][~valid], 0.0)
    np.testing.assert_array_equal(out["semseg"][4:12, 6:12], 3)


def test_eval_resize_uses_nearest_for_depth() -> None:
    depth = np.zeros((8, 8), dtype=np.float32)
    depth[::2, ::2] = 5.0  # sparse valid depth with invalid zeros in between
    s = {"image": np.zeros((8, 8, 3), np.uint8), "depth": depth}
    out = DenseTransform((20, 20), train=False)(s)
    assert out["depth"].shape == (20, 20)
    assert set(np.unique(out["depth"])) == {0.0, 5.0}
    same = DenseTransform(None, train=False)(s)
    np.testing.assert_array_equal(same["depth"], depth)


def test_to_tensors_normalises_and_converts() -> None:
    s = half_sample(8, 10)
    tasks = {"semseg": create_task("semseg", num_classes=4), "depth": create_task("depth")}
    out = to_tensors(s, tasks)
    img = out["image"]
    assert img.shape == (3, 8, 10) and img.dtype == torch.float32
    expected = (200 / 255 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
    assert img[0, 0, 0].item() == pytest.approx(expected, abs=1e-6)
    assert set(out["targets"]) == {"semseg", "depth"}
    assert out["targets"]["semseg"].dtype == torch.int64
    assert out["targets"]["depth"].shape == (1, 8, 10)


# -- datamodule --------------------------------------------------------------------------
class StrictScenes(SyntheticScenes):
    """SyntheticScenes that raises when asked for a task ``allowed`` does not grant."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.allowed: dict[int, set[str]] | None = None
        self.calls: list[tuple[int, tuple[str, ...]]] = []

    def load(self, index: int, tasks: Sequence[str]) -> dict[str, Any]:
        if self.allowed is not None:
            forbidden = set(tasks) - self.allowed.get(index, set())
            if forbidden:
                raise AssertionError(f"unlabelled read of {sorted(forbidden)} for image {index}")
        self.calls.append((index, tuple(tasks)))
        return super().load(index, tasks)


@pytest.fixture
def strict(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(DATASETS._entries, "strict_scenes", StrictScenes)
    return "strict_scenes"


def make_dm(name: str = "synthetic", **kw: Any) -> ActiveDataModule:
    args: dict[str, Any] = {
        "dataset": name,
        "dataset_kwargs": {"size": (32, 40), "length": 12},
        "size": (32, 40),
        "batch_size": 4,
        "eval_batch_size": 5,
        "initial": 0.25,
        "pool_seed": 1,
    }
    args.update(kw)
    return ActiveDataModule(**args)


def check_batch(batch: dict[str, Any], dm: ActiveDataModule, h: int = 32, w: int = 40) -> None:
    b = batch["image"].shape[0]
    k = len(dm.tasks)
    assert set(batch) == {"image", "targets", "labelled", "weight", "index"}
    assert batch["image"].shape == (b, 3, h, w) and batch["image"].dtype == torch.float32
    assert batch["labelled"].shape == (b, k) and batch["labelled"].dtype == torch.bool
    assert batch["weight"].shape == (b, k) and batch["weight"].dtype == torch.float32
    assert batch["index"].shape == (b,) and batch["index"].dtype == torch.int64
    assert tuple(batch["targets"]) == dm.tasks
    for j, name in enumerate(dm.tasks):
        task = dm.task_objects[name]
        target = batch["targets"][name]
        assert target.shape[0] == b and target.shape[-2:] == (h, w)
        assert target.dtype == task.empty_target(h, w).dtype
        valid = task.valid_mask(target).flatten(1).any(1)
        # an unlabelled pair carries an all-ignore target; a labelled one has labels
        assert not valid[~batch["labelled"][:, j]].any()


def test_properties_and_pool_creation() -> None:
    dm = make_dm(tasks=["semseg", "depth", "normals"], pool_size=8)
    assert dm.tasks == ("semseg", "depth", "normals")
    assert dm.num_classes == {"semseg": 12}
    assert dm.task_objects["semseg"].num_classes == 12
    assert dm.pool.num_images == 8 and dm.pool.num_labelled_images == 2
    assert dm.pool.image_ids == [dm.train_dataset.image_id(i) for i in range(8)]
    other = make_dm(tasks=["semseg", "depth", "normals"], pool_size=8)
    assert other.pool == dm.pool  # seeded initial set
    assert make_dm(initial=3).pool.num_labelled_images == 3
    assert make_dm(initial=0).pool.num_labels == 0


def test_train_loader_reads_only_labelled_tasks(strict: str) -> None:
    dm = make_dm(strict)
    pool = dm.pool
    pool.label_pairs(pool.unlabelled_pairs()[::4][:8], cycle=1, weights=np.linspace(0.2, 0.9, 8))
    ds = dm.train_dataset
    ds.allowed = {i: set(pool.labelled_tasks(i)) for i in range(len(pool))}
    seen: list[int] = []
    for batch in dm.train_dataloader():
        check_batch(batch, dm)
        idx = batch["index"].numpy()
        np.testing.assert_array_equal(batch["labelled"].numpy(), pool.labelled[idx])
        np.testing.assert_array_equal(batch["weight"].numpy(), pool.weight[idx])
        assert batch["labelled"].any(1).all()
        seen.extend(idx.tolist())
    assert sorted(seen) == pool.labelled_images().tolist()
    assert any(len(t) < len(dm.tasks) for _, t in ds.calls)  # partial images were loaded
    # the guard works: asking for an unlabelled task raises
    unl = int(pool.unlabelled_images()[0])
    with pytest.raises(AssertionError, match="unlabelled read"):
        ds.load(unl, ["semseg"])


def test_pool_loader_with_and_without_labels(strict: str) -> None:
    dm = make_dm(strict)
    pool = dm.pool
    pool.label_pairs(pool.unlabelled_pairs()[[0, 5]], cycle=1)  # partially labelled images
    ds = dm.train_dataset
    ds.allowed = {}
    order = np.array([5, 0, 2, 9, 11, 3])
    batches = list(dm.pool_loader(order, batch_size=4))
    assert [b["image"].shape[0] for b in batches] == [4, 2]
    got = torch.cat([b["index"] for b in batches]).numpy()
    np.testing.assert_array_equal(got, order)
    for b in batches:
        check_batch(b, dm)
        assert not b["labelled"].any()
    ds.allowed = {i: set(pool.labelled_tasks(i)) for i in range(len(pool))}
    for b in dm.pool_loader(order, with_labels=True):
        check_batch(b, dm)
        np.testing.assert_array_equal(b["labelled"].numpy(), pool.labelled[b["index"].numpy()])
    # unaugmented and in order: the same image twice gives the same tensor
    a = next(iter(dm.pool_loader([4, 4])))["image"]
    torch.testing.assert_close(a[0], a[1])
    with pytest.raises(IndexError, match="out of range"):
        dm.pool_loader([12])


def test_eval_loaders_are_fully_labelled() -> None:
    dm = make_dm(val_size=7, tasks=["semseg", "normals"])
    batches = list(dm.val_dataloader())
    assert [b["image"].shape[0] for b in batches] == [5, 2]
    for b in batches:
        check_batch(b, dm)
        assert b["labelled"].all() and (b["weight"] == 1).all()
    assert torch.cat([b["index"] for b in batches]).tolist() == list(range(7))
    assert sum(b["image"].shape[0] for b in dm.test_dataloader()) == 7


def test_train_order_is_seeded_and_changes_per_epoch() -> None:
    def epoch_indices(dm: ActiveDataModule, epoch: int) -> list[int]:
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        return torch.cat([b["index"] for b in loader]).tolist()

    dm1, dm2 = make_dm(initial=8), make_dm(initial=8)
    assert epoch_indices(dm1, 0) == epoch_indices(dm2, 0)
    assert epoch_indices(dm1, 0) != epoch_indices(dm1, 1)
    s = SeededSampler(6, seed=0)
    first, second = list(s), list(s)
    assert sorted(p for p, _ in first) == list(range(6)) and first != second


def test_attach_pool_validates_and_replaces() -> None:
    dm = make_dm()
    fresh = LabelPool(dm.pool.image_ids, dm.tasks)
    fresh.label_images([7], cycle=0)
    dm.attach_pool(fresh)
    assert torch.cat([b["index"] for b in dm.train_dataloader()]).tolist() == [7]
    with pytest.raises(ValueError, match="tasks"):
        dm.attach_pool(LabelPool(dm.pool.image_ids, ("semseg",)))
    with pytest.raises(ValueError, match="images"):
        dm.attach_pool(LabelPool(dm.pool.image_ids[:5], dm.tasks))
    ids = list(dm.pool.image_ids)
    ids[3] = "elsewhere"
    with pytest.raises(ValueError, match="elsewhere"):
        dm.attach_pool(LabelPool(ids, dm.tasks))
    restored = make_dm()
    restored.load_state_dict(dm.state_dict())
    assert restored.pool == fresh
    with pytest.raises(ValueError, match="no labelled image"):
        make_dm(initial=0).train_dataloader()


def test_collate_keeps_box_lists() -> None:
    def sample(n: int, i: int) -> dict[str, Any]:
        return {
            "image": torch.zeros(3, 4, 4),
            "targets": {"boxes": {"boxes": torch.zeros(n, 4), "labels": torch.zeros(n)}},
            "labelled": torch.ones(1, dtype=torch.bool),
            "weight": torch.ones(1),
            "index": i,
        }

    batch = collate_batch([sample(2, 0), sample(0, 5)])
    assert isinstance(batch["targets"]["boxes"], list)
    assert [t["boxes"].shape[0] for t in batch["targets"]["boxes"]] == [2, 0]
    assert batch["index"].tolist() == [0, 5]


def test_lightning_fit_consumes_the_loaders() -> None:
    import lightning as L

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 1, 1)
            self.seen: list[int] = []

        def training_step(self, batch: dict[str, Any], _: int) -> torch.Tensor:
            self.seen.extend(batch["index"].tolist())
            return self.conv(batch["image"]).mean()

        def validation_step(self, batch: dict[str, Any], _: int) -> None:
            self.log("v", self.conv(batch["image"]).mean())

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    dm = make_dm(tasks=["semseg", "depth"], val_size=3)
    model = Tiny()
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=dm)
    labelled = sorted(dm.pool.labelled_images().tolist())
    assert sorted(model.seen) == sorted(labelled * 2)


def test_worker_processes_reproduce_single_process_batches() -> None:
    single = list(make_dm(initial=6).train_dataloader())
    workers = list(make_dm(initial=6, num_workers=1).train_dataloader())
    assert [b["index"].tolist() for b in single] == [b["index"].tolist() for b in workers]
    for a, b in zip(single, workers):
        torch.testing.assert_close(a["image"], b["image"])
        torch.testing.assert_close(a["targets"]["normals"], b["targets"]["normals"])
