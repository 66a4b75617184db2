"""Crash safety and state integrity of the loop's run folder.

A 4-cycle CPU loop is SIGKILLed at named points (``MTAL_CRASH_AT``) and at a random
time, rerun until it completes, and must end byte-identical to an uninterrupted run:
no label lost, none bought twice. The named kills run the CLI in forked children of
this process (a real SIGKILL, without paying the interpreter start-up per kill); the
random-time kill runs the real ``python -m mtal.cli loop`` command as a subprocess.
A tampered or foreign state file stops a rerun with an error naming it, leaving the
run folder untouched.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pytest
import yaml

from mtal.cli import DEFAULT_CONFIG, run_cli
from mtal.data.pool import LabelPool
from mtal.io import StateFileError, read_checked_json
from mtal.loop import CRASH_ENV, CRASH_POINTS, STATE_SCHEMA, STATE_VERSION, parse_crash_spec

CYCLES, POOL, INITIAL, BUDGET, K = 4, 16, 4, 2, 2
RUN = Path("synthetic") / "coreset" / "seed0"


def loop_argv(runs: Path) -> list[str]:
    """The loop command under test: coreset (a scoring pass each cycle), 2 tasks, 32×32."""
    return [
        "loop",
        "--config",
        str(DEFAULT_CONFIG),  # explicit, so run_cli (forks) and `python -m mtal.cli` agree
        "--data.dataset_kwargs",
        '{"size": [32, 32], "cache": true}',
        "--data.tasks",
        "[semseg, depth]",
        "--data.size",
        "[32, 32]",
        "--data.pool_size",
        str(POOL),
        "--data.val_size",
        "2",
        "--data.initial",
        str(INITIAL),
        "--data.batch_size",
        "4",
        "--trainer.max_epochs",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        "--loop.runs_dir",
        str(runs),
        "--loop.cycles",
        str(CYCLES),
        "--loop.budget",
        str(BUDGET),
        "--loop.strategy",
        "coreset",
        "--loop.logger",
        "none",
    ]


def run_forked(argv: list[str], log: Path, crash: str | None = None, limit: float = 120.0) -> int:
    """Run the CLI in a forked child (``crash`` sets MTAL_CRASH_AT there); returns the
    signal that killed it, or 0 for a clean exit (raises on an error exit)."""
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        code = 1
        try:
            # the parent's OpenMP pool does not survive fork(): a child that uses it hangs,
            # so the child computes on one thread (as DataLoader workers do)
            import torch

            torch.set_num_threads(1)
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            sys.stdout = sys.stderr = open(fd, "w", buffering=1, closefd=False)  # noqa: SIM115
            os.environ.pop(CRASH_ENV, None)
            if crash:
                os.environ[CRASH_ENV] = crash
            run_cli(argv)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + limit
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"forked loop ran past {limit}s; log: {log.read_text()[-2000:]}")
        time.sleep(0.05)
    if os.WIFSIGNALED(status):
        return os.WTERMSIG(status)
    if os.WEXITSTATUS(status) != 0:
        pytest.fail(f"forked loop failed; log:\n{log.read_text()[-4000:]}")
    return 0


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path → bytes) but the lock file, whose
    content is the PID of the process that last held it."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and p.name != ".lock"
    }


def state_payload(run: Path) -> dict:
    return read_checked_json(run / "state.json", STATE_SCHEMA, STATE_VERSION)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run."""
    root = tmp_path_factory.mktemp("reference")
    assert run_forked(loop_argv(root / "runs"), root / "log.txt") == 0
    return root / "runs" / RUN


def assert_same_run(run: Path, reference: Path) -> None:
    """Same pools (labels, cycles, weights, scores), selections, metrics and weights."""
    for c in range(CYCLES):
        pool = LabelPool.load(run / "pool" / f"cycle_{c:03d}.json")
        assert pool == LabelPool.load(reference / "pool" / f"cycle_{c:03d}.json"), c
        assert pool.num_labels == (INITIAL + c * BUDGET) * K  # no label lost or bought twice
        assert set(np.unique(pool.cycle[pool.labelled]).tolist()) == set(range(c + 1))
    got, want = snapshot(run), snapshot(reference)
    assert sorted(got) == sorted(want)
    for name in want:
        if name not in ("state.json", "config.yaml"):
            assert got[name] == want[name], name
    assert state_payload(run) == state_payload(reference)
    configs = [yaml.safe_load((r / "config.yaml").read_text()) for r in (run, reference)]
    for config in configs:
        config["loop"].pop("runs_dir")  # the only setting that differs
    assert configs[0] == configs[1]


