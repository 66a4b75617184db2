"""Run-folder I/O: paths, the checked state file, weights, ``metrics.csv`` and the
label-request CSV (all written atomically)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mtal.io import StateFileError, atomic_write_bytes, read_checked_json, write_checked_json
from mtal.loop.crash import crash_point
from mtal.tracking import redact

if TYPE_CHECKING:
    from mtal.acquisition.base import Selection
    from mtal.data.pool import LabelPool

STATE_SCHEMA = "mtal.loopstate"
#: 2: the strategy state is kept per cycle (``strategy_state_at``)
STATE_VERSION = 2


def cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a module's state dict (the in-memory best weights)."""
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def save_weights(state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Write a plain tensor state dict atomically (loadable with ``weights_only=True``)."""
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Load a state dict written by :func:`save_weights` (``weights_only=True``)."""
    if not path.exists():
        raise FileNotFoundError(f"weights file {path} is missing; delete the run folder to restart")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files
        raise ValueError(f"{path} is not a readable weights file ({exc})") from exc
    if isinstance(state, dict) and "state_dict" in state:  # a Lightning checkpoint
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    return state


class MetricsTable:
    """``metrics.csv``: one row per cycle, rewritten atomically, keyed by cycle."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def rows(self) -> list[dict[str, str]]:
        """The rows so far; a file that is not a metrics table raises naming it."""
        if not self.path.exists():
            return []
        try:
            with self.path.open(newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
            for r in rows:
                int(r["cycle"])
        except (csv.Error, KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
            raise StateFileError(
                f"{self.path} is not an mtal metrics table (a 'cycle' column of integers): "
                f"{exc!r}; restore it or delete the run folder to restart deliberately"
            ) from exc
        return rows

    def row(self, cycle: int) -> dict[str, str] | None:
        """The row of ``cycle``, or None."""
        return next((r for r in self.rows() if int(r["cycle"]) == cycle), None)

    def put(self, row: Mapping[str, Any]) -> None:
        """Insert or replace the row of ``row["cycle"]`` (atomic rewrite)."""
        rows = [r for r in self.rows() if int(r["cycle"]) != int(row["cycle"])]
        rows.append({k: _fmt(v) for k, v in row.items()})
        rows.sort(key=lambda r: int(r["cycle"]))
        columns: list[str] = []
        for r in rows:
            columns.extend(k for k in r if k not in columns)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_bytes(self.path, buffer.getvalue().encode())


def _fmt(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, float):
        return repr(value)
    return str(value)


def write_selection_csv(
    path: Path,
    selection: Selection,
    pool: LabelPool,
    dataset: Any,
    cycle: int,
) -> None:
    """The labelling team's request: one row per image with the tasks to label and the
    per-task scores (written atomically)."""
    tasks = list(pool.tasks)
    buffer = io.StringIO()
    columns = ["cycle", "image_index", "image_id", "image_path", "tasks"]
    columns += [f"score_{t}" for t in tasks] + [f"weight_{t}" for t in tasks]
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    requested: dict[int, list[str]] = {}
    for image, column in np.asarray(selection.pairs).reshape(-1, 2).tolist():
        requested.setdefault(int(image), []).append(tasks[int(column)])
    images = [int(i) for i in np.asarray(selection.images).tolist()]
    for row_index, image in enumerate(images):
        path_of = dataset.image_path(image) if hasattr(dataset, "image_path") else None
        row: dict[str, Any] = {
            "cycle": cycle,
            "image_index": image,
            "image_id": pool.image_ids[image],
            "image_path": "" if path_of is None else str(path_of),
            "tasks": ";".join(t for t in tasks if t in requested.get(image, [])),
        }
        for k, task in enumerate(tasks):
            score = (
                float(selection.scores[row_index, k])
                if selection.scores is not None
                else float("nan")
            )
            row[f"score_{task}"] = "" if not np.isfinite(score) else repr(score)
            weight = selection.weights[row_index, k] if selection.weights is not None else None
            row[f"weight_{task}"] = "" if weight is None else repr(float(weight))
        writer.writerow(row)
    atomic_write_bytes(path, buffer.getvalue().encode())


def pool_stats(pool: LabelPool) -> dict[str, float]:
    """The ``al/*`` figures of a pool: labelled images, labels and their fractions."""
    n, k = pool.labelled.shape
    return {
        "labelled_images": float(pool.num_labelled_images),
        "labels": float(pool.num_labels),
        "labelled_fraction": float(pool.num_labels) / float(n * k),
    }


def is_number(value: str) -> bool:
    """Whether a metrics-table cell parses as a float."""
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


class RunFolder:
    """The files of one run folder ``runs/<experiment>/<strategy>/seed<k>/`` (paths and
    the checked state file); every write is atomic."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def pool_path(self, cycle: int) -> Path:
        """``pool/cycle_<c>.json``: the pool cycle ``c`` trains on."""
        return self.root / "pool" / f"cycle_{cycle:03d}.json"

    def weights_path(self, cycle: int) -> Path:
        """``cycle_<c>/weights.pt``: the best weights of cycle ``c``."""
        return self.root / f"cycle_{cycle:03d}" / "weights.pt"

    def selection_path(self, cycle: int) -> Path:
        """``selections/cycle_<c>.csv``: the request of the labels bought for cycle ``c``."""
        return self.root / "selections" / f"cycle_{cycle:03d}.csv"

    @property
    def state_path(self) -> Path:
        """``state.json``: seeds, step offsets and the per-cycle strategy state."""
        return self.root / "state.json"

    @property
    def init_path(self) -> Path:
        """``init_weights.pt``: the network's weights before cycle 0."""
        return self.root / "init_weights.pt"

    @property
    def metrics_path(self) -> Path:
        """``metrics.csv``: one row per cycle."""
        return self.root / "metrics.csv"

    def latest_pool_cycle(self) -> int | None:
        """The newest cycle with a pool file, or None for a new run."""
        found = sorted(self.root.glob("pool/cycle_*.json"))
        return int(found[-1].stem.split("_")[1]) if found else None

    def read_state(self) -> dict[str, Any] | None:
        """The checked ``state.json``, or None when there is none yet."""
        if not self.state_path.exists():
            return None
        state = read_checked_json(self.state_path, STATE_SCHEMA, STATE_VERSION)
        if not isinstance(state, dict) or not isinstance(state.get("strategy_state_at"), dict):
            raise StateFileError(
                f"state file {self.state_path} lacks 'strategy_state_at'; restore it or "
                "delete the run folder to restart deliberately"
            )
        return state

    def write_state(self, state: Mapping[str, Any]) -> None:
        """Write ``state.json`` (checksummed, atomic)."""
        crash_point("before_state_write")
        write_checked_json(self.state_path, dict(state), STATE_SCHEMA, STATE_VERSION)

    def write_config(self, config: Mapping[str, Any]) -> None:
        """Write the resolved config (secrets redacted) as ``config.yaml``."""
        import yaml

        payload = redact(dict(config))
        text = yaml.safe_dump(json.loads(json.dumps(payload, default=str)), sort_keys=False)
        atomic_write_bytes(self.root / "config.yaml", text.encode())
