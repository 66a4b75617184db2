"""LightningCLI classes of ``mtal``: the Trainer with ``loop``/``acquire`` subcommands and
the CLI that links the datamodule's tasks to the model (imported lazily by mtal.cli)."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from mtal.loop import ActiveLearningLoop, LoopSettings

_DEFAULT_LOOP = LoopSettings()


class ActiveTrainer(Trainer):
    """A Trainer that also runs active-learning ``loop`` and one-off ``acquire``."""

    fresh_trainer: Callable[..., Trainer] | None = None
    mtal_config: dict[str, Any] | None = None

    def _fresh(self, callbacks: list[Any], logger: Any, **overrides: Any) -> Trainer:
        if self.fresh_trainer is not None:
            return self.fresh_trainer(callbacks=callbacks, logger=logger, **overrides)
        return Trainer(callbacks=callbacks, logger=logger, enable_checkpointing=False, **overrides)

    def loop(self, model: Any, datamodule: Any, loop: LoopSettings = _DEFAULT_LOOP) -> None:
        """Run (or resume) an active-learning experiment: fit, select, label, repeat."""
        from mtal.distributed import check_loop_trainer

        check_loop_trainer(self)  # before the run folder is touched: ddp_spawn cannot loop
        settings = loop
        runner = ActiveLearningLoop(
            model, datamodule, settings, self._fresh, config=self.mtal_config or {}
        )
        runner.run()
        if runner.pending_request is not None:  # loop.oracle=human stopped for labels
            from mtal.labelling import EXIT_LABELS_REQUESTED

            raise SystemExit(EXIT_LABELS_REQUESTED)

    def acquire(
        self,
        model: Any,
        datamodule: Any,
        weights: str,
        pool: str,
        budget: float = 0.1,
        budget_unit: Literal["images", "labels", "cost"] = "images",
        strategy: str = "mtal",
        strategy_kwargs: dict[str, Any] | None = None,
        out: str = "selection.csv",
        pool_out: str | None = None,
        cycle: int | None = None,
        seed: int = 0,
        clamp_budget: bool = False,
        task_costs: dict[str, float] | None = None,
        cost_ranking: Literal["ratio", "score"] = "ratio",
        format: Literal["csv", "labelstudio"] = "csv",
        summary_dir: str | None = None,
    ) -> None:
        """Make one selection from a weights file and a pool state; write a CSV for the
        labelling team (image id and path, requested tasks, per-task scores), a request
        manifest for ``mtal label import`` and, with ``--format labelstudio``, Label
        Studio tasks; ``--budget_unit cost`` prices labels by ``--task_costs``;
        ``--summary_dir`` keeps the scoring summaries memory-mapped in that folder."""
        from mtal.acquire import acquire_once

        acquire_once(
            model,
            datamodule,
            weights=Path(weights),
            pool=Path(pool),
            budget=budget,
            budget_unit=budget_unit,
            strategy=strategy,
            strategy_kwargs=strategy_kwargs or {},
            out=Path(out),
            pool_out=None if pool_out is None else Path(pool_out),
            cycle=cycle,
            seed=seed,
            clamp_budget=clamp_budget,
            task_costs=task_costs,
            cost_ranking=cost_ranking,
            export_format=format,
            summary_dir=None if summary_dir is None else Path(summary_dir),
        )

    def diagnose(
        self,
        model: Any,
        datamodule: Any,
        weights: str,
        pool: str | None = None,
        methods: dict[str, dict[str, Any]] | None = None,
        out: str | None = None,
        max_images: int | None = None,
        seed: int = 0,
    ) -> None:
        """Score one trained model's pool with every strategy (default rows:
        mtal.diagnostics.DIAGNOSE_METHODS) and print, per method, the Spearman correlation
        of its scores with the true task losses; ``out`` also writes them as CSV."""
        from mtal.diagnostics import run_diagnose

        run_diagnose(
            model,
            datamodule,
            weights=weights,
            pool=pool,
            methods=methods,
            out=out,
            max_images=max_images,
            seed=seed,
        )


class RedactedSaveConfig(SaveConfigCallback):
    """Lightning's config saver (``<log_dir>/config.yaml`` of ``mtal fit``/``validate``/
    ``test``) with every secret redacted (:func:`mtal.tracking.redact`), written atomically."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["save_to_log_dir"] = False  # save_config below writes the redacted file
        super().__init__(*args, **kwargs)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        import yaml

        from mtal.io import atomic_write_text
        from mtal.tracking import redact

        log_dir = trainer.log_dir
        if log_dir is None:
            return
        text = self.parser.dump(self.config, skip_none=False)
        safe = redact(yaml.safe_load(text))
        atomic_write_text(
            Path(log_dir) / self.config_filename, yaml.safe_dump(safe, sort_keys=False)
        )


