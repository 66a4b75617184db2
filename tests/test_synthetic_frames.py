"""``frames_per_scene``: consecutive samples are frames of one scene seen from a short
camera trajectory (near-duplicates); samples of different scenes are not."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mtal.data.synthetic import SyntheticScenes

F, SCENES = 4, 6


def _images(ds: SyntheticScenes) -> np.ndarray:
    return np.stack([ds.load(i, [])["image"].astype(np.float64) / 255.0 for i in range(len(ds))])


def test_frames_of_a_scene_are_near_duplicates_and_scenes_are_not() -> None:
    ds = SyntheticScenes("train", size=(32, 40), length=F * SCENES, frames_per_scene=F)
    images = _images(ds)

    def dist(a: int, b: int) -> float:  # mean absolute pixel difference in [0, 1]
        return float(np.abs(images[a] - images[b]).mean())

    pairs = list(itertools.combinations(range(len(ds)), 2))
    adjacent = [dist(a, b) for a, b in pairs if b == a + 1 and a // F == b // F]
    within = [dist(a, b) for a, b in pairs if a // F == b // F]
    across = [dist(a, b) for a, b in pairs if a // F != b // F]
    assert max(adjacent) < min(across)
    assert np.mean(within) < 0.5 * np.mean(across)
    # frames differ by more than sensor noise alone: the camera really moves
    assert min(adjacent) > 0.0
    assert [ds.scene_of(i) for i in range(F + 1)] == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0)]
    first, last = ds.scene(0), ds.scene(F - 1)
    assert len(first.prims) == len(last.prims)  # the same objects ...
    assert not np.allclose(first.position, last.position)  # ... from another pose


def test_one_frame_per_scene_and_other_splits_are_unchanged() -> None:
    plain = SyntheticScenes("train", size=(32, 40), length=3)
    single = SyntheticScenes("train", size=(32, 40), length=3, frames_per_scene=1)
    for i in range(3):
        np.testing.assert_array_equal(plain.load(i, [])["image"], single.load(i, [])["image"])
    val = SyntheticScenes("val", size=(32, 40), length=3, frames_per_scene=F)
    val_plain = SyntheticScenes("val", size=(32, 40), length=3)
    assert val.frames_per_scene == 1
    np.testing.assert_array_equal(val.load(2, [])["image"], val_plain.load(2, [])["image"])


@pytest.mark.parametrize(
    "knobs", [{"frames_per_scene": 0}, {"frame_step_m": -0.1}, {"frame_splits": ("dev",)}]
)
def test_bad_frame_knobs_are_named(knobs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(knobs)).split("_")[0]):
        SyntheticScenes("train", size=(32, 40), length=4, **knobs)
