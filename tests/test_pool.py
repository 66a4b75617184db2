"""LabelPool: initial set, labelling semantics, atomic validation, persistence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mtal.data.pool import LabelPool
from mtal.io import StateFileError

TASKS = ("semseg", "depth", "normals")


def make_pool(n: int = 10) -> LabelPool:
    return LabelPool([f"img{i:02d}" for i in range(n)], TASKS)


def test_fresh_pool_defaults() -> None:
    pool = make_pool(4)
    assert pool.labelled.shape == (4, 3) and pool.labelled.dtype == bool
    assert pool.cycle.dtype == np.int32 and (pool.cycle == -1).all()
    assert pool.weight.dtype == np.float32 and (pool.weight == 1.0).all()
    assert pool.score.dtype == np.float32 and np.isnan(pool.score).all()
    assert pool.num_labels == 0 and pool.num_labelled_images == 0
    assert pool.unlabelled_pairs().shape == (12, 2)


def test_initialise_fraction_and_count() -> None:
    pool = make_pool(20)
    chosen = pool.initialise(fraction=0.25, seed=3)
    assert chosen.size == 5
    np.testing.assert_array_equal(pool.labelled_images(), chosen)
    assert pool.labelled[chosen].all() and pool.num_labels == 15
    assert (pool.cycle[chosen] == 0).all()
    assert (pool.cycle[pool.unlabelled_images()] == -1).all()

    pool2 = make_pool(20)
    pool2.initialise(count=7, seed=3)
    assert pool2.num_labelled_images == 7 and pool2.num_labels == 21


def test_initialise_is_seed_deterministic() -> None:
    a, b, c = make_pool(50), make_pool(50), make_pool(50)
    a.initialise(fraction=0.2, seed=11)
    b.initialise(fraction=0.2, seed=11)
    c.initialise(fraction=0.2, seed=12)
    assert a == b
    expected = np.sort(np.random.default_rng(11).choice(50, size=10, replace=False))
    np.testing.assert_array_equal(a.labelled_images(), expected)
    assert not np.array_equal(a.labelled_images(), c.labelled_images())


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"fraction": 0.1, "count": 2},
        {"fraction": 0.0},
        {"fraction": 1.5},
        {"count": 0},
        {"count": 11},
    ],
)
def test_initialise_rejects_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        make_pool(10).initialise(seed=0, **kwargs)


def test_initialise_twice_is_refused() -> None:
    pool = make_pool()
    pool.initialise(count=2, seed=0)
    with pytest.raises(ValueError, match="already holds"):
        pool.initialise(count=2, seed=1)


def test_label_images_and_pairs_semantics() -> None:
    pool = make_pool(5)
    pool.label_images([1, 3], cycle=0)
    weights = np.array([[0.5], [0.25]], dtype=np.float32)
    pool.label_pairs([[0, 2], [4, 0]], cycle=1, weights=weights[:, 0], scores=[0.9, 0.1])
    assert pool.labelled_tasks(0) == ("normals",)
    assert pool.labelled_tasks(1) == TASKS
    assert pool.weight[0, 2] == np.float32(0.5) and pool.weight[4, 0] == np.float32(0.25)
    assert pool.score[0, 2] == np.float32(0.9) and np.isnan(pool.score[1, 0])
    assert pool.cycle[0, 2] == 1 and pool.cycle[1, 1] == 0 and pool.cycle[2, 0] == -1
    np.testing.assert_array_equal(pool.labelled_images(), [0, 1, 3, 4])
    np.testing.assert_array_equal(pool.unlabelled_images(), [2])
    np.testing.assert_array_equal(pool.fully_labelled_images(), [1, 3])
    np.testing.assert_array_equal(pool.partially_unlabelled_images(), [0, 2, 4])
    expected_pairs = [[0, 0], [0, 1], [2, 0], [2, 1], [2, 2], [4, 1], [4, 2]]
    np.testing.assert_array_equal(pool.unlabelled_pairs(), expected_pairs)
    assert pool.num_labels == 8 and pool.num_labelled_images == 4

    pool.label_images([2], cycle=2, weights=[[1.0, 2.0, 3.0]], scores=[[0.1, 0.2, 0.3]])
    np.testing.assert_array_equal(pool.weight[2], [1.0, 2.0, 3.0])
    np.testing.assert_allclose(pool.score[2], [0.1, 0.2, 0.3], rtol=1e-6)
    history = pool.history()
    assert [h["cycle"] for h in history] == [0, 1, 2]
    assert [h["labels"] for h in history] == [6, 2, 3]
    assert [h["images"] for h in history] == [2, 2, 1]
    assert history[1]["per_task"] == {"semseg": 1, "depth": 0, "normals": 1}
    assert [h["cumulative_labels"] for h in history] == [6, 8, 11]
    assert [h["cumulative_images"] for h in history] == [2, 4, 5]


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda p: p.label_pairs([[0, 0], [1, 1]], cycle=1), "already labelled"),
        (lambda p: p.label_pairs([[5, 1], [5, 1]], cycle=1), "more than once"),
        (lambda p: p.label_pairs([[5, 1], [10, 0]], cycle=1), "image index 10"),
        (lambda p: p.label_pairs([[5, 1], [-1, 0]], cycle=1), "image index -1"),
        (lambda p: p.label_pairs([[5, 1], [6, 3]], cycle=1), "task column 3"),
        (lambda p: p.label_pairs([[5, 1], [6, 2]], cycle=1, weights=[1.0]), "weights"),
        (lambda p: p.label_pairs([[5, 1], [6, 2]], cycle=1, weights=[1.0, np.nan]), "finite"),
        (lambda p: p.label_pairs([[5, 1]], cycle=-1), "cycle"),
        (lambda p: p.label_images([5, 6, 5], cycle=1), "more than once"),
        (lambda p: p.label_images([5, 0], cycle=1), "already labelled"),
        (lambda p: p.label_images([5, 12], cycle=1), "image index 12"),
        (lambda p: p.label_images([5], cycle=1, scores=[[1.0, 2.0]]), "scores"),
    ],
)
def test_rejected_requests_leave_pool_unchanged(call, needle: str) -> None:
    pool = make_pool(10)
    pool.label_images([0, 1], cycle=0)
    before = pool.copy()
    with pytest.raises(ValueError, match=needle):
        call(pool)
    assert pool == before
    assert pool.num_labels == 6


def test_copy_is_independent() -> None:
    pool = make_pool(4)
    pool.label_images([0], cycle=0)
    other = pool.copy()
    other.label_pairs([[1, 1]], cycle=1, scores=[0.5])
    assert pool.num_labels == 3 and other.num_labels == 4
    assert np.isnan(pool.score[1, 1])


def test_save_load_exact_round_trip(tmp_path: Path) -> None:
    pool = make_pool(6)
    pool.initialise(count=2, seed=5)
    target = pool.unlabelled_pairs()[:3]
    pool.label_pairs(
        target, cycle=1, weights=[0.1, 1 / 3, 7.25], scores=[np.nan, 0.123456789, -2.0]
    )
    path = pool.save(tmp_path / "pool.json")
    loaded = LabelPool.load(path)
    assert loaded == pool
    assert loaded.image_ids == pool.image_ids and loaded.tasks == pool.tasks
    for name in ("labelled", "cycle", "weight", "score"):
        assert getattr(loaded, name).dtype == getattr(pool, name).dtype
    assert loaded.weight[tuple(target[1])] == np.float32(1 / 3)
    assert np.isnan(loaded.score[tuple(target[0])])
    doc = json.loads(path.read_text())  # strict JSON: NaN stored as null
    assert doc["schema"] == "mtal.labelpool" and doc["version"] == 1
    assert doc["payload"]["score"][target[0][0]][target[0][1]] is None
    # state_dict round trip through an existing pool
    fresh = make_pool(6)
    fresh.load_state_dict(json.loads(json.dumps(pool.state_dict())))
    assert fresh == pool


def test_tampered_or_foreign_pool_files_are_refused(tmp_path: Path) -> None:
    pool = make_pool(4)
    pool.initialise(count=1, seed=0)
    path = pool.save(tmp_path / "pool.json")
    doc = json.loads(path.read_text())
    doc["payload"]["labelled"][int(pool.unlabelled_images()[0])] = [1, 1, 1]
    path.write_text(json.dumps(doc))
    with pytest.raises(StateFileError, match="checksum"):
        LabelPool.load(path)

    pool.save(path)
    doc = json.loads(path.read_text())
    doc["schema"] = "mtal.strategy_state"
    path.write_text(json.dumps(doc))
    with pytest.raises(StateFileError, match="schema"):
        LabelPool.load(path)

    path.write_text("")
    with pytest.raises(StateFileError, match="not valid JSON"):
        LabelPool.load(path)
    with pytest.raises(StateFileError, match="missing"):
        LabelPool.load(tmp_path / "nope.json")


def test_load_state_dict_rejects_mismatch() -> None:
    pool = make_pool(4)
    state = pool.state_dict()
    with pytest.raises(ValueError, match="tasks"):
        LabelPool(pool.image_ids, ("semseg", "depth")).load_state_dict(state)
    with pytest.raises(ValueError, match="image ids"):
        make_pool(5).load_state_dict(state)
    state["cycle"][0][0] = 2  # labelled False but bought at cycle 2
    with pytest.raises(ValueError, match="inconsistent"):
        make_pool(4).load_state_dict(state)
