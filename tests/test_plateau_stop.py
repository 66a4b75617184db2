"""Converged cycles (``loop.early_stopping``): a fit whose monitored metric stops
improving ends on the plateau before the step cap, one that keeps validating ends at
the cap; metrics.csv and ``mtal report`` say which."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from mtal.cli import run_cli
from mtal.loop import LoopSettings, validate_settings
from mtal.loop.stopping import EarlyStopSettings
from mtal.report import write_report

SMOKE = "configs/synthetic/smoke.yaml"


def _loop(runs: Path, name: str, *extra: str) -> dict[str, str]:
    run_cli(
        [
            "loop",
            "--config",
            SMOKE,
            "--loop.runs_dir",
            str(runs),
            "--loop.name",
            name,
            "--loop.cycles",
            "1",
            "--data.val_size",
            "4",
            "--loop.early_stopping.enabled",
            "true",
            "--loop.early_stopping.val_check_steps",
            "2",
            *extra,
        ]
    )
    with (runs / "smoke" / name / "seed0" / "metrics.csv").open(newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    return row


def test_plateau_stops_before_the_cap_and_the_cap_says_so(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    # lr 0: the weights never change, so val/mtl_loss is flat. Validations at steps 2, 4,
    # 6: the first sets the best, the next two (patience 2) do not improve -> stop at 6
    plateau = _loop(
        runs,
        "flat",
        "--model.lr",
        "0.0",
        "--model.scheduler",
        "none",
        "--loop.early_stopping.patience",
        "2",
        "--loop.early_stopping.max_steps",
        "200",
    )
    assert plateau["stopped"] == "plateau"
    assert int(plateau["cycle_steps"]) == 6 and int(plateau["step"]) == 6
    # patience 100 cannot run out within 4 steps: the cap ends the fit
    capped = _loop(
        runs,
        "short",
        "--loop.early_stopping.patience",
        "100",
        "--loop.early_stopping.max_steps",
        "4",
    )
    assert capped["stopped"] == "cap" and int(capped["cycle_steps"]) == 4
    out = write_report(runs / "smoke")
    stopping = (out / "stopping.md").read_text()
    assert "| flat | 1 | 1 | 0 | 0 | 6–6 | ok |" in stopping
    assert "| short | 1 | 0 | 1 | 0 | 4–4 | CAPPED |" in stopping
    assert "short: [1 capped cycles]" in (out / "summary.md").read_text()


@pytest.mark.parametrize(
    ("field", "value"),
    [("patience", 0), ("max_steps", 0), ("val_check_steps", 5000), ("min_delta", -1.0)],
)
def test_bad_early_stopping_settings_name_the_field(field: str, value: float) -> None:
    settings = LoopSettings(early_stopping=EarlyStopSettings(enabled=True, **{field: value}))
    with pytest.raises(ValueError, match=f"loop.early_stopping.{field}="):
        validate_settings(settings)
