"""The scale and search benchmarks run end to end at tiny sizes (the scripts do not rot)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_script(*args: str) -> str:
    env = {**os.environ, "WANDB_MODE": "disabled", "NO_ALBUMENTATIONS_UPDATE": "1"}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def test_bench_scale_tiny_pools_print_rows_with_pick_digests() -> None:
    """Both summary stores run; the on-disk store picks the same images (same digest)."""
    out = run_script(
        "benchmarks/bench_scale.py",
        *("--sizes", "60", "120", "--only", "coreset", "--summary-store", "both"),
    )
    rows = re.findall(
        r"^\| coreset \| (memory|disk) \| (60|120) \| .* \| ([0-9a-f]{10}) \|$", out, re.M
    )
    assert [r[:2] for r in rows] == [
        ("memory", "60"),
        ("memory", "120"),
        ("disk", "60"),
        ("disk", "120"),
    ], out
    picks = {(store, n): digest for store, n, digest in rows}
    assert picks["memory", "60"] == picks["disk", "60"]
    assert picks["memory", "120"] == picks["disk", "120"]
    assert "coreset [memory]: pool ×2" in out and "coreset [disk]: pool ×2" in out


def test_bench_search_tiny_problem_picks_identical_to_the_reference() -> None:
    out = run_script(
        "benchmarks/bench_search.py",
        *("--n", "300", "--d", "16", "--labelled", "30", "--budget", "15", "--keys", "30"),
        *("--repeats", "1"),
    )
    kc = [line for line in out.splitlines() if line.startswith("| k_center ")]
    assert len(kc) == 4, out
    assert all("picks identical" in line for line in kc[1:]), out
