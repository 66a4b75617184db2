"""Reports from a run folder: ``mtal report runs/<experiment>``.

Reads every ``<strategy>/seed<k>/metrics.csv`` under the experiment folder and writes,
into ``<experiment>/report/``:

- ``curve_<metric>.png``: the metric against % of labels bought, mean ± std over
  seeds per strategy, with the fully-trained reference as a horizontal line;
- ``table.md`` and ``table.csv``: mean ± std per strategy and cycle;
- ``overview.png``: every metric's AL curves in one figure;
- ``gallery/<strategy>_seed<k>_cycle_<c>.png``: thumbnails of the images requested for
  cycle ``c`` with the tasks requested and their scores;
- ``savings.md``: labels each strategy needs to reach the fully-trained multi-task
  loss, and the savings against every other strategy;
- ``cost_curve_<metric>.png`` and ``savings_cost.md``: the same against cumulative
  annotation cost, for runs priced by ``loop.task_costs`` or ``--task_costs``
  (:mod:`mtal.report_costs`).
- ``efficiency.md`` (with a reference) and ``stopping.md``: labels to 95% of the
  fully-trained performance, normalised AUC and paired differences to Random per seed,
  and how every cycle's fit ended (plateau or step cap; capped curves are flagged in
  the plots and in summary.md), see :mod:`mtal.savings`.

The fully-trained reference is a run named ``full`` (``--loop.name full`` with
``data.initial 1.0`` and one cycle); without one, the savings use the best value any
strategy reached as the target and say so.
"""

from __future__ import annotations

import argparse
import csv
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: metric names (last path component) where higher is better; others are lower-is-better
HIGHER_IS_BETTER = {
    "miou",
    "pixel_acc",
    "odsf",
    "odsf_approx",
    "maxf",
    "max_iou",
    "iou",
    "pct_11_25",
    "pct_22_5",
    "pct_30",
    "delta_m",
    "map",
    "map_50",
    "map_75",
    "mdsq",
}
HEADLINE = "val/mtl_loss"
#: each task's headline metric, in order of preference, for the compact summary table
TASK_HEADLINES = {
    "semseg": ("miou",),
    "parts": ("miou",),
    "depth": ("rmse",),
    "normals": ("mean",),
    "edge": ("odsf", "odsf_approx"),
    "saliency": ("maxf",),
    "boxes": ("map",),
}
REFERENCE = "full"


def higher_is_better(metric: str) -> bool:
    return metric.rsplit("/", 1)[-1] in HIGHER_IS_BETTER


@dataclass
class Curve:
    """One strategy's metric per cycle: x = % labels, mean and std over seeds."""

    strategy: str
    x: np.ndarray
    labels: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    seeds: int


def numeric_rows(table: Path) -> list[dict[str, float]]:
    """The numeric cells of one ``metrics.csv``, a dict per row."""
    rows = []
    with table.open(newline="") as handle:
        for raw in csv.DictReader(handle):
            row = {}
            for key, value in raw.items():
                try:
                    row[key] = float(value)
                except (TypeError, ValueError):
                    continue
            rows.append(row)
    return rows


def read_runs(experiment_dir: Path) -> dict[str, list[list[dict[str, float]]]]:
    """strategy → list over seeds of the metrics rows (numbers only)."""
    runs: dict[str, list[list[dict[str, float]]]] = defaultdict(list)
    for table in sorted(experiment_dir.glob("*/seed*/metrics.csv")):
        rows = numeric_rows(table)
        if rows:
            runs[table.parent.parent.name].append(rows)
    return dict(runs)


