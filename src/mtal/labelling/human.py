"""``loop.oracle: human``: at an acquisition the loop selects, writes the labelling
request and stops (exit status :data:`~mtal.labelling.EXIT_LABELS_REQUESTED`); after
``mtal label import`` wrote the next pool, rerunning the same command continues.

Crash-safe in the order of its atomic writes: ``state.json`` (the strategy state for
the next cycle) → ``selections/cycle_<c>.csv`` → the exports → ``requests/<id>.json``.
The manifest is the proof that the labels were requested: a rerun before the import
finds it and stops again without selecting (no label requested twice); a crash before
it re-selects, seeded exactly as before, so the same request is written. The crash
points ``before_pool_write``/``after_pool_write`` fire around the manifest write.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from mtal.labelling.export import EXPORTERS
from mtal.labelling.manifest import (
    LabelRequest,
    dataset_spec,
    find_request,
    pool_sha256,
    request_id_for,
    request_path,
    requested_pairs,
    write_request,
)
from mtal.labelling.validate import check_file_dataset


def stop_message(run: Path, request: LabelRequest) -> str:
    """What the user reads when the loop stops for labels."""
    exports = ", ".join(str(run / p) for p in request.exports.values())
    images = len({p["image_id"] for p in request.pairs})
    return (
        f"[mtal] labels requested: {len(request.pairs)} labels on {images} images for cycle "
        f"{request.cycle} (request {request.request_id}: {request_path(run, request.request_id)}"
        f"{'; ' + exports if exports else ''}).\n"
        f"[mtal] import them with: mtal label import --run {run} --request "
        f"{request.request_id} --from <folder in the dataset layout | delivery list>\n"
        f"[mtal] then rerun this command to continue with the fit of cycle {request.cycle}."
    )


def request_labels(
    loop: Any, cycle: int, pool: Any, budget: int, state: dict[str, Any], formats: list[str]
) -> LabelRequest:
    """Select for ``cycle + 1`` and write the request (or find the one already written)."""
    from mtal.loop.crash import crash_point
    from mtal.loop.oracle import apply_selection
    from mtal.loop.runfolder import write_selection_csv

    run, dm = loop.run_dir, loop.datamodule
    pending = find_request(run, cycle + 1)
    if pending is not None:
        return pending
    check_file_dataset(dm.train_dataset)
    strategy_state = copy.deepcopy(state["strategy_state_at"][str(cycle)])
    crash_point("before_select")
    selection = loop._acquire(cycle, pool, budget, state, strategy_state)
    crash_point("after_select")
    apply_selection(pool.copy(), selection, cycle + 1)  # validates the selection
    state["strategy_state_at"][str(cycle + 1)] = strategy_state
    loop._write_state(state)
    csv_path = loop.selection_path(cycle + 1)
    write_selection_csv(csv_path, selection, pool, dm.train_dataset, cycle + 1)
    request = LabelRequest(
        request_id=request_id_for(pool, selection, cycle + 1),
        cycle=cycle + 1,
        dataset=dataset_spec(dm),
        tasks=list(pool.tasks),
        base_pool=loop.pool_path(cycle).relative_to(run).as_posix(),
        base_pool_sha256=pool_sha256(pool),
        pool_out=loop.pool_path(cycle + 1).relative_to(run).as_posix(),
        pairs=requested_pairs(selection, pool, dm.train_dataset),
        exports={"csv": csv_path.relative_to(run).as_posix()},
    )
    for name in formats:
        request.exports.update(EXPORTERS.get(name)(request, run, dm.train_dataset))
    crash_point("before_pool_write")
    write_request(run, request)
    crash_point("after_pool_write")
    return request
