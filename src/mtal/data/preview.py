"""Preview grids of a multi-task dataset: one row per sample, one column per target.

matplotlib (Agg backend) is imported only inside :func:`render_preview`, so importing
this module stays light.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: colour of ignored / invalid pixels in every column
INVALID_RGB = np.array([0.0, 0.0, 0.0])
#: colour of the ignore value (255) in binary maps
IGNORE_RGB = np.array([0.8, 0.1, 0.1])


def class_palette(n: int) -> np.ndarray:
    """``n`` distinct RGB colours in [0, 1] (golden-angle hues, alternating lightness),
    deterministic so that a class keeps its colour across figures."""
    i = np.arange(n)
    hue = (i * 0.618033988749895) % 1.0
    value = np.where(i % 2 == 0, 0.95, 0.7)
    sat = np.where(i % 3 == 0, 0.55, 0.85)
    return _hsv_to_rgb(hue, sat, value)


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = np.stack(
        [
            np.stack([v, t, p], -1),
            np.stack([q, v, p], -1),
            np.stack([p, v, t], -1),
            np.stack([p, q, v], -1),
            np.stack([t, p, v], -1),
            np.stack([v, p, q], -1),
        ]
    )
    return table[i, np.arange(len(h))]


def colour_categorical(labels: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """H×W labels → H×W×3 palette colours; 255 (ignore) is black."""
    labels = np.asarray(labels)
    valid = labels != 255
    n = int(num_classes) if num_classes else int(labels[valid].max(initial=0)) + 1
    pal = class_palette(max(n, 1))
    out = np.empty(labels.shape + (3,))
    out[:] = INVALID_RGB
    out[valid] = pal[np.clip(labels[valid], 0, len(pal) - 1)]
    return out


def colour_depth(depth: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """H×W metres → viridis colours scaled to the valid range; 0 (invalid) is black."""
    from matplotlib import colormaps

    depth = np.asarray(depth, dtype=np.float64)
    valid = depth > 0
    out = np.empty(depth.shape + (3,))
    out[:] = INVALID_RGB
    if valid.any():
        lo, hi = depth[valid].min(), depth[valid].max()
        x = (depth[valid] - lo) / max(hi - lo, 1e-9)
        out[valid] = colormaps["viridis"](x)[:, :3]
    return out


def colour_normals(normals: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """H×W×3 unit normals → RGB ``(n + 1) / 2``; all-zero (invalid) pixels are black."""
    normals = np.asarray(normals, dtype=np.float64)
    out = np.clip((normals + 1.0) / 2.0, 0.0, 1.0)
    out[~np.any(normals != 0, axis=-1)] = INVALID_RGB
    return out


def colour_binary(mask: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """H×W {0, 1} → gray levels (1 white); 255 (ignore) is red."""
    mask = np.asarray(mask)
    out = np.repeat((mask == 1).astype(np.float64)[..., None], 3, axis=-1)
    out[mask == 255] = IGNORE_RGB
    return out


#: how each task's target is turned into an RGB picture
COLOURISERS: dict[str, Callable[[np.ndarray, int | None], np.ndarray]] = {
    "semseg": colour_categorical,
    "parts": colour_categorical,
    "depth": colour_depth,
    "normals": colour_normals,
    "edge": colour_binary,
    "saliency": colour_binary,
}


def colourise(task: str, array: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """H×W×3 float RGB in [0, 1] picture of one task's target."""
    try:
        fn = COLOURISERS[task]
    except KeyError:
        raise ValueError(
            f"render_preview: no colouriser for task {task!r}; known: {sorted(COLOURISERS)}"
        ) from None
    return fn(array, num_classes)


def _draw_boxes(ax: Any, boxes: np.ndarray, labels: np.ndarray, n_classes: int) -> None:
    from matplotlib.patches import Rectangle

    pal = class_palette(max(n_classes, int(labels.max(initial=0)) + 1))
    for (x1, y1, x2, y2), lab in zip(boxes, labels):
        # pixel j covers [j - 0.5, j + 0.5] in imshow coordinates
        ax.add_patch(
            Rectangle(
                (x1 - 0.5, y1 - 0.5),
                x2 - x1,
                y2 - y1,
                fill=False,
                linewidth=0.8,
                edgecolor=pal[int(lab)],
            )
        )


def render_preview(
    dataset: Any, n: int, out: str | Path, tasks: Sequence[str] | None = None
) -> Path:
    """Write a PNG grid of the first ``n`` samples of ``dataset`` (rows) with the image
    (boxes drawn when the dataset provides them) and each task's target (columns)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    tasks = tuple(tasks) if tasks is not None else tuple(dataset.tasks)
    for task in tasks:
        if task not in COLOURISERS:
            raise ValueError(
                f"render_preview: no colouriser for task {task!r}; known: {sorted(COLOURISERS)}"
            )
    n = min(int(n), len(dataset))
    if n <= 0:
        raise ValueError(f"render_preview: n={n} must be >= 1 and the dataset non-empty")
    extra = tuple(getattr(dataset, "extra_tasks", ()))
    with_boxes = "boxes" in extra or "boxes" in getattr(dataset, "available_tasks", ())
    num_classes = dict(getattr(dataset, "num_classes", {}))

    cols = 1 + len(tasks)
    fig, axes = plt.subplots(n, cols, figsize=(1.9 * cols, 1.6 * n), squeeze=False)
    for row in range(n):
        sample = dataset.load(row, tasks + (("boxes",) if with_boxes else ()))
        ax = axes[row, 0]
        ax.imshow(sample["image"], interpolation="nearest")
        if with_boxes:
            _draw_boxes(ax, sample["boxes"], sample["box_labels"], num_classes.get("semseg", 1))
        for col, task in enumerate(tasks, start=1):
            picture = colourise(task, sample[task], num_classes.get(task))
            axes[row, col].imshow(picture, interpolation="nearest")
        for col, title in enumerate(("image",) + tasks):
            axes[row, col].set_xticks([])
            axes[row, col].set_yticks([])
            if row == 0:
                axes[row, col].set_title(title, fontsize=8)
    fig.tight_layout(pad=0.3)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``mtal data preview --dataset NAME [--root DIR] [--split S] [-n N] --out FILE.png``."""
    import argparse

    from mtal.data import create_dataset

    argv = list(argv) if argv is not None else None
    if argv and argv[0] == "check":  # its own parser (config + --data.* overrides)
        from mtal.data.check import main as check_main

        return check_main(argv[1:])
    parser = argparse.ArgumentParser(prog="mtal data", description="dataset utilities")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="read every file of the configured splits (see check -h)")
    preview = sub.add_parser("preview", help="a PNG grid of samples × tasks")
    preview.add_argument("--dataset", default="synthetic")
    preview.add_argument("--root", default=None, help="dataset root (real datasets)")
    preview.add_argument("--split", default="train")
    preview.add_argument("-n", "--num", type=int, default=6, help="number of samples")
    preview.add_argument("--out", default="preview.png")
    args = parser.parse_args(argv)
    kwargs: dict[str, Any] = {"split": args.split}
    if args.root is not None:
        kwargs["root"] = args.root
    dataset = create_dataset(args.dataset, **kwargs)
    out = render_preview(dataset, min(args.num, len(dataset)), args.out)
    print(f"[mtal] wrote {out}")
    return 0