def curve(strategy: str, seeds: list[list[dict[str, float]]], metric: str) -> Curve | None:
    """Mean ± std over the seeds that reached each cycle."""
    by_cycle: dict[int, list[tuple[float, float, float]]] = defaultdict(list)
    for rows in seeds:
        for row in rows:
            if metric in row and math.isfinite(row[metric]):
                frac = 100.0 * row.get("labelled_fraction", float("nan"))
                by_cycle[int(row["cycle"])].append(
                    (frac, row.get("labels", float("nan")), row[metric])
                )
    if not by_cycle:
        return None
    cycles = sorted(by_cycle)
    values = [np.array(by_cycle[c]) for c in cycles]
    return Curve(
        strategy=strategy,
        x=np.array([v[:, 0].mean() for v in values]),
        labels=np.array([v[:, 1].mean() for v in values]),
        mean=np.array([v[:, 2].mean() for v in values]),
        std=np.array([v[:, 2].std() for v in values]),
        seeds=max(len(v) for v in values),
    )


def metrics_of(runs: dict[str, list[list[dict[str, float]]]]) -> list[str]:
    """The headline first, then every per-task validation metric present."""
    keys: set[str] = set()
    for seeds in runs.values():
        for rows in seeds:
            for row in rows:
                keys.update(k for k in row if k.startswith("val/"))
    ordered = sorted(keys - {HEADLINE})
    return ([HEADLINE] if HEADLINE in keys else []) + ordered


def reference_value(runs: dict[str, list[list[dict[str, float]]]], metric: str) -> float | None:
    """Mean over seeds of the fully-trained reference run's (last row) metric."""
    values = [rows[-1][metric] for rows in runs.get(REFERENCE, []) if metric in rows[-1]]
    return float(np.mean(values)) if values else None


