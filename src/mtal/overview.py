"""One overview figure of an experiment's AL curves: every metric in its own panel,
mean ± std over seeds per strategy against % of labels, the fully-trained reference
dashed (matplotlib imported inside, so importing this module stays light)."""

from __future__ import annotations

import math
from pathlib import Path

from mtal.report import REFERENCE, curve, higher_is_better, reference_value


def plot_overview(
    runs: dict[str, list[list[dict[str, float]]]],
    metrics: list[str],
    out: Path,
    columns: int = 4,
) -> Path | None:
    """Write ``out`` (all metrics of ``runs`` in one figure); None when nothing to plot."""
    from matplotlib.figure import Figure

    strategies = [s for s in sorted(runs) if s != REFERENCE]
    panels = []
    for metric in metrics:
        curves = [c for s in strategies if (c := curve(s, runs[s], metric)) is not None]
        if curves:
            panels.append((metric, curves))
    if not panels:
        return None
    cols = min(columns, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(3.6 * cols, 2.9 * rows), dpi=100)
    for k, (metric, curves) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, k + 1)
        for c in curves:
            ax.plot(c.x, c.mean, marker="o", markersize=3, label=c.strategy)
            ax.fill_between(c.x, c.mean - c.std, c.mean + c.std, alpha=0.2)
        reference = reference_value(runs, metric)
        if reference is not None:
            ax.axhline(reference, color="black", linestyle="--", linewidth=1)
        arrow = "\u2191" if higher_is_better(metric) else "\u2193"
        ax.set_title(f"{metric.removeprefix('val/')} {arrow}", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if k == 0:
            ax.legend(fontsize=7)
    fig.supxlabel("% of labels (image/task pairs)", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out
