"""Real-format loaders (NYUD, PASCAL-Context, mtan NYUv2/Cityscapes) read back what the
fixture writers saved, read only the requested files and fail with useful errors."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from mtal.data import create_dataset
from mtal.data.base import DATASETS, DatasetLayoutError
from mtal.data.fixtures import (
    encode_normals_png,
    parts_anno_struct,
    write_mtan,
    write_nyud,
    write_pascal_context,
    write_synthetic_fixture,
)
from mtal.data.mtan import CityscapesMTAN, NYUv2MTAN
from mtal.data.nyud import NYUD
from mtal.data.pascal_context import PascalContext, label_boundaries
from mtal.data.synthetic import SyntheticScenes

H, W = 24, 32


class FakeSource:
    """Tiny deterministic multi-task source (stand-in for SyntheticScenes)."""

    available_tasks = ("semseg", "depth", "normals", "edge", "saliency", "parts")

    def __init__(self, n: int = 6, seed: int = 0) -> None:
        self.n = n
        self.seed = seed

    def __len__(self) -> int:
        return self.n

    def load(self, i: int, tasks: Sequence[str]) -> dict[str, Any]:
        rng = np.random.default_rng(self.seed * 1000 + i)
        yy, xx = np.mgrid[0:H, 0:W]
        # smooth image (JPEG-friendly)
        image = np.stack([xx * 7 + 10 * i, yy * 9, (xx + yy) * 4], -1) % 256
        blocks = rng.integers(0, 45, size=(H // 8, W // 8))
        semseg = np.kron(blocks, np.ones((8, 8), int))
        semseg[0, :5] = 255
        depth = rng.uniform(0.5, 9.0, (H, W)).astype(np.float32)
        depth[1, :3] = 0.0
        normals = rng.normal(size=(H, W, 3)).astype(np.float32)
        normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
        normals[2, :4] = 0.0
        edge = rng.integers(0, 2, (H, W))
        edge[3, :2] = 255
        saliency = rng.integers(0, 2, (H, W))
        saliency[4, :2] = 255
        parts = np.kron(rng.integers(0, 9, size=(H // 8, W // 8)), np.ones((8, 8), int))
        parts[:, -3:] = 255
        full = {
            "image": image.astype(np.uint8),
            "semseg": semseg.astype(np.uint8),
            "depth": depth,
            "normals": normals,
            "edge": edge.astype(np.uint8),
            "saliency": saliency.astype(np.uint8),
            "parts": parts.astype(np.uint8),
        }
        return {k: full[k] for k in ("image", *tasks)}


#: sources the round-trip tests run on: the project's generator, and the fake whose
#: class ids (up to 44) exercise the modulo mapping into every dataset's class range
SOURCES = {
    "synthetic": lambda n: SyntheticScenes("train", size=(H, W), length=n, seed=0),
    "fake": FakeSource,
}


def make_source(n: int = 6, kind: str = "synthetic") -> Any:
    """A multi-task source of ``n`` samples of ``kind`` (see ``SOURCES``)."""
    return SOURCES[kind](n)


def ref_boundaries(label: np.ndarray, thin: bool) -> np.ndarray:
    """Loop reference for label_boundaries."""
    out = np.zeros(label.shape, np.uint8)
    h, w = label.shape
    for y in range(h):
        for x in range(w):
            nbrs = [(y, x + 1), (y + 1, x)]
            if not thin:
                nbrs += [(y, x - 1), (y - 1, x)]
            for ny, nx in nbrs:
                if 0 <= ny < h and 0 <= nx < w and label[ny, nx] != label[y, x]:
                    out[y, x] = 1
    return out


def assert_image_close(loaded: np.ndarray, original: np.ndarray, tol: float = 6.0) -> None:
    assert loaded.dtype == np.uint8 and loaded.shape == original.shape
    assert np.abs(loaded.astype(float) - original.astype(float)).mean() < tol


def expect_error(match: str, fn: Any, *args: Any, **kw: Any) -> str:
    with pytest.raises(DatasetLayoutError) as info:
        fn(*args, **kw)
    msg = str(info.value)
    assert match in msg, msg
    return msg


# ----------------------------------------------------------------------------------
# NYUD
# ----------------------------------------------------------------------------------


@pytest.fixture(params=sorted(SOURCES))
def nyud_root(tmp_path: Path, request: pytest.FixtureRequest) -> tuple[Path, Any]:
    source = make_source(kind=request.param)
    write_nyud(tmp_path, source, n_train=4, n_val=2)
    return tmp_path, source


def test_nyud_roundtrip_and_splits(nyud_root: tuple[Path, Any]) -> None:
    root, source = nyud_root
    assert DATASETS.get("nyud") is NYUD
    train, val = NYUD(root, "train"), NYUD(root, split="val")
    assert len(train) == 4 and len(val) == 2
    assert (root / "gt_sets" / "val.txt").read_text().split() == [val.image_id(i) for i in range(2)]
    for ds, offset in ((train, 0), (val, 4)):
        for i in range(len(ds)):
            src = source.load(offset + i, ("semseg", "depth", "normals", "edge"))
            got = ds.load(i, ds.tasks)
            assert set(got) == {"image", "semseg", "depth", "normals", "edge"}
            assert_image_close(got["image"], src["image"])
            s = src["semseg"].astype(int)
            np.testing.assert_array_equal(got["semseg"], np.where(s == 255, 255, s % 40))
            assert got["semseg"].dtype == np.uint8
            np.testing.assert_array_equal(got["depth"], src["depth"])
            assert got["depth"].dtype == np.float32
            np.testing.assert_allclose(got["normals"], src["normals"], atol=1e-6)
            np.testing.assert_array_equal(got["edge"], (src["edge"] == 1).astype(np.uint8))
    assert train.image_path(0) == root / "images" / "000000.jpg"


def test_nyud_semseg_and_normals_decoding(tmp_path: Path) -> None:
    write_nyud(tmp_path, FakeSource(1), 1, 0)
    seg = np.zeros((H, W), np.uint8)
    seg[0, :4] = [0, 1, 40, 255]
    Image.fromarray(seg).save(tmp_path / "segmentation" / "000000.png")
    n = np.zeros((H, W, 3), np.float32)
    n[..., 2] = 255.0  # uint8-style encoding of (0, 0, 1)
    n[0, 0] = 127.5  # → zero vector → invalid
    np.save(tmp_path / "normals" / "000000.npy", n)
    got = NYUD(tmp_path, tasks=["semseg", "normals"]).load(0, ["semseg", "normals"])
    np.testing.assert_array_equal(got["semseg"][0, :4], [255, 0, 39, 255])
    np.testing.assert_allclose(got["normals"][0, 0], [0, 0, 0])
    np.testing.assert_allclose(got["normals"][5, 5], [-1 / np.sqrt(3), -1 / np.sqrt(3), 1 / np.sqrt(3)], atol=1e-6)  # fmt: skip
    forced = NYUD(tmp_path, tasks=["normals"], normals_encoding="uint8")
    np.testing.assert_allclose(forced.load(0, ["normals"])["normals"][5, 5], [-1 / np.sqrt(3)] * 2 + [1 / np.sqrt(3)], atol=1e-6)  # fmt: skip
    seg[1, 1] = 41
    Image.fromarray(seg).save(tmp_path / "segmentation" / "000000.png")
    expect_error("000000.png", NYUD(tmp_path).load, 0, ["semseg"])


def test_nyud_reads_only_requested(nyud_root: tuple[Path, Any]) -> None:
    root, _ = nyud_root
    shutil.rmtree(root / "depth")
    (root / "edge" / "000001.npy").write_bytes(b"garbage")  # never read below
    ds = NYUD(root, tasks=["semseg", "normals"])
    out = ds.load(1, ["semseg", "normals"])
    assert set(out) == {"image", "semseg", "normals"}
    assert set(ds.load(1, [])) == {"image"}
    msg = expect_error(str(root / "depth"), ds.load, 1, ["depth"])
    assert "expected layout" in msg and "docs/datasets.md" in msg


def test_nyud_missing_files(tmp_path: Path, nyud_root: tuple[Path, Any]) -> None:
    root, _ = nyud_root
    expect_error(str(tmp_path / "nowhere"), NYUD, tmp_path / "nowhere")
    expect_error(str(root / "gt_sets" / "test.txt"), NYUD, root, split="test")
    (root / "normals" / "000002.npy").unlink()
    msg = expect_error(str(root / "normals" / "000002.npy"), NYUD(root).load, 2, ["normals"])
    assert "segmentation/<id>.png" in msg  # the layout tree is shown
    (root / "images" / "000003.jpg").unlink()
    expect_error(str(root / "images" / "000003.jpg"), NYUD(root).load, 3, [])


def test_nyud_corrupt_and_mismatch(nyud_root: tuple[Path, Any]) -> None:
    root, _ = nyud_root
    ds = NYUD(root)
    (root / "depth" / "000000.npy").write_bytes(b"not a numpy file")
    expect_error(str(root / "depth" / "000000.npy"), ds.load, 0, ["depth"])
    (root / "images" / "000001.jpg").write_bytes(b"\xff\xd8broken")
    expect_error(str(root / "images" / "000001.jpg"), ds.load, 1, [])
    (root / "segmentation" / "000002.png").write_bytes(b"\x89PNG broken")
    expect_error(str(root / "segmentation" / "000002.png"), ds.load, 2, ["semseg"])
    np.save(root / "edge" / "000003.npy", np.zeros((H + 1, W)))
    msg = expect_error(str(root / "edge" / "000003.npy"), ds.load, 3, ["edge"])
    assert str(root / "images" / "000003.jpg") in msg
    assert f"({H}, {W})" in msg and f"({H + 1}, {W})" in msg


# ----------------------------------------------------------------------------------
# PASCAL-Context
# ----------------------------------------------------------------------------------


def test_label_boundaries_against_reference() -> None:
    lab = np.array([[1, 1, 2], [1, 3, 2], [1, 3, 3]])
    np.testing.assert_array_equal(
        label_boundaries(lab, thin=True), [[0, 1, 0], [1, 1, 1], [1, 0, 0]]
    )
    rng = np.random.default_rng(3)
    big = np.kron(rng.integers(0, 4, (4, 5)), np.ones((3, 2), int))
    for thin in (True, False):
        np.testing.assert_array_equal(label_boundaries(big, thin), ref_boundaries(big, thin))


@pytest.fixture(params=sorted(SOURCES))
def pascal_root(tmp_path: Path, request: pytest.FixtureRequest) -> tuple[Path, Any]:
    source = make_source(kind=request.param)
    write_pascal_context(tmp_path, source, n_train=4, n_val=2)
    return tmp_path, source


def test_pascal_roundtrip_and_splits(pascal_root: tuple[Path, Any]) -> None:
    root, source = pascal_root
    assert DATASETS.get("pascal_context") is PascalContext
    train, val = PascalContext(root), PascalContext(root, split="val", edge_thin=False)
    assert len(train) == 4 and len(val) == 2
    assert val.image_id(0) == "2008_000004"
    all_tasks = ("semseg", "parts", "saliency", "normals")
    for ds, offset in ((train, 0), (val, 4)):
        for i in range(len(ds)):
            src = source.load(offset + i, all_tasks)
            got = ds.load(i, ds.tasks)
            assert set(got) == {"image", *PascalContext.available_tasks}
            assert_image_close(got["image"], src["image"])
            s = src["semseg"].astype(int)
            np.testing.assert_array_equal(got["semseg"], np.where(s == 255, 255, s % 21))
            np.testing.assert_array_equal(got["edge"], ref_boundaries(s, thin=ds.edge_thin))
            p = src["parts"].astype(int)
            np.testing.assert_array_equal(got["parts"], np.where(p == 255, 255, p % 7))
            np.testing.assert_array_equal(got["saliency"], (src["saliency"] == 1).astype(np.uint8))
            valid = np.linalg.norm(src["normals"], axis=-1) > 0.5
            assert np.all(got["normals"][~valid] == 0)
            np.testing.assert_allclose(got["normals"][valid], src["normals"][valid], atol=0.01)
            np.testing.assert_allclose(np.linalg.norm(got["normals"][valid], axis=-1), 1, atol=1e-5)


def test_pascal_normals_png_decoding(tmp_path: Path) -> None:
    write_pascal_context(tmp_path, FakeSource(1), 1, 0)
    png = np.zeros((H, W, 3), np.uint8)
    png[..., 0] = 255  # (1, -1, -1) → normalised
    png[0, 0] = 0  # raw zero → invalid
    Image.fromarray(png).save(tmp_path / "normals_distill" / "2008_000000.png")
    got = PascalContext(tmp_path).load(0, ["normals"])["normals"]
    np.testing.assert_allclose(got[0, 0], 0)
    np.testing.assert_allclose(got[3, 3], np.array([1, -1, -1]) / np.sqrt(3), atol=1e-6)
    np.testing.assert_array_equal(encode_normals_png(np.array([[[0.0, 0.0, 0.0]]])), [[[0, 0, 0]]])


def test_pascal_parts_anno_schema(tmp_path: Path) -> None:
    write_pascal_context(tmp_path, FakeSource(2), 2, 0, parts_schema="anno")
    parts = np.zeros((H, W), np.uint8)
    parts[2:6, 3:9] = 1
    parts[10:20, 5:12] = 6
    savemat(tmp_path / "human_parts" / "2008_000000.mat", parts_anno_struct(parts))
    savemat(tmp_path / "human_parts" / "2008_000001.mat", parts_anno_struct(np.zeros((H, W))))
    ds = PascalContext(tmp_path, tasks=["parts"])
    np.testing.assert_array_equal(ds.load(0, ["parts"])["parts"], parts)
    assert np.all(ds.load(1, ["parts"])["parts"] == 255)  # no person → ignore
    savemat(tmp_path / "human_parts" / "2008_000001.mat", {"other": np.zeros(3)})
    expect_error("2008_000001.mat", ds.load, 1, ["parts"])
    bad = PascalContext(tmp_path, tasks=["parts"], parts_schema="parts")
    expect_error("'parts'", bad.load, 0, ["parts"])


def test_pascal_semseg_dirs_and_range(pascal_root: tuple[Path, Any]) -> None:
    root, _ = pascal_root
    (root / "semseg" / "pascal-context").mkdir()
    shutil.move(root / "semseg/VOC12/2008_000001.png", root / "semseg/pascal-context")
    expect_error(str(root / "semseg/VOC12/2008_000001.png"), PascalContext(root).load, 1, ["semseg"])  # fmt: skip
    both = PascalContext(root, semseg_dirs=("semseg/VOC12", "semseg/pascal-context"))
    assert both.load(1, ["semseg"])["semseg"].shape == (H, W)
    Image.fromarray(np.full((H, W), 59, np.uint8)).save(root / "semseg/VOC12/2008_000002.png")
    expect_error("2008_000002.png", both.load, 2, ["semseg"])


def test_pascal_only_requested_missing_corrupt(tmp_path: Path, pascal_root: tuple[Path, Any]) -> None:  # fmt: skip
    root, _ = pascal_root
    shutil.rmtree(root / "sal_distill")
    shutil.rmtree(root / "pascal-context")
    ds = PascalContext(root, tasks=["semseg", "parts", "normals"])
    assert set(ds.load(0, ds.tasks)) == {"image", "semseg", "parts", "normals"}
    expect_error(str(root / "sal_distill"), ds.load, 0, ["saliency"])
    expect_error(str(root / "pascal-context" / "trainval"), ds.load, 0, ["edge"])
    expect_error(str(tmp_path / "none"), PascalContext, tmp_path / "none")
    expect_error(str(root / "ImageSets/Context/test.txt"), PascalContext, root, split="test")
    (root / "human_parts" / "2008_000003.mat").write_bytes(b"MATLAB garbage")
    expect_error(str(root / "human_parts" / "2008_000003.mat"), ds.load, 3, ["parts"])
    (root / "normals_distill" / "2008_000002.png").write_bytes(b"nope")
    expect_error(str(root / "normals_distill" / "2008_000002.png"), ds.load, 2, ["normals"])
    Image.fromarray(np.zeros((H, W + 2), np.uint8)).save(root / "semseg/VOC12/2008_000001.png")
    msg = expect_error(str(root / "semseg/VOC12/2008_000001.png"), ds.load, 1, ["semseg"])
    assert str(root / "JPEGImages" / "2008_000001.jpg") in msg and f"({H}, {W + 2})" in msg


# ----------------------------------------------------------------------------------
# mtan NYUv2-13 / Cityscapes-7
# ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_mtan_nyuv2_roundtrip(tmp_path: Path, kind: str) -> None:
    source = make_source(14, kind)
    write_mtan(tmp_path, source, n_train=12, n_val=2, kind="nyuv2_13")
    assert DATASETS.get("nyuv2_13") is NYUv2MTAN
    ds = NYUv2MTAN(tmp_path, "train")
    assert len(ds) == 12 and len(NYUv2MTAN(tmp_path, split="val")) == 2
    assert ds.image_id(2) == "2" and ds.image_id(10) == "10"  # numeric, not lexicographic
    for i in (2, 10):
        src = source.load(i, ("semseg", "depth", "normals"))
        got = ds.load(i, ds.tasks)
        np.testing.assert_array_equal(got["image"], src["image"])  # lossless
        s = src["semseg"].astype(int)
        np.testing.assert_array_equal(got["semseg"], np.where(s == 255, 255, s % 13))
        np.testing.assert_array_equal(got["depth"], src["depth"])
        np.testing.assert_allclose(got["normals"], src["normals"], atol=1e-6)
    # CHW image storage is accepted
    img = np.load(tmp_path / "train/image/3.npy")
    np.save(tmp_path / "train/image/3.npy", np.moveaxis(img, -1, 0))
    np.testing.assert_array_equal(ds.load(3, [])["image"], source.load(3, [])["image"])


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_mtan_cityscapes_label_dirs(tmp_path: Path, kind: str) -> None:
    source = make_source(3, kind)
    write_mtan(tmp_path, source, 2, 1, kind="cityscapes_7")
    assert (tmp_path / "train/label_7/0.npy").exists()
    assert not (tmp_path / "train/normal").exists()
    ds = CityscapesMTAN(tmp_path, tasks=["semseg", "depth"])
    s = source.load(1, ["semseg"])["semseg"].astype(int)
    np.testing.assert_array_equal(ds.load(1, ["semseg"])["semseg"], np.where(s == 255, 255, s % 7))
    # a plain `label/` folder is used when `label_7/` is absent; label_7 preferred otherwise
    shutil.copytree(tmp_path / "train/label_7", tmp_path / "train/label")
    np.save(tmp_path / "train/label/1.npy", np.zeros((H, W), np.float32))
    assert CityscapesMTAN(tmp_path).label_dir == "label_7"
    shutil.rmtree(tmp_path / "train/label_7")
    only_label = CityscapesMTAN(tmp_path)
    assert only_label.label_dir == "label"
    assert np.all(only_label.load(1, ["semseg"])["semseg"] == 0)
    np.save(tmp_path / "train/label/0.npy", np.full((H, W), 7.0, np.float32))
    expect_error("0.npy", only_label.load, 0, ["semseg"])


def test_mtan_only_requested_missing_corrupt(tmp_path: Path) -> None:
    source = make_source(3)
    write_mtan(tmp_path, source, 3, 0, kind="nyuv2_13")
    shutil.rmtree(tmp_path / "train/normal")
    ds = NYUv2MTAN(tmp_path)
    assert set(ds.load(0, ["semseg", "depth"])) == {"image", "semseg", "depth"}
    msg = expect_error(str(tmp_path / "train/normal"), ds.load, 0, ["normals"])
    assert "image/<i>.npy" in msg
    expect_error(str(tmp_path / "val"), NYUv2MTAN, tmp_path, split="val")
    expect_error(str(tmp_path / "absent"), NYUv2MTAN, tmp_path / "absent")
    (tmp_path / "train/depth/1.npy").write_bytes(b"junk")
    expect_error(str(tmp_path / "train/depth/1.npy"), ds.load, 1, ["depth"])
    np.save(tmp_path / "train/label/2.npy", np.zeros((H, W - 1), np.float32))
    msg = expect_error(str(tmp_path / "train/label/2.npy"), ds.load, 2, ["semseg"])
    assert str(tmp_path / "train/image/2.npy") in msg and f"({H}, {W - 1})" in msg


@pytest.mark.parametrize("name", ["nyud", "pascal_context", "nyuv2_13", "cityscapes_7"])
def test_synthetic_fixture_loads_through_registry(tmp_path: Path, name: str) -> None:
    source, written = write_synthetic_fixture(name, tmp_path, n_train=3, n_val=1, size=(H, W))
    assert isinstance(source, SyntheticScenes) and len(written["val"]) == 1
    ds = create_dataset(name, root=tmp_path, split="val")
    got = ds.load(0, ds.tasks)
    src = source.load(3, ds.tasks)
    assert set(got) == {"image", *ds.tasks} and got["image"].shape == (H, W, 3)
    s = src["semseg"].astype(int)
    c = ds.num_classes["semseg"]
    np.testing.assert_array_equal(got["semseg"], np.where(s == 255, 255, s % c))
    if "depth" in ds.tasks:
        np.testing.assert_array_equal(got["depth"], src["depth"])
