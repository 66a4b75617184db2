"""Tests of the procedural synthetic scenes and the preview grid."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mtal.data.base import DATASETS
from mtal.data.preview import colourise, render_preview
from mtal.data.synthetic import (
    CLASS_ID,
    CLASS_NAMES,
    PART_NAMES,
    Box,
    Capsule,
    Cylinder,
    Sphere,
    SyntheticScenes,
    edges_from_instances,
)

TASKS = ("semseg", "depth", "normals", "edge", "saliency", "parts")
ALL = TASKS + ("boxes",)


# -- registry, constructor, errors ---------------------------------------------------


def test_registered_and_defaults() -> None:
    assert DATASETS.get("synthetic") is SyntheticScenes
    assert [len(SyntheticScenes(s)) for s in ("train", "val", "test")] == [1000, 200, 200]
    ds = SyntheticScenes("val", tasks=["depth"], length=7)
    assert len(ds) == 7 and ds.tasks == ("depth",)
    assert ds.available_tasks == TASKS
    assert ds.num_classes["semseg"] == len(CLASS_NAMES) >= 8
    assert ds.num_classes["parts"] == len(PART_NAMES) == 7
    assert set(ds[0]) == {"image", "depth"}


def test_errors_speak_to_the_user() -> None:
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        SyntheticScenes("dev")
    with pytest.raises(TypeError, match="unknown option.*n_object"):
        SyntheticScenes(n_object=(1, 2))
    with pytest.raises(ValueError, match="figure_prob"):
        SyntheticScenes(figure_prob=1.5)
    ds = SyntheticScenes(length=3)
    with pytest.raises(IndexError, match=r"index 3 out of range \[0, 3\)"):
        ds.load(3, ["depth"])
    with pytest.raises(ValueError, match="cannot load.*known targets"):
        ds.load(0, ["optical_flow"])


# -- determinism -------------------------------------------------------------------------


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_deterministic_per_seed_split_index() -> None:
    a = SyntheticScenes("train", seed=3).load(5, ALL)
    b = SyntheticScenes("train", seed=3).load(5, ALL)
    assert _equal(a, b)
    other_split = SyntheticScenes("val", seed=3).load(5, ALL)
    other_seed = SyntheticScenes("train", seed=4).load(5, ALL)
    other_index = SyntheticScenes("train", seed=3).load(6, ALL)
    for other in (other_split, other_seed, other_index):
        assert not np.array_equal(a["image"], other["image"])
        assert not np.array_equal(a["depth"], other["depth"])


def test_cache_returns_the_same_arrays_and_protects_them() -> None:
    plain = SyntheticScenes(length=4)
    cached = SyntheticScenes(length=4, cache=True)
    first = cached.load(2, ALL)
    first["depth"][:] = -1.0  # the caller's copy, not the cache
    assert _equal(cached.load(2, ALL), plain.load(2, ALL))
    assert 2 in cached._cache and not plain._cache


# -- layouts ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(64, 80), (32, 48)])
def test_shapes_dtypes_and_value_ranges(size: tuple[int, int]) -> None:
    h, w = size
    ds = SyntheticScenes("train", size=size, length=12, seed=1)
    for i in range(len(ds)):
        s = ds.load(i, ALL)
        assert s["image"].shape == (h, w, 3) and s["image"].dtype == np.uint8
        assert s["semseg"].shape == (h, w) and s["semseg"].dtype == np.uint8
        labels = np.unique(s["semseg"])
        assert np.all((labels < len(CLASS_NAMES)) | (labels == 255))
        d = s["depth"]
        assert d.shape == (h, w) and d.dtype == np.float32
        assert np.all(np.isfinite(d)) and d.min() >= 0 and d.max() <= ds.knobs.max_depth
        n = s["normals"]
        assert n.shape == (h, w, 3) and n.dtype == np.float32
        norm = np.linalg.norm(n, axis=-1)
        assert np.all((np.abs(norm - 1) < 1e-4) | (norm == 0))
        for key in ("edge", "saliency"):
            assert s[key].dtype == np.uint8 and set(np.unique(s[key])) <= {0, 1}
        parts = s["parts"]
        assert parts.dtype == np.uint8
        assert np.all(parts == 255) or parts.max() < len(PART_NAMES)
        boxes, labels_b = s["boxes"], s["box_labels"]
        assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
        assert labels_b.dtype == np.int64 and len(labels_b) == len(boxes)
        if len(boxes):
            assert np.all(boxes[:, 0] < boxes[:, 2]) and np.all(boxes[:, 1] < boxes[:, 3])
            assert boxes[:, [0, 2]].min() >= 0 and boxes[:, 2].max() <= w
            assert boxes[:, [1, 3]].min() >= 0 and boxes[:, 3].max() <= h
            assert np.all(labels_b >= CLASS_ID["table"]) and np.all(labels_b < len(CLASS_NAMES))


def test_saliency_is_every_non_room_surface() -> None:
    ds = SyntheticScenes(length=6, seed=2, void_object_prob=0.0)
    room = [CLASS_ID[c] for c in ("wall", "floor", "ceiling")]
    for i in range(len(ds)):
        s = ds.load(i, ["semseg", "saliency"])
        assert np.array_equal(s["saliency"] == 1, ~np.isin(s["semseg"], room))


# -- geometry ------------------------------------------------------------------------------


def _normals_from_depth(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Independent reference: back-project, central differences, cross product, orient
    toward the camera."""
    h, w = depth.shape
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    pts = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    pts = pts * depth[..., None].astype(np.float64)
    dx = np.zeros_like(pts)
    dy = np.zeros_like(pts)
    dx[:, 1:-1] = pts[:, 2:] - pts[:, :-2]
    dy[1:-1] = pts[2:] - pts[:-2]
    n = np.cross(dx, dy)
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
    flip = (n * pts).sum(-1) > 0
    n[flip] *= -1
    return n


