"""Label-efficiency figures of an experiment (``mtal report``): labels to 95% of the
fully-trained performance, the normalised area under the AL curve, paired differences
to Random per seed, and whether each cycle's fit stopped on its plateau or at the cap.

Definitions (one place, so the README and the tests can point here):

- **relative performance** of a value ``v`` against the fully-trained reference ``r``:
  ``v / r`` for a higher-is-better metric and ``r / v`` for a lower-is-better one (the
  ratio form of mDSQ, detection + segmentation consistency paper, Sec. 4: mAP/mAP_full);
  1.0 = as good as fully trained.
- **labels to 95%**: the number of labels (image/task pairs) at which a seed's curve
  first reaches relative performance ``fraction`` = 0.95 (i.e. ``v >= 0.95 r``, or
  ``v <= r / 0.95``), linearly interpolated between the two cycles that bracket the
  crossing; ``None`` when the last cycle has not reached it.
- **normalised AUC**: the trapezoidal area under the relative-performance curve over
  the labelled fraction, divided by the fraction range it spans (the mean relative
  performance over the curve; higher is better for every metric).
- **paired difference to Random**: per seed, ``nAUC(strategy) - nAUC(random)`` on the
  same seed (same initial set, same model initialisation); reported with its mean and
  sample standard deviation.
- **verdict**: *better* (or *worse*) only when every seed's difference has that sign,
  with at least ``min_seeds`` seeds, or when the one-sided exact sign test (binomial,
  p = 1/2, ties dropped) gives p <= ``alpha``; otherwise *no clear difference*. With
  three seeds the smallest sign-test p is 0.125, so there the all-seeds rule decides.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: the fully-trained reference run's folder name and the paired baseline's
REFERENCE = "full"
BASELINE = "random"
FRACTION = 0.95
ALPHA = 0.05
MIN_SEEDS = 3

Rows = list[dict[str, str]]


def read_seeded(experiment_dir: Path) -> dict[str, dict[int, Rows]]:
    """strategy → seed → the raw ``metrics.csv`` rows (strings, ``stopped`` kept)."""
    runs: dict[str, dict[int, Rows]] = defaultdict(dict)
    for table in sorted(Path(experiment_dir).glob("*/seed*/metrics.csv")):
        seed_name = table.parent.name.removeprefix("seed")
        if not seed_name.isdigit():
            continue
        with table.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        if rows:
            runs[table.parent.parent.name][int(seed_name)] = rows
    return dict(runs)


def _number(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def relative_performance(value: float, reference: float, higher: bool) -> float:
    """``value / reference`` (higher is better) or ``reference / value`` (lower is better)."""
    return value / reference if higher else reference / value


def labels_to_reach(
    labels: Sequence[float], relative: Sequence[float], fraction: float = FRACTION
) -> float | None:
    """Labels at which the relative-performance curve first reaches ``fraction``,
    interpolated linearly between the bracketing cycles; None if never reached."""
    for i, (n, r) in enumerate(zip(labels, relative, strict=True)):
        if r >= fraction:
            if i == 0:
                return float(n)
            n0, r0 = float(labels[i - 1]), float(relative[i - 1])
            return n0 + (fraction - r0) / (r - r0) * (float(n) - n0)
    return None


def normalised_auc(x: Sequence[float], relative: Sequence[float]) -> float:
    """Trapezoidal area under ``relative`` over ``x``, divided by the range of ``x``."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(relative, dtype=float)
    if xs.size == 1:
        return float(ys[0])
    area = float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2.0))
    return area / float(xs[-1] - xs[0])


def sign_test_p(differences: Sequence[float]) -> float:
    """One-sided exact sign test: P(at least k of n positive | p = 1/2), ties dropped."""
    nonzero = [d for d in differences if d != 0]
    n, k = len(nonzero), sum(d > 0 for d in nonzero)
    if n == 0:
        return 1.0
    return sum(math.comb(n, j) for j in range(k, n + 1)) / 2.0**n


def verdict(differences: Sequence[float], alpha: float = ALPHA, min_seeds: int = MIN_SEEDS) -> str:
    """better / worse / no clear difference (see the module docstring for the rule)."""
    d = list(differences)
    if not d:
        return "no seeds"
    agree = len(d) >= min_seeds
    if (agree and all(x > 0 for x in d)) or sign_test_p(d) <= alpha:
        return "better"
    if (agree and all(x < 0 for x in d)) or sign_test_p([-x for x in d]) <= alpha:
        return "worse"
    return "no clear difference" if len(d) >= min_seeds else f"too few seeds ({len(d)})"


