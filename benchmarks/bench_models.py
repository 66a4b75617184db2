"""CPU speed of the multi-task networks: train step and inference per architecture/backbone,
and PAD-Net's committee pass relative to plain inference. Prints a markdown table.

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_models.py [--repeats 3] [--batch 8]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from mtal.models import create_model
from mtal.tasks import create_task

#: PASCAL-Context's five tasks (the committee has C5 members per task at committee=1)
TASKS = {"semseg": 21, "parts": 7, "saliency": None, "normals": None, "edge": None}


def make_targets(tasks: dict, b: int, h: int, w: int, g: torch.Generator) -> dict:
    """Random targets in each task's layout (int classes, {0,1} maps, unit normals)."""
    makers: dict[str, Callable[[], torch.Tensor]] = {
        "semseg": lambda: torch.randint(0, 21, (b, h, w), generator=g),
        "parts": lambda: torch.randint(0, 7, (b, h, w), generator=g),
        "saliency": lambda: (torch.rand(b, 1, h, w, generator=g) > 0.5).float(),
        "edge": lambda: (torch.rand(b, 1, h, w, generator=g) > 0.9).float(),
        "normals": lambda: F.normalize(torch.randn(b, 3, h, w, generator=g), dim=1),
    }
    return {name: makers[name]() for name in tasks}


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time (s) of ``fn`` over ``repeats`` runs after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(repeats: int, batch: int, sizes: list[tuple[int, int]]) -> list[tuple]:
    """Rows (benchmark, setting, seconds, reference label or None, reference seconds)."""
    tasks = {n: create_task(n, num_classes=c) for n, c in TASKS.items()}
    g = torch.Generator().manual_seed(0)
    rows = []
    for backbone in ("tiny_cnn", "resnet18"):
        for h, w in sizes:
            x = torch.randn(batch, 3, h, w, generator=g)
            targets = make_targets(tasks, batch, h, w, g)
            res: dict[str, float] = {}
            for arch in ("hps", "padnet"):
                torch.manual_seed(0)
                model = create_model(arch, tasks, backbone=backbone)
                opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

                def step(model=model, opt=opt, x=x, targets=targets) -> None:
                    model.train()
                    out = model(x)
                    loss = sum(tasks[n].loss(out.final[n], targets[n]).mean() for n in tasks)
                    if out.initial is not None:
                        loss = loss + sum(
                            tasks[n].loss(out.initial[n], targets[n]).mean() for n in tasks
                        )
                    opt.zero_grad()
                    loss.backward()
                    opt.step()

                def infer(model=model, committee: int = 0, x=x) -> None:
                    model.eval()
                    with torch.no_grad():
                        model(x, committee=committee)

                res[f"{arch} train"] = timed(step, repeats)
                res[f"{arch} infer"] = timed(infer, repeats)
                if arch == "padnet":
                    res["padnet committee=1"] = timed(lambda m=model: infer(m, 1), repeats)
            setting = f"{backbone}, B={batch}, {h}×{w}, 5 tasks"
            for kind in ("train", "infer"):
                rows.append((f"models: hps {kind}", setting, res[f"hps {kind}"], None, None))
                rows.append(
                    (
                        f"models: padnet {kind}",
                        setting,
                        res[f"padnet {kind}"],
                        f"hps {kind}",
                        res[f"hps {kind}"],
                    )
                )
            rows.append(
                (
                    "models: padnet committee=1 infer",
                    setting,
                    res["padnet committee=1"],
                    "padnet infer",
                    res["padnet infer"],
                )
            )
    return rows


def markdown(rows: list[tuple]) -> str:
    """The rows as markdown table lines (times in ms; ratio = result / reference)."""
    lines = []
    for name, setting, sec, ref_name, ref_sec in rows:
        ref = f"{ref_name} {ref_sec * 1e3:.0f} ms" if ref_name else "—"
        ratio = f"{sec / ref_sec:.2f}×" if ref_sec else "—"
        lines.append(f"| {name} | {setting} | {sec * 1e3:.0f} ms | {ref} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    rows = bench(args.repeats, args.batch, [(64, 80), (128, 128)])
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, CPU")
    print("| benchmark | setting | result | reference | ratio |")
    print("|---|---|---|---|---|")
    print(markdown(rows))


if __name__ == "__main__":
    main()