class MtalCLI(LightningCLI):
    """LightningCLI with the active-learning subcommands and data→model links."""

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse ``args`` (mtal always passes the command line itself, with its default
        config inserted), without Lightning's warning about args *and* ``sys.argv``,
        which echoed the whole command line, secrets included."""
        if isinstance(args, dict):
            self.config = parser.parse_object(args)
        else:
            self.config = parser.parse_args(args)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {
            **LightningCLI.subcommands(),
            "loop": {"model", "datamodule"},
            "acquire": {"model", "datamodule"},
            "diagnose": {"model", "datamodule"},
        }

    def _prepare_subcommand_parser(
        self, klass: type, subcommand: str, **kwargs: Any
    ) -> LightningArgumentParser:
        if subcommand != "loop":
            parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
            # one YAML serves every subcommand: a loop: section is accepted (and unused)
            parser.add_class_arguments(
                LoopSettings, "loop", help="read by `mtal loop`; accepted and unused here"
            )
            return parser
        # the settings live in a ``loop:`` section, which jsonargparse cannot name after
        # the method's own argument group, so the dataclass is added by hand
        parser = self.init_parser(**kwargs)
        self._add_arguments(parser)
        parser.add_class_arguments(LoopSettings, "loop", help="active-learning loop settings")
        self._subcommand_method_arguments["loop"] = ["loop"]
        return parser

    def _verbose(self) -> bool:
        """``loop.verbose`` of the subcommand's config (every subcommand accepts it)."""
        sub = self.config.get(str(self.subcommand), self.config)
        return bool(sub.get("loop.verbose", False)) if hasattr(sub, "get") else False

    def _set_seed(self) -> None:
        # the first thing LightningCLI prints ("Seed set to") comes from here
        from mtal.quiet import quiet_lightning

        quiet_lightning(self._verbose())
        super()._set_seed()

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The subcommand's Trainer; ``logger: true`` (the default) becomes what Lightning
        would pick without its "tensorboardX removed" warning: no logger for ``loop``/
        ``acquire`` (every cycle's Trainer gets the run's logger), else a CSVLogger in
        ``default_root_dir`` unless TensorBoard is installed."""
        from lightning.pytorch.loggers import CSVLogger
        from lightning.pytorch.trainer.connectors.logger_connector import logger_connector

        configured = self._get(self.config_init, "trainer", default={}) or {}
        tensorboard = (
            logger_connector._TENSORBOARD_AVAILABLE or logger_connector._TENSORBOARDX_AVAILABLE
        )
        if "logger" not in kwargs and configured.get("logger") in (None, True):
            if self.subcommand in ("loop", "acquire"):
                kwargs["logger"] = False
            elif not tensorboard:
                root = configured.get("default_root_dir") or os.getcwd()
                kwargs["logger"] = CSVLogger(save_dir=root)
        return super().instantiate_trainer(**kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # one place for task options (loss, metric and target conversion): data.task_options
        parser.link_arguments("data.task_options", "model.task_options")
        parser.link_arguments(
            "data", "model.tasks", compute_fn=lambda dm: list(dm.tasks), apply_on="instantiate"
        )
        parser.link_arguments(
            "data",
            "model.num_classes",
            compute_fn=lambda dm: dict(dm.num_classes),
            apply_on="instantiate",
        )

    def after_instantiate_classes(self) -> None:
        from mtal.loop.callback import CycleTracker
        from mtal.progress import FitProgress
        from mtal.quiet import log_interval

        trainer_cfg = dict(self._get(self.config_init, "trainer", default={}) or {})
        datamodule = self.datamodule

        def fresh(callbacks: list[Any], logger: Any, **overrides: Any) -> Trainer:
            cfg = dict(trainer_cfg)
            user = [copy.deepcopy(c) for c in (cfg.pop("callbacks", None) or [])]
            cfg.update(callbacks=user + list(callbacks), logger=logger, **overrides)
            cfg["enable_checkpointing"] = False
            cfg["log_every_n_steps"] = log_interval(cfg.get("log_every_n_steps"), datamodule)
            if cfg.get("enable_progress_bar") is False:  # mtal's one bar per fit instead
                cycle = next((c.cycle for c in callbacks if isinstance(c, CycleTracker)), None)
                desc = "fit" if cycle is None else f"cycle {cycle} fit"
                cfg["callbacks"].append(FitProgress(desc))
            return Trainer(**cfg)

        if isinstance(self.trainer, ActiveTrainer):
            self.trainer.fresh_trainer = fresh
            sub = self.config.get(str(self.subcommand), self.config)
            self.trainer.mtal_config = _plain(sub)


def _plain(namespace: Any) -> dict[str, Any]:
    """A jsonargparse Namespace as plain, YAML-safe data."""
    as_dict = namespace.as_dict() if hasattr(namespace, "as_dict") else dict(namespace)
    return {k: v for k, v in as_dict.items() if k not in {"config", "__path__"}}


class CheckCLI(MtalCLI):
    """Parses and instantiates a subcommand's config without running it; the subcommand
    that would have run is kept in ``skipped_subcommand``."""

    skipped_subcommand: str | None = None

    def _run_subcommand(self, subcommand: str) -> None:
        self.skipped_subcommand = subcommand
