"""The ``mtal`` command: LightningCLI for fit/validate/test/predict/loop/acquire, plus
plain commands (``data preview``, ``report``, ``experiment``).

One YAML config drives every subcommand: ``model:`` (MultiTaskModule), ``data:``
(ActiveDataModule), ``trainer:`` and, for ``loop``, a ``loop:`` section
(:class:`mtal.loop.LoopSettings`). With no config at all the defaults describe a small
experiment on the built-in procedural scenes, so ``mtal loop`` runs anywhere.
"""

from __future__ import annotations

import copy
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

#: commands that are not LightningCLI subcommands: name -> "module:function(argv)"
PLAIN_COMMANDS: dict[str, str] = {
    "data": "mtal.data.preview:main",
    "report": "mtal.report:main",
    "experiment": "mtal.experiment:main",
}

TRAINER_DEFAULTS: dict[str, Any] = {
    "max_epochs": 3,
    "log_every_n_steps": 10,
    "enable_model_summary": False,
    "num_sanity_val_steps": 0,
}


def _environment() -> None:
    """Safe defaults: W&B never blocks on the network, albumentations never phones home."""
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def _build_cli_classes() -> tuple[type, type]:
    """Import Lightning lazily and define the CLI and trainer classes."""
    from lightning.pytorch import Trainer
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

    from mtal.loop import ActiveLearningLoop, LoopSettings

    class ActiveTrainer(Trainer):
        """A Trainer that also runs active-learning ``loop`` and one-off ``acquire``."""

        fresh_trainer: Callable[..., Trainer] | None = None
        mtal_config: dict[str, Any] | None = None

        def _fresh(self, callbacks: list[Any], logger: Any) -> Trainer:
            if self.fresh_trainer is not None:
                return self.fresh_trainer(callbacks=callbacks, logger=logger)
            return Trainer(callbacks=callbacks, logger=logger, enable_checkpointing=False)

        def loop(self, model: Any, datamodule: Any, loop: LoopSettings | None = None) -> None:
            """Run (or resume) an active-learning experiment: fit, select, label, repeat."""
            settings = loop or LoopSettings()
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

        def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
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

            def fresh(callbacks: list[Any], logger: Any) -> Trainer:
                cfg = dict(trainer_cfg)
                user = [copy.deepcopy(c) for c in (cfg.pop("callbacks", None) or [])]
                cfg.update(callbacks=user + list(callbacks), logger=logger)
                cfg["enable_checkpointing"] = False
                return Trainer(**cfg)

            if isinstance(self.trainer, ActiveTrainer):
                self.trainer.fresh_trainer = fresh
                sub = self.config.get(str(self.subcommand), self.config)
                self.trainer.mtal_config = _plain(sub)

    return MtalCLI, ActiveTrainer


def _plain(namespace: Any) -> dict[str, Any]:
    """A jsonargparse Namespace as plain, YAML-safe data."""
    as_dict = namespace.as_dict() if hasattr(namespace, "as_dict") else dict(namespace)
    return {k: v for k, v in as_dict.items() if k not in {"config", "__path__"}}


def run_cli(args: Sequence[str] | None = None, *, run: bool = True) -> Any:
    """Build and run the LightningCLI (``args`` default to ``sys.argv[1:]``)."""
    _environment()
    from mtal.data.datamodule import ActiveDataModule
    from mtal.training.module import MultiTaskModule

    cli_class, trainer_class = _build_cli_classes()
    return cli_class(
        MultiTaskModule,
        ActiveDataModule,
        trainer_class=trainer_class,
        trainer_defaults=TRAINER_DEFAULTS,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        args=list(args) if args is not None else None,
        run=run,
        auto_configure_optimizers=False,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mtal`` console script."""
    _environment()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PLAIN_COMMANDS:
        module_name, func = PLAIN_COMMANDS[argv[0]].split(":")
        return int(getattr(importlib.import_module(module_name), func)(argv[1:]) or 0)
    run_cli(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
