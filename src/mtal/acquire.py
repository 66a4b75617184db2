"""One-off acquisition (``mtal acquire``): a selection from saved weights and a pool
state, exported as a CSV a labelling team can work from.

Everything is read and validated (pool checksum, weights, strategy, budget) before
anything is written; the CSV and the optional updated pool are written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import seed_everything

from mtal.loop import (
    LoopSettings,
    apply_selection,
    budget_in_labels,
    check_budget,
    derive_seed,
    load_weights,
    write_selection_csv,
)


def acquire_once(
    module: Any,
    datamodule: Any,
    *,
    weights: Path,
    pool: Path,
    budget: float,
    budget_unit: str,
    strategy: str,
    strategy_kwargs: dict[str, Any],
    out: Path,
    pool_out: Path | None = None,
    cycle: int | None = None,
    seed: int = 0,
    clamp_budget: bool = False,
) -> Path:
    """Score the pool with ``strategy`` and write the request CSV to ``out``.

    ``cycle`` is the cycle the labels are bought for (default: the pool's newest cycle
    + 1); the pool file is never modified in place, and with ``pool_out`` the pool
    including the requested labels (marked with ``cycle``) is written there atomically.
    The selection is made by cycle ``cycle - 1`` and seeded exactly as the loop seeds it,
    so for the loop's weights and pool of cycle ``c`` it repeats the loop's request
    ``selections/cycle_<c+1>.csv`` (for strategies without cross-cycle state).
    """
    from mtal.acquisition import create_strategy
    from mtal.acquisition.base import AcquisitionContext
    from mtal.data.pool import LabelPool
    from mtal.diagnostics import module_task_weights

    chooser = create_strategy(strategy, clamp_budget=clamp_budget, **strategy_kwargs)
    label_pool = LabelPool.load(pool)
    datamodule.attach_pool(label_pool)
    module.load_state_dict(load_weights(weights))
    if cycle is None:
        cycle = int(label_pool.cycle.max()) + 1
    if cycle < 1:
        raise ValueError(f"acquire: cycle={cycle}; labels are bought for cycle 1 or later")
    settings = LoopSettings(budget=budget, budget_unit=budget_unit)  # type: ignore[arg-type]
    labels = budget_in_labels(settings, len(label_pool.image_ids), len(label_pool.tasks))
    check_budget(chooser, label_pool, labels, 1, clamp_budget)
    select_seed = derive_seed(seed, "select", cycle - 1)
    seed_everything(select_seed, workers=True, verbose=False)
    net = getattr(module, "net", module)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net.to(device)
    ctx = AcquisitionContext(
        model=net,
        tasks=dict(module.task_objects),
        pool=label_pool,
        datamodule=datamodule,
        device=device,
        cycle=cycle - 1,
        seed=select_seed,
        state={},
        task_weights=module_task_weights(module),
    )
    selection = chooser.select(ctx, labels)
    net.to("cpu")
    updated = label_pool.copy()
    apply_selection(updated, selection, cycle)  # validates the selection before any write
    write_selection_csv(out, selection, label_pool, datamodule.train_dataset, cycle)
    if pool_out is not None:
        updated.save(pool_out)
    print(f"[mtal] wrote {len(selection.images)} images / {len(selection.pairs)} labels to {out}")
    return out
