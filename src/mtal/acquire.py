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
    cost_budget,
    derive_seed,
    load_weights,
    validate_settings,
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
    task_costs: dict[str, float] | None = None,
    cost_ranking: str = "ratio",
    export_format: str = "csv",
    summary_dir: Path | None = None,
) -> Path:
    """Score the pool with ``strategy`` and write the request CSV to ``out``.

    ``cycle`` is the cycle the labels are bought for (default: the pool's newest cycle
    + 1); the pool file is never modified in place, and with ``pool_out`` the pool
    including the requested labels (marked with ``cycle``) is written there atomically.
    The selection is made by cycle ``cycle - 1`` and seeded exactly as the loop seeds it,
    so for the loop's weights and pool of cycle ``c`` it repeats the loop's request
    ``selections/cycle_<c+1>.csv`` (for strategies without cross-cycle state).

    A request manifest ``<out folder>/requests/<id>.json`` is written too (for
    ``mtal label import --run <out folder> --request <id>``, which writes
    ``requests/<id>.pool.json``); ``export_format="labelstudio"`` adds the Label Studio
    tasks and configs (:mod:`mtal.labelling.export`). ``budget_unit="cost"`` prices
    labels with ``task_costs`` (:mod:`mtal.acquisition.costs`). ``summary_dir`` keeps the
    scoring summaries in memory-mapped unnamed files there (``loop.summary_store: disk``).
    """
    from mtal.acquisition import create_strategy
    from mtal.acquisition.base import AcquisitionContext
    from mtal.data.pool import LabelPool
    from mtal.diagnostics import module_task_weights

    check_outputs(pool, out, pool_out)
    if summary_dir is not None:  # before any scoring: a bad folder leaves nothing behind
        from mtal.buffers import require_folder

        require_folder(summary_dir, "acquire: --summary_dir")
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
    settings = LoopSettings(
        budget=budget,
        budget_unit=budget_unit,  # type: ignore[arg-type]
        task_costs=dict(task_costs or {}),
        cost_ranking=cost_ranking,  # type: ignore[arg-type]
    )
    validate_settings(settings)
    from mtal.labelling.export import EXPORTERS

    exporter = EXPORTERS.get(export_format)  # an unknown --format fails before scoring
    if export_format != "csv":  # a labelling tool needs image files
        from mtal.labelling.validate import check_file_dataset

        check_file_dataset(datamodule.train_dataset)
    labels = budget_in_labels(settings, len(label_pool.image_ids), len(label_pool.tasks))
    cost = cost_budget(settings, label_pool.tasks)
    check_budget(chooser, label_pool, labels, 1, clamp_budget, cost=cost)
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
        cost=cost,
        task_weights=module_task_weights(module),
        summary_dir=None if summary_dir is None else str(summary_dir),
    )
    selection = chooser.select(ctx, labels)
    net.to("cpu")
    updated = label_pool.copy()
    apply_selection(updated, selection, cycle)  # validates the selection before any write
    write_selection_csv(out, selection, label_pool, datamodule.train_dataset, cycle, replace=True)
    if pool_out is not None:
        updated.save(pool_out)
    write_acquire_request(out, pool, label_pool, selection, datamodule, cycle, exporter)
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


def write_acquire_request(
    out: Path,
    pool_file: Path,
    pool: Any,
    selection: Any,
    datamodule: Any,
    cycle: int,
    exporter: Any,
) -> Any:
    """The request manifest (and exports) of a one-off acquisition, in ``out``'s folder."""
    from mtal.labelling.manifest import (
        LabelRequest,
        dataset_spec,
        pool_sha256,
        relative_to_run,
        request_id_for,
        requested_pairs,
        write_request,
    )

    run = Path(out).parent
    request_id = request_id_for(pool, selection, cycle)
    request = LabelRequest(
        request_id=request_id,
        cycle=cycle,
        dataset=dataset_spec(datamodule),
        tasks=list(pool.tasks),
        base_pool=relative_to_run(run, pool_file),
        base_pool_sha256=pool_sha256(pool),
        pool_out=f"requests/{request_id}.pool.json",
        pairs=requested_pairs(selection, pool, datamodule.train_dataset),
        exports={"csv": relative_to_run(run, out)},
    )
    request.exports.update(exporter(request, run, datamodule.train_dataset))
    path = write_request(run, request)
    print(f"[mtal] request {request_id}: {path}")
    return request
