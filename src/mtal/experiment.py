"""Declarative experiment grids: ``mtal experiment experiments/<name>.yaml``.

A grid file names a base config and the axes to sweep::

    name: wacv24-nyud              # runs/<name>/...
    config: configs/nyud/padnet.yaml
    strategies:                    # a name, or {name: overrides of that strategy only}
      - mtal
      - random
      - ll4al: {model.loss_prediction: true}
    seeds: [0, 1, 2]
    variants:                      # optional; each adds its own overrides (table rows),
      dwa: {model.weighting: dwa}  # run folder runs/<name>/<strategy>-<variant>/
    overrides: {trainer.max_epochs: 20}
    reference: {data.initial: 1.0} # optional fully-trained reference run ("full")
    reference_seeds: [0]           # optional: the seeds of the reference (default: seeds)
    exclude: [mtal-dwa]            # optional: cells (<strategy>-<variant>) not to run
    baselines: [random-dwa]        # optional: the report also pairs against these cells
    smoke:                         # applied on top with --smoke / SMOKE=1
      config: configs/synthetic/smoke.yaml
      seeds: [0]
      overrides: {loop.cycles: 2}

Every run is ``mtal loop`` with ``--loop.experiment <name>``, ``--loop.strategy``,
``--loop.seed`` (and ``--loop.name <strategy>-<variant>`` for variants, so one report
compares them all); finished runs (their last cycle is in
``metrics.csv``) are skipped, so rerunning a grid resumes it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

GRID_KEYS = {
    "name",
    "config",
    "strategies",
    "seeds",
    "variants",
    "overrides",
    "smoke",
    "description",
    "reference",
    "reference_seeds",
    "exclude",
    "baselines",
}
SMOKE_KEYS = {
    "config",
    "strategies",
    "seeds",
    "variants",
    "overrides",
    "reference",
    "reference_seeds",
    "exclude",
    "baselines",
}


class GridError(ValueError):
    """A grid file is malformed; the message names the file and the field."""


@dataclass
class Run:
    """One cell of a grid: the exact ``mtal loop`` arguments and its run folder."""

    experiment: str
    strategy: str
    seed: int
    args: list[str]
    runs_dir: str = "runs"
    cycles: int | None = None

    @property
    def folder(self) -> Path:
        return Path(self.runs_dir) / self.experiment / self.strategy / f"seed{self.seed}"

    def finished(self) -> bool:
        """True when ``metrics.csv`` holds the last cycle's row."""
        table = self.folder / "metrics.csv"
        if not table.exists() or self.cycles is None:
            return False
        import csv

        with table.open(newline="") as handle:
            cycles = [int(r["cycle"]) for r in csv.DictReader(handle)]
        return bool(cycles) and max(cycles) >= self.cycles - 1


@dataclass
class Grid:
    name: str
    config: str
    strategies: list[str]
    seeds: list[int]
    #: overrides that apply to one strategy only (e.g. LL4AL's loss-prediction module)
    strategy_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    #: overrides of the fully-trained reference run (None: no reference)
    reference: dict[str, Any] | None = None
    #: seeds of the reference run (None: the grid's seeds)
    reference_seeds: list[int] | None = None
    #: cell labels (``<strategy>-<variant>``) left out of the grid
    exclude: list[str] = field(default_factory=list)
    #: cells the report pairs every strategy against, besides ``random``
    baselines: list[str] = field(default_factory=list)

    def labels(self) -> list[str]:
        """Every cell label the strategies × variants would produce (before ``exclude``)."""
        variants = list(self.variants) or [""]
        return [f"{s}-{v}" if v else s for v in variants for s in self.strategies]


