"""The request in a labelling tool's format: Label Studio tasks JSON, one file and one
labeling config per task (a project has one config, and each task kind is drawn
differently). The request CSV (``write_selection_csv``) is always written as well.

Label Studio tasks (the "Basic Label Studio JSON format"): a list of
``{"data": {"image": URL, ...}, "meta": {...}}``, one task per requested (image, task)
pair. ``data.image`` is ``<image_url_prefix><path>``: by default Label Studio's local-file
URL ``/data/local-files/?d=`` and the image path relative to ``document_root`` (run Label
Studio with ``LOCAL_FILES_SERVING_ENABLED=true`` and ``LOCAL_FILES_DOCUMENT_ROOT`` set to
that folder). ``meta`` carries the request id, cycle, image index/id, task, score and the
label file the import expects (``label_path``, relative to the dataset root).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from mtal.io import atomic_write_bytes
from mtal.labelling.manifest import LabelRequest
from mtal.registry import Registry

LOCAL_FILES_PREFIX = "/data/local-files/?d="

#: task name → what the labeller draws and how it is saved (see README "labelling with people")
DRAWN_MASKS = {"semseg", "parts"}
BINARY_MASKS = {"edge": "edge", "saliency": "salient"}
MEASURED = {"depth", "normals"}


def labeling_config(task: str, num_classes: int | None = None) -> str:
    """The Label Studio labeling config a task kind expects.

    semseg/parts: a brush mask with one label per class (``class_0``..); edge/saliency:
    a brush mask with one label; depth/normals cannot be drawn: the image is shown with
    a choice recording whether the measured file was delivered."""
    image = '  <Image name="image" value="$image" zoom="true"/>\n'
    header = f"  <Header value={quoteattr(f'{task}: $image_id')}/>\n"
    if task in DRAWN_MASKS:
        labels = "".join(f'    <Label value="class_{i}"/>\n' for i in range(int(num_classes or 1)))
        body = f'  <BrushLabels name="{task}" toName="image">\n{labels}  </BrushLabels>\n'
    elif task in BINARY_MASKS:
        body = (
            f'  <BrushLabels name="{task}" toName="image">\n'
            f'    <Label value="{BINARY_MASKS[task]}"/>\n  </BrushLabels>\n'
        )
    elif task in MEASURED:
        body = (
            f'  <Choices name="{task}" toName="image" choice="single">\n'
            '    <Choice value="delivered"/>\n    <Choice value="unavailable"/>\n'
            "  </Choices>\n"
        )
    else:
        raise ValueError(f"no Label Studio labeling config for task {task!r}")
    return f"<View>\n{header}{image}{body}</View>\n"


def labelstudio_tasks(
    request: LabelRequest,
    dataset: Any,
    task: str,
    *,
    document_root: Path | None = None,
    image_url_prefix: str = LOCAL_FILES_PREFIX,
) -> list[dict[str, Any]]:
    """The Label Studio tasks of ``request``'s pairs of ``task``."""
    root = Path(document_root or "/").resolve()
    out = []
    for pair in request.pairs:
        if pair["task"] != task:
            continue
        image = Path(dataset.image_path(int(pair["image_index"]))).resolve()
        try:
            shown = image.relative_to(root).as_posix()
        except ValueError as err:
            raise ValueError(
                f"image {image} is not under the Label Studio document root {root}; pass a "
                f"document_root that contains the dataset"
            ) from err
        out.append(
            {
                "data": {"image": f"{image_url_prefix}{shown}", "image_id": pair["image_id"]},
                "meta": {"request_id": request.request_id, "cycle": request.cycle, **pair},
            }
        )
    return out


def export_labelstudio(
    request: LabelRequest, run: Path, dataset: Any, **options: Any
) -> dict[str, str]:
    """Write ``requests/<id>.labelstudio/<task>.json`` and ``<task>.xml`` per task;
    returns export name → path (relative to ``run``)."""
    folder = Path(run) / "requests" / f"{request.request_id}.labelstudio"
    written = {}
    classes = getattr(dataset, "num_classes", {})
    for task in sorted({p["task"] for p in request.pairs}):
        tasks = labelstudio_tasks(request, dataset, task, **options)
        atomic_write_bytes(folder / f"{task}.json", json.dumps(tasks, indent=2).encode())
        atomic_write_bytes(
            folder / f"{task}.xml", labeling_config(task, classes.get(task)).encode()
        )
        written[f"labelstudio_{task}"] = (folder / f"{task}.json").relative_to(run).as_posix()
    return written


def export_csv(request: LabelRequest, run: Path, dataset: Any, **options: Any) -> dict[str, str]:
    """The CSV is written by the caller (``write_selection_csv``); nothing more to do."""
    return {}


#: ``--format`` → exporter(request, run, dataset, **options) → {name: path under run}
EXPORTERS: Registry[dict[str, str]] = Registry("export format")
EXPORTERS.register("csv")(export_csv)
EXPORTERS.register("labelstudio")(export_labelstudio)
