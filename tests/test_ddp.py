"""``mtal loop`` under Lightning DDP on CPU (two gloo processes): pool scoring is sharded
across ranks in whole batches, summaries are gathered, rank 0's selection is bought by
every rank, only rank 0 writes the run folder, and the selection equals a one-process
selection from the same weights, pool and seed. Plus the shard arithmetic by hand."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mtal import distributed
from mtal.cli import run_cli
from mtal.data.pool import LabelPool

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "synthetic" / "smoke.yaml"
MTAL_FAST = {"ae_epochs": 2, "disc_epochs": 2, "code_dim": 32, "ae_hidden": 8}
#: smoke.yaml: 32-image pool, 8 initial images, eval batches of 16, budget 8 images
DATA = ["--config", str(SMOKE), "--data.dataset_kwargs", '{"size": [32, 32], "cache": true}']
DATA += ["--data.size", "[32, 32]"]

#: the launcher script: mtal's own entry point with the rank messages of mtal.distributed
#: on stderr (Lightning's DDP re-runs this script, with its arguments, on rank 1)
LAUNCH = """import logging, sys
logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
logging.getLogger("mtal.distributed").setLevel(logging.DEBUG)
from mtal.cli import main
sys.exit(main())
"""


def run_ranks(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    """Run the launcher in its own session (rank 0 and the rank Lightning starts from it);
    on a hang the whole session is killed, so no rank outlives the test."""
    proc = subprocess.Popen(
        args,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"mtal loop under DDP hung for 240 s:\n{out[-4000:]}")
    return proc.returncode, out


def test_shard_ranges_by_hand() -> None:
    # 24 unlabelled images in batches of 16 on 2 ranks: one batch each, the second short
    assert [distributed.shard_range(24, 16, 2, r) for r in range(2)] == [(0, 16), (16, 24)]
    # one batch only: rank 1 gets nothing (and still takes part in the gather)
    assert [distributed.shard_range(8, 16, 2, r) for r in range(2)] == [(0, 8), (8, 8)]
    # 50 items, batches of 8 → 7 blocks on 3 ranks: 3, 2, 2 blocks
    got = [distributed.shard_range(50, 8, 3, r) for r in range(3)]
    assert got == [(0, 24), (24, 40), (40, 50)]
    assert distributed.shard_range(0, 4, 2, 1) == (0, 0)
    with pytest.raises(ValueError, match="world=2, at=2"):
        distributed.shard_range(10, 4, 2, 2)


def test_one_process_collectives_are_identities() -> None:
    assert distributed.world_size() == 1 and distributed.is_rank_zero()
    assert distributed.gather_objects({"a": 1}) == [{"a": 1}]
    assert distributed.from_rank_zero(("x", {"k": 2})) == ("x", {"k": 2})
    # the strategy's cross-cycle state survives the agreement step untouched
    state = {"partal": {"min": [1.0], "max": [2.0]}}
    assert distributed.agree_with_rank_zero("sel", state) == "sel"
    assert state == {"partal": {"min": [1.0], "max": [2.0]}}
    calls: list[tuple[list[int], int | None]] = []

    def run(part: np.ndarray, seed: int | None) -> dict[str, torch.Tensor]:
        calls.append((part.tolist(), seed))
        return {"v": torch.as_tensor(part, dtype=torch.float32) * 2}

    out = distributed.sharded_summaries(np.array([5, 3, 9]), 2, 7, run)
    assert calls == [([5, 3, 9], 7)]
    assert out["v"].tolist() == [10.0, 6.0, 18.0]
    # rank 0 keeps the pass seed (its batches draw what one process draws); others differ
    assert distributed.shard_seed(7, 0) == 7 and distributed.shard_seed(None, 1) is None
    assert distributed.shard_seed(7, 1) == distributed.shard_seed(7, 1) != 7


@pytest.mark.ddp
def test_ddp_loop_selects_what_one_process_selects(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    script = tmp_path / "launch_mtal.py"
    script.write_text(LAUNCH)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", WANDB_MODE="offline")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    env.pop("LOCAL_RANK", None)
    args = [sys.executable, str(script), "loop", *DATA, "--trainer.accelerator", "cpu"]
    args += ["--trainer.devices", "2", "--trainer.strategy", "ddp", "--loop.strategy", "mtal"]
    args += ["--loop.strategy_kwargs", json.dumps(MTAL_FAST), "--loop.runs_dir", str(runs)]
    returncode, log = run_ranks(args, tmp_path, env)
    assert returncode == 0, log[-4000:]
    # both ranks took part; each scored its whole-batch share of every pass
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in log
    shares = set(re.findall(r"rank (\d)/2 scores positions \[(\d+), (\d+)\) of (\d+)", log))
    assert {("0", "0", "16", "24"), ("1", "16", "24", "24")} <= shares  # unlabelled pool
    assert {("0", "0", "8", "8"), ("1", "8", "8", "8")} <= shares  # labelled codes
    # rank 1 left every run-folder write to rank 0 and printed nothing of its own
    skipped = set(re.findall(r"rank 1 leaves (\S+) to rank 0", log))
    assert {"save_weights", "MetricsTable.put", "write_selection_csv"} <= skipped
    assert {"RunFolder.write_state", "RunFolder.save_pool", "RunFolder.write_config"} <= skipped
    assert log.count("new run, 8 initial images") == 1
    run = runs / "smoke" / "mtal" / "seed0"
    assert LabelPool.load(run / "pool" / "cycle_001.json").num_labelled_images == 16

    # one process, the same weights, pool and seed → the same request and pool file
    out, pool_out = tmp_path / "request.csv", tmp_path / "pool_001.json"
    ref = ["acquire", *DATA, "--weights", str(run / "cycle_000" / "weights.pt")]
    ref += ["--pool", str(run / "pool" / "cycle_000.json"), "--strategy", "mtal"]
    ref += ["--strategy_kwargs", json.dumps(MTAL_FAST), "--budget", "8", "--seed", "0"]
    ref += ["--out", str(out), "--pool_out", str(pool_out)]
    run_cli(ref)
    assert out.read_bytes() == (run / "selections" / "cycle_001.csv").read_bytes()
    assert pool_out.read_bytes() == (run / "pool" / "cycle_001.json").read_bytes()


@pytest.mark.parametrize("strategy", ["ddp_spawn", "ddp_fork"])
def test_spawning_strategies_are_refused_before_any_write(strategy: str, tmp_path: Path) -> None:
    args = ["loop", *DATA, "--trainer.accelerator", "cpu", "--trainer.devices", "2"]
    args += ["--trainer.strategy", strategy, "--loop.runs_dir", str(tmp_path / "runs")]
    with pytest.raises(ValueError, match=r"start method '(spawn|fork)'.*--trainer.strategy ddp"):
        run_cli(args)
    assert not (tmp_path / "runs").exists()