@dataclass
class SeedCurve:
    """One seed's curve of one metric: labels, labelled fraction, value per cycle."""

    labels: list[float]
    fraction: list[float]
    values: list[float]


def seed_curve(rows: Rows, metric: str) -> SeedCurve | None:
    """The cycles of ``rows`` that carry a finite ``metric``, in cycle order."""
    picked = sorted(
        (int(r["cycle"]), _number(r.get("labels")), _number(r.get("labelled_fraction")), v)
        for r in rows
        if math.isfinite(v := _number(r.get(metric)))
    )
    if not picked:
        return None
    return SeedCurve([p[1] for p in picked], [p[2] for p in picked], [p[3] for p in picked])


def reference_of(runs: Mapping[str, Mapping[int, Rows]], metric: str) -> float | None:
    """Mean over seeds of the reference run's last-row ``metric``."""
    values = [
        v
        for rows in runs.get(REFERENCE, {}).values()
        if math.isfinite(v := _number(rows[-1].get(metric)))
    ]
    return float(np.mean(values)) if values else None


@dataclass
class StrategyFigures:
    """Per-seed figures of one strategy on one metric."""

    labels_to_target: dict[int, float | None]
    nauc: dict[int, float]


def strategy_figures(
    seeds: Mapping[int, Rows], metric: str, reference: float, higher: bool, fraction: float
) -> StrategyFigures:
    """Labels to ``fraction`` of the reference and normalised AUC, per seed."""
    to_target: dict[int, float | None] = {}
    nauc: dict[int, float] = {}
    for seed, rows in sorted(seeds.items()):
        c = seed_curve(rows, metric)
        if c is None:
            continue
        rel = [relative_performance(v, reference, higher) for v in c.values]
        to_target[seed] = labels_to_reach(c.labels, rel, fraction)
        nauc[seed] = normalised_auc(c.fraction, rel)
    return StrategyFigures(to_target, nauc)


def paired_differences(
    mine: Mapping[int, float], baseline: Mapping[int, float]
) -> dict[int, float]:
    """``mine[s] - baseline[s]`` on the seeds both have."""
    return {s: mine[s] - baseline[s] for s in sorted(set(mine) & set(baseline))}


