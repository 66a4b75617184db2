"""Throughput of the synthetic scene generator on one thread (numpy only, no torch).

Run: ``.venv/bin/python benchmarks/bench_synthetic.py [--n 300] [--size 64 80]``.
Prints a markdown row for benchmarks/README.md. The headline number is samples per
CPU-second of this process (``time.process_time``), which is what one core delivers
even on a shared machine; wall-clock throughput is printed alongside.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy is imported: one thread

import argparse  # noqa: E402
import time  # noqa: E402

from mtal.data.synthetic import SyntheticScenes  # noqa: E402

TARGET = 100.0  # samples/s at 64×80 on one core (the design's target)


def measure(n: int, size: tuple[int, int], seed: int = 0) -> tuple[float, float]:
    """(samples per CPU-second, samples per wall-second) loading the image, all six
    tasks and the boxes of ``n`` fresh samples (no cache)."""
    ds = SyntheticScenes("train", size=size, length=n + 10, seed=seed)
    targets = (*ds.available_tasks, "boxes")
    for i in range(10):  # warm-up (imports, caches of the pixel grid)
        ds.load(n + i, targets)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(n):
        ds.load(i, targets)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return n / cpu, n / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=300, help="samples to time")
    parser.add_argument("--size", type=int, nargs=2, default=(64, 80), metavar=("H", "W"))
    args = parser.parse_args()
    size = (args.size[0], args.size[1])
    per_cpu, per_wall = measure(args.n, size)
    print(
        f"| synthetic scenes | {size[0]}×{size[1]}, image + 6 tasks + boxes, 1 thread, "
        f"{args.n} samples (wall: {per_wall:.0f}/s) | {per_cpu:.0f} samples/s | "
        f"{TARGET:.0f} samples/s | {per_cpu / TARGET:.2f} |"
    )


if __name__ == "__main__":
    main()