def load_grid(path: str | Path, *, smoke: bool = False) -> Grid:
    """Read and validate a grid file; ``smoke`` applies its ``smoke:`` section."""
    path = Path(path)
    if not path.exists():
        raise GridError(f"grid file {path} does not exist; grids live in experiments/*.yaml")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise GridError(f"{path}: expected a mapping at the top level")
    unknown = set(raw) - GRID_KEYS
    if unknown:
        raise GridError(
            f"{path}: unknown key(s) {sorted(unknown)}; known keys: {sorted(GRID_KEYS)}"
        )
    for key in ("name", "config", "strategies", "seeds"):
        if key not in raw:
            raise GridError(f"{path}: missing required key {key!r}")
    smoke_section = raw.get("smoke") or {}
    bad = set(smoke_section) - SMOKE_KEYS
    if bad:
        raise GridError(
            f"{path}: unknown key(s) {sorted(bad)} in smoke; known: {sorted(SMOKE_KEYS)}"
        )
    data = dict(raw)
    if smoke:
        for key in (
            "config",
            "strategies",
            "seeds",
            "variants",
            "reference",
            "reference_seeds",
            "exclude",
            "baselines",
        ):
            if key in smoke_section:
                data[key] = smoke_section[key]
        data["overrides"] = {
            **(raw.get("overrides") or {}),
            **(smoke_section.get("overrides") or {}),
        }
    strategies, per_strategy = _parse_strategies(path, data["strategies"])
    grid = Grid(
        name=str(data["name"]),
        config=str(data["config"]),
        strategies=strategies,
        strategy_overrides=per_strategy,
        seeds=[int(s) for s in data["seeds"]],
        variants={str(k): dict(v or {}) for k, v in (data.get("variants") or {}).items()},
        overrides=dict(data.get("overrides") or {}),
        description=str(data.get("description", "")),
        reference=None if data.get("reference") in (None, False) else dict(data["reference"] or {}),
        reference_seeds=(
            None
            if data.get("reference_seeds") is None
            else [int(x) for x in data["reference_seeds"]]
        ),
        exclude=[str(x) for x in (data.get("exclude") or [])],
        baselines=[str(x) for x in (data.get("baselines") or [])],
    )
    if not grid.strategies or not grid.seeds:
        raise GridError(f"{path}: strategies and seeds must be non-empty lists")
    unknown_cells = sorted(set(grid.exclude) - set(grid.labels()))
    if unknown_cells:
        raise GridError(
            f"{path}: exclude names cell(s) {unknown_cells} that the grid does not have; "
            f"its cells are {grid.labels()}"
        )
    cells = set(grid.labels()) - set(grid.exclude)
    unknown_baselines = sorted(set(grid.baselines) - cells)
    if unknown_baselines:
        raise GridError(
            f"{path}: baselines names cell(s) {unknown_baselines} that the grid does not run; "
            f"its cells are {sorted(cells)}"
        )
    return grid


def _parse_strategies(path: Path, entries: Any) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """``[name | {name: overrides}]`` → (names, per-strategy overrides)."""
    if not isinstance(entries, list):
        raise GridError(f"{path}: strategies must be a list of names or {{name: overrides}}")
    names: list[str] = []
    overrides: dict[str, dict[str, Any]] = {}
    for entry in entries:
        if isinstance(entry, str):
            names.append(entry)
        elif isinstance(entry, dict) and len(entry) == 1:
            ((name, extra),) = entry.items()
            if not isinstance(extra, dict):
                raise GridError(f"{path}: overrides of strategy {name!r} must be a mapping")
            names.append(str(name))
            overrides[str(name)] = dict(extra)
        else:
            raise GridError(
                f"{path}: strategy entry {entry!r} is neither a name nor {{name: overrides}}"
            )
    if len(set(names)) != len(names):
        raise GridError(f"{path}: a strategy is listed twice in {names}")
    return names, overrides


def _flag(key: str, value: Any) -> list[str]:
    text = value if isinstance(value, str) else json.dumps(value)
    return [f"--{key}", text]


def expand(grid: Grid, *, runs_dir: str = "runs") -> list[Run]:
    """All runs of a grid in a stable order: variant × strategy × seed."""
    from mtal.loop import LoopSettings

    runs: list[Run] = []
    variants = grid.variants or {"": {}}
    for variant, extra in variants.items():
        overrides = {**grid.overrides, **extra}
        default_cycles = _config_value(grid.config, "loop.cycles", LoopSettings().cycles)
        cells: list[tuple[str, str, dict[str, Any], list[int]]] = []
        if grid.reference is not None and variant == next(iter(variants)):
            # one fully-trained reference per grid, on the base overrides
            full = {**grid.overrides, **grid.reference, "loop.cycles": 1}
            cells.append(("full", "random", full, grid.reference_seeds or grid.seeds))
        for strategy in grid.strategies:
            label = f"{strategy}-{variant}" if variant else strategy
            if label in grid.exclude:
                continue
            cell = {**overrides, **grid.strategy_overrides.get(strategy, {})}
            cells.append((label, strategy, cell, grid.seeds))
        for label, strategy, cell, seeds in cells:
            cycles = int(cell.get("loop.cycles", default_cycles))
            for seed in seeds:
                args = ["loop", "--config", grid.config]
                for key, value in cell.items():
                    args += _flag(key, value)
                args += _flag("loop.experiment", grid.name)
                args += _flag("loop.strategy", strategy)
                args += _flag("loop.name", label)
                args += _flag("loop.seed", seed)
                args += _flag("loop.runs_dir", runs_dir)
                args += _flag("seed_everything", seed)
                args += _flag("data.pool_seed", seed)
                runs.append(Run(grid.name, label, seed, args, runs_dir, cycles))
    return runs


