"""Scale benchmark: score and select from a 20k-image procedural pool vs a 2k pool with
mtal, partal and coreset; wall time per 1k pool images and peak memory (should be flat).

Run (about 3-5 min on the shared 2-core CPU; ``--quick``: 200 vs 1000 images, ~1 min)::

    WANDB_MODE=disabled NO_ALBUMENTATIONS_UPDATE=1 OMP_NUM_THREADS=1 \\
        .venv/bin/python benchmarks/bench_scale.py [--quick] [--sizes 2000 20000]

Pool: ``synthetic_tiled`` (registered here): sample ``i`` is synthetic scene
``i mod bank`` (the procedural renderer, ``bank`` = 256 scenes rendered once, cached)
cyclically shifted by an index-dependent offset, with index-seeded pixel noise on the
image — every pool image is distinct and its targets follow the same shift, but the
renderer's per-scene cost (~6-17 ms, Python) does not dominate a 20k pool. 16×16 images,
three tasks (semseg, depth, normals), PAD-Net on the tiny CNN with 16/32 head/encoder
channels, eval batch 64; 10 % of the pool labelled, budget 5 % of the pool (images);
mtal trains its auto-encoder for 2 epochs (default 20; that stage is linear in epochs ×
pool, so the default would multiply mtal's time, not change its flatness).

Each (strategy, pool size) runs in a fresh process (forkserver with only the libraries
imported): pool and model built, the scene bank rendered and one image forwarded, then
ONE ``select()`` is timed (wall and process CPU) and its peak memory taken as the peak
RSS (``ru_maxrss``) minus the RSS right before it, glibc ``MALLOC_MMAP_THRESHOLD_``
fixed so RSS follows live memory. The per-1k-image ratio of the large to the small pool
is the flatness figure (1.0 = time linear in the pool, memory independent of it).

``--summary-store disk`` (or ``both``) runs each row with ``ctx.summary_dir`` set (the
scoring summaries memory-mapped on unnamed files in a temporary folder under the
current directory, ``loop.summary_store: disk``). Their pages are file-backed page
cache, which ``ru_maxrss`` counts but the kernel reclaims under pressure, so every row
also reports the peak increase of the process's anonymous memory (``RssAnon`` of
``/proc/self/status``, sampled by a thread every millisecond during ``select()``; a
spike shorter than the interpreter's 5 ms thread switch can be missed) and of its
file-backed pages (``RssFile``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import multiprocessing
import os
import resource
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psutil
import torch

from mtal.acquisition import AcquisitionContext, create_strategy
from mtal.data.base import DATASETS, MultiTaskDataset
from mtal.data.datamodule import ActiveDataModule
from mtal.data.synthetic import SyntheticScenes
from mtal.models import create_model

TASKS = ("semseg", "depth", "normals")
MMAP_THRESHOLD = 1 << 16
BANK = 256


@DATASETS.register("synthetic_tiled")
class TiledSynthetic(MultiTaskDataset):
    """A large procedural pool from a bank of rendered synthetic scenes: sample ``i`` is
    scene ``i mod bank`` rolled by an offset of ``i // bank`` (targets alike) plus seeded
    ±6 pixel noise on the image, so every sample differs at ~50 µs instead of a render."""

    available_tasks = SyntheticScenes.available_tasks
    num_classes = SyntheticScenes.num_classes

    def __init__(
        self,
        split: str = "train",
        tasks: Sequence[str] | None = None,
        size: tuple[int, int] = (16, 16),
        length: int = 20_000,
        bank: int = BANK,
        seed: int = 0,
    ) -> None:
        super().__init__(split, tasks)
        self.length = int(length)
        self.bank = SyntheticScenes(split, self.tasks, size, length=bank, seed=seed, cache=True)
        self.size = self.bank.size
        self.seed = int(seed)

    def __len__(self) -> int:
        return self.length

    def image_id(self, index: int) -> str:
        return f"tiled-{self.split}-{index:06d}"

    def load(self, index: int, tasks: Sequence[str]) -> dict[str, Any]:
        if not 0 <= index < self.length:
            raise IndexError(f"synthetic_tiled: index {index} out of range [0, {self.length})")
        base = self.bank.load(index % len(self.bank), tasks)
        v = index // len(self.bank)
        h, w = self.size
        shift = ((3 * v) % h, (5 * v) % w)
        out = {k: np.roll(a, shift, axis=(0, 1)) for k, a in base.items()}
        rng = np.random.default_rng([self.seed, index])
        noise = rng.integers(-6, 7, size=out["image"].shape)
        out["image"] = np.clip(out["image"].astype(np.int16) + noise, 0, 255).astype(np.uint8)
        return out


@dataclass(frozen=True)
class Case:
    """One strategy: label, registry name and keyword arguments, model keyword arguments."""

    label: str
    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)


CASES = (
    Case("mtal (C3, committee=1, ae_epochs=2)", "mtal", {"committee": 1, "ae_epochs": 2}),
    Case("partal (S=8)", "partal", {"mc_samples": 8}, {"gt_substitution": True}),
    Case("coreset", "coreset"),
)


def build(n: int, size: tuple[int, int], batch: int, model_kwargs: dict) -> AcquisitionContext:
    """A pool of ``n`` tiled synthetic images (10 % labelled) and a seeded tiny PAD-Net."""
    dm = ActiveDataModule(
        dataset="synthetic_tiled",
        tasks=list(TASKS),
        size=size,
        pool_size=n,
        val_size=2,
        initial=max(1, n // 10),
        eval_batch_size=batch,
        dataset_kwargs={"length": n, "size": size},
    )
    dm.setup("fit")
    torch.manual_seed(0)
    model = create_model(
        "padnet",
        tasks=dm.task_objects,
        backbone="tiny_cnn",
        head_channels=16,
        encoder_channels=32,
        **model_kwargs,
    ).eval()
    return AcquisitionContext(
        model=model, tasks=dm.task_objects, pool=dm.pool, datamodule=dm, cycle=1, seed=0
    )


def _status_kib(*fields: str) -> dict[str, int]:
    """The named ``/proc/self/status`` fields (e.g. ``RssAnon``) in KiB."""
    out: dict[str, int] = {}
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in fields:
                out[key] = int(value.split()[0])
    return out


class PeakSampler:
    """Peak ``RssAnon`` and ``RssFile`` of this process while the block runs (a thread
    reads ``/proc/self/status`` every ``interval`` seconds)."""

    FIELDS = ("RssAnon", "RssFile")

    def __init__(self, interval: float = 1e-3) -> None:
        self.interval = interval
        self.before = _status_kib(*self.FIELDS)
        self.peak = dict(self.before)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, value in _status_kib(*self.FIELDS).items():
                self.peak[key] = max(self.peak[key], value)
            time.sleep(self.interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for key, value in _status_kib(*self.FIELDS).items():
            self.peak[key] = max(self.peak[key], value)

    def increase(self, key: str) -> int:
        """Peak minus the value before the block, in bytes."""
        return (self.peak[key] - self.before[key]) * 1024


def worker(
    case: Case,
    n: int,
    size: tuple[int, int],
    batch: int,
    threads: int,
    summary_dir: str | None = None,
) -> dict:
    """In a fresh process: build, warm up, time one ``select`` and take its peak memory
    (summaries memory-mapped in ``summary_dir`` when given)."""
    torch.set_num_threads(threads)
    ctx = build(n, size, batch, case.model)
    ctx.summary_dir = summary_dir
    bank = ctx.datamodule.train_dataset.bank
    for i in range(len(bank)):  # render the scene bank once (cached), outside the timing
        bank.load(i, ())
    with torch.inference_mode():
        ctx.model(next(iter(ctx.datamodule.pool_loader([0])))["image"][:1])
    strategy = create_strategy(case.name, **case.kwargs)
    budget = max(1, n // 20) * len(TASKS)  # 5 % of the pool, in labels
    rss_before = psutil.Process().memory_info().rss
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    cpu0, wall0 = time.process_time(), time.perf_counter()
    with PeakSampler() as sampler:
        sel = strategy.select(ctx, budget)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "wall": wall,
        "cpu": cpu,
        "peak": maxrss_after - rss_before,
        "anon": sampler.increase("RssAnon"),
        "file": sampler.increase("RssFile"),
        "above_earlier_peak": maxrss_after > maxrss_before,
        "picked": len(sel.images),
        # a digest of the picks, in order: two commits' rows select the same images iff equal
        "picks": hashlib.sha1(np.asarray(sel.images, dtype=np.int64).tobytes()).hexdigest()[:10],
    }


def run(
    cases: Sequence[Case],
    sizes: Sequence[int],
    size: tuple[int, int],
    batch: int,
    threads: int,
    stores: Sequence[str] = ("memory",),
) -> list[tuple]:
    """Every case at every pool size and summary store, each in its own fresh process;
    rows are ``(case, store, n, result)``."""
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(MMAP_THRESHOLD))
    mp = multiprocessing.get_context("forkserver")
    mp.set_forkserver_preload(["torch", "mtal.acquisition", "mtal.data.datamodule", "mtal.models"])
    results = []
    for case in cases:
        for store in stores:
            for n in sizes:
                with (
                    tempfile.TemporaryDirectory(dir=".", prefix="bench_scale_") as folder,
                    concurrent.futures.ProcessPoolExecutor(
                        max_workers=1, mp_context=mp, max_tasks_per_child=1
                    ) as pool,
                ):
                    where = folder if store == "disk" else None
                    res = pool.submit(worker, case, n, size, batch, threads, where).result()
                results.append((case, store, n, res))
                print(
                    f"  {case.label} [{store}] N={n}: {res['wall']:.1f} s wall "
                    f"({res['cpu']:.1f} CPU-s), peak +{res['peak'] / 2**20:.1f} MiB "
                    f"(anonymous +{res['anon'] / 2**20:.1f}, file-backed "
                    f"+{res['file'] / 2**20:.1f}), picks sha1 {res['picks']}",
                    flush=True,
                )
    return results


def table(
    cases: Sequence[Case],
    results: list[tuple],
    sizes: Sequence[int],
    size: tuple[int, int],
    stores: Sequence[str] = ("memory",),
) -> str:
    """Markdown table: per strategy and pool size, time per 1k images and peak memory,
    and the large/small ratios."""
    mib = 2**20
    lines = [
        f"Scale: one select() per row (fresh process), {size[0]}×{size[1]} images, "
        f"{len(TASKS)} tasks, 10 % labelled, budget 5 % of the pool; per 1k = per 1000 pool "
        "images (labelled + unlabelled).",
        "",
        "| strategy | summaries | pool | wall s | wall s per 1k | CPU s per 1k "
        "| peak RSS increase (MiB) | of it anonymous (MiB) | file-backed (MiB) | picks sha1 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    summary = []
    for case in cases:
        for store in stores:
            mine = {n: r for c, st, n, r in results if c == case and st == store}
            for n in sizes:
                r = mine[n]
                flag = "" if r["above_earlier_peak"] else " (≤; below an earlier peak)"
                lines.append(
                    f"| {case.label} | {store} | {n} | {r['wall']:.1f} | "
                    f"{r['wall'] / n * 1e3:.2f} | {r['cpu'] / n * 1e3:.2f} | "
                    f"{r['peak'] / mib:.1f}{flag} | {r['anon'] / mib:.1f} | "
                    f"{r['file'] / mib:.1f} | {r['picks']} |"
                )
            lo, hi = mine[sizes[0]], mine[sizes[-1]]
            per_k = (hi["wall"] / sizes[-1]) / (lo["wall"] / sizes[0])
            cpu_k = (hi["cpu"] / sizes[-1]) / (lo["cpu"] / sizes[0])
            summary.append(
                f"{case.label} [{store}]: pool ×{sizes[-1] / sizes[0]:.0f} → wall per 1k "
                f"×{per_k:.2f} (CPU per 1k ×{cpu_k:.2f}), peak RSS "
                f"×{hi['peak'] / max(lo['peak'], 1):.2f} ({lo['peak'] / mib:.1f} → "
                f"{hi['peak'] / mib:.1f} MiB), anonymous ×{hi['anon'] / max(lo['anon'], 1):.2f} "
                f"({lo['anon'] / mib:.1f} → {hi['anon'] / mib:.1f} MiB)"
            )
    return "\n".join(lines + [""] + [f"- {s}" for s in summary])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 vs 1000 images")
    parser.add_argument("--sizes", type=int, nargs=2, default=None, help="small, large pool")
    parser.add_argument("--image", type=int, default=16, help="square image side (px)")
    parser.add_argument("--batch", type=int, default=64, help="eval batch size")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument(
        "--only", nargs="*", default=None, help="strategy names to run (default: all)"
    )
    parser.add_argument(
        "--summary-store",
        choices=("memory", "disk", "both"),
        default="memory",
        help="scoring summaries in memory, memory-mapped on disk (loop.summary_store), or both",
    )
    args = parser.parse_args()
    stores = ("memory", "disk") if args.summary_store == "both" else (args.summary_store,)
    sizes = args.sizes or ((200, 1000) if args.quick else (2000, 20000))
    size = (args.image, args.image)
    load = os.getloadavg()
    start = time.perf_counter()
    print(
        f"torch {torch.__version__}, {args.threads} torch thread(s), {os.cpu_count()} CPUs, "
        f"load average {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}",
        flush=True,
    )
    cases = [c for c in CASES if args.only is None or c.name in args.only]
    results = run(cases, sizes, size, args.batch, args.threads, stores)
    print()
    print(table(cases, results, sizes, size, stores))
    print(f"\ntotal runtime {time.perf_counter() - start:.0f} s (wall)")


if __name__ == "__main__":
    main()
