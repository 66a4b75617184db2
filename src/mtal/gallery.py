"""Galleries of what a run picked: one PNG per run and cycle with the thumbnails of the
requested images, the tasks requested (filled square) or not (open square) and each
task's score.

The request CSVs ``selections/cycle_<c>.csv`` of a run folder name the images; the
thumbnails come from the dataset, rebuilt from the run's ``config.yaml`` (``data:``).
matplotlib and the dataset registry are imported inside the functions, so importing
this module stays light.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: marks of a requested / not requested task in a gallery cell
REQUESTED, NOT_REQUESTED = "\u25a0", "\u25a1"


def thumbnail(dataset: Any, index: int, size: int = 96) -> np.ndarray:
    """Sample ``index``'s image as an RGB uint8 array whose longer side is ``size`` px."""
    from PIL import Image

    image = np.asarray(dataset.load(int(index), [])["image"], dtype=np.uint8)
    height, width = image.shape[:2]
    scale = size / max(height, width)
    shape = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(shape, Image.BILINEAR))


def dataset_from_config(config: Mapping[str, Any], source: Path | str = "config.yaml") -> Any:
    """The training split of the dataset a run's config describes (its ``data:``
    section, as ``ActiveDataModule`` builds it)."""
    from mtal.data import create_dataset

    data = dict(config.get("data") or {})
    data = dict(data.get("init_args", data))
    if "dataset" not in data:
        raise ValueError(
            f"{source}: no data.dataset; the gallery rebuilds the dataset from the run's "
            "config (write it with `mtal loop`)"
        )
    kwargs = dict(data.get("dataset_kwargs") or {})
    if data.get("root") is not None:
        kwargs["root"] = data["root"]
    return create_dataset(
        str(data["dataset"]),
        split=str(data.get("train_split") or "train"),
        tasks=data.get("tasks"),
        **kwargs,
    )


def read_request(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The task names and rows of a request CSV (``selections/cycle_<c>.csv``)."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        columns = list(reader.fieldnames or [])
    missing = {"image_index", "image_id", "tasks"} - set(columns)
    if missing:
        raise ValueError(f"{path}: not a request CSV (missing columns {sorted(missing)})")
    tasks = [c.removeprefix("score_") for c in columns if c.startswith("score_")]
    return tasks, rows


def cell_caption(row: Mapping[str, str], tasks: Sequence[str]) -> str:
    """The text under one thumbnail: the image id, then one line per task with its mark
    (requested or not) and score ("–" when it was not scored)."""
    asked = set(filter(None, row["tasks"].split(";")))
    name = row["image_id"]
    lines = [name if len(name) <= 22 else "\u2026" + name[-21:]]
    for task in tasks:
        text = row.get(f"score_{task}", "")
        score = f"{float(text):.3g}" if text not in ("", None) else "\u2013"
        lines.append(f"{REQUESTED if task in asked else NOT_REQUESTED} {task} {score}")
    return "\n".join(lines)


def render_gallery(
    request: Path,
    dataset: Any,
    out: Path,
    *,
    title: str = "",
    max_images: int = 24,
    columns: int = 6,
    thumb: int = 96,
) -> Path:
    """Write one gallery PNG for the request CSV ``request`` (at most ``max_images``
    thumbnails, in request order); an image id that the dataset does not hold at that
    index raises naming the CSV."""
    from matplotlib.figure import Figure

    tasks, rows = read_request(request)
    rows = rows[:max_images]
    n = max(len(rows), 1)
    cols = min(columns, n)
    lines = len(tasks) + 1
    fig = Figure(figsize=(1.9 * cols, (1.7 + 0.24 * lines) * math.ceil(n / cols) + 0.4), dpi=100)
    for k, row in enumerate(rows):
        index = int(row["image_index"])
        if dataset.image_id(index) != row["image_id"]:
            raise ValueError(
                f"{request}: image {index} is {row['image_id']!r} in the request but "
                f"{dataset.image_id(index)!r} in the dataset rebuilt from config.yaml; the "
                "dataset changed since the run"
            )
        ax = fig.add_subplot(math.ceil(n / cols), cols, k + 1)
        ax.imshow(thumbnail(dataset, index, thumb))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(cell_caption(row, tasks), fontsize=7, family="monospace", loc="left")
    if not rows:
        fig.text(0.5, 0.5, "nothing was requested", ha="center")
    fig.suptitle(title or request.stem, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def write_galleries(experiment_dir: Path | str, out_dir: Path | str, **kwargs: Any) -> list[Path]:
    """One gallery per run and cycle of ``runs/<experiment>``:
    ``<out_dir>/<run>_seed<k>_cycle_<c>.png``; runs without requests are skipped."""
    import yaml

    experiment_dir, out_dir = Path(experiment_dir), Path(out_dir)
    written: list[Path] = []
    for run in sorted(p for p in experiment_dir.glob("*/seed*") if p.is_dir()):
        requests = sorted(run.glob("selections/cycle_*.csv"))
        config = run / "config.yaml"
        if not requests or not config.exists():
            continue
        dataset = dataset_from_config(yaml.safe_load(config.read_text()) or {}, config)
        for request in requests:
            name = f"{run.parent.name}_{run.name}_{request.stem}.png"
            title = f"{run.parent.name} {run.name}: requested for {request.stem.replace('_', ' ')}"
            written.append(render_gallery(request, dataset, out_dir / name, title=title, **kwargs))
    return written
