"""Loop settings (``loop:`` of a config), their validation, seeds, the run-folder path
and the budget arithmetic."""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mtal.loop.stopping import EarlyStopSettings, as_settings, validate_early_stopping

if TYPE_CHECKING:
    from mtal.acquisition.costs import CostBudget
    from mtal.data.pool import LabelPool

BUDGET_UNITS = ("images", "labels", "cost")
#: ``loop.summary_store``: per-image scoring summaries in memory or memory-mapped on disk
SUMMARY_STORES = ("memory", "disk")


@dataclass
class LoopSettings:
    """What an active-learning experiment does between fits.

    ``budget`` is per acquisition: a fraction of the training pool's images when < 1,
    else a count, in ``budget_unit`` ("images": B images × K labels, which pair
    strategies receive as the same number of labels; "labels": image/task pairs;
    "cost": annotation cost units, priced per task by ``task_costs`` — always an absolute
    amount, see :mod:`mtal.acquisition.costs`).
    ``cycles`` counts fits: cycle 0 trains on the initial set, and every cycle but the
    last ends with an acquisition. A budget the pool cannot pay for over all cycles is
    an error before anything runs, unless ``clamp_budget`` (then the last acquisitions
    buy what is left). ``description`` is a free-text note stored (redacted) in
    config.yaml and sent to W&B as the run's notes. ``oracle``: "simulated" (the
    dataset's own labels) or "human" (the loop writes a labelling request and stops; see
    :mod:`mtal.labelling`).
    """

    experiment: str = "synthetic"
    strategy: str = "mtal"
    #: run-folder name (default: the strategy); e.g. "full" for the fully-trained reference
    name: str | None = None
    strategy_kwargs: dict[str, Any] = field(default_factory=dict)
    cycles: int = 4
    budget: float = 0.1
    budget_unit: Literal["images", "labels", "cost"] = "images"
    #: price of one label per task, e.g. {semseg: 10, depth: 0.5}; read when budget_unit=cost
    #: (and by the report's cost axis)
    task_costs: dict[str, float] = field(default_factory=dict)
    #: pair strategies under a cost budget: "ratio" (score per cost) or "score" (cost-blind)
    cost_ranking: Literal["ratio", "score"] = "ratio"
    #: where labels come from: "simulated" (dataset labels) or "human" (request, stop, import)
    oracle: str = "simulated"
    clamp_budget: bool = False
    seed: int = 0
    runs_dir: str = "runs"
    continuous: bool = True
    monitor: str = "val/mtl_loss"
    monitor_mode: Literal["min", "max"] = "min"
    logger: Literal["wandb", "csv", "none"] = "wandb"
    wandb_project: str = "mtal"
    description: str = ""
    #: show Lightning's per-trainer banners (GPU available, tips); off keeps cycle logs readable
    verbose: bool = False
    #: stop after this many cycles in this process (testing crash/resume); None = all
    stop_after: int | None = None
    #: resume although settings differ from the run's identity (recorded in config_history.yaml)
    allow_config_change: bool = False
    #: read every file of the splits before cycle 0 when they hold at most this many images
    check_data_up_to: int = 2000
    #: record ``diag/*`` (Spearman of each score vs the true task loss, mtal.diagnostics)
    #: after every selection; simulation only (reads the scored images' true labels)
    diagnostics: bool = True
    #: score-vs-loss correlations on a seeded subsample of at most this many images
    diagnostics_max_images: int | None = None
    #: train every cycle to a plateau of ``monitor`` (see :mod:`mtal.loop.stopping`)
    early_stopping: EarlyStopSettings = field(default_factory=EarlyStopSettings)
    #: where scoring keeps the per-image summary rows: "memory", or "disk" (memory-mapped
    #: unnamed files in ``summary_dir``, default the run folder): same picks, and a pool's
    #: summaries need not fit in memory (issue 16.6)
    summary_store: Literal["memory", "disk"] = "memory"
    #: folder of the "disk" store's files (an existing folder on a disk, not a tmpfs)
    summary_dir: str | None = None