def _interior(instance: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Pixels whose 3×3 neighbourhood has one instance and valid depth and normals."""
    h, w = instance.shape
    ok = np.zeros((h, w), bool)
    ok[1:-1, 1:-1] = True
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            sh_i = np.roll(instance, (di, dj), axis=(0, 1))
            sh_v = np.roll(valid, (di, dj), axis=(0, 1))
            ok &= (sh_i == instance) & sh_v
    return ok


def test_normals_agree_with_normals_from_depth() -> None:
    ds = SyntheticScenes(length=16, seed=5, figure_prob=1.0, n_objects=(5, 9))
    angles, flat, curved = [], [], []
    for i in range(len(ds)):
        r = ds.render(i)
        K = ds.intrinsics(i)
        assert np.allclose(K, r.K)
        valid = (r.depth > 0) & np.any(r.normals != 0, axis=-1)
        ref = _normals_from_depth(r.depth, K)
        cos = np.clip((ref * r.normals).sum(-1), -1, 1)
        ang = np.degrees(np.arccos(cos))
        # the spec's check: interior pixels of an instance, mean error below 1 degree
        angles.append(ang[_interior(r.instance, valid)])
        # stricter, per primitive away from creases (neighbour normals within 20 deg)
        smooth = _interior(r.primitive, valid)
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                nb = np.roll(r.normals, (di, dj), axis=(0, 1))
                smooth &= (nb * r.normals).sum(-1) > math.cos(math.radians(20))
        scene = ds.scene(i)
        prim_is_flat = np.array([True] * 6 + [isinstance(p, Box) for p in scene.prims], dtype=bool)
        is_flat = prim_is_flat[r.primitive]
        flat.append(ang[smooth & is_flat])
        curved.append(ang[smooth & ~is_flat])
    angles_all, flat_all, curved_all = map(np.concatenate, (angles, flat, curved))
    assert angles_all.size > 16 * 1000
    assert angles_all.mean() < 1.0
    assert flat_all.max() < 0.1  # planes: exact up to float32 depth
    assert curved_all.size > 500
    assert curved_all.mean() < 1.0 and curved_all.max() < 6.0


def test_normals_face_the_camera_and_depth_is_z() -> None:
    ds = SyntheticScenes(length=4, seed=6, depth_holes=0.0, max_depth=100.0)
    for i in range(len(ds)):
        r = ds.render(i)
        assert np.array_equal(r.depth, r.zdepth) and r.depth.min() > 0
        h, w = r.depth.shape
        v, u = np.mgrid[0:h, 0:w]
        rays = np.stack(
            [(u - r.K[0, 2]) / r.K[0, 0], (v - r.K[1, 2]) / r.K[1, 1], np.ones((h, w))], -1
        )
        assert np.all((r.normals * rays).sum(-1) < 1e-6)


def test_holes_and_out_of_range() -> None:
    base = SyntheticScenes(length=6, seed=7, max_depth=4.0, depth_holes=3.0)
    follow = SyntheticScenes(
        length=6, seed=7, max_depth=4.0, depth_holes=3.0, normals_follow_holes=True
    )
    saw_hole = saw_far = False
    for i in range(6):
        r, f = base.render(i), follow.render(i)
        far = r.zdepth > 4.0
        holes = (r.depth == 0) & ~far
        saw_far |= bool(far.any())
        saw_hole |= bool(holes.any())
        assert np.all(r.depth[~(far | holes)] == r.zdepth[~(far | holes)])
        # out of range: no normal; dropout hole: normal kept unless asked otherwise
        assert np.all(r.normals[far] == 0)
        assert np.all(np.linalg.norm(r.normals[holes], axis=-1) > 0.99)
        assert np.all(f.normals[f.depth == 0] == 0)
    assert saw_hole and saw_far


# -- edges, parts, boxes -----------------------------------------------------------------


def _edge_reference(instance: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Pixel loops: of two differing 4-neighbours the nearer (tie: smaller id) is edge."""
    h, w = instance.shape
    edge = np.zeros((h, w), bool)
    for i in range(h):
        for j in range(w):
            for ni, nj in ((i + 1, j), (i, j + 1)):
                if ni >= h or nj >= w or instance[i, j] == instance[ni, nj]:
                    continue
                a, b = (i, j), (ni, nj)
                a_near = z[a] < z[b] or (z[a] == z[b] and instance[a] < instance[b])
                edge[a if a_near else b] = True
    return edge


def test_edges_are_the_nearer_side_of_every_instance_boundary() -> None:
    ds = SyntheticScenes(length=3, seed=8, figure_prob=1.0)
    for i in range(len(ds)):
        r = ds.render(i)
        ref = _edge_reference(r.instance, r.zdepth)
        assert np.array_equal(r.edge.astype(bool), ref)
        # every edge pixel has a differing 4-neighbour; every class boundary is marked
        inst = np.pad(r.instance, 1, mode="edge")
        differs = np.zeros_like(ref)
        for di, dj in ((0, 1), (2, 1), (1, 0), (1, 2)):
            differs |= (
                inst[di : di + r.instance.shape[0], dj : dj + r.instance.shape[1]] != r.instance
            )
        assert np.all(differs[ref])
        sem = r.semseg
        horiz = sem[:, 1:] != sem[:, :-1]
        assert np.all((ref[:, 1:] | ref[:, :-1])[horiz])
        vert = sem[1:] != sem[:-1]
        assert np.all((ref[1:] | ref[:-1])[vert])


def test_edge_helper_on_a_hand_example() -> None:
    inst = np.array([[1, 1, 2], [1, 1, 2], [3, 3, 3]])
    z = np.array([[1.0, 1.0, 2.0], [1.0, 1.0, 2.0], [0.5, 0.5, 0.5]])
    expected = np.array([[0, 1, 0], [0, 1, 0], [1, 1, 1]], bool)
    assert np.array_equal(edges_from_instances(inst, z), expected)


def test_parts_exactly_when_a_figure_is_visible() -> None:
    person = CLASS_ID["person"]
    for prob in (0.0, 0.5, 1.0):
        ds = SyntheticScenes(length=10, seed=9, figure_prob=prob, void_object_prob=0.0)
        n_with = 0
        for i in range(len(ds)):
            s = ds.load(i, ["semseg", "parts"])
            is_person = s["semseg"] == person
            if not is_person.any():
                assert np.all(s["parts"] == 255)
                continue
            n_with += 1
            assert not np.any(s["parts"] == 255)
            assert np.array_equal(s["parts"] > 0, is_person)
            assert set(np.unique(s["parts"][is_person])) <= set(range(1, len(PART_NAMES)))
        if prob == 0.0:
            assert n_with == 0
        if prob == 1.0:
            assert n_with >= 8


def test_boxes_are_the_visible_instance_extents() -> None:
    ds = SyntheticScenes(length=5, seed=10, figure_prob=1.0)
    for i in range(len(ds)):
        r = ds.render(i)
        expected = []
        for inst in np.unique(r.instance):
            ys, xs = np.nonzero(r.instance == inst)
            label = int(r.semseg[ys[0], xs[0]])
            if inst <= 6 or label == 255 or len(ys) < ds.knobs.min_box_pixels:
                continue
            expected.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1, label))
        got = sorted(zip(*r.boxes.T.tolist(), r.box_labels.tolist()))
        assert got == sorted(tuple(float(v) for v in e[:4]) + (e[4],) for e in expected)


