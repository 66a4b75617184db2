"""Experiment tracking: W&B (offline unless asked), a step-offset logger wrapper, and
secret redaction for everything written to disk or to a tracker."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only

#: keys whose values never leave the process (configs, exports, logs)
_SECRET_KEY = re.compile(r"(api[_-]?key|token|secret|password|passwd|credential)", re.I)
#: W&B API keys are 40 hex chars (or "local-..." for servers); also redact anything
#: that equals the live WANDB_API_KEY.
_WANDB_KEY = re.compile(r"\b[0-9a-f]{40}\b|\blocal-[0-9a-f]{40}\b", re.I)
REDACTED = "<redacted>"


def redact(obj: Any) -> Any:
    """A copy of ``obj`` (nested dicts/lists/strings) with secrets replaced by ``<redacted>``.

    A value is secret when its key looks like a credential, when it looks like a W&B
    API key, or when it contains the current ``WANDB_API_KEY``.
    """
    live = os.environ.get("WANDB_API_KEY") or ""
    if isinstance(obj, Mapping):
        return {
            k: (REDACTED if _SECRET_KEY.search(str(k)) and v not in (None, "") else redact(v))
            for k, v in obj.items()
        }
    if isinstance(obj, list | tuple):
        return type(obj)(redact(v) for v in obj)
    if isinstance(obj, str):
        if live and live in obj:
            obj = obj.replace(live, REDACTED)
        return _WANDB_KEY.sub(REDACTED, obj)
    return obj


class OffsetLogger(Logger):
    """Wraps a logger so that every cycle's fit logs at ``step + offset``.

    Each active-learning cycle trains with a fresh Trainer whose global step restarts
    at 0; the offset makes one monotonic step axis across cycles.
    """

    def __init__(self, inner: Logger, offset: int = 0) -> None:
        super().__init__()
        self.inner = inner
        self.offset = offset

    @property
    def name(self) -> str | None:
        return self.inner.name

    @property
    def version(self) -> int | str | None:
        return self.inner.version

    @property
    def save_dir(self) -> str | None:
        return self.inner.save_dir

    @property
    def log_dir(self) -> str | None:
        return getattr(self.inner, "log_dir", None)

    @property
    def experiment(self) -> Any:
        return self.inner.experiment

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.inner.log_metrics(dict(metrics), None if step is None else step + self.offset)

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(params, Mapping):
            params = redact(dict(params))
        self.inner.log_hyperparams(params, *args, **kwargs)

    def save(self) -> None:
        self.inner.save()

    def finalize(self, status: str) -> None:
        # the wrapped logger lives across cycles; the loop finalises it once at the end
        self.inner.save()


def create_logger(
    kind: str,
    run_dir: Path,
    *,
    project: str,
    group: str,
    name: str,
    config: Mapping[str, Any] | None = None,
    notes: str = "",
) -> Logger | None:
    """The run's tracker: ``wandb`` (offline unless ``WANDB_MODE=online``), ``csv`` or ``none``.

    Every string handed to the tracker (config, notes, project/group/run names) is
    redacted first; the API key itself is only ever read by wandb from its environment.
    """
    if kind not in LOGGER_KINDS:
        raise ValueError(
            f"loop.logger={kind!r} is not a logger; choose one of {list(LOGGER_KINDS)}"
        )
    return LOGGER_KINDS[kind](
        run_dir, project=project, group=group, name=name, config=config, notes=notes
    )


def close_logger(logger: Logger | None, status: str = "success") -> None:
    """Finalise the run's tracker; a W&B run is also finished (its files flushed), so the
    next run in the same process starts its own."""
    if logger is None:
        return
    logger.finalize(status)
    if type(logger).__name__ == "WandbLogger":
        import wandb

        if wandb.run is not None:
            wandb.finish()


def _identifier(text: str) -> str:
    """A redacted name W&B accepts (letters, digits, ``_-./``)."""
    return re.sub(r"[^A-Za-z0-9_./-]", "-", redact(text).replace(REDACTED, "redacted"))


def argv_has_secret(argv: list[str] | None = None) -> bool:
    """Whether the command line (default ``sys.argv``) holds something :func:`redact` hides."""
    argv = list(sys.argv if argv is None else argv)
    return redact(argv) != argv or any(_SECRET_KEY.search(a) for a in argv)


def _wandb_logger(
    run_dir: Path,
    *,
    project: str,
    group: str,
    name: str,
    config: Mapping[str, Any] | None,
    notes: str = "",
) -> Logger:
    from lightning.pytorch.loggers import WandbLogger

    mode = os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    group, name = _identifier(group), _identifier(name)
    run_id = re.sub(r"[^A-Za-z0-9_-]", "-", f"{group}-{name}")[:120]
    extra: dict[str, Any] = {}
    if argv_has_secret():
        # wandb records the command line in the run's metadata; keep it out of the run
        import wandb

        extra["settings"] = wandb.Settings(x_disable_meta=True)
    logger = WandbLogger(
        project=_identifier(project),
        group=group,
        name=name,
        id=run_id,
        resume="allow",
        save_dir=str(run_dir),
        offline=mode != "online",
        log_model=False,
        notes=redact(notes) or None,
        **extra,
    )
    # WandbLogger always passes anonymous=None, which wandb >= 0.19 warns about
    # ("The anonymous setting has no effect"); not passing it at all is the same run
    logger._wandb_init.pop("anonymous", None)
    if config is not None:
        logger.log_hyperparams(redact(dict(config)))
    return logger


def _csv_logger(
    run_dir: Path,
    *,
    project: str,
    group: str,
    name: str,
    config: Mapping[str, Any] | None,
    notes: str = "",
) -> Logger:
    from lightning.pytorch.loggers import CSVLogger

    logger = CSVLogger(save_dir=str(run_dir), name="csv_logs", version="")
    if config is not None:
        logger.log_hyperparams(redact(dict(config)))
    return logger


def _no_logger(run_dir: Path, **_: Any) -> None:
    return None


#: ``loop.logger`` value → factory(run_dir, project=, group=, name=, config=, notes=)
LOGGER_KINDS: dict[str, Callable[..., Logger | None]] = {
    "wandb": _wandb_logger,
    "csv": _csv_logger,
    "none": _no_logger,
}


def _wandb_run(logger: Any) -> Any:
    """The W&B run behind ``logger`` (a WandbLogger, possibly wrapped in OffsetLogger), or,
    for ``logger=None``, the process's active W&B run; None when W&B is not in use."""
    inner = getattr(logger, "inner", logger)
    if inner is not None:
        return inner.experiment if type(inner).__name__ == "WandbLogger" else None
    wandb = sys.modules.get("wandb")
    return None if wandb is None else getattr(wandb, "run", None)