def test_crash_spec_parsing() -> None:
    assert parse_crash_spec("after_fit:2, before_pool_write:1") == {
        "after_fit": 2,
        "before_pool_write": 1,
    }
    for bad in ("nowhere:1", "after_fit", "after_fit:0", "after_fit:x"):
        with pytest.raises(ValueError, match="after_fit"):  # the message lists the points
            parse_crash_spec(bad)
    assert "before_state_write" in CRASH_POINTS


def test_sigkill_at_named_points_and_random_time_resumes_identically(
    reference: Path, tmp_path: Path
) -> None:
    runs, log = tmp_path / "runs", tmp_path / "log.txt"
    argv = loop_argv(runs)
    run = runs / RUN
    # each kill lands in the cycle the previous rerun resumes at:
    kills = [
        "after_fit:1",  # cycle 0 fitted (weights + metrics row), nothing selected
        "before_pool_write:1",  # selection 0 made, state + request written, no pool 1
        "after_select:2",  # pool 1 bought, cycle 1 fitted, selection 1 scored, not saved
        "before_state_write:2",  # pool 2 bought, cycle 2 weights + row written, no state
    ]
    for crash in kills:
        assert run_forked(argv, log, crash) == signal.SIGKILL, crash
    assert not (run / "pool" / f"cycle_{CYCLES - 1:03d}.json").exists()
    assert (run / "cycle_002" / "weights.pt").exists()

    # the real command, killed at a random moment of its run (seeded for reruns)
    rng = random.Random(os.environ.get("MTAL_TEST_SEED", "0"))
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    env.update(PYTHONUNBUFFERED="1")
    env.pop(CRASH_ENV, None)
    sub_log = tmp_path / "subprocess.txt"
    with sub_log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mtal.cli", *argv], stdout=out, stderr=out, env=env
        )
        marker = run / "cycle_002" / "weights.pt"
        stamp = marker.stat().st_mtime_ns
        deadline = time.monotonic() + 90
        # wait until it is inside the loop (it rewrites config.yaml first), then a bit more
        while proc.poll() is None and time.monotonic() < deadline:
            if (run / "config.yaml").stat().st_mtime_ns > stamp:
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 2.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert "resuming at cycle 2" in sub_log.read_text()  # it was killed inside the loop
    assert run_forked(argv, log) == 0  # rerun until it completes
    assert_same_run(run, reference)
    assert not list(run.rglob("*.tmp")), "a torn temporary file was left behind"


@pytest.mark.parametrize(
    "damage",
    ["pool_checksum", "pool_foreign", "state_foreign", "state_missing", "weights_truncated"],
)
def test_damaged_state_stops_the_rerun_and_touches_nothing(
    reference: Path, tmp_path: Path, damage: str
) -> None:
    runs = tmp_path / "runs"
    shutil.copytree(reference.parents[2], runs)
    run = runs / RUN
    last_pool = run / "pool" / f"cycle_{CYCLES - 1:03d}.json"
    if damage == "pool_checksum":  # hand-edit a label: the checksum no longer matches
        doc = json.loads(last_pool.read_text())
        doc["payload"]["labelled"][0] = [1 - v for v in doc["payload"]["labelled"][0]]
        last_pool.write_text(json.dumps(doc))
        culprit, match = last_pool, "checksum"
    elif damage == "pool_foreign":  # the loop state where a pool file should be
        shutil.copy(run / "state.json", last_pool)
        culprit, match = last_pool, "schema"
    elif damage == "state_foreign":
        shutil.copy(last_pool, run / "state.json")
        culprit, match = run / "state.json", "schema"
    elif damage == "state_missing":
        (run / "state.json").unlink()
        culprit, match = run / "state.json", "missing"
    else:
        weights = run / f"cycle_{CYCLES - 1:03d}" / "weights.pt"
        weights.write_bytes(weights.read_bytes()[:100])
        culprit, match = weights, "readable"
    before = snapshot(runs)
    with pytest.raises((StateFileError, ValueError)) as err:
        run_cli(loop_argv(runs))
    assert str(culprit) in str(err.value) and match in str(err.value)
    assert snapshot(runs) == before  # never a silent restart, nothing rewritten