# -- primitives against signed-distance references ---------------------------------------


def _sdf_box(p: np.ndarray, prim: Box) -> np.ndarray:
    q = np.abs(prim.axes @ (p - prim.centre[:, None])) - prim.half[:, None]
    return np.linalg.norm(np.maximum(q, 0), axis=0) + np.minimum(q.max(axis=0), 0)


def _sdf_sphere(p: np.ndarray, prim: Sphere) -> np.ndarray:
    return np.linalg.norm(p - prim.centre[:, None], axis=0) - prim.radius


def _sdf_capsule(p: np.ndarray, prim: Capsule) -> np.ndarray:
    ba = prim.b - prim.a
    rel = p - prim.a[:, None]
    s = np.clip(ba @ rel / (ba @ ba), 0, 1)
    return np.linalg.norm(rel - ba[:, None] * s, axis=0) - prim.radius


def _sdf_cylinder(p: np.ndarray, prim: Cylinder) -> np.ndarray:
    ba = prim.b - prim.a
    length = np.linalg.norm(ba)
    axis = ba / length
    rel = p - prim.a[:, None]
    y = axis @ rel
    radial = np.linalg.norm(rel - axis[:, None] * y, axis=0)
    q = np.stack([radial - prim.radius, np.abs(y - length / 2) - length / 2])
    return np.linalg.norm(np.maximum(q, 0), axis=0) + np.minimum(q.max(axis=0), 0)


