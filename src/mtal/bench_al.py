"""``make bench-al``: run the label-efficiency grid (``experiments/bench_al.yaml``), write
its report with a provenance note (command, commit, wall and CPU time) and copy the
report's tables and curves into ``docs/bench_al/``. Rerunning resumes the grid."""

from __future__ import annotations

import argparse
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from mtal.experiment import load_grid, run_parallel
from mtal.report import headline_metrics, metrics_of, read_runs, write_report

GRID = Path("experiments/bench_al.yaml")
DOCS = Path("docs/bench_al")
#: report files copied into the docs folder (plus the headline metrics' curves)
COPIED = ("*.md", "*.csv")


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _commit() -> str:
    """The checked-out commit (``+dirty`` when tracked files differ), or ``unknown``."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def run_and_report(
    grid_path: Path,
    runs_dir: str,
    smoke: bool,
    docs: Path | None,
    command: str,
    jobs: int = 1,
) -> Path:
    """Run (or resume) a grid, write its report and ``provenance.md``; copy the report
    into ``docs`` when given. Returns the report folder."""
    start, cpu, commit = time.perf_counter(), _cpu_seconds(), _commit()
    grid = load_grid(grid_path, smoke=smoke)
    executed = run_parallel(grid, runs_dir, jobs)
    report = write_report(Path(runs_dir) / grid.name)
    wall, used = time.perf_counter() - start, _cpu_seconds() - cpu
    (report / "provenance.md").write_text(
        f"- command: `{command}`\n"
        f"- grid: `{grid_path}`{' (smoke)' if smoke else ''}\n"
        f"- commit (when the command started): `{commit}`\n"
        f"- runs executed in this invocation: {len(executed)} "
        f"(finished runs are skipped and not timed)\n"
        f"- parallel runs: {jobs}; wall time: {wall:.0f} s; "
        f"CPU time (user + system, all processes): {used:.0f} s\n"
        f"- machine: {platform.machine()}, {platform.system()}, Python "
        f"{platform.python_version()}\n"
    )
    if docs is not None:
        docs.mkdir(parents=True, exist_ok=True)
        paths = [p for pattern in COPIED for p in sorted(report.glob(pattern))]
        runs = read_runs(report.parent)
        for metric in headline_metrics(metrics_of(runs)):
            name = metric.replace("val/", "").replace("/", "_")
            paths.append(report / f"curve_{name}.png")
        for path in paths:
            if path.exists():
                shutil.copy2(path, docs / path.name)
    print(f"\n[mtal] {grid.name}: {wall:.0f} s wall, {used:.0f} s CPU; report in {report}")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mtal.bench_al [--smoke] [--runs-dir runs] [--docs docs/bench_al]``."""
    parser = argparse.ArgumentParser(
        prog="python -m mtal.bench_al", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--grid", default=str(GRID))
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--smoke", action="store_true", help="the grid's smoke version")
    parser.add_argument(
        "--docs",
        default=None,
        help=f"copy the report here (default {DOCS}, none with --smoke; '' = none)",
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="runs at once, one core each (default 1)"
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    docs = args.docs if args.docs is not None else ("" if args.smoke else str(DOCS))
    command = shlex.join(["python", "-m", "mtal.bench_al", *(argv or sys.argv[1:])])
    report = run_and_report(
        Path(args.grid),
        args.runs_dir,
        args.smoke,
        Path(docs) if docs else None,
        command,
        jobs=args.jobs,
    )
    for name in ("summary.md", "stopping.md", "efficiency.md"):
        if (report / name).exists():
            print((report / name).read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
