"""The active-learning cycle driver and its Lightning callbacks.

:class:`ActiveLoop` (``callback.py``) scores the pool and buys labels inside any
``Trainer.fit`` (the adapter protocol is in ``adapter.py``); :class:`CycleTracker` keeps
one cycle's best weights. The driver below runs ``mtal loop`` and selects through
``ActiveLoop.select``.

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

from mtal.loop.adapter import ActiveModule, ScoringNetwork
from mtal.loop.callback import Acquisition, ActiveLoop, CycleTracker
from mtal.loop.crash import CRASH_ENV, CRASH_POINTS, crash_point, parse_crash_spec
from mtal.loop.driver import ActiveLearningLoop, CycleResult
from mtal.loop.oracle import apply_selection
from mtal.loop.runfolder import (
    STATE_SCHEMA,
    STATE_VERSION,
    MetricsTable,
    RunFolder,
    cpu_state,
    load_weights,
    pool_stats,
    save_weights,
    write_selection_csv,
)
from mtal.loop.settings import (
    LoopSettings,
    budget_in_labels,
    check_budget,
    derive_seed,
    run_dir_for,
    validate_settings,
)

__all__ = [
    "CRASH_ENV",
    "CRASH_POINTS",
    "STATE_SCHEMA",
    "STATE_VERSION",
    "Acquisition",
    "ActiveLearningLoop",
    "ActiveLoop",
    "ActiveModule",
    "CycleResult",
    "CycleTracker",
    "LoopSettings",
    "MetricsTable",
    "RunFolder",
    "ScoringNetwork",
    "apply_selection",
    "budget_in_labels",
    "check_budget",
    "cpu_state",
    "crash_point",
    "derive_seed",
    "load_weights",
    "parse_crash_spec",
    "pool_stats",
    "run_dir_for",
    "save_weights",
    "validate_settings",
    "write_selection_csv",
]