PRIMS = [
    (Sphere(np.array([0.3, 0.1, 4.0]), 0.7), _sdf_sphere),
    (Box(np.array([-0.2, 0.3, 4.0]), np.array([0.6, 0.3, 0.4]), 0.7), _sdf_box),
    (Capsule(np.array([-0.5, -0.4, 3.5]), np.array([0.6, 0.5, 4.5]), 0.3), _sdf_capsule),
    (Cylinder(np.array([0.2, -0.7, 4.2]), np.array([-0.1, 0.8, 3.8]), 0.45), _sdf_cylinder),
]


@pytest.mark.parametrize(("prim", "sdf"), PRIMS, ids=lambda x: type(x).__name__)
def test_primitive_intersection_and_normal_match_sdf(prim, sdf) -> None:
    rng = np.random.default_rng(0)
    o = np.zeros(3)
    d = np.stack([rng.uniform(-0.35, 0.35, 400), rng.uniform(-0.35, 0.35, 400), np.ones(400)])
    d /= np.linalg.norm(d, axis=0)
    t = prim.intersect(o, d)
    # reference: march each ray densely along the SDF, bisect the first sign change
    ts = np.linspace(0.01, 8.0, 4000)
    hits = 0
    for k in range(d.shape[1]):
        vals = sdf(d[:, k : k + 1] * ts, prim)
        inside = np.flatnonzero(vals <= 0)
        if inside.size == 0:
            assert np.isinf(t[k])
            continue
        lo, hi = ts[max(inside[0] - 1, 0)], ts[inside[0]]
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            lo, hi = (lo, mid) if sdf(d[:, k : k + 1] * mid, prim)[0] <= 0 else (mid, hi)
        assert t[k] == pytest.approx(hi, abs=1e-6)
        hits += 1
        # normal = normalised SDF gradient at the hit
        pt = d[:, k] * t[k]
        eps = 1e-5
        grad = np.array(
            [
                sdf((pt + eps * e)[:, None], prim)[0] - sdf((pt - eps * e)[:, None], prim)[0]
                for e in np.eye(3)
            ]
        )
        grad /= np.linalg.norm(grad)
        n = prim.normal(pt[:, None])[:, 0]
        assert math.degrees(math.acos(np.clip(n @ grad, -1, 1))) < 0.1
    assert 40 < hits < 400


