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

    check_outputs(pool, out, pool_out)
    chooser = create_strategy(strategy, clamp_budget=clamp_budget, **strategy_kwargs)
    label_pool = LabelPool.load(pool)
    datamodule.attach_pool(label_pool)
    try:
        module.load_state_dict(load_weights(weights))
    except RuntimeError as exc:  # missing/unexpected keys or shapes
        raise ValueError(
            f"acquire: weights file {weights} does not fit the configured model: "
            f"{str(exc).splitlines()[0]}; use the model config of the run that wrote it"
        ) from exc
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
    )
    selection = chooser.select(ctx, labels)
    net.to("cpu")
    updated = label_pool.copy()
    apply_selection(updated, selection, cycle)  # validates the selection before any write
    write_selection_csv(out, selection, label_pool, datamodule.train_dataset, cycle, replace=True)
    if pool_out is not None:
        updated.save(pool_out)
    print(f"[mtal] wrote {len(selection.images)} images / {len(selection.pairs)} labels to {out}")
    return out


def check_outputs(pool: Path, out: Path, pool_out: Path | None) -> None:
    """``--out``/``--pool_out`` must not be the input pool (or each other), and their
    folders must exist (a typo is not silently turned into a new folder)."""
    outputs = {"out": out} if pool_out is None else {"out": out, "pool_out": pool_out}
    for name, path in outputs.items():
        if path.resolve() == pool.resolve():
            raise ValueError(
                f"acquire: --{name} {path} is the input --pool; writing there would destroy "
                f"the pool; choose another file"
            )
        if not path.parent.is_dir():
            raise FileNotFoundError(
                f"acquire: the folder of --{name} {path} does not exist; create "
                f"{path.parent} first or fix the path"
            )
    if pool_out is not None and out.resolve() == pool_out.resolve():
        raise ValueError(f"acquire: --out and --pool_out are the same file {out}")
