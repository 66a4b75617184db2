"""Oracles: where the loop's labels come from. ``simulated`` buys them from the
dataset's own annotations; ``human`` writes a labelling request and stops until
``mtal label import`` brings them back (see :mod:`mtal.labelling`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from mtal.registry import Registry

if TYPE_CHECKING:
    from mtal.acquisition.base import Selection
    from mtal.data.pool import LabelPool


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


#: ``loop.oracle`` → oracle class
ORACLES: Registry[Any] = Registry("oracle")


@ORACLES.register("simulated")
class SimulatedOracle:
    """The dataset's own labels: the driver buys them itself (``apply_selection``)."""

    #: every label is known, so ``diag/*`` (score vs true loss) can be measured
    knows_labels = True

    def check(self, datamodule: Any) -> None:
        """Every dataset can be simulated."""

    def request(self, loop: Any, cycle: int, pool: Any, budget: int, state: dict) -> bool:
        """Nothing to request: the loop goes on with its own acquisition."""
        return False


@ORACLES.register("human")
class HumanOracle:
    """Labels from people: select, write the request, stop (the loop's ``run`` returns
    with ``loop.pending_request`` set; ``mtal loop`` exits with status 3)."""

    #: unlabelled images have no labels yet: no ``diag/*`` (it would read missing files)
    knows_labels = False

    def check(self, datamodule: Any) -> None:
        """The dataset must read per-task label files (checked before any fit)."""
        from mtal.labelling.validate import check_file_dataset

        check_file_dataset(datamodule.train_dataset)

    def request(self, loop: Any, cycle: int, pool: Any, budget: int, state: dict) -> bool:
        """Write (or find) the request of the labels for ``cycle + 1`` and stop."""
        from mtal.labelling.human import request_labels, stop_message

        req = request_labels(loop, cycle, pool, budget, state, ["labelstudio"])
        loop.pending_request = req
        loop.progress(stop_message(loop.run_dir, req))
        return True


def create_oracle(name: str) -> Any:
    """The oracle registered as ``name``."""
    return ORACLES.create(name)
