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


def test_report_writes_mdsq_curve_and_column(tmp_path: Path) -> None:
    from mtal.report import write_report

    header = "cycle,labelled_images,labels,labelled_fraction,val/boxes/map,val/semseg/miou\n"
    for name, rows in {
        "full": ["0,10,20,1.0,0.5,0.4\n"],
        "detseg": ["0,4,8,0.4,0.25,0.2\n", "1,5,10,0.5,0.5,0.3\n"],
    }.items():
        folder = tmp_path / "exp" / name / "seed0"
        folder.mkdir(parents=True)
        (folder / "metrics.csv").write_text(header + "".join(rows))
    out = write_report(tmp_path / "exp")
    assert (out / "curve_mdsq.png").exists() and (out / "curve_boxes_map.png").exists()
    summary = (out / "summary.md").read_text()
    assert "mdsq ↑" in summary and "boxes/map ↑" in summary
    # cycle 1: (0.5 / 0.5 + 0.3 / 0.4) / 2 = 0.875
    assert "0.8750" in summary and "0.5000" in summary  # cycle 0: (0.5 + 0.5) / 2
