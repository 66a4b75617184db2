"""Acquisition diagnostics: does a selection score predict what the model gets wrong?

In simulation every label is known. After a strategy's ``select()`` has returned (it
never sees them), the true labels of the images it scored are read through a separate
oracle path — a fully labelled *copy* of the pool attached to the datamodule for one
plain forward pass, the datamodule's own pool re-attached afterwards — and the true
per-sample task loss ``L_k(ŷ_k(x), y_k)`` of the model's final prediction is computed
with the task's own loss. Recorded (``diag/*``):

- ``diag/<task>/spearman``: Spearman rank correlation over the scored images between the
  strategy's score of task k and ``L_k`` (for an image strategy without per-task scores,
  its image score; for a pair strategy, over the images whose task-k pair was scored);
- ``diag/image/spearman``: the image score against the weighted total ``Σ_k w_k L_k``
  (``w_k`` the config's task weights; image strategies only);
- ``diag/scored``: how many images entered the correlations.

A correlation is NaN when fewer than 3 images or a constant column make it undefined.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: fewest images a correlation is computed on (below: NaN)
MIN_IMAGES = 3


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's ρ of the finite pairs of ``x``/``y`` (``scipy.stats.spearmanr``, ties
    averaged); NaN with fewer than :data:`MIN_IMAGES` pairs or a constant side."""
    from scipy.stats import spearmanr

    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < MIN_IMAGES or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def oracle_task_losses(ctx: Any, images: np.ndarray) -> np.ndarray:
    """True per-sample losses ``[n, K]`` of the model's final predictions on ``images``
    (rows follow ``images``), read through a fully labelled copy of ``ctx.pool``; NaN
    where an image has no valid pixel for a task. ``ctx.pool`` is never modified."""
    import torch

    from mtal.acquisition.scoring import forward, stream_summaries

    images = np.asarray(images, dtype=np.int64).reshape(-1)
    names = list(ctx.tasks)
    if images.size == 0:
        return np.zeros((0, len(names)))
    dm = ctx.datamodule
    if not (hasattr(dm, "attach_pool") and hasattr(dm, "pool")):
        raise TypeError(
            f"diagnostics read the true labels through the datamodule, but "
            f"{type(dm).__name__} has no pool/attach_pool; use mtal.data.ActiveDataModule "
            "or set loop.diagnostics: false"
        )
    oracle = ctx.pool.copy()
    missing = ~np.asarray(oracle.labelled, dtype=bool)[images]
    rows, cols = np.nonzero(missing)
    if rows.size:
        pairs = np.stack([images[rows], cols], axis=1).astype(np.int64)
        oracle.label_pairs(pairs, cycle=int(np.max(oracle.cycle, initial=0)) + 1)

    def summarise(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        out = forward(ctx, batch)
        cols = []
        for n, task in ctx.tasks.items():
            target = batch["targets"][n]
            loss = task.loss(out.final[n], target).reshape(-1).float()
            if hasattr(task, "valid_mask"):
                mask = task.valid_mask(target)
                # per pixel (B×H×W) for dense tasks, per sample (B) for boxes
                valid = mask.flatten(1).any(1) if mask.dim() > 1 else mask.to(torch.bool)
                valid = valid.to(loss.device)
                loss = torch.where(valid, loss, torch.full_like(loss, float("nan")))
            cols.append(loss)
        return {"loss": torch.stack(cols, dim=1)}

    original = dm.pool
    dm.attach_pool(oracle)
    try:
        got = stream_summaries(ctx, images, summarise, with_labels=True)
    finally:
        dm.attach_pool(original)
    return got["loss"].numpy().astype(np.float64)


def correlations(
    scored: Any,
    losses: np.ndarray,
    task_names: Sequence[str],
    weights: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """``diag/*`` correlations of a :class:`~mtal.acquisition.base.ScoredPool` against the
    true losses ``[n, K]`` (rows follow ``scored.images``)."""
    losses = np.asarray(losses, dtype=np.float64)
    w = np.array([float((weights or {}).get(t, 1.0)) for t in task_names])
    out: dict[str, float] = {"diag/scored": float(len(scored.images))}
    for k, t in enumerate(task_names):
        col = scored.task_scores[:, k] if scored.task_scores is not None else None
        if col is None or not np.isfinite(col).any():
            col = scored.image_score
        out[f"diag/{t}/spearman"] = float("nan") if col is None else spearman(col, losses[:, k])
    if scored.image_score is not None:
        total = np.nansum(losses * w, axis=1)
        total[~np.isfinite(losses).any(axis=1)] = np.nan
        out["diag/image/spearman"] = spearman(scored.image_score, total)
    return out


def subsample(scored: Any, max_images: int | None, seed: int) -> Any:
    """``scored`` restricted to a seeded random subset of at most ``max_images`` rows."""
    from mtal.acquisition.base import ScoredPool

    n = len(scored.images)
    if max_images is None or n <= max_images:
        return scored
    keep = np.sort(np.random.default_rng(seed).choice(n, size=int(max_images), replace=False))
    return ScoredPool(
        scored.images[keep],
        None if scored.image_score is None else scored.image_score[keep],
        None if scored.task_scores is None else scored.task_scores[keep],
    )


def acquisition_diagnostics(
    strategy: Any,
    ctx: Any,
    weights: Mapping[str, float] | None = None,
    max_images: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """The ``diag/*`` numbers of ``strategy``'s last ``select(ctx, ...)``: one plain
    forward over (a seeded subsample of at most ``max_images`` of) the scored images.
    Empty when the strategy ranked nothing (Core-Set's k-center has no score)."""
    scored = getattr(strategy, "last_scored", None)
    if scored is None or len(scored.images) == 0:
        return {}
    scored = subsample(scored, max_images, seed)
    losses = oracle_task_losses(ctx, scored.images)
    return correlations(scored, losses, list(ctx.tasks), weights)


def module_task_weights(module: Any) -> dict[str, float]:
    """The headline task weights of a :class:`~mtal.training.module.MultiTaskModule`
    (``loss_weights_for_metric``/``task_weights``, else 1 per task)."""
    names = list(getattr(module, "task_names", []))
    buf = getattr(module, "metric_weights", None)
    if buf is None or len(names) != len(buf):
        return {t: 1.0 for t in names}
    return {t: float(v) for t, v in zip(names, buf.tolist())}


# --------------------------------------------------------------------------- mtal diagnose

#: ``mtal diagnose``'s default rows: label -> {"strategy": name, **strategy kwargs}
DIAGNOSE_METHODS: dict[str, dict[str, Any]] = {
    "mtal[initial,learnable]": {
        "strategy": "mtal",
        "anchor": "initial",
        "committee_mode": "learnable",
    },
    "mtal[initial,shared]": {"strategy": "mtal", "anchor": "initial", "committee_mode": "shared"},
    "mtal[final,learnable]": {"strategy": "mtal", "anchor": "final", "committee_mode": "learnable"},
    "mtal[final,shared]": {"strategy": "mtal", "anchor": "final", "committee_mode": "shared"},
    "partal": {"strategy": "partal"},
    "partal[mc_scope=final]": {"strategy": "partal", "mc_scope": "final"},
    "equal": {"strategy": "equal"},
    "rbal": {"strategy": "rbal"},
    "ll4al": {"strategy": "ll4al"},
    "random": {"strategy": "random"},
}


def diagnose_rows(
    module: Any,
    datamodule: Any,
    methods: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    max_images: int | None = None,
    seed: int = 0,
    cycle: int = 0,
) -> list[dict[str, Any]]:
    """One row per method: select once (the smallest budget) on ``datamodule.pool`` with
    ``module``'s network, then the ``diag/*`` correlations of everything it scored. A
    method the network cannot run (e.g. ll4al without a loss-prediction module) gets a
    row whose ``note`` says why, instead of stopping the table."""
    import torch

    from mtal.acquisition import create_strategy
    from mtal.acquisition.base import AcquisitionContext

    net = getattr(module, "net", module)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net.to(device)
    weights = module_task_weights(module)
    tasks = dict(module.task_objects)
    rows: list[dict[str, Any]] = []
    for label, spec in (methods or DIAGNOSE_METHODS).items():
        spec = dict(spec)
        if "strategy" not in spec:
            raise ValueError(f"diagnose: method {label!r} has no 'strategy' key ({spec})")
        name = spec.pop("strategy")
        row: dict[str, Any] = {"method": label, "strategy": name, "note": ""}
        try:
            strat = create_strategy(name, **spec)
            strat.check_model(net)
            ctx = AcquisitionContext(
                model=net,
                tasks=tasks,
                pool=datamodule.pool,
                datamodule=datamodule,
                device=device,
                cycle=cycle,
                seed=seed,
                state={},
                task_weights=weights,
            )
            budget = len(tasks) if strat.granularity == "image" else 1
            strat.select(ctx, budget)
            diag = acquisition_diagnostics(strat, ctx, weights, max_images, seed)
            if not diag:
                row["note"] = "ranks no score"
            row.update(diag)
        except (ValueError, TypeError) as exc:
            row["note"] = f"skipped: {exc}"
        rows.append(row)
    net.to("cpu")
    return rows


def format_table(rows: Sequence[Mapping[str, Any]], task_names: Sequence[str]) -> str:
    """A fixed-width text table of :func:`diagnose_rows` (ρ with 3 decimals)."""
    cols = [*task_names, "image"]
    head = f"{'method':<26}" + "".join(f"{c:>10}" for c in cols) + f"{'scored':>8}  note"
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(f"diag/{c}/spearman")
            cells.append(f"{'':>10}" if v is None else f"{v:>10.3f}")
        scored = r.get("diag/scored")
        n = f"{int(scored):>8}" if scored is not None else f"{'':>8}"
        lines.append(f"{r['method']:<26}" + "".join(cells) + n + f"  {r['note']}".rstrip())
    return "\n".join(lines)


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | Any) -> None:
    """The rows as CSV (one column per key, in first-seen order), written atomically."""
    import csv
    import io
    from pathlib import Path

    from mtal.io import atomic_write_bytes

    columns: list[str] = []
    for r in rows:
        columns.extend(k for k in r if k not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(Path(path), buffer.getvalue().encode())


def run_diagnose(
    module: Any,
    datamodule: Any,
    *,
    weights: str,
    pool: str | None = None,
    methods: Mapping[str, Mapping[str, Any]] | None = None,
    out: str | None = None,
    max_images: int | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """``mtal diagnose``: load ``weights`` (and the pool state ``pool``, else the
    datamodule's initial pool), print the correlation table, write ``out`` as CSV."""
    from pathlib import Path

    from mtal.data.pool import LabelPool
    from mtal.loop import load_weights

    if not Path(weights).is_file():
        raise FileNotFoundError(
            f"diagnose --weights {weights}: no such file; give a cycle's weights.pt from a run "
            "folder (runs/<experiment>/<strategy>/seed<k>/cycle_<c>/weights.pt)"
        )
    datamodule.setup("fit")
    if pool is not None:
        datamodule.attach_pool(LabelPool.load(Path(pool)))
    try:
        module.load_state_dict(load_weights(Path(weights)))
    except RuntimeError as exc:
        raise ValueError(
            f"diagnose --weights {weights} does not fit the model of this config (keys or "
            f"shapes differ; e.g. a learnable committee or loss-prediction module built in one "
            f"and not the other): use the config of the run that wrote it. {exc}"
        ) from exc
    cycle = int(np.max(datamodule.pool.cycle, initial=0))
    rows = diagnose_rows(module, datamodule, methods, max_images=max_images, seed=seed, cycle=cycle)
    print(format_table(rows, list(module.task_objects)))
    if out is not None:
        write_csv(rows, out)
        print(f"[mtal] wrote {len(rows)} rows to {out}")
    return rows


# --------------------------------------------------------------------------- mtal report


def diagnostics_keys(runs: Mapping[str, list[list[dict[str, float]]]]) -> list[str]:
    """The ``diag/*/spearman`` columns present in any run, image first."""
    keys: set[str] = set()
    for seeds in runs.values():
        for rows in seeds:
            for row in rows:
                keys.update(k for k in row if k.startswith("diag/") and k.endswith("/spearman"))
    image = "diag/image/spearman"
    return ([image] if image in keys else []) + sorted(keys - {image})


def write_diagnostics_report(
    runs: Mapping[str, list[list[dict[str, float]]]], out: Any
) -> Any | None:
    """``diagnostics.md`` (per strategy and cycle: mean ± std over seeds of every
    ``diag/*/spearman``) and ``diagnostics.png`` (the image-score ρ — for pair strategies
    the mean per-task ρ — against % labels) in ``out``; None when no run has diagnostics."""
    from pathlib import Path

    from mtal.report import curve, markdown_table

    keys = diagnostics_keys(runs)
    if not keys:
        return None
    out = Path(out)
    rows: list[dict[str, str]] = []
    lines: list[tuple[str, Any]] = []
    for strategy in sorted(runs):
        curves = {k: curve(strategy, runs[strategy], k) for k in keys}
        curves = {k: c for k, c in curves.items() if c is not None}
        if not curves:
            continue
        first = next(iter(curves.values()))
        for i, x in enumerate(first.x):
            row = {"strategy": strategy, "% labels": f"{x:.1f}"}
            for k in keys:
                c = curves.get(k)
                row[k.removeprefix("diag/").removesuffix("/spearman")] = (
                    f"{c.mean[i]:.3f} ± {c.std[i]:.3f}" if c is not None and i < len(c.x) else ""
                )
            rows.append(row)
        image = curves.get("diag/image/spearman")
        if image is not None:
            lines.append((f"{strategy} (image score)", image))
        else:
            tasks = [c for c in curves.values() if len(c.x) == len(first.x)]
            mean = np.mean([c.mean for c in tasks], axis=0)
            lines.append((f"{strategy} (mean over tasks)", (first.x, mean)))
    columns = [
        "strategy",
        "% labels",
        *[k.removeprefix("diag/").removesuffix("/spearman") for k in keys],
    ]
    text = (
        "Spearman ρ between each strategy's score and the true loss of the model's final "
        "prediction on the images it scored (mean ± std over seeds; `image`: the image "
        "score vs the weighted total loss).\n\n" + markdown_table(rows, columns)
    )
    (out / "diagnostics.md").write_text(text)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4.0), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    for label, c in lines:
        x, y = (c.x, c.mean) if hasattr(c, "mean") else c
        ax.plot(x, y, marker="o", label=label)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel("% of labels (image/task pairs)")
    ax.set_ylabel("Spearman ρ(score, true loss)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "diagnostics.png")
    return out / "diagnostics.md"
