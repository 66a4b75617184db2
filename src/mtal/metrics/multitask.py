"""Scalar multi-task summaries: weighted loss, Δm and mDSQ (pure Python, no torch)."""

from __future__ import annotations

from collections.abc import Mapping


def _value(x: object, what: str) -> float:
    try:
        return float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError) as err:
        raise TypeError(f"{what} must be a number or a 0-d tensor, got {x!r}") from err


def multi_task_loss(losses: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """Σ_k w_k · L_k over the tasks in ``losses``; every task needs a weight."""
    missing = sorted(set(losses) - set(weights))
    if missing:
        raise KeyError(
            f"multi_task_loss: no weight for task(s) {missing}; weights given for "
            f"{sorted(weights)} (set them in the experiment config's loss weights)"
        )
    return sum(
        _value(weights[k], f"weight {k!r}") * _value(v, f"loss {k!r}") for k, v in losses.items()
    )


def delta_m(
    metrics: Mapping[str, float],
    references: Mapping[str, float],
    higher_is_better: Mapping[str, bool],
) -> float:
    """Δm = (1/K) Σ_k (−1)^{l_k} (M_k − M_ref,k) / M_ref,k × 100 (Maninis et al. 2019),
    with l_k = 1 when lower is better; positive Δm means better than the reference."""
    if not metrics:
        raise ValueError("delta_m: no metrics given")
    missing = sorted(set(metrics) - set(references)) + sorted(set(metrics) - set(higher_is_better))
    if missing:
        raise KeyError(
            f"delta_m: task(s) {sorted(set(missing))} lack a reference value or a "
            "higher_is_better flag"
        )
    total = 0.0
    for task, value in metrics.items():
        ref = _value(references[task], f"reference of {task!r}")
        if ref == 0:
            raise ValueError(
                f"delta_m: reference of {task!r} is 0, the relative change is undefined"
            )
        sign = 1.0 if higher_is_better[task] else -1.0
        total += sign * (_value(value, f"metric {task!r}") - ref) / ref * 100.0
    return total / len(metrics)


def mdsq(map_: float, miou: float, map_full: float, miou_full: float) -> float:
    """mDSQ = (mAP / mAP_full + mIoU / mIoU_full) / 2: detection and segmentation quality
    relative to training on the full labelled set (Hekimoglu et al.)."""
    if map_full <= 0 or miou_full <= 0:
        raise ValueError(
            f"mdsq: full-data references must be > 0, got mAP_full={map_full}, "
            f"mIoU_full={miou_full}"
        )
    return (map_ / map_full + miou / miou_full) / 2.0