def _config_value(config: str, dotted: str, default: Any) -> Any:
    node: Any = yaml.safe_load(Path(config).read_text()) if Path(config).exists() else {}
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def run_grid(
    grid: Grid, *, runs_dir: str = "runs", subprocesses: bool = False, dry_run: bool = False
) -> list[Run]:
    """Run every unfinished cell of ``grid``; returns the runs that were executed."""
    from mtal.cli import run_cli
    from mtal.progress import Clock

    executed = []
    runs = expand(grid, runs_dir=runs_dir)
    clock = Clock(sum(not r.finished() for r in runs))
    for number, run in enumerate(runs, 1):
        label = f"[{number}/{len(runs)}] {run.experiment} {run.strategy} seed{run.seed}"
        if run.finished():
            print(f"{label}: finished, skipped", flush=True)
            continue
        print(f"{label}: mtal {' '.join(run.args)}", flush=True)
        if dry_run:
            executed.append(run)
            continue
        if subprocesses:
            done = subprocess.run(
                [sys.executable, "-m", "mtal.cli", *run.args], env=os.environ.copy()
            )
            if done.returncode != 0:  # the grid stops with the run's own exit code
                code = done.returncode if done.returncode > 0 else 128 - done.returncode
                print(f"{label}: exited with {code}; rerun the same command to resume", flush=True)
                raise SystemExit(code)
        else:
            run_cli(run.args)
        executed.append(run)
        print(f"{label}: done (runs {clock.lap()})", flush=True)
    return executed


def run_parallel(grid: Grid, runs_dir: str, jobs: int) -> list[Run]:
    """Run the unfinished cells of ``grid`` in ``jobs`` single-threaded ``mtal loop``
    processes at once (one core each); each run's output goes to
    ``<runs_dir>/<experiment>/logs/<strategy>-seed<k>.log``. ``jobs=1`` runs in-process."""
    if jobs <= 1:
        return run_grid(grid, runs_dir=runs_dir)
    from concurrent.futures import ThreadPoolExecutor

    todo = [r for r in expand(grid, runs_dir=runs_dir) if not r.finished()]
    logs = Path(runs_dir) / grid.name / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    def one(run: Run) -> Run:
        log = logs / f"{run.strategy}-seed{run.seed}.log"
        print(f"[mtal] start {run.strategy} seed{run.seed} (log: {log})", flush=True)
        with log.open("w") as handle:
            done = subprocess.run(
                [sys.executable, "-m", "mtal.cli", *run.args],
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        if done.returncode != 0:
            raise RuntimeError(
                f"{run.strategy} seed{run.seed} failed (exit {done.returncode}); see {log}; "
                "rerun the same command to resume"
            )
        print(f"[mtal] done  {run.strategy} seed{run.seed}", flush=True)
        return run

    with ThreadPoolExecutor(max_workers=jobs) as workers:
        return list(workers.map(one, todo))


def main(argv: Sequence[str] | None = None) -> int:
    """``mtal experiment GRID.yaml [--smoke] [--runs-dir runs] [--subprocess] [--dry-run]
    [--jobs N]``."""
    parser = argparse.ArgumentParser(prog="mtal experiment", description=__doc__.splitlines()[0])
    parser.add_argument("grid", help="experiments/<name>.yaml")
    parser.add_argument(
        "--smoke",
        action="store_true",
        default=os.environ.get("SMOKE") == "1",
        help="apply the grid's smoke section (tiny data, minutes on CPU)",
    )
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--subprocess", action="store_true", help="one process per run")
    parser.add_argument("--dry-run", action="store_true", help="print the runs only")
    parser.add_argument("--report", action="store_true", help="write the report afterwards")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs at once, each a single-threaded subprocess with its own log (default 1)",
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    grid = load_grid(args.grid, smoke=args.smoke)
    if args.jobs > 1 and not args.dry_run:
        run_parallel(grid, args.runs_dir, args.jobs)
    else:
        run_grid(grid, runs_dir=args.runs_dir, subprocesses=args.subprocess, dry_run=args.dry_run)
    if args.report and not args.dry_run:
        from mtal.report import main as report_main

        extra = [flag for b in grid.baselines for flag in ("--baseline", b)]
        report_main([str(Path(args.runs_dir) / grid.name), *extra])
    return 0
