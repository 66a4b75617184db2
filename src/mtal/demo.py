"""``make demo``: MTAL vs Random vs Core-Set on the procedural scenes, then the report.

Runs ``experiments/demo.yaml`` (a fully-trained reference, then every strategy ×
seed), writes ``runs/demo/report/`` and prints its tables. Rerunning skips finished
runs.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from mtal.experiment import load_grid, run_grid
from mtal.report import write_report

GRID = Path("experiments/demo.yaml")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo grid and print its report."""
    parser = argparse.ArgumentParser(
        prog="python -m mtal.demo", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--grid", default=str(GRID))
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--smoke", action="store_true", help="the grid's tiny smoke version")
    args = parser.parse_args(list(argv) if argv is not None else None)
    start = time.perf_counter()
    grid = load_grid(args.grid, smoke=args.smoke)
    run_grid(grid, runs_dir=args.runs_dir)
    report = write_report(Path(args.runs_dir) / grid.name)
    print(f"\n[mtal] demo finished in {time.perf_counter() - start:.0f}s; report in {report}\n")
    for name in ("summary.md", "savings.md"):
        if (report / name).exists():
            print((report / name).read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
