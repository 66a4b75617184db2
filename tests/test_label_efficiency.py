"""Label-efficiency arithmetic of ``mtal report`` (mtal.savings) against hand-computed
values: relative performance, labels to 95%, normalised AUC, paired differences to
Random, the sign test and the verdict rule, and the capped-cycle flags."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from mtal.report import write_report
from mtal.savings import (
    labels_to_reach,
    normalised_auc,
    paired_differences,
    read_seeded,
    relative_performance,
    sign_test_p,
    strategy_figures,
    verdict,
)


def test_relative_performance_is_the_ratio_to_the_reference() -> None:
    assert relative_performance(2.5, 2.0, higher=False) == pytest.approx(0.8)  # loss
    assert relative_performance(0.4, 0.5, higher=True) == pytest.approx(0.8)  # mIoU


def test_labels_to_reach_interpolates_between_the_bracketing_cycles() -> None:
    # 0.90 at 200 labels, 1.00 at 300: 0.95 is half-way, at 250 labels
    assert labels_to_reach([100, 200, 300], [0.8, 0.9, 1.0]) == pytest.approx(250.0)
    # 0.92 -> 0.98 between 60 and 120 labels: 60 + (0.03 / 0.06) * 60 = 90
    assert labels_to_reach([60, 120], [0.92, 0.98]) == pytest.approx(90.0)
    assert labels_to_reach([100, 200], [0.96, 0.99]) == 100.0  # reached at once
    assert labels_to_reach([100, 200], [0.5, 0.94]) is None  # never reached


def test_normalised_auc_is_the_trapezoid_over_the_fraction_range() -> None:
    # (0.1 * (0.5 + 0.7) / 2 + 0.2 * (0.7 + 0.9) / 2) / 0.3 = 0.22 / 0.3
    assert normalised_auc([0.1, 0.2, 0.4], [0.5, 0.7, 0.9]) == pytest.approx(0.22 / 0.3)
    assert normalised_auc([0.1, 0.5], [0.6, 0.6]) == pytest.approx(0.6)
    assert normalised_auc([1.0], [0.9]) == pytest.approx(0.9)


def test_sign_test_and_verdict_rule() -> None:
    assert sign_test_p([0.1, 0.2, 0.3]) == pytest.approx(1 / 8)
    assert sign_test_p([0.1, 0.2, -0.3]) == pytest.approx(4 / 8)  # C(3,2)+C(3,3) over 8
    assert sign_test_p([0.0, 0.1, 0.2]) == pytest.approx(1 / 4)  # the tie is dropped
    eight_of_nine = [0.1] * 8 + [-0.1]
    assert sign_test_p(eight_of_nine) == pytest.approx(10 / 512)
    assert verdict([0.1, 0.2, 0.05]) == "better"  # every seed agrees
    assert verdict([-0.1, -0.2, -0.05]) == "worse"
    assert verdict([0.1, -0.2, 0.3]) == "no clear difference"
    assert verdict([0.1, 0.2]) == "too few seeds (2)"
    assert verdict(eight_of_nine) == "better"  # not unanimous, but p = 0.0195 <= 0.05
    assert verdict([0.1] * 6 + [-0.1] * 3) == "no clear difference"  # p = 0.254


def _write(path: Path, rows: list[dict[str, object]]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    with (path / "metrics.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _run(losses: list[float], stopped: list[str]) -> list[dict[str, object]]:
    return [
        {
            "cycle": c,
            "labels": 30 * (c + 1),
            "labelled_fraction": 0.1 * (c + 1),
            "step": 10 * (c + 1),
            "val/mtl_loss": loss,
            "stopped": why,
            "cycle_steps": 10,
        }
        for c, (loss, why) in enumerate(zip(losses, stopped, strict=True))
    ]


@pytest.fixture
def experiment(tmp_path: Path) -> Path:
    exp = tmp_path / "exp"
    _write(exp / "full" / "seed0", _run([2.0], ["plateau"]))
    ok = ["plateau"] * 3
    # relative performance 2/loss: random 0.8, 0.9, 1.0 ; mtal 0.9, 1.0, 1.0 on every seed
    for seed in (0, 1, 2):
        _write(exp / "random" / f"seed{seed}", _run([2.5, 2.0 / 0.9, 2.0], ok))
        _write(exp / "mtal" / f"seed{seed}", _run([2.0 / 0.9, 2.0, 2.0], ok))
    _write(exp / "coreset" / "seed0", _run([2.5, 2.5, 2.5], ["plateau", "cap", "cap"]))
    return exp


def test_figures_and_paired_differences_on_run_folders(experiment: Path) -> None:
    runs = read_seeded(experiment)
    rnd = strategy_figures(runs["random"], "val/mtl_loss", 2.0, higher=False, fraction=0.95)
    mtal = strategy_figures(runs["mtal"], "val/mtl_loss", 2.0, higher=False, fraction=0.95)
    # random: 0.9 at 60 labels, 1.0 at 90 -> 75; mtal: 0.9 at 30, 1.0 at 60 -> 45
    assert rnd.labels_to_target == pytest.approx({0: 75.0, 1: 75.0, 2: 75.0})
    assert mtal.labels_to_target == pytest.approx({0: 45.0, 1: 45.0, 2: 45.0})
    # nAUC over 0.1..0.3: random (0.85 + 0.95) * 0.1 / 0.2 = 0.9; mtal (0.95 + 1.0) / 2
    assert rnd.nauc[0] == pytest.approx(0.9)
    assert mtal.nauc[0] == pytest.approx(0.975)
    diffs = paired_differences(mtal.nauc, rnd.nauc)
    assert diffs == pytest.approx({0: 0.075, 1: 0.075, 2: 0.075})


def test_report_writes_efficiency_and_flags_capped_curves(experiment: Path) -> None:
    out = write_report(experiment)
    efficiency = (out / "efficiency.md").read_text()
    mtal_row = next(line for line in efficiency.splitlines() if line.startswith("| mtal |"))
    assert "s0: 45, s1: 45, s2: 45" in mtal_row
    assert "3/3" in mtal_row and "0.975 ± 0.000" in mtal_row
    assert "s0: +0.0750" in mtal_row and "0.125" in mtal_row and "better" in mtal_row
    coreset = next(line for line in efficiency.splitlines() if line.startswith("| coreset |"))
    assert "s0: —" in coreset and "0/1" in coreset and "too few seeds (1)" in coreset
    stopping = (out / "stopping.md").read_text()
    assert "| coreset | 3 | 1 | 2 | 0 | 10–10 | CAPPED |" in stopping
    assert "| random | 9 | 9 | 0 | 0 | 10–10 | ok |" in stopping
    assert "coreset: [2 capped cycles]" in (out / "summary.md").read_text()


def test_report_pairs_against_a_named_baseline(experiment: Path) -> None:
    """``--baseline mtal`` writes efficiency_vs_mtal.md: random is then 0.075 worse per
    seed (the hand values of the fixture), all 3 seeds agree → "worse"."""
    from mtal.report import main

    assert main([str(experiment), "--baseline", "mtal"]) == 0
    text = (experiment / "report" / "efficiency_vs_mtal.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| random |"))
    assert "s0: -0.0750, s1: -0.0750, s2: -0.0750" in row and "worse" in row
    mtal_row = next(line for line in text.splitlines() if line.startswith("| mtal |"))
    assert mtal_row.endswith("| — | — | — | — |")
    with pytest.raises(ValueError, match=r"\['nope'\] are not strategies.*'coreset'"):
        main([str(experiment), "--baseline", "nope"])
