"""The cycle driver behind ``mtal loop``: fit → validate → select → label → write, one
cycle at a time, resumable after a crash (see :mod:`mtal.loop`)."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch import LightningModule, Trainer, seed_everything

from mtal import distributed
from mtal.interrupt import mark_cycle
from mtal.io import StateFileError
from mtal.loop.callback import ActiveLoop, CycleTracker
from mtal.loop.crash import crash_point
from mtal.loop.guard import check_data_up_front, locked_run_folder
from mtal.loop.identity import check_identity
from mtal.loop.oracle import apply_selection, create_oracle
from mtal.loop.runfolder import (
    MetricsTable,
    RunFolder,
    check_pool_sense,
    check_run_location,
    cpu_state,
    is_number,
    load_weights,
    pool_stats,
    save_weights,
    write_selection_csv,
)
from mtal.loop.settings import (
    LoopSettings,
    budget_in_labels,
    check_budget,
    cost_budget,
    derive_seed,
    run_dir_for,
    validate_settings,
)
from mtal.loop.stopping import plateau_stop
from mtal.progress import Clock
from mtal.tracking import OffsetLogger, close_logger, create_logger

if TYPE_CHECKING:
    from mtal.acquisition.base import Selection
    from mtal.data.datamodule import ActiveDataModule
    from mtal.data.pool import LabelPool


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
        check_run_location(settings)
        self.module = module
        self.datamodule = datamodule
        self.settings = settings
        self.make_trainer = make_trainer
        self.config = dict(config or {})
        self.progress = progress or (lambda _msg: None)
        if not distributed.is_rank_zero():  # DDP: rank 0 alone speaks and writes
            self.progress = lambda _msg: None
        self.run_dir = run_dir_for(settings)
        self.folder = RunFolder(self.run_dir)
        self.metrics = MetricsTable(self.folder.metrics_path)
        self.diagnostics: dict[str, float] = {}  # diag/* of the last selection
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
        self.oracle = create_oracle(settings.oracle)  # issue 15: labels from people
        self.pending_request: Any = None  # set when the human oracle stopped for labels

    # -- run folder (delegates to :class:`RunFolder`) -------------------------------------
    def pool_path(self, cycle: int) -> Path:
        """``pool/cycle_<c>.json``: the pool cycle ``c`` trains on."""
        return self.folder.pool_path(cycle)

    def weights_path(self, cycle: int) -> Path:
        """``cycle_<c>/weights.pt``: the best weights of cycle ``c``."""
        return self.folder.weights_path(cycle)

    def selection_path(self, cycle: int) -> Path:
        """``selections/cycle_<c>.csv``: the request of the labels bought for cycle ``c``."""
        return self.folder.selection_path(cycle)

    @property
    def state_path(self) -> Path:
        """``state.json``: seeds, step offsets and the per-cycle strategy state."""
        return self.folder.state_path

    @property
    def init_path(self) -> Path:
        """``init_weights.pt``: the network's weights before cycle 0."""
        return self.folder.init_path

    def _write_state(self, state: Mapping[str, Any]) -> None:
        self.folder.write_state(state)

    def _write_config(self) -> None:
        loop = {"loop": asdict(self.settings)}
        self.folder.write_config({**loop, **{k: v for k, v in self.config.items() if k != "loop"}})

    # -- the loop ------------------------------------------------------------------------
    def _prepare(self) -> tuple[LabelPool, int, dict[str, Any], dict[str, torch.Tensor], bool]:
        """Read and validate everything the run needs, writing nothing: the pool to
        start from, its cycle, the loop state, the initial weights, and whether the run
        is new."""
        from mtal.data.pool import LabelPool

        s, dm = self.settings, self.datamodule
        state = self.folder.read_state()
        latest = self.folder.latest_pool_cycle()
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
            initial = cpu_state(self.module)
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
            check_pool_sense(pool, self.pool_path(latest), latest)
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
        cost = cost_budget(s, pool.tasks)  # None unless loop.budget_unit=cost (issue 15)
        check_budget(self.strategy, pool, budget, s.cycles - 1 - latest, s.clamp_budget, cost=cost)
        # read one training and one validation sample: a missing or unreadable dataset
        # fails here, before the run folder is touched
        dm.setup("fit")
        _ = dm.train_dataloader().dataset[0]
        val = dm.val_dataloader().dataset
        if not len(val):
            raise ValueError(
                f"the validation set is empty (data.val_size={getattr(dm, 'val_size', '?')}): "
                f"the loop picks each cycle's best weights by {s.monitor}; set data.val_size "
                f"to at least 1 (or null for the whole split)"
            )
        _ = val[0]
        if fresh:
            check_data_up_front(dm, s.check_data_up_to)
        self.oracle.check(dm)
        state.setdefault("step_offsets", {})
        seeds = state.setdefault("seeds", {})
        seeds["loop"] = s.seed
        seeds["pool"] = int(getattr(dm, "pool_seed", 0))
        if self.config.get("seed_everything") is not None:
            seeds["model_init"] = self.config["seed_everything"]
        return pool, latest, state, initial, fresh

    def run(self) -> list[CycleResult]:
        """Run the remaining cycles; returns one :class:`CycleResult` per cycle run here.
        The run folder is locked for the whole run (:mod:`mtal.loop.guard`)."""
        if not distributed.is_rank_zero():  # DDP: rank 0 holds the lock and writes the folder
            return self._run()
        with locked_run_folder(self.run_dir):
            return self._run()

    def _run(self) -> list[CycleResult]:
        s, dm = self.settings, self.datamodule
        if not s.verbose:  # one fresh Trainer per cycle would repeat its banners every time
            for name in (
                "lightning.pytorch.utilities.rank_zero",
                "lightning.fabric.utilities.rank_zero",
            ):
                logging.getLogger(name).setLevel(logging.WARNING)
        newest = self.folder.latest_pool_cycle()
        identity = check_identity(  # a rerun with other settings stops here (issue 13)
            self.run_dir,
            {"loop": asdict(s), **{k: v for k, v in self.config.items() if k != "loop"}},
            latest=newest or 0,
            fresh=newest is None,
            allow_change=s.allow_config_change,
        )
        pool, latest, state, initial, fresh = self._prepare()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if distributed.is_rank_zero():
            identity.record()
        if fresh:
            self._write_state(state)
            save_weights(initial, self.init_path)
            self.folder.save_pool(pool, 0)
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
        clock = Clock(s.cycles - latest)  # elapsed and ETA on every cycle line
        try:
            for ran, cycle in enumerate(range(latest, s.cycles)):
                if s.stop_after is not None and ran >= s.stop_after:
                    break
                mark_cycle(cycle)
                start = time.perf_counter()
                state["seeds"][f"fit_cycle_{cycle}"] = derive_seed(s.seed, "fit", cycle)
                state["step_offsets"][str(cycle)] = self._step_offset(cycle)
                weights_file = self.weights_path(cycle)
                row = self.metrics.row(cycle)
                if weights_file.exists() and row is not None:
                    self.module.load_state_dict(load_weights(weights_file))
                    metrics = {k: float(v) for k, v in row.items() if is_number(v)}
                else:
                    metrics = self._fit_cycle(cycle, pool, initial, logger, state)
                crash_point("after_fit")
                if cycle == s.cycles - 1:
                    results.append(CycleResult(cycle, metrics, 0))
                    break
                if self.oracle.request(self, cycle, pool, budget, state):  # human: stop for labels
                    break
                strategy_state = copy.deepcopy(state["strategy_state_at"][str(cycle)])
                crash_point("before_select")
                selection = self._acquire(cycle, pool, budget, state, strategy_state)
                crash_point("after_select")
                self._record_diagnostics(cycle, logger)
                bought = pool.copy()
                apply_selection(bought, selection, cycle + 1)
                state["strategy_state_at"][str(cycle + 1)] = strategy_state
                self._write_state(state)
                write_selection_csv(
                    self.selection_path(cycle + 1), selection, bought, dm.train_dataset, cycle + 1
                )
                crash_point("before_pool_write")
                self.folder.save_pool(bought, cycle + 1)  # labels are bought from here on
                crash_point("after_pool_write")
                pool = bought
                dm.attach_pool(pool)
                self.progress(
                    f"[mtal] cycle {cycle}: {metrics.get(s.monitor, float('nan')):.4f} {s.monitor}; "
                    f"bought {len(selection.pairs)} labels on {len(selection.images)} images "
                    f"({time.perf_counter() - start:.1f}s; cycles {clock.lap()})"
                )
                results.append(CycleResult(cycle, metrics, len(selection.pairs)))
        except BaseException:
            close_logger(logger, "failed")
            raise
        close_logger(logger)
        return results

    def _record_diagnostics(self, cycle: int, logger: Any) -> None:
        """Add the last selection's ``diag/*`` numbers to the cycle's metrics row and log."""
        diag, self.diagnostics = self.diagnostics, {}
        if not diag:
            return
        row = self.metrics.row(cycle) or {"cycle": cycle}
        self.metrics.put({**row, **diag})
        if logger is not None:
            logger.log_metrics(diag, step=int(float(row.get("step", 0))))

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
        callback = CycleTracker(cycle, stats, monitor=s.monitor, mode=s.monitor_mode)
        wrapped = OffsetLogger(logger, offset) if logger is not None else False
        # plateau stop (loop.early_stopping, issue 12): extra callback + trainer arguments
        stop = plateau_stop(s.early_stopping, s.monitor, s.monitor_mode)
        extra = {} if stop is None else stop.trainer_overrides()
        stop_callbacks = [] if stop is None else [stop.callback]
        trainer = self.make_trainer(callbacks=[callback, *stop_callbacks], logger=wrapped, **extra)
        distributed.check_loop_trainer(trainer)  # DDP: the ranks must outlive the fit
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
        self.metrics.put({**row, **({} if stop is None else stop.outcome(steps))})
        self._write_state(state)
        return metrics

    def summary_dir(self) -> str | None:
        """Folder of the scoring summaries' mapped files (``loop.summary_store: disk``:
        ``loop.summary_dir``, else the run folder), or None to keep them in memory."""
        if self.settings.summary_store != "disk":
            return None
        return str(self.settings.summary_dir or self.run_dir)

    def _acquire(
        self,
        cycle: int,
        pool: LabelPool,
        budget: int,
        state: dict[str, Any],
        strategy_state: dict[str, Any],
    ) -> Selection:
        """Select with the loop's strategy through :meth:`ActiveLoop.select` (the code the
        callback uses): torch/numpy are reseeded from (seed, cycle) first, so MC dropout
        or auto-encoder training do not depend on what ran before. With W&B the request
        and the AL curve so far are logged. Then (``loop.diagnostics``) the ``diag/*``
        correlations of the scores with the true task losses (:mod:`mtal.diagnostics`)."""
        from mtal.tracking import log_request

        net = getattr(self.module, "net", self.module)
        device = distributed.local_device()
        net.to(device)
        acquirer = ActiveLoop(
            self.strategy, seed=self.settings.seed, summary_dir=self.summary_dir()
        )
        state["seeds"][f"select_cycle_{cycle}"] = acquirer.select_seed(cycle)
        selection = acquirer.select(
            self.module,
            self.datamodule,
            cycle,
            budget=budget,
            pool=pool,
            state=strategy_state,
            device=device,
            cost=cost_budget(self.settings, pool.tasks),
        )
        # after select: the oracle path reads true labels (simulation only)
        if self.settings.diagnostics and getattr(self.oracle, "knows_labels", False):
            from mtal.diagnostics import acquisition_diagnostics, module_task_weights

            self.diagnostics = acquisition_diagnostics(
                self.strategy,
                acquirer.last_context,
                module_task_weights(self.module),
                self.settings.diagnostics_max_images,
                acquirer.select_seed(cycle),
            )
        net.to("cpu")
        # DDP: every rank scored its shard and selected on the gathered summaries; rank
        # 0's selection and strategy state are the ones every rank buys and keeps
        selection = distributed.agree_with_rank_zero(selection, strategy_state)
        if self.settings.logger == "wandb" and distributed.is_rank_zero():
            log_request(
                None,
                selection,
                pool,
                self.datamodule.train_dataset,
                cycle + 1,
                curve=self.metrics.rows(),
            )
        return selection