# -- appearance and the long tail -----------------------------------------------------


def test_rare_classes_are_rare_but_present() -> None:
    ds = SyntheticScenes(length=300, seed=11)
    seen = np.zeros((len(ds), len(CLASS_NAMES)), bool)
    dark = []
    for i in range(len(ds)):
        sem = ds.load(i, ["semseg"])["semseg"]
        labels = np.unique(sem)
        seen[i, labels[labels < len(CLASS_NAMES)]] = True
        dark.append(ds.scene(i).flags["dark"])
    freq = seen.mean(axis=0)
    for rare in ("pillar", "vase"):
        assert 0 < freq[CLASS_ID[rare]] <= 0.12, (rare, freq[CLASS_ID[rare]])
    for common in ("table", "box", "person"):
        assert freq[CLASS_ID[common]] > 0.3, (common, freq[CLASS_ID[common]])
    assert 0 < np.mean(dark) < 0.12


def test_dark_scenes_are_darker() -> None:
    lit = SyntheticScenes(length=8, seed=12, dark_prob=0.0)
    dark = SyntheticScenes(length=8, seed=12, dark_prob=1.0)
    a = np.mean([lit.load(i, [])["image"].mean() for i in range(8)])
    b = np.mean([dark.load(i, [])["image"].mean() for i in range(8)])
    assert b < 0.7 * a


def test_colour_alone_does_not_segment() -> None:
    """Nearest class-mean colour classification must be poor: classes overlap in colour."""
    ds = SyntheticScenes(length=40, seed=13, void_object_prob=0.0)
    pix, lab = [], []
    for i in range(len(ds)):
        s = ds.load(i, ["semseg"])
        pix.append(s["image"].reshape(-1, 3).astype(float))
        lab.append(s["semseg"].ravel())
    train_x, train_y = np.concatenate(pix[:20]), np.concatenate(lab[:20])
    test_x, test_y = np.concatenate(pix[20:]), np.concatenate(lab[20:])
    classes = np.unique(train_y)
    means = np.stack([train_x[train_y == c].mean(0) for c in classes])
    pred = classes[np.argmin(((test_x[:, None] - means[None]) ** 2).sum(-1), axis=1)]
    recalls = [np.mean(pred[test_y == c] == c) for c in classes if np.any(test_y == c)]
    assert np.mean(recalls) < 0.5


# -- preview ----------------------------------------------------------------------------


def test_colourisers_against_hand_values() -> None:
    n = np.zeros((1, 2, 3), np.float32)
    n[0, 0] = (0.0, 0.6, -0.8)
    rgb = colourise("normals", n)
    assert np.allclose(rgb[0, 0], (0.5, 0.8, 0.1)) and np.all(rgb[0, 1] == 0)
    seg = colourise("semseg", np.array([[0, 255]], np.uint8), 12)
    assert np.all(seg[0, 1] == 0) and seg[0, 0].max() > 0.5
    dep = colourise("depth", np.array([[0.0, 1.0, 3.0]], np.float32))
    assert np.all(dep[0, 0] == 0) and not np.allclose(dep[0, 1], dep[0, 2])
    edge = colourise("edge", np.array([[0, 1, 255]], np.uint8))
    assert np.allclose(edge[0, 0], 0) and np.allclose(edge[0, 1], 1) and edge[0, 2, 0] > 0.5
    with pytest.raises(ValueError, match="no colouriser for task 'flow'"):
        colourise("flow", n)


def test_render_preview_writes_a_png(tmp_path) -> None:
    import matplotlib.image as mpimg

    ds = SyntheticScenes(length=3, seed=14, size=(32, 40))
    out = render_preview(ds, 3, tmp_path / "sub" / "preview.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(out)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > img.shape[0]
    out2 = render_preview(ds, 2, tmp_path / "two.png", tasks=["depth"])
    assert mpimg.imread(out2).shape[1] < img.shape[1]