def _mean_std(values: Sequence[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.3f} (n=1)"
    return f"{float(np.mean(values)):.3f} ± {float(np.std(values, ddof=1)):.3f}"


def efficiency_markdown(
    runs: Mapping[str, Mapping[int, Rows]],
    metrics: Sequence[str],
    higher_is_better: dict[str, bool],
    fraction: float = FRACTION,
    baseline: str = BASELINE,
) -> str:
    """The savings / AUC / paired-difference tables, one per metric; differences are
    paired per seed against the ``baseline`` strategy (default ``random``)."""
    strategies = sorted(s for s in runs if s != REFERENCE)
    lines = [
        f"Label efficiency against the fully-trained reference (`{REFERENCE}`): labels to "
        f"{100 * fraction:.0f}% of its performance (interpolated between cycles; per seed), "
        "normalised AUC of the relative performance (1 = fully trained throughout), and the "
        f"paired nAUC difference to `{baseline}` per seed. A strategy is called better or "
        f"worse only when all of >= {MIN_SEEDS} seeds agree or the one-sided exact sign "
        f"test gives p <= {ALPHA}.",
        "",
    ]
    for metric in metrics:
        reference = reference_of(runs, metric)
        if reference is None or reference == 0:
            lines += [f"### {metric}", "", "no fully-trained reference value; skipped", ""]
            continue
        higher = higher_is_better[metric]
        figures = {
            s: strategy_figures(runs[s], metric, reference, higher, fraction) for s in strategies
        }
        base = figures.get(baseline)
        arrow = "↑" if higher else "↓"
        lines += [
            f"### {metric} {arrow} (reference {reference:.4f}; target "
            f"{fraction * reference if higher else reference / fraction:.4f})",
            "",
            f"| strategy | labels to {100 * fraction:.0f}% per seed | reached | nAUC | "
            f"Δ nAUC vs {baseline} per seed | Δ mean ± std | sign-test p (Δ > 0) | verdict |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for s in strategies:
            f = figures[s]
            per_seed = ", ".join(
                f"s{k}: " + ("—" if v is None else f"{v:.0f}")
                for k, v in f.labels_to_target.items()
            )
            reached = sum(v is not None for v in f.labels_to_target.values())
            if base is None or s == baseline:
                diffs_text, mean_text, p_text, call = "—", "—", "—", "—"
            else:
                diffs = paired_differences(f.nauc, base.nauc)
                values = list(diffs.values())
                diffs_text = ", ".join(f"s{k}: {v:+.4f}" for k, v in diffs.items()) or "—"
                mean_text = _mean_std(values)
                p_text = f"{sign_test_p(values):.3f}" if values else "—"
                call = verdict(values)
            lines.append(
                f"| {s} | {per_seed} | {reached}/{len(f.labels_to_target)} | "
                f"{_mean_std(list(f.nauc.values()))} | {diffs_text} | {mean_text} | "
                f"{p_text} | {call} |"
            )
        lines.append("")
    return "\n".join(lines)


def stopping_counts(runs: Mapping[str, Mapping[int, Rows]]) -> dict[str, dict[str, int]]:
    """strategy → how many cycles ended on each ``stopped`` reason (``unrecorded`` when
    the run did not train with ``loop.early_stopping``)."""
    counts: dict[str, dict[str, int]] = {}
    for strategy, seeds in sorted(runs.items()):
        tally: dict[str, int] = defaultdict(int)
        for rows in seeds.values():
            for r in rows:
                tally[r.get("stopped") or "unrecorded"] += 1
        counts[strategy] = dict(tally)
    return counts


def capped_strategies(runs: Mapping[str, Mapping[int, Rows]]) -> dict[str, int]:
    """strategy → number of cycles that hit the step cap (only strategies with any)."""
    return {s: c["cap"] for s, c in stopping_counts(runs).items() if c.get("cap")}


def stopping_markdown(runs: Mapping[str, Mapping[int, Rows]]) -> str:
    """How every strategy's cycles ended; capped curves are flagged."""
    counts = stopping_counts(runs)
    lines = [
        "How each cycle's fit ended (`stopped` in metrics.csv): `plateau` = no improvement "
        "of the monitored metric for `patience` validations, `cap` = the step cap "
        "(`loop.early_stopping.max_steps`) came first, so that cycle may be under-trained.",
        "",
        "| strategy | cycles | plateau | cap | other | steps per cycle (min–max) | flag |",
        "|---|---|---|---|---|---|---|",
    ]
    for strategy, tally in counts.items():
        total = sum(tally.values())
        other = total - tally.get("plateau", 0) - tally.get("cap", 0)
        steps = [_number(r.get("cycle_steps")) for rows in runs[strategy].values() for r in rows]
        steps = [x for x in steps if math.isfinite(x)]
        span = f"{min(steps):.0f}–{max(steps):.0f}" if steps else "—"
        flag = "CAPPED" if tally.get("cap") else ("no plateau stop recorded" if other else "ok")
        lines.append(
            f"| {strategy} | {total} | {tally.get('plateau', 0)} | {tally.get('cap', 0)} | "
            f"{other} | {span} | {flag} |"
        )
    return "\n".join(lines) + "\n"


def write_efficiency(
    experiment_dir: Path,
    out: Path,
    metrics: Sequence[str],
    higher: dict[str, bool],
    baselines: Sequence[str] = (),
) -> list[Path]:
    """Write ``efficiency.md`` (paired against ``random``), one
    ``efficiency_vs_<baseline>.md`` per extra baseline, and ``stopping.md`` into ``out``;
    returns the paths. An unknown baseline is an error naming the strategies."""
    runs = read_seeded(experiment_dir)
    unknown = [b for b in baselines if b not in runs or b == REFERENCE]
    if unknown:
        known = sorted(s for s in runs if s != REFERENCE)
        raise ValueError(
            f"report baseline(s) {unknown} are not strategies of {experiment_dir}; "
            f"choose among {known}"
        )
    written = [out / "stopping.md"]
    written[0].write_text(stopping_markdown(runs))
    if REFERENCE in runs:
        path = out / "efficiency.md"
        path.write_text(efficiency_markdown(runs, metrics, higher))
        written.append(path)
        for name in baselines:
            path = out / f"efficiency_vs_{name}.md"
            path.write_text(efficiency_markdown(runs, metrics, higher, baseline=name))
            written.append(path)
    return written
