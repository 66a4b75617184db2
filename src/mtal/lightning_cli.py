"""LightningCLI classes of ``mtal``: the Trainer with ``loop``/``acquire`` subcommands and
the CLI that links the datamodule's tasks to the model (imported lazily by mtal.cli)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

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
        settings = loop
        runner = ActiveLearningLoop(
            model, datamodule, settings, self._fresh, config=self.mtal_config or {}
        )
        runner.run()

    def acquire(
        self,
        model: Any,
        datamodule: Any,
        weights: str,
        pool: str,
        budget: float = 0.1,
        budget_unit: Literal["images", "labels"] = "images",
        strategy: str = "mtal",
        strategy_kwargs: dict[str, Any] | None = None,
        out: str = "selection.csv",
        pool_out: str | None = None,
        cycle: int | None = None,
        seed: int = 0,
        clamp_budget: bool = False,
    ) -> None:
        """Make one selection from a weights file and a pool state; write a CSV for the
        labelling team (image id and path, requested tasks, per-task scores)."""
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
        )


class MtalCLI(LightningCLI):
    """LightningCLI with the active-learning subcommands and data→model links."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {
            **LightningCLI.subcommands(),
            "loop": {"model", "datamodule"},
            "acquire": {"model", "datamodule"},
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
        trainer_cfg = dict(self._get(self.config_init, "trainer", default={}) or {})

        def fresh(callbacks: list[Any], logger: Any, **overrides: Any) -> Trainer:
            cfg = dict(trainer_cfg)
            user = [copy.deepcopy(c) for c in (cfg.pop("callbacks", None) or [])]
            cfg.update(callbacks=user + list(callbacks), logger=logger, **overrides)
            cfg["enable_checkpointing"] = False
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
