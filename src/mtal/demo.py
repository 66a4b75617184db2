"""``make demo``: MTAL vs Random vs Core-Set on the procedural scenes, then the report.

Runs ``experiments/demo.yaml`` (a fully-trained reference, then every strategy × seed,
every cycle trained to a plateau of the validation loss), writes ``runs/demo/report/``
(with ``provenance.md``: command, commit, wall and CPU time) and prints its tables:
the curves' summary, how every cycle stopped, and the label-efficiency figures.
Rerunning skips finished runs.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from mtal.bench_al import run_and_report

GRID = Path("experiments/demo.yaml")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo grid and print its report."""
    parser = argparse.ArgumentParser(
        prog="python -m mtal.demo", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--grid", default=str(GRID))
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--smoke", action="store_true", help="the grid's tiny smoke version")
    parser.add_argument("--docs", default="", help="also copy the report here (e.g. docs/demo)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once, one core each")
    args = parser.parse_args(list(argv) if argv is not None else None)
    command = shlex.join(["python", "-m", "mtal.demo", *(argv or sys.argv[1:])])
    report = run_and_report(
        Path(args.grid),
        args.runs_dir,
        args.smoke,
        Path(args.docs) if args.docs else None,
        command,
        jobs=args.jobs,
    )
    print()
    for name in ("summary.md", "stopping.md", "efficiency.md", "savings.md"):
        if (report / name).exists():
            print((report / name).read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
