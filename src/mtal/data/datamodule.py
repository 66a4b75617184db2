"""``ActiveDataModule``: a LightningDataModule whose training set is whatever the label
pool has bought, and which never reads a label the pool has not bought.

Batches follow docs/contracts.md: ``{"image": B×3×H×W float32, "targets": {task: tensor},
"labelled": B×K bool, "weight": B×K float32, "index": B int64}`` with K in the order of
``datamodule.tasks``. A target whose pair is unlabelled is ``task.empty_target(H, W)``
and is never loaded from disk: the dataset is asked only for the labelled tasks.

Workers: with ``num_workers > 0`` loaders use the default start method and
``persistent_workers=False`` (each epoch re-reads the pool snapshot cheaply). No
FAISS/thread special-casing is needed because FAISS never runs inside a worker.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from mtal.data import create_dataset
from mtal.data.base import DatasetLayoutError, MultiTaskDataset, check_disjoint_splits
from mtal.data.pool import LabelPool
from mtal.data.transforms import BOX_TASK, DenseTransform, empty_box_target, to_tensors
from mtal.tasks.base import Task

__all__ = ["ActiveDataModule", "PoolView", "SeededSampler", "collate_batch"]


def _create_task(name: str, **kwargs: Any) -> Task:
    """Build a task through the task registry (imported lazily)."""
    from mtal.tasks import create_task

    return create_task(name, **kwargs)


def collate_batch(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack samples into a contract batch; non-tensor targets (e.g. ``boxes`` dicts)
    are kept as per-sample lists."""
    if not samples:
        raise ValueError("collate_batch: empty batch")
    batch: dict[str, Any] = {
        "image": torch.stack([s["image"] for s in samples]),
        "targets": {},
        "labelled": torch.stack([s["labelled"] for s in samples]),
        "weight": torch.stack([s["weight"] for s in samples]),
        "index": torch.as_tensor([int(s["index"]) for s in samples], dtype=torch.int64),
    }
    for name in samples[0]["targets"]:
        values = [s["targets"][name] for s in samples]
        if all(isinstance(v, torch.Tensor) for v in values):
            batch["targets"][name] = torch.stack(values)
        else:
            batch["targets"][name] = values
    return batch


class SeededSampler(Sampler[tuple[int, int]]):
    """Yields ``(position, augmentation_seed)`` pairs: a permutation (or the identity)
    and one seed per sample, both drawn from ``(seed, salt, epoch)``, so augmentation is
    reproducible and independent of the number of workers. Lightning calls
    ``set_epoch``; without it every iteration advances the epoch by one."""

    def __init__(self, length: int, seed: int, *, shuffle: bool = True, salt: int = 0) -> None:
        self.length = int(length)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.salt = int(salt)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Fix the epoch whose permutation and seeds the next iteration yields."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[tuple[int, int]]:
        state = np.random.SeedSequence([self.seed, self.salt, self.epoch]).generate_state(2)
        generator = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
        order = (
            torch.randperm(self.length, generator=generator)
            if self.shuffle
            else torch.arange(self.length)
        )
        seeds = torch.randint(0, 2**31 - 1, (self.length,), generator=generator)
        self.epoch += 1
        return iter(zip(order.tolist(), seeds.tolist()))


