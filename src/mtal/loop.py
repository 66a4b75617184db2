"""The active-learning cycle driver and its Lightning callback.

One cycle = fit (continuous training from the previous cycle's best weights, fresh
optimiser) → validate → log → select → label (the dataset's own annotations are the
oracle) → write the pool state and a ``metrics.csv`` row atomically.

Crash safety comes from the order of atomic writes in the run folder
``runs/<experiment>/<strategy>/seed<k>/``:

- ``pool/cycle_<c>.json`` — the pool that cycle ``c`` trains on (labels bought so far);
  its existence is the proof that those labels were requested, so a rerun never
  re-selects (no label bought twice).
- ``cycle_<c>/weights.pt`` — the best weights of cycle ``c`` (plain state dict, loaded
  with ``weights_only=True``).
- ``metrics.csv`` — one row per finished cycle (rewritten atomically, keyed by cycle).
- ``state.json`` — the strategy's persistent state and the step offset per cycle.

A rerun of the same command finds the newest pool file and redoes only what is
missing: an interrupted fit is redone from the same seed, so an interrupted run ends
with the same pool as an uninterrupted one on CPU.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything

from mtal.io import atomic_write_bytes, read_checked_json, write_checked_json
from mtal.tracking import OffsetLogger, create_logger, redact

if TYPE_CHECKING:
    from mtal.acquisition.base import Selection
    from mtal.data.datamodule import ActiveDataModule
    from mtal.data.pool import LabelPool

STATE_SCHEMA = "mtal.loopstate"
STATE_VERSION = 1


@dataclass
class LoopSettings:
    """What an active-learning experiment does between fits.

    ``budget`` is per acquisition: a fraction of the training pool's images when < 1,
    else a count, in ``budget_unit`` ("images": B images × K labels, which pair
    strategies receive as the same number of labels; "labels": image/task pairs).
    ``cycles`` counts fits: cycle 0 trains on the initial set, and every cycle but the
    last ends with an acquisition.
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
    #: stop after this many cycles in this process (testing crash/resume); None = all
    stop_after: int | None = None


def derive_seed(*parts: int | str) -> int:
    """A 31-bit seed derived from several parts (stable across runs and platforms)."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def run_dir_for(settings: LoopSettings) -> Path:
    """``runs/<experiment>/<strategy>/seed<k>/``."""
    label = settings.name or settings.strategy
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
            stats = {"al/cycle": float(self.cycle), **self.pool_stats}
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
            self.best_state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.best_state is None:  # no validation ran: the last weights are the best we know
            self.best_state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}


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
    return state


class MetricsTable:
    """``metrics.csv``: one row per cycle, rewritten atomically, keyed by cycle."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def rows(self) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        with self.path.open(newline="") as handle:
            return list(csv.DictReader(handle))

    def put(self, row: Mapping[str, Any]) -> None:
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
            score = float(selection.scores[row_index, k]) if selection.scores is not None else float("nan")
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
    cycle: int
    metrics: dict[str, float]
    selected: int


