"""``mtal loop`` runs the det+seg method and its baselines end to end on tiny procedural
scenes with boxes (two fits each), writing mAP and mIoU to metrics.csv. (Every strategy
of the ICCVW'23 grid runs through ``mtal loop`` in ``make paper-iccvw23-procedural SMOKE=1``.)"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--data.pool_size=10",
    "--data.val_size=4",
    "--data.dataset_kwargs={size: [32, 32], cache: true}",
    "--model.model_kwargs={head_channels: 8, encoder_channels: 16}",
    "--loop.cycles=2",
    "--loop.logger=none",
]


@pytest.mark.parametrize(
    "strategy, extra",
    [
        ("detseg", ["--loop.strategy_kwargs={min_score: 0.0, max_boxes: 2}"]),
        # cycle 0 of alternation is CALD (its other member, EquAL-semseg, runs below)
        ("alternation", ["--loop.strategy_kwargs={options: {cald: {augmentations: [flip]}}}"]),
        ("ll4al", ["--model.loss_prediction=true"]),
        ("cdal", []),
        ("equal-semseg", []),
        ("random", []),
    ],
)
def test_loop_runs_end_to_end(
    strategy: str, extra: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mtal.cli import run_cli

    monkeypatch.chdir(ROOT)
    run_cli(
        [
            "loop",
            "--config",
            "configs/synthetic/detseg_smoke.yaml",
            *TINY,
            f"--loop.runs_dir={tmp_path}",
            f"--loop.strategy={strategy}",
            *extra,
        ]
    )
    table = tmp_path / "detseg-smoke" / strategy / "seed0" / "metrics.csv"
    rows = list(csv.DictReader(table.open()))
    assert [int(r["cycle"]) for r in rows] == [0, 1]
    assert [int(float(r["labelled_images"])) for r in rows] == [4, 5]
    assert all("val/boxes/map" in r and "val/semseg/miou" in r for r in rows)
