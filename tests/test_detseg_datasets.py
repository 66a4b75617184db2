"""nuImages (devkit JSON tables + RLE masks) and A9 (OpenLABEL) loaders on fixtures the
project writes in those formats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mtal.data import DatasetLayoutError, create_dataset
from mtal.data.fixtures_detseg import (
    SYNTHETIC_TO_A9,
    SYNTHETIC_TO_NUIMAGES,
    write_a9,
    write_nuimages,
)
from mtal.data.nuimages import NUIMAGES_CATEGORY_MAP, NUIMAGES_CLASSES, decode_rle, encode_rle
from mtal.data.synthetic import SyntheticScenes


@pytest.fixture(scope="module")
def source() -> SyntheticScenes:
    return SyntheticScenes("train", size=(32, 40), length=4, seed=3)


def test_rle_round_trip() -> None:
    mask = np.zeros((5, 7), dtype=bool)
    mask[1:4, 2:6] = True
    enc = encode_rle(mask)
    assert enc["size"] == [5, 7] and isinstance(enc["counts"], str)
    np.testing.assert_array_equal(decode_rle(enc, "test"), mask)


def test_nuimages_loader_reads_the_devkit_tables(tmp_path: Path, source: SyntheticScenes) -> None:
    written = write_nuimages(tmp_path, source, 3, 1)
    for name in ("sample_data", "object_ann", "surface_ann", "category", "sample", "sensor"):
        assert (tmp_path / "v1.0-train" / f"{name}.json").exists()
    ds = create_dataset("nuimages", root=str(tmp_path), split="train", tasks=["semseg", "boxes"])
    assert len(ds) == 3 and ds.ids == written["train"]
    assert ds.num_classes["semseg"] == len(NUIMAGES_CLASSES)
    cls = {n: i for i, n in enumerate(NUIMAGES_CLASSES)}
    for i in range(3):
        got = ds.load(i, ["semseg", "boxes"])
        ref = source.load(i, ["semseg", "boxes"])
        keep = np.isin(ref["box_labels"], list(SYNTHETIC_TO_NUIMAGES))
        np.testing.assert_allclose(got["boxes"], ref["boxes"][keep])
        expected = [
            cls[NUIMAGES_CATEGORY_MAP[SYNTHETIC_TO_NUIMAGES[int(v)]]]
            for v in ref["box_labels"][keep]
        ]
        assert got["box_labels"].tolist() == expected
        floor = ref["semseg"] == 1
        assert (got["semseg"][floor] == cls["driveable_surface"]).all()
        walls = ref["semseg"] == 0
        assert (got["semseg"][walls] == 0).all()  # not annotated → background
    assert len(create_dataset("nuimages", root=str(tmp_path), split="val")) == 1


def test_nuimages_missing_table_names_path_and_layout(
    tmp_path: Path, source: SyntheticScenes
) -> None:
    write_nuimages(tmp_path, source, 1, 1)
    (tmp_path / "v1.0-train" / "object_ann.json").unlink()
    with pytest.raises(DatasetLayoutError, match=r"object_ann\.json(.|\n)*expected layout"):
        create_dataset("nuimages", root=str(tmp_path), split="train")
    with pytest.raises(DatasetLayoutError, match="v1.0-val"):
        create_dataset("nuimages", root=str(tmp_path / "nowhere"), split="val")


def test_a9_loader_reads_openlabel(tmp_path: Path, source: SyntheticScenes) -> None:
    written = write_a9(tmp_path, source, 2, 1)
    ds = create_dataset("a9", root=str(tmp_path), split="train")
    assert ds.ids == written["train"] and ds.tasks == ("semseg", "boxes")
    label = next((tmp_path / "train" / "labels").rglob("*.json"))
    doc = json.loads(label.read_text())
    obj = next(iter(next(iter(doc["openlabel"]["frames"].values()))["objects"].values()))
    assert obj["object_data"]["bbox"][0]["name"] == "shape"  # centre x, y, w, h
    for i in range(2):
        got, ref = ds.load(i, ["semseg", "boxes"]), source.load(i, ["semseg", "boxes"])
        keep = np.isin(ref["box_labels"], list(SYNTHETIC_TO_A9))
        np.testing.assert_allclose(got["boxes"], ref["boxes"][keep], atol=1e-4)
        # polygon fill of each instance covers its pixels (contours are inclusive)
        ids = {n: k for k, n in enumerate(ds.class_names)}
        for box, lab in zip(ref["boxes"][keep], ref["box_labels"][keep]):
            x1, y1, x2, y2 = (int(v) for v in box)
            inside = ref["semseg"][y1:y2, x1:x2] == lab
            assert (got["semseg"][y1:y2, x1:x2][inside] > 0).all()
            assert ids[SYNTHETIC_TO_A9[int(lab)]] in got["semseg"][y1:y2, x1:x2]
    label.write_text("{}")
    with pytest.raises(DatasetLayoutError, match="OpenLABEL"):
        ds.load(0, ["boxes"]) if ds._items[0][1] == label else ds.load(1, ["boxes"])
    with pytest.raises(DatasetLayoutError, match="expected layout"):
        create_dataset("a9", root=str(tmp_path), split="test")