def validate_settings(settings: LoopSettings) -> None:
    """Raise a ValueError naming the ``loop.*`` field of any setting that cannot work."""
    from mtal.tracking import LOGGER_KINDS

    checks: list[tuple[bool, str]] = [
        (settings.cycles >= 1, f"loop.cycles={settings.cycles}: run at least 1 cycle"),
        (
            settings.budget > 0,
            f"loop.budget={settings.budget}: use a fraction in (0, 1) or a positive count",
        ),
        (
            settings.budget_unit in BUDGET_UNITS,
            f"loop.budget_unit={settings.budget_unit!r}: choose one of {list(BUDGET_UNITS)}",
        ),
        (
            all(_positive(v) for v in dict(settings.task_costs).values()),
            f"loop.task_costs={dict(settings.task_costs)}: every price must be a positive number",
        ),
        (
            settings.budget_unit != "cost" or bool(settings.task_costs),
            "loop.budget_unit='cost' needs loop.task_costs, e.g. {semseg: 10, depth: 0.5}",
        ),
        (
            settings.cost_ranking in ("ratio", "score"),
            f"loop.cost_ranking={settings.cost_ranking!r}: choose 'ratio' or 'score'",
        ),
        (
            settings.monitor_mode in ("min", "max"),
            f"loop.monitor_mode={settings.monitor_mode!r}: choose 'min' or 'max'",
        ),
        (
            settings.logger in LOGGER_KINDS,
            f"loop.logger={settings.logger!r}: choose one of {list(LOGGER_KINDS)}",
        ),
        (
            settings.stop_after is None or settings.stop_after >= 1,
            f"loop.stop_after={settings.stop_after}: use null or a count >= 1",
        ),
        (
            settings.diagnostics_max_images is None or settings.diagnostics_max_images >= 3,
            f"loop.diagnostics_max_images={settings.diagnostics_max_images}: use null or >= 3",
        ),
        (
            bool(settings.experiment) and "/" not in settings.experiment,
            f"loop.experiment={settings.experiment!r}: use a non-empty name without '/'",
        ),
        (
            settings.summary_store in SUMMARY_STORES,
            f"loop.summary_store={settings.summary_store!r}: choose one of {list(SUMMARY_STORES)}",
        ),
        (
            settings.summary_dir is None or settings.summary_store == "disk",
            f"loop.summary_dir={settings.summary_dir!r} is only read with loop.summary_store: "
            "disk; set that too, or drop loop.summary_dir",
        ),
        (
            settings.summary_dir is None or Path(settings.summary_dir).is_dir(),
            f"loop.summary_dir={settings.summary_dir!r} is not an existing folder; create it "
            "(on a disk, not a RAM-backed tmpfs) or leave it unset to use the run folder",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
    validate_early_stopping(as_settings(settings.early_stopping))
    from mtal.loop.oracle import ORACLES

    if settings.oracle not in ORACLES:
        raise ValueError(f"loop.oracle={settings.oracle!r}: choose one of {ORACLES.names()}")


def _positive(value: Any) -> bool:
    try:
        return math.isfinite(float(value)) and float(value) > 0
    except (TypeError, ValueError):
        return False


def derive_seed(*parts: int | str) -> int:
    """A 31-bit seed derived from several parts (stable across runs and platforms)."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def run_dir_for(settings: LoopSettings) -> Path:
    """``runs/<experiment>/<strategy>/seed<k>/``."""
    label = settings.name or settings.strategy
    sweep_run = os.environ.get("WANDB_RUN_ID") if os.environ.get("WANDB_SWEEP_ID") else None
    if sweep_run:  # every sweep trial gets its own folder (never resumes another trial)
        label = f"{label}-{sweep_run}"
    return Path(settings.runs_dir) / settings.experiment / label / f"seed{settings.seed}"


def budget_in_labels(settings: LoopSettings, num_images: int, num_tasks: int) -> int:
    """The per-cycle budget as a number of labels (image/task pairs); for a cost budget
    the most labels it can buy (``floor(budget / cheapest price)``; the cost itself is
    enforced through :func:`cost_budget`)."""
    if settings.budget_unit == "cost":
        from fractions import Fraction

        cheapest = min(Fraction(float(v)) for v in settings.task_costs.values())
        return int(Fraction(float(settings.budget)) // cheapest)
    amount = settings.budget * num_images if settings.budget < 1 else settings.budget
    amount = int(round(amount))
    if amount <= 0:
        raise ValueError(
            f"loop.budget={settings.budget} buys nothing for a pool of {num_images} images; "
            "use a fraction in (0, 1) or a positive count"
        )
    return amount * num_tasks if settings.budget_unit == "images" else amount


def cost_budget(settings: LoopSettings, tasks: Any) -> CostBudget | None:
    """The per-acquisition :class:`~mtal.acquisition.costs.CostBudget` of a
    ``budget_unit: cost`` run (prices ordered like ``tasks``), else None."""
    if settings.budget_unit != "cost":
        return None
    from mtal.acquisition.costs import CostBudget

    return CostBudget.from_mapping(
        settings.budget, settings.task_costs, list(tasks), settings.cost_ranking
    )


def check_budget(
    strategy: Any,
    pool: LabelPool,
    budget: int,
    acquisitions: int,
    clamp: bool,
    cost: CostBudget | None = None,
) -> None:
    """Raise when ``acquisitions`` selections of ``budget`` labels (or of ``cost``) each
    cannot be paid from what ``pool`` has left (unless ``clamp``), before any of them runs."""
    if acquisitions <= 0:
        return
    if cost is not None:
        _check_cost_budget(strategy, pool, cost, acquisitions, clamp)
        return
    k = pool.num_tasks
    if getattr(strategy, "granularity", "image") == "image":
        per, left, unit = budget // k, len(pool.unlabelled_images()), "fully unlabelled images"
        if per == 0:
            raise ValueError(
                f"a budget of {budget} labels buys no whole image of {k} labels for the "
                f"image strategy {getattr(strategy, 'name', strategy)!r}; raise loop.budget"
            )
    else:
        per, left, unit = budget, len(pool.unlabelled_pairs()), "unlabelled image/task pairs"
    if per * acquisitions > left and not clamp:
        raise ValueError(
            f"the budget is larger than what is left: {acquisitions} acquisition(s) of {per} "
            f"{unit} need {per * acquisitions}, but the pool of {pool.num_images} images has "
            f"only {left} left; lower loop.budget or loop.cycles, or set "
            f"loop.clamp_budget=true to buy what is left"
        )


def _check_cost_budget(
    strategy: Any, pool: LabelPool, cost: CostBudget, acquisitions: int, clamp: bool
) -> None:
    """:func:`check_budget` for a budget in cost units."""
    name = getattr(strategy, "name", strategy)
    if getattr(strategy, "granularity", "image") == "image":
        per = cost.images()
        if per == 0:
            raise ValueError(
                f"a cost budget of {cost.amount} buys no whole image (one costs "
                f"{float(cost.image_cost())}, the sum of loop.task_costs) for the image "
                f"strategy {name!r}; raise loop.budget"
            )
        left = len(pool.unlabelled_images())
        if per * acquisitions > left and not clamp:
            raise ValueError(
                f"the budget is larger than what is left: {acquisitions} acquisition(s) of "
                f"{per} images ({cost.amount} cost units each) need {per * acquisitions}, but "
                f"only {left} fully unlabelled images are left; lower loop.budget or "
                f"loop.cycles, or set loop.clamp_budget=true to buy what is left"
            )
        return
    worth = cost.spent(pool.unlabelled_pairs())
    if cost.amount * acquisitions > worth and not clamp:
        raise ValueError(
            f"the budget is larger than what is left: {acquisitions} acquisition(s) of "
            f"{cost.amount} cost units need {cost.amount * acquisitions}, but the unlabelled "
            f"pairs are worth only {worth}; lower loop.budget or loop.cycles, or set "
            f"loop.clamp_budget=true to buy what is left"
        )
