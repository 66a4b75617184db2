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

from mtal.distributed import rank_zero_writes
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


@rank_zero_writes  # DDP: only rank 0 writes the run folder
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
            text = self.path.read_text(encoding="utf-8")
            rows = list(csv.DictReader(io.StringIO(text, newline="")))
            for r in rows:
                int(r["cycle"])
        except (csv.Error, KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
            raise StateFileError(
                f"{self.path} is not an mtal metrics table (a 'cycle' column of integers): "
                f"{exc!r}; restore it or delete the run folder to restart deliberately"
            ) from exc
        _check_table(self.path, text, rows)
        return rows

    def row(self, cycle: int) -> dict[str, str] | None:
        """The row of ``cycle``, or None."""
        return next((r for r in self.rows() if int(r["cycle"]) == cycle), None)

    @rank_zero_writes  # DDP: only rank 0 writes the run folder
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


def _check_table(path: Path, text: str, rows: list[dict[str, Any]]) -> None:
    """Refuse a table that was cut or edited: every row has every cell, each cycle once,
    and the file ends with the newline every write ends with."""
    problem = "" if not text or text.endswith("\n") else "the last line is cut short"
    seen: set[int] = set()
    for line, row in enumerate(rows, start=2):
        if problem:
            break
        if None in row or any(v is None for v in row.values()):
            problem = f"line {line} has {len([v for v in row.values() if v is not None])} "
            problem += f"cells, the header {len([k for k in row if k is not None])}"
        elif int(row["cycle"]) in seen:
            problem = f"line {line} repeats cycle {row['cycle']}"
        seen.add(int(row["cycle"]))
    if problem:
        raise StateFileError(
            f"{path} is damaged ({problem}; truncated or edited?); restore it from backup, "
            f"or delete its damaged rows and the matching cycle_<c>/weights.pt so the rerun "
            f"fits those cycles again"
        )


def _fmt(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, float):
        return repr(value)
    return str(value)


@rank_zero_writes  # DDP: only rank 0 writes the run folder
def write_selection_csv(
    path: Path,
    selection: Selection,
    pool: LabelPool,
    dataset: Any,
    cycle: int,
    *,
    replace: bool = False,
) -> None:
    """The labelling team's request: one row per image with the tasks to label and the
    per-task scores (written atomically). An existing request with other content is
    never replaced (labels may already be paid for) unless ``replace``."""
    data = selection_csv(selection, pool, dataset, cycle).encode()
    if not replace and path.exists() and path.read_bytes() != data:
        raise StateFileError(
            f"{path} already holds another request for cycle {cycle} (a team may be "
            f"labelling it), and this rerun selected differently; resume with the settings "
            f"of the run that wrote it (see config.yaml), or move the file away to discard "
            f"that request deliberately"
        )
    atomic_write_bytes(path, data)


def selection_csv(selection: Selection, pool: LabelPool, dataset: Any, cycle: int) -> str:
    """The text of the request CSV (see :func:`write_selection_csv`)."""
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
    return buffer.getvalue()


def pool_stats(pool: LabelPool) -> dict[str, float]:
    """The ``al/*`` figures of a pool: labelled images, labels and their fractions."""
    n, k = pool.labelled.shape
    return {
        "labelled_images": float(pool.num_labelled_images),
        "labels": float(pool.num_labels),
        "labelled_fraction": float(pool.num_labels) / float(n * k),
    }


def check_pool_sense(pool: LabelPool, path: Path, latest: int) -> None:
    """Refuse a pool file that passes its checksum but cannot come from this run: a
    labelled pair needs a cycle in [0, latest] and a finite, non-negative weight."""
    labelled = pool.labelled
    problems = []
    cycles = pool.cycle[labelled]
    if cycles.size and (cycles.min() < 0 or cycles.max() > latest):
        problems.append(
            f"labels bought at cycle(s) {sorted(set(cycles.tolist()) - set(range(latest + 1)))}"
            f" (the file is cycle {latest})"
        )
    weights = pool.weight[labelled]
    if weights.size and not (np.isfinite(weights).all() and (weights >= 0).all()):
        problems.append("NaN, infinite or negative weights s_k of labelled pairs")
    if problems:
        raise StateFileError(
            f"{path} holds {'; '.join(problems)}; restore it from backup or delete the run "
            f"folder to restart deliberately"
        )


def check_run_location(settings: Any) -> None:
    """Refuse a ``loop.experiment``/``loop.name`` that would place the run folder outside
    ``loop.runs_dir`` (``..``, path separators, absolute paths)."""
    from mtal.loop.settings import run_dir_for

    for name, value in (("loop.experiment", settings.experiment), ("loop.name", settings.name)):
        if value is None:
            continue
        if value in ("", ".", "..") or "/" in value or "\\" in value or value != value.strip():
            raise ValueError(
                f"{name}={value!r}: use a plain folder name (letters, digits, '-', '_', '.'), "
                f"not a path; the run folder must stay inside loop.runs_dir="
                f"{settings.runs_dir!r}"
            )
    runs = Path(settings.runs_dir).resolve()
    if not run_dir_for(settings).resolve().is_relative_to(runs):
        raise ValueError(
            f"the run folder {run_dir_for(settings)} lies outside loop.runs_dir={runs}; "
            f"check loop.experiment, loop.name and loop.strategy"
        )


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

    @rank_zero_writes  # DDP: only rank 0 writes the run folder
    def write_state(self, state: Mapping[str, Any]) -> None:
        """Write ``state.json`` (checksummed, atomic)."""
        crash_point("before_state_write")
        write_checked_json(self.state_path, dict(state), STATE_SCHEMA, STATE_VERSION)

    @rank_zero_writes  # DDP: only rank 0 writes the run folder
    def save_pool(self, pool: LabelPool, cycle: int) -> None:
        """Write ``pool/cycle_<c>.json`` (checksummed, atomic)."""
        pool.save(self.pool_path(cycle))

    @rank_zero_writes  # DDP: only rank 0 writes the run folder
    def write_config(self, config: Mapping[str, Any]) -> None:
        """Write the resolved config (secrets redacted) as ``config.yaml``."""
        import yaml

        payload = redact(dict(config))
        text = yaml.safe_dump(json.loads(json.dumps(payload, default=str)), sort_keys=False)
        atomic_write_bytes(self.root / "config.yaml", text.encode())