class PoolView(Dataset):
    """Samples ``indices`` of ``dataset``, loading for each only the tasks whose column in
    ``load_mask`` is True; the other tasks get ``empty_target``. ``labelled``/``weight``
    rows go into the sample as tensors. The masks are copied, so the view is a snapshot."""

    def __init__(
        self,
        dataset: MultiTaskDataset,
        tasks: Mapping[str, Task],
        indices: Sequence[int] | np.ndarray,
        load_mask: np.ndarray,
        weight: np.ndarray,
        transform: DenseTransform,
    ) -> None:
        self.dataset = dataset
        self.tasks = dict(tasks)
        self.names = tuple(self.tasks)
        self.indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        self.load_mask = np.array(load_mask, dtype=bool, copy=True)
        self.weight = np.array(weight, dtype=np.float32, copy=True)
        shape = (self.indices.size, len(self.names))
        if self.load_mask.shape != shape or self.weight.shape != shape:
            raise ValueError(
                f"PoolView: load_mask {self.load_mask.shape} and weight {self.weight.shape} "
                f"must be {shape} (indices × tasks)"
            )
        self.transform = transform

    def __len__(self) -> int:
        return int(self.indices.size)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        position, seed = item if isinstance(item, tuple) else (item, None)
        position = int(position)
        index = int(self.indices[position])
        row = self.load_mask[position]
        wanted = [t for t, on in zip(self.names, row) if on]
        raw = self.dataset.load(index, wanted)
        if "image" not in raw:
            raise KeyError(f"{type(self.dataset).__name__}.load({index}) returned no 'image'")
        sample = {"image": raw["image"]}
        for name in wanted:
            if name not in raw:
                raise KeyError(
                    f"{type(self.dataset).__name__}.load({index}, {wanted}) did not return "
                    f"task {name!r}"
                )
            sample[name] = raw[name]
            if name == BOX_TASK:
                sample["box_labels"] = raw.get("box_labels", np.zeros(0, dtype=np.int64))
        sample = self.transform(sample, seed)
        loaded = {t: self.tasks[t] for t in wanted}
        converted = to_tensors(sample, loaded)
        height, width = converted["image"].shape[-2:]
        targets = {}
        for name, task in self.tasks.items():
            if name in converted["targets"]:
                targets[name] = converted["targets"][name]
            elif name == BOX_TASK:
                targets[name] = empty_box_target()
            else:
                targets[name] = task.empty_target(int(height), int(width))
        return {
            "image": converted["image"],
            "targets": targets,
            "labelled": torch.from_numpy(row.copy()),
            "weight": torch.from_numpy(self.weight[position].copy()),
            "index": index,
        }


