"""The labelling request manifest ``<run>/requests/<id>.json``: the requested (image,
task) pairs with their scores and weights, the cycle they are bought for, the pool they
extend (by checksum) and the new pool file the import writes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mtal.io import read_checked_json, write_checked_json

if TYPE_CHECKING:
    from mtal.acquisition.base import Selection
    from mtal.data.pool import LabelPool

REQUEST_SCHEMA = "mtal.labelrequest"
REQUEST_VERSION = 1


@dataclass
class LabelRequest:
    """One labelling request. Paths in ``base_pool``/``pool_out``/``exports`` are relative
    to the run folder; ``label_path`` of a pair is relative to the dataset root."""

    request_id: str
    cycle: int
    dataset: dict[str, Any]
    tasks: list[str]
    base_pool: str
    base_pool_sha256: str
    pool_out: str
    #: one dict per requested pair: image_index, image_id, task, label_path, score, weight
    pairs: list[dict[str, Any]]
    exports: dict[str, str] = field(default_factory=dict)

    def pair_keys(self) -> set[tuple[int, str]]:
        """The requested ``(image_index, task)`` pairs."""
        return {(int(p["image_index"]), str(p["task"])) for p in self.pairs}


def pool_sha256(pool: LabelPool) -> str:
    """SHA-256 of a pool's canonical state (ties a request to the pool it extends)."""
    text = json.dumps(pool.state_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def request_id_for(pool: LabelPool, selection: Selection, cycle: int) -> str:
    """``c<cycle>-<8 hex>``: stable for the same pool, selection and cycle."""
    pairs = np.asarray(selection.pairs, dtype=np.int64).reshape(-1, 2).tolist()
    digest = hashlib.sha256(f"{pool_sha256(pool)}/{cycle}/{pairs}".encode()).hexdigest()
    return f"c{cycle:03d}-{digest[:8]}"


def requested_pairs(selection: Selection, pool: LabelPool, dataset: Any) -> list[dict[str, Any]]:
    """The pairs of ``selection`` with ids, label paths (relative to the dataset root),
    scores and weights."""
    root = Path(dataset.root) if hasattr(dataset, "root") else None
    row = {int(img): r for r, img in enumerate(np.asarray(selection.images).tolist())}
    out = []
    for image, column in np.asarray(selection.pairs, dtype=np.int64).reshape(-1, 2).tolist():
        task = pool.tasks[column]
        r = row[int(image)]
        score = float(selection.scores[r, column]) if selection.scores is not None else None
        weight = float(selection.weights[r, column]) if selection.weights is not None else None
        out.append(
            {
                "image_index": int(image),
                "image_id": pool.image_ids[image],
                "task": task,
                "label_path": None
                if root is None or not hasattr(dataset, "task_path")
                else Path(dataset.task_path(int(image), task)).relative_to(root).as_posix(),
                "score": None if score is None or not np.isfinite(score) else score,
                "weight": weight,
            }
        )
    return out


def requests_dir(run: Path) -> Path:
    """``<run>/requests``."""
    return Path(run) / "requests"


def relative_to_run(run: Path, path: Path) -> str:
    """``path`` relative to ``run`` when inside it, else absolute."""
    try:
        return Path(path).resolve().relative_to(Path(run).resolve()).as_posix()
    except ValueError:
        return str(Path(path).resolve())


def request_path(run: Path, request_id: str) -> Path:
    """``<run>/requests/<id>.json``."""
    return requests_dir(run) / f"{request_id}.json"


def write_request(run: Path, request: LabelRequest) -> Path:
    """Write the manifest atomically (checksummed)."""
    return write_checked_json(
        request_path(run, request.request_id), asdict(request), REQUEST_SCHEMA, REQUEST_VERSION
    )


def read_request(run: Path, request_id: str) -> LabelRequest:
    """Read ``<run>/requests/<id>.json``; a missing one lists the requests that exist."""
    path = request_path(run, request_id)
    if not path.is_file():
        known = sorted(p.stem for p in requests_dir(run).glob("*.json") if p.stem.count(".") == 0)
        raise FileNotFoundError(
            f"no labelling request {request_id!r}: {path} does not exist; requests in {run}: "
            f"{known or 'none'}"
        )
    return LabelRequest(**read_checked_json(path, REQUEST_SCHEMA, REQUEST_VERSION))


def find_request(run: Path, cycle: int) -> LabelRequest | None:
    """The request of ``run`` for labels bought for ``cycle``, or None."""
    for path in sorted(requests_dir(run).glob(f"c{cycle:03d}-*.json")):
        if path.stem.count(".") == 0:
            return read_request(run, path.stem)
    return None


def dataset_spec(datamodule: Any) -> dict[str, Any]:
    """What the import needs to rebuild the training dataset (registry name and args)."""
    ds = datamodule.train_dataset
    return {
        "name": datamodule.dataset_name,
        "root": str(Path(ds.root).resolve()) if hasattr(ds, "root") else None,
        "split": datamodule.splits["train"],
        "tasks": list(datamodule.tasks),
        "kwargs": {k: v for k, v in datamodule.dataset_kwargs.items() if k != "root"},
    }
