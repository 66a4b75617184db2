"""``mtal label import``: bring the labels of one request back into the run.

Nothing is written until the whole delivery is checked: every requested pair has a
label (unless ``partial``), no label belongs to a pair that was not requested, every
label loads through the dataset's own reader, and no copy would overwrite a different
file. Then the labels are copied into the dataset's layout (atomic per file), the import
record ``requests/<id>.import.json`` is written, and last the new pool file (atomic):
its existence is the proof of the import, so an interrupted import is simply rerun.

Sources: a folder in the dataset's own layout (paths like the dataset root's, e.g.
``segmentation/<id>.png``; the dataset root itself means the labels are already in
place), or a delivery list (``.json`` list of ``{image_id, task, path}`` or ``.csv``
with those columns; paths relative to the list's folder).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtal.io import atomic_write_bytes, atomic_write_json
from mtal.labelling.manifest import LabelRequest, pool_sha256, read_request
from mtal.labelling.validate import LabelImportError, check_file_dataset, validate_label

Pair = tuple[int, str]
_SHOWN = 12


@dataclass
class ImportResult:
    """What one import did."""

    request_id: str
    pool_path: Path
    imported: list[Pair]
    missing: list[Pair]


def _listing(items: list[str], what: str) -> str:
    more = f"\n  ... and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return f"{len(items)} {what}:\n  " + "\n  ".join(items[:_SHOWN]) + more


def open_dataset(request: LabelRequest) -> Any:
    """The training dataset the request was made on (from the manifest's spec)."""
    from mtal.data import create_dataset

    spec = request.dataset
    return create_dataset(
        spec["name"], split=spec["split"], tasks=spec["tasks"], root=spec["root"], **spec["kwargs"]
    )


def _from_folder(
    folder: Path, request: LabelRequest, dataset: Any, num_images: int
) -> tuple[dict[Pair, Path], list[str]]:
    """Delivered files of a layout folder → (pair → file, refusals)."""
    root = Path(dataset.root).resolve()
    wanted = {p["label_path"]: (int(p["image_index"]), p["task"]) for p in request.pairs}
    if folder.resolve() == root:  # in place: the labels are already in the dataset
        found = {pair: root / rel for rel, pair in wanted.items() if (root / rel).exists()}
        return found, []
    layout = {
        Path(dataset.task_path(i, t)).relative_to(root).as_posix(): (i, t)
        for i in range(num_images)
        for t in request.tasks
    }
    found, refused = {}, []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel in wanted:
            found[wanted[rel]] = path
        elif rel in layout:
            i, t = layout[rel]
            refused.append(
                f"{path}: label of ({dataset.image_id(i)}, {t}), which was not requested"
            )
        else:
            refused.append(f"{path}: not a label file of this dataset's layout")
    return found, refused


def _from_list(
    listing: Path, request: LabelRequest, dataset: Any
) -> tuple[dict[Pair, Path], list[str]]:
    """Delivered files of a delivery list → (pair → file, refusals)."""
    try:
        if listing.suffix == ".json":
            rows = json.loads(listing.read_text(encoding="utf-8"))
        elif listing.suffix == ".csv":
            with listing.open(newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
        else:
            raise LabelImportError(
                f"{listing}: a delivery list is a .json list or a .csv with columns "
                "image_id,task,path"
            )
        entries = [(str(r["image_id"]), str(r["task"]), str(r["path"])) for r in rows]
    except (OSError, json.JSONDecodeError, KeyError, TypeError, csv.Error) as err:
        raise LabelImportError(
            f"{listing}: cannot read the delivery list ({err!r}); expected rows with "
            "image_id, task and path"
        ) from err
    index_of = {p["image_id"]: int(p["image_index"]) for p in request.pairs}
    requested = request.pair_keys()
    found, refused = {}, []
    for image_id, task, rel in entries:
        pair = (index_of.get(image_id, -1), task)
        if pair not in requested:
            refused.append(f"{listing}: ({image_id}, {task}) was not requested")
        elif pair in found:
            refused.append(f"{listing}: ({image_id}, {task}) is listed twice")
        else:
            found[pair] = listing.parent / rel
    return found, refused


def import_labels(
    run: str | Path, request_id: str, source: str | Path, *, partial: bool = False
) -> ImportResult:
    """Check the delivery ``source`` of request ``request_id`` of ``run`` and, when it is
    complete and valid, copy it into the dataset and write the request's new pool."""
    from mtal.data.pool import LabelPool

    run, source = Path(run), Path(source)
    request = read_request(run, request_id)
    target = run / request.pool_out
    if target.exists():
        raise LabelImportError(
            f"request {request_id} is already imported ({target} exists); a request is "
            "imported once — rerun `mtal loop` to continue"
        )
    base = LabelPool.load(run / request.base_pool)
    if pool_sha256(base) != request.base_pool_sha256:
        raise LabelImportError(
            f"{run / request.base_pool} changed since request {request_id} was made; the "
            "request no longer fits the pool"
        )
    dataset = open_dataset(request)
    check_file_dataset(dataset)
    if not source.exists():
        raise LabelImportError(f"--from {source}: no such folder or delivery list")
    if source.is_dir():
        found, refused = _from_folder(source, request, dataset, base.num_images)
    else:
        found, refused = _from_list(source, request, dataset)
    if refused:
        raise LabelImportError(
            f"request {request_id}: refused, nothing imported; "
            + _listing(refused, "files do not belong to the request")
        )
    order = [(int(p["image_index"]), p["task"]) for p in request.pairs]
    rel_of = {(int(p["image_index"]), p["task"]): p["label_path"] for p in request.pairs}
    missing = [pair for pair in order if pair not in found]
    if missing and not partial:
        shown = [f"({dataset.image_id(i)}, {t}): {rel_of[(i, t)]}" for i, t in missing]
        raise LabelImportError(
            f"request {request_id}: refused, nothing imported; "
            + _listing(shown, "requested labels are missing")
            + "\ndeliver them, or pass --partial to import what is there"
        )
    problems = []
    root = Path(dataset.root)
    for pair in order:
        if pair not in found:
            continue
        problem = validate_label(dataset, pair[0], pair[1], found[pair])
        dest = root / rel_of[pair]
        if problem is None and dest.resolve() != found[pair].resolve() and dest.exists():
            if dest.read_bytes() != found[pair].read_bytes():
                problem = f"{dest} exists with other content; remove it or import in place"
        if problem is not None:
            problems.append(f"({dataset.image_id(pair[0])}, {pair[1]}): {problem}")
    if problems:
        raise LabelImportError(
            f"request {request_id}: refused, nothing imported; "
            + _listing(problems, "labels do not load as this dataset's labels")
        )
    # -- checked: write
    for pair in order:
        if pair in found and (root / rel_of[pair]).resolve() != found[pair].resolve():
            atomic_write_bytes(root / rel_of[pair], found[pair].read_bytes())
    imported = [pair for pair in order if pair in found]
    by_pair = {(int(p["image_index"]), p["task"]): p for p in request.pairs}
    atomic_write_json(
        run / "requests" / f"{request_id}.import.json",
        {
            "request_id": request_id,
            "source": str(source.resolve()),
            "imported": [[dataset.image_id(i), t] for i, t in imported],
            "missing": [[dataset.image_id(i), t] for i, t in missing],
        },
    )
    pool = base.copy()
    if imported:
        rows = [by_pair[p] for p in imported]
        weights = [r["weight"] for r in rows]
        pool.label_pairs(
            np.array([[i, base.task_index(t)] for i, t in imported], dtype=np.int64),
            request.cycle,
            weights=None if any(w is None for w in weights) else weights,
            scores=[np.nan if r["score"] is None else r["score"] for r in rows],
        )
    pool.save(target)
    return ImportResult(request_id, target, imported, missing)
