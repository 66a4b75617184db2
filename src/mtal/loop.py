"""The active-learning cycle driver and its Lightning callback.

One cycle = fit (continuous training from the previous cycle's best weights, fresh
optimiser) → validate → log → select → label (the dataset's own annotations are the
oracle) → write the pool state and a ``metrics.csv`` row atomically.

Crash safety comes from the order of atomic writes (``mtal.io``) in the run folder
``runs/<experiment>/<strategy>/seed<k>/``:

- ``state.json`` (checksummed) — seeds, the step offset per cycle and, per cycle ``c``,
  the strategy's persistent state *as selection ``c`` must see it*
  (``strategy_state_at[c]``). It is written before the pool file of the cycle it
  describes, so a rerun always finds the state that belongs to the newest pool.
- ``init_weights.pt`` — the network's initial weights (written before the first pool).
- ``selections/cycle_<c>.csv`` — the labelling request of the labels bought for cycle
  ``c`` (written before the pool file; a rerun rewrites it identically).
- ``pool/cycle_<c>.json`` (checksummed) — the pool that cycle ``c`` trains on; its
  existence is the proof that those labels were requested, so a rerun never re-selects
  (no label bought twice) and never forgets one (no label lost).
- ``cycle_<c>/weights.pt`` — the best weights of cycle ``c`` (plain state dict, loaded
  with ``weights_only=True``), then its ``metrics.csv`` row (rewritten atomically).

A rerun of the same command validates everything it will read *before* writing
anything, finds the newest pool file and redoes only what is missing. Every fit and
every selection is seeded from ``(loop.seed, cycle)`` alone, so an interrupted run ends
with the same pool as an uninterrupted one on CPU. A damaged, foreign or missing state
file stops the loop with an error naming it; it never restarts silently from scratch.

Test hook: ``MTAL_CRASH_AT=<point>:<n>[,<point>:<n>...]`` makes the process SIGKILL
itself the ``n``-th time it reaches ``point`` (one of :data:`CRASH_POINTS`), so tests can
crash at exact places (e.g. between a state write and a pool write).
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything

from mtal.io import StateFileError, atomic_write_bytes, read_checked_json, write_checked_json
from mtal.tracking import OffsetLogger, close_logger, create_logger, redact

if TYPE_CHECKING:
    from mtal.acquisition.base import Selection
    from mtal.data.datamodule import ActiveDataModule
    from mtal.data.pool import LabelPool

STATE_SCHEMA = "mtal.loopstate"
#: 2: the strategy state is kept per cycle (``strategy_state_at``)
STATE_VERSION = 2

#: where ``MTAL_CRASH_AT`` may kill the process (in the order a cycle reaches them;
#: ``before_state_write`` fires at every state.json write)
CRASH_POINTS = (
    "after_fit",
    "before_select",
    "after_select",
    "before_state_write",
    "before_pool_write",
    "after_pool_write",
)
CRASH_ENV = "MTAL_CRASH_AT"
_crash_counts: dict[str, int] = {}


def parse_crash_spec(text: str) -> dict[str, int]:
    """``"after_fit:2,before_pool_write:1"`` → ``{"after_fit": 2, "before_pool_write": 1}``."""
    wanted: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, count = part.partition(":")
        if name not in CRASH_POINTS or not count.isdigit() or int(count) < 1:
            raise ValueError(
                f"{CRASH_ENV}={text!r}: {part!r} is not <point>:<n> with n >= 1 and point one "
                f"of {list(CRASH_POINTS)}"
            )
        wanted[name] = int(count)
    return wanted


def crash_point(name: str) -> None:
    """Test hook: SIGKILL this process the n-th time it reaches ``name`` when
    ``MTAL_CRASH_AT`` asks for it (a no-op when the variable is unset)."""
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    wanted = parse_crash_spec(spec)
    if name not in wanted:
        return
    _crash_counts[name] = _crash_counts.get(name, 0) + 1
    if _crash_counts[name] == wanted[name]:
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class LoopSettings:
    """What an active-learning experiment does between fits.

    ``budget`` is per acquisition: a fraction of the training pool's images when < 1,
    else a count, in ``budget_unit`` ("images": B images × K labels, which pair
    strategies receive as the same number of labels; "labels": image/task pairs).
    ``cycles`` counts fits: cycle 0 trains on the initial set, and every cycle but the
    last ends with an acquisition. A budget the pool cannot pay for over all cycles is
    an error before anything runs, unless ``clamp_budget`` (then the last acquisitions
    buy what is left). ``description`` is a free-text note stored (redacted) in
    config.yaml and sent to W&B as the run's notes.
    """

    experiment: str = "synthetic"
    strategy: str = "mtal"
    #: run-folder name (default: the strategy); e.g. "full" for the fully-trained reference
    name: str | None = None
    strategy_kwargs: dict[str, Any] = field(default_factory=dict)
    cycles: int = 4
    budget: float = 0.1
    budget_unit: Literal["images", "labels"] = "images"
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
            settings.budget_unit in ("images", "labels"),
            f"loop.budget_unit={settings.budget_unit!r}: choose 'images' or 'labels'",
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
            bool(settings.experiment) and "/" not in settings.experiment,
            f"loop.experiment={settings.experiment!r}: use a non-empty name without '/'",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


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
    """The per-cycle budget as a number of labels (image/task pairs)."""
    amount = settings.budget * num_images if settings.budget < 1 else settings.budget
    amount = int(round(amount))
    if amount <= 0:
        raise ValueError(
            f"loop.budget={settings.budget} buys nothing for a pool of {num_images} images; "
            "use a fraction in (0, 1) or a positive count"
        )
    return amount * num_tasks if settings.budget_unit == "images" else amount


def check_budget(
    strategy: Any,
    pool: LabelPool,
    budget: int,
    acquisitions: int,
    clamp: bool,
) -> None:
    """Raise when ``acquisitions`` selections of ``budget`` labels each cannot be paid
    from what ``pool`` has left (unless ``clamp``), before any of them runs."""
    if acquisitions <= 0:
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


class ActiveLoop(Callback):
    """Lightning callback of one cycle's fit: logs the ``al/*`` pool figures and keeps
    the best weights (by ``monitor``) in memory so the next cycle continues from them."""

    def __init__(
        self,
        cycle: int,
        pool_stats: Mapping[str, float],
        monitor: str = "val/mtl_loss",
        mode: str = "min",
    ) -> None:
        self.cycle = cycle
        self.pool_stats = dict(pool_stats)
        self.monitor = monitor
        self.mode = mode
        self.best_score: float | None = None
        self.best_state: dict[str, torch.Tensor] | None = None

    def _log_pool(self, trainer: Trainer) -> None:
        if trainer.logger is not None:
            stats = {"al/cycle": float(self.cycle)}
            stats.update({f"al/{k}": float(v) for k, v in self.pool_stats.items()})
            trainer.logger.log_metrics(stats, step=trainer.global_step)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._log_pool(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        score = float(value)
        better = (
            self.best_score is None
            or (self.mode == "min" and score < self.best_score)
            or (self.mode == "max" and score > self.best_score)
        )
        if better and np.isfinite(score):
            self.best_score = score
            self.best_state = _cpu_state(pl_module)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.best_state is None:  # no validation ran: the last weights are the best we know
            self.best_state = _cpu_state(pl_module)


def _cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def save_weights(state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Write a plain tensor state dict atomically (loadable with ``weights_only=True``)."""
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Load a state dict written by :func:`save_weights` (``weights_only=True``)."""
    if not path.exists():
        raise FileNotFoundError(f"weights file {path} is missing; delete the run folder to restart")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files
        raise ValueError(f"{path} is not a readable weights file ({exc})") from exc
    if isinstance(state, dict) and "state_dict" in state:  # a Lightning checkpoint
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    return state


class MetricsTable:
    """``metrics.csv``: one row per cycle, rewritten atomically, keyed by cycle."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def rows(self) -> list[dict[str, str]]:
        """The rows so far; a file that is not a metrics table raises naming it."""
        if not self.path.exists():
            return []
        try:
            with self.path.open(newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
            for r in rows:
                int(r["cycle"])
        except (csv.Error, KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
            raise StateFileError(
                f"{self.path} is not an mtal metrics table (a 'cycle' column of integers): "
                f"{exc!r}; restore it or delete the run folder to restart deliberately"
            ) from exc
        return rows

    def row(self, cycle: int) -> dict[str, str] | None:
        """The row of ``cycle``, or None."""
        return next((r for r in self.rows() if int(r["cycle"]) == cycle), None)

    def put(self, row: Mapping[str, Any]) -> None:
        """Insert or replace the row of ``row["cycle"]`` (atomic rewrite)."""
        rows = [r for r in self.rows() if int(r["cycle"]) != int(row["cycle"])]
        rows.append({k: _fmt(v) for k, v in row.items()})
        rows.sort(key=lambda r: int(r["cycle"]))
        columns: list[str] = []
        for r in rows:
            columns.extend(k for k in r if k not in columns)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_bytes(self.path, buffer.getvalue().encode())


def _fmt(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, float):
        return repr(value)
    return str(value)


def write_selection_csv(
    path: Path,
    selection: Selection,
    pool: LabelPool,
    dataset: Any,
    cycle: int,
) -> None:
    """The labelling team's request: one row per image with the tasks to label and the
    per-task scores (written atomically)."""
    tasks = list(pool.tasks)
    buffer = io.StringIO()
    columns = ["cycle", "image_index", "image_id", "image_path", "tasks"]
    columns += [f"score_{t}" for t in tasks] + [f"weight_{t}" for t in tasks]
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    requested: dict[int, list[str]] = {}
    for image, column in np.asarray(selection.pairs).reshape(-1, 2).tolist():
        requested.setdefault(int(image), []).append(tasks[int(column)])
    images = [int(i) for i in np.asarray(selection.images).tolist()]
    for row_index, image in enumerate(images):
        path_of = dataset.image_path(image) if hasattr(dataset, "image_path") else None
        row: dict[str, Any] = {
            "cycle": cycle,
            "image_index": image,
            "image_id": pool.image_ids[image],
            "image_path": "" if path_of is None else str(path_of),
            "tasks": ";".join(t for t in tasks if t in requested.get(image, [])),
        }
        for k, task in enumerate(tasks):
            score = (
                float(selection.scores[row_index, k])
                if selection.scores is not None
                else float("nan")
            )
            row[f"score_{task}"] = "" if not np.isfinite(score) else repr(score)
            weight = selection.weights[row_index, k] if selection.weights is not None else None
            row[f"weight_{task}"] = "" if weight is None else repr(float(weight))
        writer.writerow(row)
    atomic_write_bytes(path, buffer.getvalue().encode())


def apply_selection(pool: LabelPool, selection: Selection, cycle: int) -> None:
    """Buy the selected labels from the oracle (the dataset's own annotations)."""
    pairs = np.asarray(selection.pairs, dtype=np.int64).reshape(-1, 2)
    weights = scores = None
    row_of = {int(img): r for r, img in enumerate(np.asarray(selection.images).tolist())}
    rows = np.array([row_of[int(i)] for i in pairs[:, 0]], dtype=np.int64)
    if selection.weights is not None:
        weights = np.asarray(selection.weights, dtype=np.float32)[rows, pairs[:, 1]]
    if selection.scores is not None:
        scores = np.asarray(selection.scores, dtype=np.float32)[rows, pairs[:, 1]]
    pool.label_pairs(pairs, cycle, weights=weights, scores=scores)


@dataclass
class CycleResult:
    """What one cycle of :class:`ActiveLearningLoop` produced."""

    cycle: int
    metrics: dict[str, float]
    selected: int


class ActiveLearningLoop:
    """Runs (or resumes) an active-learning experiment in its run folder.

    ``make_trainer(callbacks, logger)`` builds a fresh Trainer per cycle (the CLI passes
    one that applies the user's trainer config). The module's weights are reset to
    their initial values (or continue from the previous best) at every cycle. Settings
    and the strategy are validated here, so a bad one fails before the run folder exists.
    """

    def __init__(
        self,
        module: LightningModule,
        datamodule: ActiveDataModule,
        settings: LoopSettings,
        make_trainer: Callable[..., Trainer],
        config: Mapping[str, Any] | None = None,
        progress: Callable[[str], None] | None = print,
    ) -> None:
        from mtal.acquisition import create_strategy

        validate_settings(settings)
        self.module = module
        self.datamodule = datamodule
        self.settings = settings
        self.make_trainer = make_trainer
        self.config = dict(config or {})
        self.progress = progress or (lambda _msg: None)
        self.run_dir = run_dir_for(settings)
        self.metrics = MetricsTable(self.run_dir / "metrics.csv")
        try:
            self.strategy = create_strategy(
                settings.strategy, clamp_budget=settings.clamp_budget, **settings.strategy_kwargs
            )
        except TypeError as exc:
            raise ValueError(
                f"loop.strategy_kwargs={settings.strategy_kwargs} do not fit strategy "
                f"{settings.strategy!r}: {exc}"
            ) from exc
        net = getattr(module, "net", None)
        if net is not None:
            self.strategy.check_model(net)

    # -- run folder -------------------------------------------------------------------
    def pool_path(self, cycle: int) -> Path:
        """``pool/cycle_<c>.json``: the pool cycle ``c`` trains on."""
        return self.run_dir / "pool" / f"cycle_{cycle:03d}.json"

    def weights_path(self, cycle: int) -> Path:
        """``cycle_<c>/weights.pt``: the best weights of cycle ``c``."""
        return self.run_dir / f"cycle_{cycle:03d}" / "weights.pt"

    def selection_path(self, cycle: int) -> Path:
        """``selections/cycle_<c>.csv``: the request of the labels bought for cycle ``c``."""
        return self.run_dir / "selections" / f"cycle_{cycle:03d}.csv"

    @property
    def state_path(self) -> Path:
        """``state.json``: seeds, step offsets and the per-cycle strategy state."""
        return self.run_dir / "state.json"

    @property
    def init_path(self) -> Path:
        """``init_weights.pt``: the network's weights before cycle 0."""
        return self.run_dir / "init_weights.pt"

    def _latest_pool_cycle(self) -> int | None:
        found = sorted(self.run_dir.glob("pool/cycle_*.json"))
        return int(found[-1].stem.split("_")[1]) if found else None

    def _read_state(self) -> dict[str, Any] | None:
        if not self.state_path.exists():
            return None
        state = read_checked_json(self.state_path, STATE_SCHEMA, STATE_VERSION)
        if not isinstance(state, dict) or not isinstance(state.get("strategy_state_at"), dict):
            raise StateFileError(
                f"state file {self.state_path} lacks 'strategy_state_at'; restore it or "
                "delete the run folder to restart deliberately"
            )
        return state

    def _write_state(self, state: Mapping[str, Any]) -> None:
        crash_point("before_state_write")
        write_checked_json(self.state_path, dict(state), STATE_SCHEMA, STATE_VERSION)

    def _write_config(self) -> None:
        import yaml

        payload = redact(
            {"loop": asdict(self.settings), **{k: v for k, v in self.config.items() if k != "loop"}}
        )
        text = yaml.safe_dump(json.loads(json.dumps(payload, default=str)), sort_keys=False)
        atomic_write_bytes(self.run_dir / "config.yaml", text.encode())

    # -- the loop ------------------------------------------------------------------------
    def _prepare(self) -> tuple[LabelPool, int, dict[str, Any], dict[str, torch.Tensor], bool]:
        """Read and validate everything the run needs, writing nothing: the pool to
        start from, its cycle, the loop state, the initial weights, and whether the run
        is new."""
        from mtal.data.pool import LabelPool

        s, dm = self.settings, self.datamodule
        state = self._read_state()
        latest = self._latest_pool_cycle()
        fresh = latest is None
        if latest is None:
            if self.metrics.path.exists() or self.weights_path(0).exists():
                raise StateFileError(
                    f"{self.run_dir} holds results (metrics.csv or cycle weights) but no "
                    f"pool/cycle_*.json; refusing to start from scratch over them; restore "
                    f"the pool files or delete the run folder"
                )
            pool, latest = dm.pool, 0
            state = {"strategy_state_at": {"0": {}}, "step_offsets": {}, "seeds": {}}
            initial = _cpu_state(self.module)
        else:
            if state is None:
                raise StateFileError(
                    f"state file {self.state_path} is missing but {self.pool_path(latest)} "
                    f"exists; restore it or delete the run folder to restart deliberately"
                )
            if str(latest) not in state["strategy_state_at"]:
                raise StateFileError(
                    f"state file {self.state_path} has no strategy state for cycle {latest} "
                    f"(newest pool {self.pool_path(latest)}); it belongs to another run"
                )
            pool = LabelPool.load(self.pool_path(latest))
            dm.attach_pool(pool)
            initial = load_weights(self.init_path)
            own = self.module.state_dict()
            if set(initial) != set(own) or any(
                tuple(initial[k].shape) != tuple(own[k].shape) for k in own
            ):
                raise ValueError(
                    f"{self.init_path} does not fit this model (keys or shapes differ); "
                    f"resume with the model configuration of the run (see config.yaml)"
                )
        # the weights a rerun reads next must load (a truncated file fails here)
        for needed in {latest, latest - 1} if s.continuous else {latest}:
            if needed >= 0 and self.weights_path(needed).exists():
                load_weights(self.weights_path(needed))
        if pool.num_labels == 0:
            raise ValueError(
                f"the labelled set is empty (data.initial={getattr(dm, 'initial', '?')}): "
                f"cycle 0 has nothing to train on; set data.initial to a fraction in (0, 1] "
                f"or an image count >= 1"
            )
        budget = budget_in_labels(s, pool.num_images, pool.num_tasks)
        check_budget(self.strategy, pool, budget, s.cycles - 1 - latest, s.clamp_budget)
        # read one training and one validation sample: a missing or unreadable dataset
        # fails here, before the run folder is touched
        dm.setup("fit")
        _ = dm.train_dataloader().dataset[0]
        val = dm.val_dataloader().dataset
        if len(val):
            _ = val[0]
        state.setdefault("step_offsets", {})
        seeds = state.setdefault("seeds", {})
        seeds["loop"] = s.seed
        seeds["pool"] = int(getattr(dm, "pool_seed", 0))
        if self.config.get("seed_everything") is not None:
            seeds["model_init"] = self.config["seed_everything"]
        return pool, latest, state, initial, fresh

    def run(self) -> list[CycleResult]:
        """Run the remaining cycles; returns one :class:`CycleResult` per cycle run here."""
        s, dm = self.settings, self.datamodule
        if not s.verbose:  # one fresh Trainer per cycle would repeat its banners every time
            for name in (
                "lightning.pytorch.utilities.rank_zero",
                "lightning.fabric.utilities.rank_zero",
            ):
                logging.getLogger(name).setLevel(logging.WARNING)
        pool, latest, state, initial, fresh = self._prepare()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if fresh:
            self._write_state(state)
            save_weights(initial, self.init_path)
            pool.save(self.pool_path(0))
            self.progress(
                f"[mtal] {self.run_dir}: new run, {pool.num_labelled_images} initial images"
            )
        else:
            self.progress(f"[mtal] {self.run_dir}: resuming at cycle {latest}")
        self._write_config()
        budget = budget_in_labels(s, pool.num_images, pool.num_tasks)
        logger = create_logger(
            s.logger,
            self.run_dir,
            project=s.wandb_project,
            group=s.experiment,
            name=f"{s.name or s.strategy}/seed{s.seed}",
            config={"loop": asdict(s), **self.config},
            notes=s.description,
        )
        results: list[CycleResult] = []
        try:
            for ran, cycle in enumerate(range(latest, s.cycles)):
                if s.stop_after is not None and ran >= s.stop_after:
                    break
                start = time.perf_counter()
                state["seeds"][f"fit_cycle_{cycle}"] = derive_seed(s.seed, "fit", cycle)
                state["step_offsets"][str(cycle)] = self._step_offset(cycle)
                weights_file = self.weights_path(cycle)
                row = self.metrics.row(cycle)
                if weights_file.exists() and row is not None:
                    self.module.load_state_dict(load_weights(weights_file))
                    metrics = {k: float(v) for k, v in row.items() if _is_number(v)}
                else:
                    metrics = self._fit_cycle(cycle, pool, initial, logger, state)
                crash_point("after_fit")
                if cycle == s.cycles - 1:
                    results.append(CycleResult(cycle, metrics, 0))
                    break
                strategy_state = copy.deepcopy(state["strategy_state_at"][str(cycle)])
                crash_point("before_select")
                selection = self._acquire(cycle, pool, budget, state, strategy_state)
                crash_point("after_select")
                bought = pool.copy()
                apply_selection(bought, selection, cycle + 1)
                state["strategy_state_at"][str(cycle + 1)] = strategy_state
                self._write_state(state)
                write_selection_csv(
                    self.selection_path(cycle + 1), selection, bought, dm.train_dataset, cycle + 1
                )
                crash_point("before_pool_write")
                bought.save(self.pool_path(cycle + 1))  # labels are bought from here on
                crash_point("after_pool_write")
                pool = bought
                dm.attach_pool(pool)
                self.progress(
                    f"[mtal] cycle {cycle}: {metrics.get(s.monitor, float('nan')):.4f} {s.monitor}; "
                    f"bought {len(selection.pairs)} labels on {len(selection.images)} images "
                    f"({time.perf_counter() - start:.1f}s)"
                )
                results.append(CycleResult(cycle, metrics, len(selection.pairs)))
        except BaseException:
            close_logger(logger, "failed")
            raise
        close_logger(logger)
        return results

    def _step_offset(self, cycle: int) -> int:
        """The global step at which ``cycle`` starts: the step of the previous cycle's
        metrics row (cumulative), so the axis is monotonic across cycles and reruns."""
        if cycle == 0:
            return 0
        previous = self.metrics.row(cycle - 1)
        if previous is None:
            raise StateFileError(
                f"{self.metrics.path} has no row for cycle {cycle - 1}, which cycle {cycle} "
                f"continues from; restore it or delete the run folder"
            )
        return int(float(previous["step"]))

    def _fit_cycle(
        self,
        cycle: int,
        pool: LabelPool,
        initial: Mapping[str, torch.Tensor],
        logger: Any,
        state: dict[str, Any],
    ) -> dict[str, float]:
        s = self.settings
        seed_everything(state["seeds"][f"fit_cycle_{cycle}"], workers=True, verbose=False)
        if cycle == 0 or not s.continuous:
            self.module.load_state_dict(dict(initial))
        else:
            self.module.load_state_dict(load_weights(self.weights_path(cycle - 1)))
        stats = pool_stats(pool)
        offset = int(state["step_offsets"][str(cycle)])
        callback = ActiveLoop(cycle, stats, monitor=s.monitor, mode=s.monitor_mode)
        wrapped = OffsetLogger(logger, offset) if logger is not None else False
        trainer = self.make_trainer(callbacks=[callback], logger=wrapped)
        trainer.fit(self.module, datamodule=self.datamodule)
        assert callback.best_state is not None
        self.module.load_state_dict(callback.best_state)
        save_weights(callback.best_state, self.weights_path(cycle))
        steps = int(trainer.global_step)
        evaluator = self.make_trainer(callbacks=[], logger=False)
        measured = evaluator.validate(self.module, datamodule=self.datamodule, verbose=False)
        metrics = {k: float(v) for k, v in (measured[0] if measured else {}).items()}
        row = {"cycle": cycle, **stats, "step": offset + steps, **metrics}
        if logger is not None:
            logged = {f"al/{k}" if "/" not in k else k: v for k, v in row.items()}
            logger.log_metrics(logged, step=offset + steps)
        self.metrics.put(row)
        self._write_state(state)
        return metrics

    def _acquire(
        self,
        cycle: int,
        pool: LabelPool,
        budget: int,
        state: dict[str, Any],
        strategy_state: dict[str, Any],
    ) -> Selection:
        """Select with the loop's strategy; torch/numpy are reseeded from (seed, cycle)
        first, so MC dropout or auto-encoder training do not depend on what ran before."""
        from mtal.acquisition.base import AcquisitionContext

        net = getattr(self.module, "net", self.module)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        net.to(device)
        seed = derive_seed(self.settings.seed, "select", cycle)
        state["seeds"][f"select_cycle_{cycle}"] = seed
        seed_everything(seed, workers=True, verbose=False)
        ctx = AcquisitionContext(
            model=net,
            tasks=dict(self.module.task_objects),
            pool=pool,
            datamodule=self.datamodule,
            device=device,
            cycle=cycle,
            seed=seed,
            state=strategy_state,
        )
        selection = self.strategy.select(ctx, budget)
        net.to("cpu")
        return selection


def pool_stats(pool: LabelPool) -> dict[str, float]:
    """The ``al/*`` figures of a pool: labelled images, labels and their fractions."""
    n, k = pool.labelled.shape
    return {
        "labelled_images": float(pool.num_labelled_images),
        "labels": float(pool.num_labels),
        "labelled_fraction": float(pool.num_labels) / float(n * k),
    }


def _is_number(value: str) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True
