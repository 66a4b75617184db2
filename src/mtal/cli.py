"""The ``mtal`` command: LightningCLI for fit/validate/test/predict/loop/acquire, plus
plain commands (``data preview``, ``report``, ``experiment``).

One YAML config drives every subcommand: ``model:`` (MultiTaskModule), ``data:``
(ActiveDataModule), ``trainer:`` and, for ``loop``, a ``loop:`` section
(:class:`mtal.loop.LoopSettings`). With no config at all the defaults describe a small
experiment on the built-in procedural scenes, so ``mtal loop`` runs anywhere.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: commands that are not LightningCLI subcommands: name -> "module:function(argv)"
PLAIN_COMMANDS: dict[str, str] = {
    "data": "mtal.data.preview:main",
    "report": "mtal.report:main",
    "experiment": "mtal.experiment:main",
    "label": "mtal.labelling.cli:main",
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


#: used when a LightningCLI subcommand is given no --config (see default_config.yaml)
DEFAULT_CONFIG = Path(__file__).with_name("default_config.yaml")


def with_default_config(argv: list[str]) -> list[str]:
    """Insert ``--config default_config.yaml`` after the subcommand when none is given,
    so that ``mtal loop`` alone runs a small procedural experiment."""
    if (
        not argv
        or argv[0].startswith("-")
        or any(a in ("--config", "-c") or a.startswith("--config=") for a in argv)
    ):
        return argv
    return [argv[0], "--config", str(DEFAULT_CONFIG), *argv[1:]]


def default_precision() -> str:
    """Mixed precision when a CUDA GPU is present (bf16 where supported), else fp32."""
    import torch

    if not torch.cuda.is_available():
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


def run_cli(args: Sequence[str] | None = None, *, run: bool = True, execute: bool = True) -> Any:
    """Build and run the LightningCLI (``args`` default to ``sys.argv[1:]``).

    ``execute=False`` parses a subcommand line and instantiates everything without
    running it: the check that a config is complete and valid (used by the tests)."""
    _environment()
    from mtal.data.datamodule import ActiveDataModule
    from mtal.lightning_cli import ActiveTrainer, CheckCLI, MtalCLI, RedactedSaveConfig
    from mtal.training.module import MultiTaskModule

    return (MtalCLI if execute else CheckCLI)(
        MultiTaskModule,
        ActiveDataModule,
        trainer_class=ActiveTrainer,
        trainer_defaults={**TRAINER_DEFAULTS, "precision": default_precision()},
        seed_everything_default=0,
        save_config_callback=RedactedSaveConfig,
        save_config_kwargs={"overwrite": True},
        args=list(args) if args is not None else None,
        run=run,
        auto_configure_optimizers=False,
    )


def _dispatch(argv: list[str]) -> int:
    if argv and argv[0] in PLAIN_COMMANDS:
        module_name, func = PLAIN_COMMANDS[argv[0]].split(":")
        return int(getattr(importlib.import_module(module_name), func)(argv[1:]) or 0)
    run_cli(with_default_config(argv))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mtal`` console script. Exit codes: 0 done, 1 an error (one
    message, no traceback, for the errors a user can fix), 130 Ctrl-C, 143 SIGTERM
    (see :mod:`mtal.interrupt`); ``MTAL_TRACEBACK=1`` shows the full traceback."""
    from mtal.interrupt import exit_code, message, signals_raise

    _environment()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        with signals_raise():
            return _dispatch(argv)
    except BaseException as exc:
        code = exit_code(exc)
        if code is not None:
            print(message(), file=sys.stderr, flush=True)
            return code
        if isinstance(exc, SystemExit):
            raise
        user_error = _user_error(exc)
        if user_error is None or os.environ.get("MTAL_TRACEBACK") == "1":
            raise
        command = f"mtal {argv[0]}" if argv and not argv[0].startswith("-") else "mtal"
        print(f"{command}: error: {user_error}", file=sys.stderr, flush=True)
        return 1


#: errors whose message is the whole story (bad config, data, run folder); others keep
#: their traceback
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, KeyError, FileNotFoundError, OSError)


def _user_error(exc: BaseException) -> str | None:
    """The message of the innermost user error of ``exc``'s cause chain (jsonargparse wraps
    errors raised while it links or instantiates the config), or None."""
    found = None
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, USER_ERRORS) or type(exc).__name__ == "RunLockedError":
            found = exc
        exc = exc.__cause__  # type: ignore[assignment]
    if found is None:
        return None
    text = found.args[0] if isinstance(found, KeyError) and found.args else str(found)
    return str(text)


if __name__ == "__main__":
    raise SystemExit(main())