def request_table(selection: Any, pool: Any, dataset: Any, cycle: int, thumb: int = 96) -> Any:
    """A ``wandb.Table`` of a labelling request: one row per image with its thumbnail,
    id, the tasks requested and the per-task scores (NaN where not scored)."""
    import numpy as np
    import wandb

    from mtal.gallery import thumbnail

    tasks = list(pool.tasks)
    columns = ["cycle", "thumbnail", "image_index", "image_id", "tasks"]
    columns += [f"score_{t}" for t in tasks]
    table = wandb.Table(columns=columns)
    pairs = np.asarray(selection.pairs).reshape(-1, 2)
    for row, image in enumerate(np.asarray(selection.images).tolist()):
        asked = sorted(int(c) for i, c in pairs.tolist() if int(i) == int(image))
        scores = [float(v) for v in np.asarray(selection.scores)[row]]
        table.add_data(
            int(cycle),
            wandb.Image(thumbnail(dataset, int(image), thumb)),
            int(image),
            str(pool.image_ids[int(image)]),
            ";".join(tasks[c] for c in asked),
            *scores,
        )
    return table


def curve_charts(rows: list[Mapping[str, Any]], x: str = "labels") -> dict[str, Any]:
    """W&B custom line charts of the AL curves: every ``val/*`` metric of ``metrics.csv``
    ``rows`` against ``x`` (labels bought), keyed ``al/curve/<metric>``."""
    import wandb

    def number(value: Any) -> float | None:
        try:
            return float(value)
        except (TypeError, ValueError):
            return None

    metrics = sorted({k for r in rows for k in r if k.startswith("val/")})
    charts: dict[str, Any] = {}
    for metric in metrics:
        points = [(number(r.get(x)), number(r.get(metric))) for r in rows]
        points = [(a, b) for a, b in points if a is not None and b is not None]
        if not points:
            continue
        table = wandb.Table(data=[list(p) for p in points], columns=[x, metric])
        charts[f"al/curve/{metric}"] = wandb.plot.line(
            table, x, metric, title=f"AL curve: {metric} vs {x}"
        )
    return charts


def log_request(
    logger: Any,
    selection: Any,
    pool: Any,
    dataset: Any,
    cycle: int,
    curve: list[Mapping[str, Any]] | None = None,
) -> bool:
    """Log an acquisition to W&B (when in use): the request as a ``wandb.Table``
    (``al/request``) and, given ``metrics.csv`` rows, the AL curves as custom charts.
    Returns whether anything was logged."""
    run = _wandb_run(logger)
    if run is None:
        return False
    payload: dict[str, Any] = {"al/request": request_table(selection, pool, dataset, cycle)}
    if curve:
        payload.update(curve_charts(list(curve)))
    run.log(payload)
    return True
