"""The ICCVW'23 det+seg protocol as the configs and grids spell it (hand-written values
from Hekimoglu et al., Sec. IV-A), and the mDSQ report hook (Eq. 4)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mtal.reporting_detseg import add_mdsq

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["nuimages", "a9"])
def test_paper_constants(name: str) -> None:
    raw = yaml.safe_load((ROOT / f"configs/{name}/detseg.yaml").read_text())
    assert raw["data"]["initial"] == 0.4 and raw["loop"]["budget"] == 0.1
    assert raw["loop"]["cycles"] == 6 and raw["loop"]["continuous"] is True
    assert raw["data"]["batch_size"] == 4 and raw["model"]["lr"] == 1e-3
    assert raw["trainer"]["max_steps"] == 30000
    assert raw["model"]["model"] == "detseg" and raw["data"]["tasks"] == ["semseg", "boxes"]
    grid = yaml.safe_load((ROOT / f"experiments/iccvw23_{name}.yaml").read_text())
    assert grid["seeds"] == [0, 1, 2] and grid["reference"]["data.initial"] == 1.0
    names = [s if isinstance(s, str) else next(iter(s)) for s in grid["strategies"]]
    assert names == ["detseg", "cald", "equal-semseg", "alternation", "ll4al", "cdal", "random"]


def test_detection_classes_are_segmentation_classes() -> None:
    from mtal.data.a9 import A9_CLASSES
    from mtal.data.nuimages import NUIMAGES_CLASSES

    for name, classes in (("nuimages", NUIMAGES_CLASSES), ("a9", A9_CLASSES)):
        raw = yaml.safe_load((ROOT / f"configs/{name}/detseg.yaml").read_text())
        det = raw["data"]["task_options"]["boxes"]["classes"]
        assert 0 not in det and max(det) < len(classes)  # background is not detected


def test_mdsq_from_the_reference_run() -> None:
    full = [[{"val/boxes/map": 0.4, "val/semseg/miou": 0.5}]]
    runs = {
        "full": full,
        "detseg": [[{"val/boxes/map": 0.2, "val/semseg/miou": 0.4}]],
        "other": [[{"val/mtl_loss": 1.0}]],
    }
    out = add_mdsq(runs)
    # (0.2 / 0.4 + 0.4 / 0.5) / 2 = 0.65; the reference itself scores 1
    assert out["detseg"][0][0]["val/mdsq"] == pytest.approx(0.65)
    assert out["full"][0][0]["val/mdsq"] == pytest.approx(1.0)
    assert "val/mdsq" not in out["other"][0][0]
    assert "val/mdsq" not in add_mdsq({"detseg": runs["detseg"]})["detseg"][0][0]