class ActiveDataModule(L.LightningDataModule):
    """Datasets, label pool and loaders of one active-learning run.

    ``dataset`` is a registered dataset name, built as
    ``create_dataset(dataset, split=..., tasks=..., root=root, **dataset_kwargs)`` (``root``
    only when given). ``initial`` is a fraction of the pool when a float (``1.0`` = all),
    an image count when an int (``0`` = start with an empty pool). ``pool_size`` keeps the
    first N training samples; ``val_size`` the first N samples of the val *and* test
    splits (a cap for quick runs). ``task_options`` passes per-task keyword options to
    ``create_task``.
    """

    def __init__(
        self,
        dataset: str = "synthetic",
        root: str | None = None,
        tasks: list[str] | None = None,
        dataset_kwargs: dict[str, Any] | None = None,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str = "val",
        size: tuple[int, int] | None = None,
        augment: bool = True,
        batch_size: int = 8,
        eval_batch_size: int = 16,
        num_workers: int = 0,
        initial: int | float = 0.1,
        pool_seed: int = 0,
        pool_size: int | None = None,
        val_size: int | None = None,
        scale: tuple[float, float] = (0.75, 1.5),
        task_options: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(initial, bool) or not isinstance(initial, int | float):
            raise TypeError(f"initial must be a float fraction or an int count, got {initial!r}")
        if isinstance(initial, float) and not 0.0 < initial <= 1.0:
            raise ValueError(f"initial={initial}: a float is a fraction and must be in (0, 1]")
        if isinstance(initial, int) and initial < 0:
            raise ValueError(f"initial={initial}: an int is an image count and must be >= 0")
        for key, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if int(value) < 1:
                raise ValueError(f"{key} must be >= 1, got {value}")
        # tasks/task_options are logged by the module (the CLI links them); keeping them here
        # too would make Lightning refuse to merge the two sets of hyperparameters
        self.save_hyperparameters(ignore=["tasks", "task_options"])
        self.dataset_name = dataset
        self.root = root
        self.dataset_kwargs = dict(dataset_kwargs or {})
        self.splits = {"train": train_split, "val": val_split, "test": test_split}
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.augment = bool(augment)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.num_workers = int(num_workers)
        self.initial = initial
        self.pool_seed = int(pool_seed)
        self.pool_size = pool_size
        self.val_size = val_size
        self.scale = (float(scale[0]), float(scale[1]))
        self.task_options = {k: dict(v) for k, v in (task_options or {}).items()}
        self._requested_tasks = None if tasks is None else tuple(tasks)
        self._datasets: dict[str, MultiTaskDataset] = {}
        self._task_objects: dict[str, Task] | None = None
        self._pool: LabelPool | None = None

    # -- datasets and tasks ----------------------------------------------------------
    def _dataset(self, stage: str) -> MultiTaskDataset:
        if stage not in self._datasets:
            kwargs = dict(self.dataset_kwargs)
            if self.root is not None:
                kwargs["root"] = self.root
            try:
                self._datasets[stage] = create_dataset(
                    self.dataset_name,
                    split=self.splits[stage],
                    tasks=self._requested_tasks,
                    **kwargs,
                )
            except DatasetLayoutError as exc:  # name the config field first
                # the message carries the original: the innermost error is the one shown
                raise DatasetLayoutError(f"data.root={self.root!r}: {exc}") from None
            check_disjoint_splits(self._datasets)  # a val/test id in the pool is an error
        return self._datasets[stage]

    @property
    def train_dataset(self) -> MultiTaskDataset:
        """The training split (the pool is its first ``pool_size`` samples)."""
        return self._dataset("train")

    @property
    def val_dataset(self) -> MultiTaskDataset:
        """The validation split."""
        return self._dataset("val")

    @property
    def test_dataset(self) -> MultiTaskDataset:
        """The test split."""
        return self._dataset("test")

    @property
    def tasks(self) -> tuple[str, ...]:
        """Task names in pool column order."""
        return tuple(self.train_dataset.tasks)

    @property
    def num_classes(self) -> dict[str, int]:
        """Classes of the categorical tasks among ``tasks``."""
        table = self.train_dataset.num_classes
        return {t: int(table[t]) for t in self.tasks if t in table}

    @property
    def task_objects(self) -> dict[str, Task]:
        """Task name → Task object (``create_task(name, num_classes=..., **task_options)``)."""
        if self._task_objects is None:
            classes = self.num_classes
            self._task_objects = {
                t: _create_task(t, num_classes=classes.get(t), **self.task_options.get(t, {}))
                for t in self.tasks
            }
        return self._task_objects

    @property
    def pool_length(self) -> int:
        """N: the number of training samples in the pool."""
        n = len(self.train_dataset)
        if self.pool_size is not None and int(self.pool_size) > n:
            raise ValueError(
                f"data.pool_size={self.pool_size}, but the {self.splits['train']!r} split has "
                f"only {n} images; use data.pool_size <= {n} or null for all of them"
            )
        return n if self.pool_size is None else int(self.pool_size)

    def _eval_indices(self, stage: str) -> np.ndarray:
        n = len(self._dataset(stage))
        if self.val_size is not None:
            n = min(int(self.val_size), n)
        return np.arange(n, dtype=np.int64)

    # -- pool -----------------------------------------------------------------------------
    @property
    def pool(self) -> LabelPool:
        """The label pool, created (and initialised with ``initial``/``pool_seed``) on
        first use; ``attach_pool`` replaces it."""
        if self._pool is None:
            ds = self.train_dataset
            pool = LabelPool([ds.image_id(i) for i in range(self.pool_length)], self.tasks)
            if isinstance(self.initial, float):
                pool.initialise(fraction=self.initial, seed=self.pool_seed)
            elif self.initial > 0:
                pool.initialise(count=self.initial, seed=self.pool_seed)
            self._pool = pool
        return self._pool

    def attach_pool(self, pool: LabelPool) -> None:
        """Use ``pool`` (e.g. loaded on resume); its tasks and image ids must match."""
        if tuple(pool.tasks) != self.tasks:
            raise ValueError(
                f"attach_pool: the pool has tasks {list(pool.tasks)}, the datamodule "
                f"{list(self.tasks)}; use the same tasks as the run that wrote the pool"
            )
        if pool.num_images != self.pool_length:
            raise ValueError(
                f"attach_pool: the pool has {pool.num_images} images, the datamodule's pool "
                f"has {self.pool_length} (check dataset, train_split and pool_size)"
            )
        ds = self.train_dataset
        for i, image_id in enumerate(pool.image_ids):
            if ds.image_id(i) != image_id:
                raise ValueError(
                    f"attach_pool: pool image {i} is {image_id!r} but the dataset has "
                    f"{ds.image_id(i)!r} there; the dataset or its order changed"
                )
        self._pool = pool

    # -- lightning hooks --------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Open the datasets the stage needs, build the tasks and the pool."""
        if stage in (None, "fit"):
            _ = self.pool, self.val_dataset
        if stage in (None, "validate"):
            _ = self.val_dataset
        if stage in (None, "test"):
            _ = self.test_dataset
        _ = self.task_objects

    def state_dict(self) -> dict[str, Any]:
        """Lightning checkpoint state: the pool (so a checkpoint knows its labels)."""
        return {"pool": self.pool.state_dict()} if self._pool is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the pool saved by :meth:`state_dict` (validated by ``attach_pool``)."""
        if "pool" in state_dict:
            self.attach_pool(LabelPool.from_state_dict(state_dict["pool"]))

    # -- transforms -----------------------------------------------------------------------
    def train_transform(self) -> DenseTransform:
        """Augmenting transform (scale-crop + flip) when ``augment``, else eval resize."""
        if not self.augment:
            return self.eval_transform()
        return DenseTransform(self.size, train=True, scale=self.scale)

    def eval_transform(self) -> DenseTransform:
        """Deterministic transform: resize to ``size`` when given."""
        return DenseTransform(self.size, train=False)

    # -- loaders ------------------------------------------------------------------------
    def _loader(
        self, view: PoolView, batch_size: int, sampler: Sampler[Any] | None = None
    ) -> DataLoader:
        return DataLoader(
            view,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=False,
            collate_fn=collate_batch,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        """Images with at least one labelled task, shuffled by a seeded sampler and
        augmented; only the labelled tasks of each image are loaded."""
        pool = self.pool
        indices = pool.labelled_images()
        if indices.size == 0:
            raise ValueError(
                "train_dataloader: the label pool has no labelled image; set initial > 0 "
                "or label images before fitting"
            )
        view = PoolView(
            self.train_dataset,
            self.task_objects,
            indices,
            pool.labelled[indices],
            pool.weight[indices],
            self.train_transform(),
        )
        sampler = SeededSampler(len(view), self.pool_seed, shuffle=True, salt=pool.num_labels)
        return self._loader(view, self.batch_size, sampler)

    def _eval_loader(self, stage: str) -> DataLoader:
        indices = self._eval_indices(stage)
        k = len(self.tasks)
        view = PoolView(
            self._dataset(stage),
            self.task_objects,
            indices,
            np.ones((indices.size, k), dtype=bool),
            np.ones((indices.size, k), dtype=np.float32),
            self.eval_transform(),
        )
        return self._loader(view, self.eval_batch_size)

    def val_dataloader(self) -> DataLoader:
        """All tasks of the val split (first ``val_size``), labelled all True, weight 1."""
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        """All tasks of the test split (first ``val_size``), labelled all True, weight 1."""
        return self._eval_loader("test")

    def pool_loader(
        self,
        indices: Sequence[int] | np.ndarray,
        *,
        with_labels: bool = False,
        batch_size: int | None = None,
    ) -> DataLoader:
        """Pool images ``indices`` in order, without augmentation, for scoring.

        ``with_labels=False`` loads images only (all targets empty, ``labelled`` False);
        ``with_labels=True`` also loads the pool's labelled targets (ground-truth
        substitution) with ``labelled`` = the pool's mask. ``weight`` is the pool's s_k.
        """
        pool = self.pool
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        bad = idx[(idx < 0) | (idx >= pool.num_images)]
        if bad.size:
            raise IndexError(
                f"pool_loader: index {int(bad[0])} is out of range [0, {pool.num_images})"
            )
        mask = pool.labelled[idx] if with_labels else np.zeros((idx.size, pool.num_tasks), bool)
        view = PoolView(
            self.train_dataset,
            self.task_objects,
            idx,
            mask,
            pool.weight[idx],
            self.eval_transform(),
        )
        return self._loader(view, int(batch_size or self.eval_batch_size))