def plot_curve(
    curves: list[Curve],
    metric: str,
    reference: float | None,
    out: Path,
    flags: dict[str, str] | None = None,
) -> Path:
    """Write one AL curve PNG (matplotlib Agg); ``flags`` adds a note to a strategy's label."""
    # a Figure without pyplot: no global backend switch (notebooks keep theirs)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4.0), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    for c in curves:
        note = f" {flags[c.strategy]}" if flags and c.strategy in flags else ""
        ax.plot(c.x, c.mean, marker="o", label=f"{c.strategy} (n={c.seeds}){note}")
        ax.fill_between(c.x, c.mean - c.std, c.mean + c.std, alpha=0.2)
    if reference is not None:
        ax.axhline(reference, color="black", linestyle="--", linewidth=1, label="fully trained")
    ax.set_xlabel("% of labels (image/task pairs)")
    ax.set_ylabel(
        metric + ("  (higher is better)" if higher_is_better(metric) else "  (lower is better)")
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def labels_to_reach(c: Curve, target: float, higher: bool) -> float | None:
    """Labels at the first cycle whose mean reaches ``target`` (None if never)."""
    for labels, value in zip(c.labels, c.mean):
        if (value >= target) if higher else (value <= target):
            return float(labels)
    return None


def savings_markdown(curves: list[Curve], target: float, target_name: str, higher: bool) -> str:
    """Table of labels needed to reach ``target`` and pairwise savings."""
    need = {c.strategy: labels_to_reach(c, target, higher) for c in curves}
    lines = [
        f"Labels needed to reach {target_name} = {target:.4f} ({HEADLINE}).",
        "",
        "| strategy | labels needed | "
        + " | ".join(f"saving vs {c.strategy}" for c in curves)
        + " |",
        "|---|---|" + "---|" * len(curves),
    ]
    for c in curves:
        mine = need[c.strategy]
        cells = []
        for other in curves:
            theirs = need[other.strategy]
            if other.strategy == c.strategy:
                cells.append("—")
            elif mine is None:
                cells.append("not reached")
            elif theirs is None:
                cells.append("other never reached")
            else:
                cells.append(f"{100.0 * (theirs - mine) / theirs:+.1f}%")
        shown = "not reached" if mine is None else f"{mine:.0f}"
        lines.append(f"| {c.strategy} | {shown} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table_rows(
    runs: dict[str, list[list[dict[str, float]]]], metrics: list[str]
) -> list[dict[str, str]]:
    """Mean ± std per strategy and cycle for every metric, keyed by the ``cycle`` column:
    a metric that is NaN or missing in one row leaves its cell empty and never shifts
    another cycle's values (labels and % labels come from every row of that cycle)."""
    rows = []
    for strategy in sorted(runs):
        by_cycle: dict[int, list[dict[str, float]]] = defaultdict(list)
        for seed_rows in runs[strategy]:
            for row in seed_rows:
                if "cycle" in row and math.isfinite(row["cycle"]):
                    by_cycle[int(row["cycle"])].append(row)
        for cycle in sorted(by_cycle):
            cells = by_cycle[cycle]

            def mean(key: str, rows_: list[dict[str, float]] = cells) -> float:
                values = [r[key] for r in rows_ if key in r and math.isfinite(r[key])]
                return float(np.mean(values)) if values else float("nan")

            row = {
                "strategy": strategy,
                "cycle": str(cycle),
                "% labels": f"{100.0 * mean('labelled_fraction'):.1f}",
                "labels": f"{mean('labels'):.0f}",
                "seeds": str(len(cells)),
            }
            for m in metrics:
                values = np.array([r[m] for r in cells if m in r and math.isfinite(r[m])])
                row[m] = f"{values.mean():.4f} ± {values.std():.4f}" if values.size else ""
            rows.append(row)
    return rows


def headline_metrics(metrics: list[str]) -> list[str]:
    """The multi-task loss and one headline metric per task present in ``metrics``."""
    chosen = [HEADLINE] if HEADLINE in metrics else []
    for task, names in TASK_HEADLINES.items():
        found = next((f"val/{task}/{n}" for n in names if f"val/{task}/{n}" in metrics), None)
        if found is not None:
            chosen.append(found)
    if "val/mdsq" in metrics:
        chosen.append("val/mdsq")
    return chosen


def markdown_table(rows: list[dict[str, str]], columns: list[str]) -> str:
    """A markdown table of ``rows`` restricted to ``columns``."""
    md = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    md += ["| " + " | ".join(r.get(c, "") for c in columns) + " |" for r in rows]
    return "\n".join(md) + "\n"


def add_equal_star(runs: dict[str, list[list[dict[str, float]]]]) -> str | None:
    """WACV24's EquAL*: the best single-task EquAL row. Our reading of "best": the
    ``equal-<task>`` run with the lowest mean final ``val/mtl_loss`` over seeds; its runs
    are added to ``runs`` as ``equal*``. Returns the chosen name (None without EquAL-XX)."""
    finals = {}
    for name, seeds in runs.items():
        if name.startswith("equal-"):
            values = [rows[-1][HEADLINE] for rows in seeds if HEADLINE in rows[-1]]
            if values:
                finals[name] = float(np.mean(values))
    if not finals:
        return None
    best = min(finals, key=finals.__getitem__)
    runs["equal*"] = runs[best]
    return best


def write_report(
    experiment_dir: str | Path,
    task_costs: dict[str, float] | None = None,
    baselines: Sequence[str] = (),
) -> Path:
    """Write curves, tables and savings for one experiment folder; returns the report dir.
    ``task_costs`` prices the cost axis (default: each run's ``loop.task_costs``);
    ``baselines`` adds ``efficiency_vs_<name>.md`` paired against those strategies."""
    experiment_dir = Path(experiment_dir)
    runs = read_runs(experiment_dir)
    if runs:
        from mtal.reporting_detseg import add_mdsq

        runs = add_mdsq(runs, REFERENCE)  # det+seg experiments: val/mdsq (Eq. 4)
    if not runs:
        raise FileNotFoundError(
            f"no runs under {experiment_dir}: expected {experiment_dir}/<strategy>/seed<k>/metrics.csv "
            "(run `mtal loop` or `mtal experiment` first)"
        )
    out = experiment_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    add_equal_star(runs)  # WACV24's EquAL* row, when EquAL-<task> runs exist
    metrics = metrics_of(runs)
    strategies = [s for s in sorted(runs) if s != REFERENCE]
    from mtal.savings import capped_strategies, read_seeded, write_efficiency

    capped = {
        s: f"[{n} capped cycles]" for s, n in capped_strategies(read_seeded(experiment_dir)).items()
    }
    for metric in metrics:
        curves = [c for s in strategies if (c := curve(s, runs[s], metric)) is not None]
        if curves:
            name = metric.replace("val/", "").replace("/", "_")
            plot_curve(
                curves, metric, reference_value(runs, metric), out / f"curve_{name}.png", capped
            )
    write_pictures(experiment_dir, out, runs, metrics)
    rows = table_rows({s: runs[s] for s in strategies}, metrics)
    columns = ["strategy", "cycle", "% labels", "labels", "seeds", *metrics]
    with (out / "table.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    (out / "table.md").write_text(markdown_table(rows, columns))
    short = ["strategy", "cycle", "% labels", "seeds", *headline_metrics(metrics)]
    arrows = {m: ("↑" if higher_is_better(m) else "↓") for m in short[4:]}
    header = {c: (f"{c.removeprefix('val/')} {arrows[c]}" if c in arrows else c) for c in short}
    renamed = [{header[c]: r.get(c, "") for c in short} for r in rows]
    warning = "".join(
        f"\n**{s}: {n}** (step cap reached, see stopping.md)\n" for s, n in capped.items()
    )
    (out / "summary.md").write_text(markdown_table(renamed, [header[c] for c in short]) + warning)
    write_efficiency(
        experiment_dir,
        out,
        headline_metrics(metrics),
        {m: higher_is_better(m) for m in metrics},
        baselines,
    )
    if HEADLINE in metrics:
        curves = [c for s in strategies if (c := curve(s, runs[s], HEADLINE)) is not None]
        reference = reference_value(runs, HEADLINE)
        if reference is not None:
            text = savings_markdown(curves, reference, "the fully-trained multi-task loss", False)
        else:
            best = min(float(c.mean.min()) for c in curves)
            text = (
                "No fully-trained reference run (`full`) in this experiment: the target is the "
                "best mean value any strategy reached.\n\n"
                + savings_markdown(curves, best, "the best reached multi-task loss", False)
            )
        (out / "savings.md").write_text(text)
    from mtal.report_costs import write_cost_report  # the cost axis (mtal.report_costs)

    write_cost_report(experiment_dir, out, metrics, task_costs)
    from mtal.diagnostics import write_diagnostics_report

    write_diagnostics_report({s: runs[s] for s in strategies}, out)  # diag/* of mtal loop
    return out


def write_pictures(
    experiment_dir: Path,
    out: Path,
    runs: dict[str, list[list[dict[str, float]]]],
    metrics: list[str],
) -> None:
    """``overview.png`` (all AL curves) and ``gallery/<run>_seed<k>_cycle_<c>.png`` (what
    each run picked, see :mod:`mtal.gallery`)."""
    from mtal.gallery import write_galleries
    from mtal.overview import plot_overview

    plot_overview(runs, metrics, out / "overview.png")
    write_galleries(experiment_dir, out / "gallery")


def main(argv: Sequence[str] | None = None) -> int:
    """``mtal report runs/<experiment> [--print]``."""
    parser = argparse.ArgumentParser(prog="mtal report", description="AL curves and tables")
    parser.add_argument("experiment", help="runs/<experiment>")
    parser.add_argument("--print", action="store_true", help="print the tables")
    parser.add_argument("--task_costs", help="price the cost axis: semseg=10,depth=0.5,...")
    parser.add_argument(
        "--baseline",
        action="append",
        default=[],
        help="also pair every strategy per seed against this one (efficiency_vs_<name>.md); "
        "repeatable; efficiency.md always pairs against random",
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    from mtal.report_costs import parse_task_costs

    out = write_report(args.experiment, parse_task_costs(args.task_costs), args.baseline)
    print(f"[mtal] report written to {out}")
    if args.print:
        for name in (
            "summary.md",
            "savings.md",
            "savings_cost.md",
            "stopping.md",
            "efficiency.md",
            *(f"efficiency_vs_{b}.md" for b in args.baseline),
            "diagnostics.md",
        ):
            if (out / name).exists():
                print((out / name).read_text())
    return 0
