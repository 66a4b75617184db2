"""The cost axis of a report: every curve against cumulative annotation cost, and the
savings table in cost (hooked into :func:`mtal.report.write_report`).

The cumulative cost of cycle ``c`` is ``Σ_k c_k · (labels of task k in pool/cycle_<c>)``
(the initial set included), priced by ``--task_costs`` or else by each run's own
``loop.task_costs`` in its ``config.yaml``; runs priced by neither are left out.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mtal.report import HEADLINE, REFERENCE, higher_is_better, read_runs


def run_task_costs(run_dir: Path) -> dict[str, float]:
    """``loop.task_costs`` of a run's ``config.yaml`` ({} when absent)."""
    import yaml

    path = run_dir / "config.yaml"
    if not path.exists():
        return {}
    config = yaml.safe_load(path.read_text()) or {}
    return {
        str(k): float(v) for k, v in ((config.get("loop") or {}).get("task_costs") or {}).items()
    }


def cumulative_costs(run_dir: Path, task_costs: Mapping[str, float]) -> dict[int, float]:
    """cycle → cost of every label held in ``pool/cycle_<c>.json``."""
    from mtal.data.pool import LabelPool

    out = {}
    for path in sorted(run_dir.glob("pool/cycle_*.json")):
        pool = LabelPool.load(path)
        missing = [t for t in pool.tasks if t not in task_costs]
        if missing:
            raise ValueError(
                f"{run_dir}: no price for task(s) {missing}; pass --task_costs "
                f"{','.join(f'{t}=<cost>' for t in pool.tasks)}"
            )
        per_task = pool.labelled.sum(axis=0)
        out[int(path.stem.split("_")[1])] = math.fsum(
            float(task_costs[t]) * float(n) for t, n in zip(pool.tasks, per_task)
        )
    return out


def cost_curves(
    experiment_dir: Path, metric: str, task_costs: Mapping[str, float] | None
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, int]]:
    """strategy → (mean cost, mean metric, std metric, seeds) per cycle."""
    by: dict[str, dict[int, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for table in sorted(experiment_dir.glob("*/seed*/metrics.csv")):
        run_dir, strategy = table.parent, table.parent.parent.name
        prices = dict(task_costs or run_task_costs(run_dir))
        if strategy == REFERENCE or not prices:
            continue
        costs = cumulative_costs(run_dir, prices)
        for row in read_runs_rows(table):
            cycle = int(row["cycle"])
            if metric in row and math.isfinite(row[metric]) and cycle in costs:
                by[strategy][cycle].append((costs[cycle], row[metric]))
    out = {}
    for strategy, cycles in sorted(by.items()):
        values = [np.array(cycles[c]) for c in sorted(cycles)]
        out[strategy] = (
            np.array([v[:, 0].mean() for v in values]),
            np.array([v[:, 1].mean() for v in values]),
            np.array([v[:, 1].std() for v in values]),
            max(len(v) for v in values),
        )
    return out


def read_runs_rows(table: Path) -> list[dict[str, float]]:
    """The numeric cells of one ``metrics.csv`` (:func:`mtal.report.numeric_rows`)."""
    from mtal.report import numeric_rows

    return numeric_rows(table)


def plot_cost_curve(curves: Mapping[str, tuple], metric: str, out: Path) -> Path:
    """One metric against cumulative annotation cost (mean ± std over seeds)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4.0), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    for strategy, (cost, mean, std, seeds) in curves.items():
        ax.plot(cost, mean, marker="o", label=f"{strategy} (n={seeds})")
        ax.fill_between(cost, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("cumulative annotation cost (loop.task_costs units)")
    ax.set_ylabel(
        metric + ("  (higher is better)" if higher_is_better(metric) else "  (lower is better)")
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    return out


def cost_to_reach(cost: np.ndarray, mean: np.ndarray, target: float, higher: bool) -> float | None:
    """Cost at the first cycle whose mean reaches ``target`` (None if never)."""
    for c, value in zip(cost, mean):
        if (value >= target) if higher else (value <= target):
            return float(c)
    return None


def savings_cost_markdown(curves: Mapping[str, tuple], target: float, target_name: str) -> str:
    """Cost each strategy needs to reach ``target`` of the headline, and the savings."""
    need = {
        s: cost_to_reach(c[0], c[1], target, higher_is_better(HEADLINE)) for s, c in curves.items()
    }
    names = list(curves)
    lines = [
        f"Annotation cost needed to reach {target_name} = {target:.4f} ({HEADLINE}).",
        "",
        "| strategy | cost needed | " + " | ".join(f"saving vs {s}" for s in names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for s in names:
        cells = []
        for other in names:
            mine, theirs = need[s], need[other]
            if other == s:
                cells.append("—")
            elif mine is None:
                cells.append("not reached")
            elif theirs is None:
                cells.append("other never reached")
            else:
                cells.append(f"{100.0 * (theirs - mine) / theirs:+.1f}%")
        shown = "not reached" if need[s] is None else f"{need[s]:.1f}"
        lines.append(f"| {s} | {shown} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_cost_report(
    experiment_dir: Path, out: Path, metrics: list[str], task_costs: Mapping[str, float] | None
) -> list[Path]:
    """``cost_curve_<metric>.png`` per metric and ``savings_cost.md``; nothing when no run
    is priced."""
    written = []
    for metric in metrics:
        curves = cost_curves(experiment_dir, metric, task_costs)
        if not curves:
            continue
        name = metric.replace("val/", "").replace("/", "_")
        written.append(plot_cost_curve(curves, metric, out / f"cost_curve_{name}.png"))
        if metric == HEADLINE:
            runs = read_runs(experiment_dir)
            full = [rows[-1][HEADLINE] for rows in runs.get(REFERENCE, []) if HEADLINE in rows[-1]]
            if full:
                text = savings_cost_markdown(
                    curves, float(np.mean(full)), "the fully-trained multi-task loss"
                )
            else:
                best = min(float(c[1].min()) for c in curves.values())
                text = (
                    "No fully-trained reference run (`full`): the target is the best mean value "
                    "any strategy reached.\n\n"
                    + savings_cost_markdown(curves, best, "the best reached multi-task loss")
                )
            (out / "savings_cost.md").write_text(text)
            written.append(out / "savings_cost.md")
    return written


def parse_task_costs(text: str | None) -> dict[str, float] | None:
    """``"semseg=10,depth=0.5"`` → ``{"semseg": 10.0, "depth": 0.5}`` (None for None)."""
    if not text:
        return None
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--task_costs {text!r}: {part!r} is not task=<number>") from None
        if not out[name.strip()] > 0:
            raise ValueError(f"--task_costs {text!r}: the price of {name!r} must be positive")
    return out
