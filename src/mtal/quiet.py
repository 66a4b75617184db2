"""Quiet console output: what Lightning prints by default that an mtal run does not need
(per-Trainer banners, tips, the seed line) is kept out unless ``loop.verbose``; real
warnings still show."""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

#: Lightning's info loggers: GPU/TPU banners, the litlogger/litmodels tips, "Seed set to"
INFO_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.fabric.utilities.seed",
)
#: deprecations raised *inside Lightning's own code* by the installed torch, which no mtal
#: code path can avoid (message regex, module of the line that triggers it); silenced there
#: only, so the same deprecation in any other module still shows
FOREIGN_DEPRECATIONS = (
    # torch >= 2.10 deprecates LeafSpec(); lightning/pytorch/utilities/_pytree.py builds
    # one for every training loader (CombinedLoader)
    (
        r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        r"lightning\.pytorch\.utilities\._pytree",
    ),
)


def quiet_lightning(verbose: bool = False) -> None:
    """Lightning's banners and tips at INFO when ``verbose``, else only its warnings; the
    foreign deprecations above are ignored unless ``verbose``."""
    level = logging.INFO if verbose else logging.WARNING
    for name in INFO_LOGGERS:
        logging.getLogger(name).setLevel(level)
    if not verbose:
        for message, module in FOREIGN_DEPRECATIONS:
            warnings.filterwarnings("ignore", message=message, module=module)


def log_interval(configured: int | None, datamodule: Any) -> int:
    """``log_every_n_steps`` sized to the training loader: the configured interval
    (Lightning's default 50), but at most the loader's number of batches, so a cycle with
    few labelled images still logs its training loss (and Lightning does not warn)."""
    interval = int(configured) if configured else 50
    pool = getattr(datamodule, "pool", None)
    batch = getattr(datamodule, "batch_size", None)
    if pool is None or not batch:
        return interval
    batches = math.ceil(len(pool.labelled_images()) / int(batch))
    return max(1, min(interval, batches))