class ActiveLearningLoop:
    """Runs (or resumes) an active-learning experiment in its run folder.

    ``make_trainer(callbacks, logger)`` builds a fresh Trainer per cycle (the CLI passes
    one that applies the user's trainer config). The module's weights are reset to
    their initial values (or continue from the previous best) at every cycle.
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
        self.module = module
        self.datamodule = datamodule
        self.settings = settings
        self.make_trainer = make_trainer
        self.config = dict(config or {})
        self.progress = progress or (lambda _msg: None)
        self.run_dir = run_dir_for(settings)
        self.metrics = MetricsTable(self.run_dir / "metrics.csv")

    # -- run folder -------------------------------------------------------------------
    def pool_path(self, cycle: int) -> Path:
        return self.run_dir / "pool" / f"cycle_{cycle:03d}.json"

    def weights_path(self, cycle: int) -> Path:
        return self.run_dir / f"cycle_{cycle:03d}" / "weights.pt"

    def selection_path(self, cycle: int) -> Path:
        return self.run_dir / "selections" / f"cycle_{cycle:03d}.csv"

    @property
    def state_path(self) -> Path:
        return self.run_dir / "state.json"

    def _latest_pool_cycle(self) -> int | None:
        found = sorted(self.run_dir.glob("pool/cycle_*.json"))
        return int(found[-1].stem.split("_")[1]) if found else None

    def _read_state(self) -> dict[str, Any]:
        if not self.state_path.exists():
            return {"strategy_state": {}, "step_offsets": {}, "seeds": {}}
        return read_checked_json(self.state_path, STATE_SCHEMA, STATE_VERSION)

    def _write_state(self, state: Mapping[str, Any]) -> None:
        write_checked_json(self.state_path, dict(state), STATE_SCHEMA, STATE_VERSION)

    def _write_config(self) -> None:
        import yaml

        payload = redact(
            {"loop": asdict(self.settings), **{k: v for k, v in self.config.items() if k != "loop"}}
        )
        text = yaml.safe_dump(json.loads(json.dumps(payload, default=str)), sort_keys=False)
        atomic_write_bytes(self.run_dir / "config.yaml", text.encode())

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> list[CycleResult]:
        from mtal.acquisition import create_strategy
        from mtal.data.pool import LabelPool

        s = self.settings
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        dm = self.datamodule
        state = self._read_state()
        state.setdefault("seeds", {})["loop"] = s.seed

        latest = self._latest_pool_cycle()
        if latest is None:
            pool = dm.pool  # fresh initial set (seeded by the datamodule's pool_seed)
            pool.save(self.pool_path(0))
            latest = 0
            self.progress(f"[mtal] {self.run_dir}: new run, {pool.num_labelled_images} initial images")
        else:
            pool = LabelPool.load(self.pool_path(latest))
            dm.attach_pool(pool)
            self.progress(f"[mtal] {self.run_dir}: resuming at cycle {latest}")

        init_path = self.run_dir / "init_weights.pt"
        if init_path.exists():
            initial = load_weights(init_path)
        else:
            initial = {k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()}
            save_weights(initial, init_path)

        k = len(pool.tasks)
        budget = budget_in_labels(s, len(pool.image_ids), k)
        strategy = create_strategy(s.strategy, clamp_budget=s.clamp_budget, **s.strategy_kwargs)
        logger = create_logger(
            s.logger,
            self.run_dir,
            project=s.wandb_project,
            group=s.experiment,
            name=f"{s.name or s.strategy}/seed{s.seed}",
            config={"loop": asdict(s), **self.config},
        )
        results: list[CycleResult] = []
        done_rows = {int(r["cycle"]) for r in self.metrics.rows()}
        ran = 0
        for cycle in range(latest, s.cycles):
            if s.stop_after is not None and ran >= s.stop_after:
                break
            ran += 1
            start = time.perf_counter()
            weights_file = self.weights_path(cycle)
            if weights_file.exists() and cycle in done_rows:
                self.module.load_state_dict(load_weights(weights_file))
                row = next(r for r in self.metrics.rows() if int(r["cycle"]) == cycle)
                metrics = {k2: float(v) for k2, v in row.items() if _is_number(v)}
            else:
                metrics = self._fit_cycle(cycle, pool, initial, logger, state)
            if cycle == s.cycles - 1:
                results.append(CycleResult(cycle, metrics, 0))
                break
            selection = self._acquire(strategy, cycle, pool, budget, state)
            apply_selection(pool, selection, cycle + 1)
            write_selection_csv(
                self.selection_path(cycle + 1), selection, pool, dm.train_dataset, cycle + 1
            )
            pool.save(self.pool_path(cycle + 1))  # labels are bought from here on
            self._write_state(state)
            dm.attach_pool(pool)
            self.progress(
                f"[mtal] cycle {cycle}: {metrics.get(s.monitor, float('nan')):.4f} {s.monitor}; "
                f"bought {len(selection.pairs)} labels on {len(selection.images)} images "
                f"({time.perf_counter() - start:.1f}s)"
            )
            results.append(CycleResult(cycle, metrics, len(selection.pairs)))
        if logger is not None:
            logger.finalize("success")
        return results

    def _fit_cycle(
        self,
        cycle: int,
        pool: LabelPool,
        initial: Mapping[str, torch.Tensor],
        logger: Any,
        state: dict[str, Any],
    ) -> dict[str, float]:
        s = self.settings
        seed = derive_seed(s.seed, "fit", cycle)
        state["seeds"][f"fit_cycle_{cycle}"] = seed
        seed_everything(seed, workers=True, verbose=False)
        if cycle == 0 or not s.continuous:
            self.module.load_state_dict(dict(initial))
        else:
            self.module.load_state_dict(load_weights(self.weights_path(cycle - 1)))
        stats = pool_stats(pool)
        offsets = state.setdefault("step_offsets", {})
        offset = int(offsets.get(str(cycle), sum(int(v) for v in offsets.values())))
        offsets[str(cycle)] = offset
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
            logger.log_metrics({f"al/{k}" if "/" not in k else k: v for k, v in row.items()}, step=offset + steps)
        self.metrics.put(row)
        offsets[str(cycle + 1)] = offset + steps
        self._write_state(state)
        return metrics

    def _acquire(
        self, strategy: Any, cycle: int, pool: LabelPool, budget: int, state: dict[str, Any]
    ) -> Selection:
        from mtal.acquisition.base import AcquisitionContext

        net = getattr(self.module, "net", self.module)
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        net.to(device)
        strategy_state = state.setdefault("strategy_state", {})
        ctx = AcquisitionContext(
            model=net,
            tasks=dict(self.module.task_objects),
            pool=pool,
            datamodule=self.datamodule,
            device=device,
            cycle=cycle,
            seed=derive_seed(self.settings.seed, "select", cycle),
            state=strategy_state,
        )
        state["seeds"][f"select_cycle_{cycle}"] = ctx.seed
        selection = strategy.select(ctx, budget)
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

