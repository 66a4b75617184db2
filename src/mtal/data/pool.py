"""The label pool: the single source of truth of who is labelled for which task, when,
and with which sample weight s_k and acquisition score."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mtal.io import read_checked_json, write_checked_json
from mtal.registry import Registry

__all__ = ["INITIAL_LABELS", "LabelPool", "POOL_SCHEMA", "POOL_VERSION"]

#: initial label settings: ``(rng, n_images, n_tasks) -> n×K bool`` task masks of the
#: chosen images (MTPSL's "one label" and "random labels", Li et al. CVPR 2022 Sec. 4)
INITIAL_LABELS: Registry[np.ndarray] = Registry("initial label setting")


@INITIAL_LABELS.register("full")
def full_labels(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """Every task of every chosen image."""
    return np.ones((n, k), dtype=bool)


@INITIAL_LABELS.register("one")
def one_label(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """Exactly one task per image, drawn uniformly."""
    mask = np.zeros((n, k), dtype=bool)
    mask[np.arange(n), rng.integers(0, k, size=n)] = True
    return mask


@INITIAL_LABELS.register("random")
def random_labels(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """1 … K−1 tasks per image: the count uniform in {1, …, K−1}, then the tasks uniform."""
    if k < 2:
        raise ValueError(f"initial labels 'random' need >= 2 tasks (1…K−1 per image), K={k}")
    counts = rng.integers(1, k, size=n)
    mask = np.zeros((n, k), dtype=bool)
    for i, c in enumerate(counts):
        mask[i, rng.choice(k, size=int(c), replace=False)] = True
    return mask


POOL_SCHEMA = "mtal.labelpool"
POOL_VERSION = 1


class LabelPool:
    """N images × K tasks of label bookkeeping.

    Arrays (row = image, column = task in ``tasks`` order):
    ``labelled`` bool, ``cycle`` int32 (cycle the pair was bought, −1 never),
    ``weight`` float32 (s_k stored at acquisition, 1.0 default), ``score`` float32
    (acquisition score at purchase, NaN none). Every mutation validates its whole
    request first, so a rejected request leaves the pool unchanged.
    """

    def __init__(self, image_ids: Sequence[str], tasks: Sequence[str]) -> None:
        self.image_ids: list[str] = [str(i) for i in image_ids]
        self.tasks: tuple[str, ...] = tuple(tasks)
        if not self.tasks:
            raise ValueError("LabelPool needs at least one task")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"LabelPool tasks contain duplicates: {list(self.tasks)}")
        n, k = len(self.image_ids), len(self.tasks)
        self.labelled = np.zeros((n, k), dtype=bool)
        self.cycle = np.full((n, k), -1, dtype=np.int32)
        self.weight = np.ones((n, k), dtype=np.float32)
        self.score = np.full((n, k), np.nan, dtype=np.float32)

    # -- shape --------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def num_images(self) -> int:
        """N, the number of images in the pool."""
        return len(self.image_ids)

    @property
    def num_tasks(self) -> int:
        """K, the number of task columns."""
        return len(self.tasks)

    def task_index(self, task: str) -> int:
        """Column of ``task``; raises naming the known tasks."""
        try:
            return self.tasks.index(task)
        except ValueError:
            raise KeyError(
                f"task {task!r} is not in the pool; pool tasks: {list(self.tasks)}"
            ) from None

    def __repr__(self) -> str:
        return (
            f"LabelPool(images={self.num_images}, tasks={list(self.tasks)}, "
            f"labels={self.num_labels}, labelled_images={self.num_labelled_images})"
        )

    # -- labelling ----------------------------------------------------------------
    def initialise(
        self,
        *,
        fraction: float | None = None,
        count: int | None = None,
        seed: int,
        labels: str = "full",
    ) -> np.ndarray:
        """Label a random initial set at cycle 0: ``count`` images, or ``round(fraction·N)``
        (at least one), each with the tasks the setting ``labels`` of
        :data:`INITIAL_LABELS` draws (``full``, ``one``, ``random``; same seed → same
        images whatever the setting). Returns the chosen image indices (sorted)."""
        setting = INITIAL_LABELS.get(labels)
        if (fraction is None) == (count is None):
            raise ValueError("LabelPool.initialise: give exactly one of fraction= or count=")
        n = self.num_images
        if fraction is not None:
            if not 0.0 < float(fraction) <= 1.0:
                raise ValueError(
                    f"LabelPool.initialise: fraction must be in (0, 1], got {fraction}"
                )
            count = max(1, int(round(float(fraction) * n)))
        assert count is not None
        if not 0 < int(count) <= n:
            raise ValueError(
                f"LabelPool.initialise: count must be in [1, {n}] (pool size), got {count}"
            )
        if self.labelled.any():
            raise ValueError(
                f"LabelPool.initialise: the pool already holds {self.num_labels} labels; "
                "initialise a fresh pool (or use label_images to add more)"
            )
        rng = np.random.default_rng(seed)
        chosen = np.sort(rng.choice(n, size=int(count), replace=False))
        mask = setting(rng, chosen.size, self.num_tasks)
        rows, cols = np.nonzero(mask)
        self.label_pairs(np.stack([chosen[rows], cols], axis=1), cycle=0)
        return chosen

    def initialise_from_mask(self, mask: np.ndarray, source: str = "mask") -> np.ndarray:
        """Label at cycle 0 exactly the pairs of the N×K bool ``mask`` (a published split,
        see :mod:`mtal.data.label_settings`); returns the images with ≥ 1 label."""
        arr = np.asarray(mask)
        shape = (self.num_images, self.num_tasks)
        if arr.shape != shape:
            raise ValueError(
                f"{source}: the label mask has shape {arr.shape}, the pool needs {shape} "
                f"(images × tasks {list(self.tasks)})"
            )
        if self.labelled.any():
            raise ValueError(
                f"LabelPool.initialise_from_mask: the pool already holds {self.num_labels} "
                "labels; initialise a fresh pool"
            )
        if not arr.any():
            raise ValueError(f"{source}: the label mask labels nothing")
        self.label_pairs(np.argwhere(arr.astype(bool)), cycle=0)
        return self.labelled_images()

    def label_images(
        self,
        indices: Sequence[int] | np.ndarray,
        cycle: int,
        weights: np.ndarray | Sequence[Sequence[float]] | None = None,
        scores: np.ndarray | Sequence[Sequence[float]] | None = None,
    ) -> None:
        """Label every task of the images ``indices`` at ``cycle``; ``weights``/``scores``
        are n×K (one row per image). Any already-labelled pair is an error."""
        idx = self._as_index_array(indices, "image index")
        k = self.num_tasks
        pairs = np.stack(
            [np.repeat(idx, k), np.tile(np.arange(k, dtype=np.int64), idx.size)], axis=1
        ).reshape(-1, 2)
        w = None if weights is None else self._as_matrix(weights, (idx.size, k), "weights").ravel()
        s = None if scores is None else self._as_matrix(scores, (idx.size, k), "scores").ravel()
        self.label_pairs(pairs, cycle, weights=w, scores=s)

    def label_pairs(
        self,
        pairs: np.ndarray | Sequence[Sequence[int]],
        cycle: int,
        weights: np.ndarray | Sequence[float] | None = None,
        scores: np.ndarray | Sequence[float] | None = None,
    ) -> None:
        """Label the (image, task column) ``pairs`` (M×2) at ``cycle`` with per-pair
        ``weights``/``scores`` (M). Validates the whole request before changing anything."""
        arr = np.asarray(pairs)
        if arr.size == 0:
            arr = arr.reshape(0, 2)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise ValueError(f"label_pairs: pairs must be an M×2 array, got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.integer):
            if not np.all(np.equal(np.mod(arr, 1), 0)):
                raise ValueError("label_pairs: pairs must hold integer indices")
        arr = arr.astype(np.int64)
        if int(cycle) < 0:
            raise ValueError(f"label_pairs: cycle must be >= 0, got {cycle}")
        m = arr.shape[0]
        n, k = self.num_images, self.num_tasks
        bad_img = np.flatnonzero((arr[:, 0] < 0) | (arr[:, 0] >= n))
        if bad_img.size:
            raise ValueError(
                f"label_pairs: image index {int(arr[bad_img[0], 0])} is out of range [0, {n})"
            )
        bad_task = np.flatnonzero((arr[:, 1] < 0) | (arr[:, 1] >= k))
        if bad_task.size:
            raise ValueError(
                f"label_pairs: task column {int(arr[bad_task[0], 1])} is out of range [0, {k}) "
                f"(tasks {list(self.tasks)})"
            )
        flat = arr[:, 0] * k + arr[:, 1]
        uniq, counts = np.unique(flat, return_counts=True)
        if (counts > 1).any():
            dup = int(uniq[np.argmax(counts > 1)])
            raise ValueError(
                f"label_pairs: pair (image {dup // k} '{self.image_ids[dup // k]}', "
                f"task {self.tasks[dup % k]!r}) appears more than once in the request"
            )
        already = np.flatnonzero(self.labelled[arr[:, 0], arr[:, 1]])
        if already.size:
            i, t = (int(v) for v in arr[already[0]])
            raise ValueError(
                f"label_pairs: pair (image {i} '{self.image_ids[i]}', task {self.tasks[t]!r}) "
                f"is already labelled (cycle {int(self.cycle[i, t])}); "
                f"{already.size} of the {m} requested pairs are already labelled"
            )
        w = None if weights is None else self._as_vector(weights, m, "weights")
        s = None if scores is None else self._as_vector(scores, m, "scores")
        if w is not None and not np.all(np.isfinite(w)):
            raise ValueError("label_pairs: weights must be finite")
        # -- validated: mutate
        rows, cols = arr[:, 0], arr[:, 1]
        self.labelled[rows, cols] = True
        self.cycle[rows, cols] = int(cycle)
        if w is not None:
            self.weight[rows, cols] = w
        if s is not None:
            self.score[rows, cols] = s

    # -- queries ------------------------------------------------------------------
    def labelled_images(self) -> np.ndarray:
        """Indices of images with at least one labelled task."""
        return np.flatnonzero(self.labelled.any(axis=1))

    def fully_labelled_images(self) -> np.ndarray:
        """Indices of images with every task labelled."""
        return np.flatnonzero(self.labelled.all(axis=1))

    def unlabelled_images(self) -> np.ndarray:
        """Indices of images with no label at all (candidates for image strategies)."""
        return np.flatnonzero(~self.labelled.any(axis=1))

    def partially_unlabelled_images(self) -> np.ndarray:
        """Indices of images with at least one missing task (candidates for pair strategies)."""
        return np.flatnonzero(~self.labelled.all(axis=1))

    def unlabelled_pairs(self) -> np.ndarray:
        """All (image, task column) pairs not yet labelled, M×2 int64, row-major order."""
        return np.argwhere(~self.labelled).astype(np.int64).reshape(-1, 2)

    def labelled_tasks(self, index: int) -> tuple[str, ...]:
        """Names of the tasks labelled for image ``index``, in pool order."""
        return tuple(t for t, on in zip(self.tasks, self.labelled[int(index)]) if on)

    @property
    def num_labels(self) -> int:
        """Number of labelled image/task pairs."""
        return int(self.labelled.sum())

    @property
    def num_labelled_images(self) -> int:
        """Number of images with at least one labelled task."""
        return int(self.labelled.any(axis=1).sum())

    def history(self) -> list[dict[str, Any]]:
        """Per acquisition cycle (ascending): labels bought, per-task labels, and images
        touched that cycle, plus cumulative label and image counts."""
        out: list[dict[str, Any]] = []
        cycles = np.unique(self.cycle[self.labelled])
        for c in cycles:
            bought = self.labelled & (self.cycle == c)
            upto = self.labelled & (self.cycle <= c)
            out.append(
                {
                    "cycle": int(c),
                    "labels": int(bought.sum()),
                    "per_task": {t: int(bought[:, j].sum()) for j, t in enumerate(self.tasks)},
                    "images": int(bought.any(axis=1).sum()),
                    "cumulative_labels": int(upto.sum()),
                    "cumulative_images": int(upto.any(axis=1).sum()),
                }
            )
        return out

    # -- state --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain, JSON-able state (NaN scores stored as ``None``)."""
        score = self.score.astype(np.float64)
        return {
            "image_ids": list(self.image_ids),
            "tasks": list(self.tasks),
            "labelled": self.labelled.astype(int).tolist(),
            "cycle": self.cycle.astype(int).tolist(),
            "weight": self.weight.astype(np.float64).tolist(),
            "score": [[None if np.isnan(v) else float(v) for v in row] for row in score],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace this pool's contents with ``state``; image ids and tasks must match."""
        ids = [str(i) for i in state["image_ids"]]
        tasks = tuple(state["tasks"])
        if tasks != self.tasks:
            raise ValueError(
                f"LabelPool state has tasks {list(tasks)}, this pool has {list(self.tasks)}"
            )
        if ids != self.image_ids:
            raise ValueError(
                f"LabelPool state has {len(ids)} image ids that do not match this pool's "
                f"{len(self.image_ids)} (different dataset, split or pool_size?)"
            )
        self._set_arrays(state)

    def _set_arrays(self, state: dict[str, Any]) -> None:
        shape = (self.num_images, self.num_tasks)
        arrays = {
            "labelled": np.asarray(state["labelled"], dtype=bool),
            "cycle": np.asarray(state["cycle"], dtype=np.int32),
            "weight": np.asarray(state["weight"], dtype=np.float32),
            "score": np.asarray(
                [[np.nan if v is None else v for v in row] for row in state["score"]],
                dtype=np.float32,
            ),
        }
        for name, value in arrays.items():
            if value.size == 0:
                value = value.reshape(shape)
            if value.shape != shape:
                raise ValueError(
                    f"LabelPool state field {name!r} has shape {value.shape}, expected {shape}"
                )
        bad = arrays["labelled"] != (arrays["cycle"] >= 0)
        if bad.any():
            i, t = (int(v) for v in np.argwhere(bad)[0])
            raise ValueError(
                f"LabelPool state is inconsistent: pair (image {i}, task {self.tasks[t]!r}) has "
                f"labelled={bool(arrays['labelled'][i, t])} but cycle={int(arrays['cycle'][i, t])}"
            )
        for name, value in arrays.items():
            setattr(self, name, value.reshape(shape).copy())

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> LabelPool:
        """Build a pool from :meth:`state_dict` output."""
        pool = cls(state["image_ids"], state["tasks"])
        pool._set_arrays(state)
        return pool

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Atomically write the pool as a checksummed ``mtal.labelpool`` v1 JSON file."""
        return write_checked_json(path, self.state_dict(), POOL_SCHEMA, POOL_VERSION)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LabelPool:
        """Read a pool written by :meth:`save`; raises ``StateFileError`` if the file is
        missing, foreign, of another version or fails its checksum."""
        return cls.from_state_dict(read_checked_json(path, POOL_SCHEMA, POOL_VERSION))

    def copy(self) -> LabelPool:
        """An independent deep copy."""
        other = LabelPool(self.image_ids, self.tasks)
        other.labelled = self.labelled.copy()
        other.cycle = self.cycle.copy()
        other.weight = self.weight.copy()
        other.score = self.score.copy()
        return other

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LabelPool):
            return NotImplemented
        return (
            self.image_ids == other.image_ids
            and self.tasks == other.tasks
            and np.array_equal(self.labelled, other.labelled)
            and np.array_equal(self.cycle, other.cycle)
            and np.array_equal(self.weight, other.weight)
            and np.array_equal(self.score, other.score, equal_nan=True)
        )

    __hash__ = None  # type: ignore[assignment]

    # -- helpers ------------------------------------------------------------------
    def _as_index_array(self, indices: Sequence[int] | np.ndarray, what: str) -> np.ndarray:
        arr = np.asarray(indices).reshape(-1)
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"LabelPool: {what}s must be integers, got dtype {arr.dtype}")
        return arr.astype(np.int64)

    @staticmethod
    def _as_matrix(values: Any, shape: tuple[int, int], what: str) -> np.ndarray:
        arr = np.asarray(values, dtype=np.float32)
        if arr.shape != shape:
            raise ValueError(
                f"LabelPool: {what} must have shape {shape} (images × tasks), got {arr.shape}"
            )
        return arr

    @staticmethod
    def _as_vector(values: Any, m: int, what: str) -> np.ndarray:
        arr = np.asarray(values, dtype=np.float32)
        if arr.shape != (m,):
            raise ValueError(
                f"LabelPool: {what} must have shape ({m},) (one per pair), got {arr.shape}"
            )
        return arr
