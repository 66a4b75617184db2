"""The active-learning loop end to end on CPU, driven through the ``mtal`` CLI in-process:
pool growth, the run folder (pool files, metrics.csv, selections, config, state), one
monotonic step axis, determinism, ``mtal acquire`` and a pair-granularity strategy."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from mtal.cli import run_cli
from mtal.data.pool import LabelPool
from mtal.io import read_checked_json
from mtal.loop import STATE_SCHEMA, STATE_VERSION

TASKS = ["semseg", "depth", "normals"]
K = len(TASKS)
POOL, INITIAL, BUDGET_IMAGES, BATCH, CYCLES = 30, 6, 3, 4, 3
MTAL_FAST = {"ae_epochs": 2, "disc_epochs": 2, "code_dim": 32, "ae_hidden": 8}


def data_args() -> list[str]:
    """Model and data arguments shared by ``loop`` and ``acquire`` (tiny synthetic scenes)."""
    return [
        "--data.dataset_kwargs",
        json.dumps({"size": [32, 32], "cache": True}),
        "--data.tasks",
        json.dumps(TASKS),
        "--data.size",
        "[32, 32]",
        "--data.pool_size",
        str(POOL),
        "--data.val_size",
        "4",
        "--data.initial",
        str(INITIAL),
        "--data.batch_size",
        str(BATCH),
        "--data.eval_batch_size",
        "8",
        "--model.model_kwargs",
        '{"gt_substitution": true}',
    ]


def loop_args(runs: Path, strategy: str, kwargs: dict[str, Any] | None = None) -> list[str]:
    return [
        "loop",
        *data_args(),
        "--trainer.max_epochs",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        "--loop.runs_dir",
        str(runs),
        "--loop.cycles",
        str(CYCLES),
        "--loop.budget",
        str(BUDGET_IMAGES),
        "--loop.strategy",
        strategy,
        "--loop.strategy_kwargs",
        json.dumps(kwargs or {}),
        "--loop.logger",
        "csv",
    ]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def mtal_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("loop") / "runs"
    run_cli(loop_args(runs, "mtal", MTAL_FAST))
    return runs / "synthetic" / "mtal" / "seed0"


def test_pool_grows_by_exactly_the_budget(mtal_run: Path) -> None:
    pools = [LabelPool.load(mtal_run / "pool" / f"cycle_{c:03d}.json") for c in range(CYCLES)]
    assert not (mtal_run / "pool" / f"cycle_{CYCLES:03d}.json").exists()  # last cycle buys none
    assert pools[0].num_labelled_images == INITIAL and pools[0].num_labels == INITIAL * K
    for c in range(1, CYCLES):
        before, after = pools[c - 1], pools[c]
        assert after.num_labels - before.num_labels == BUDGET_IMAGES * K
        assert after.num_labelled_images - before.num_labelled_images == BUDGET_IMAGES
        # earlier labels are untouched; the new ones carry this cycle
        assert np.array_equal(after.labelled[before.labelled], before.labelled[before.labelled])
        assert np.array_equal(after.cycle[before.labelled], before.cycle[before.labelled])
        new = after.labelled & ~before.labelled
        assert set(after.cycle[new].tolist()) == {c}
        assert new.all(axis=1).sum() == BUDGET_IMAGES  # mtal buys whole images
        assert np.isfinite(after.score[new]).all()


def test_run_folder_is_readable(mtal_run: Path) -> None:
    pools = [LabelPool.load(mtal_run / "pool" / f"cycle_{c:03d}.json") for c in range(CYCLES)]
    rows = read_csv(mtal_run / "metrics.csv")
    assert [int(r["cycle"]) for r in rows] == list(range(CYCLES))
    for row, pool in zip(rows, pools):
        assert float(row["labelled_images"]) == pool.num_labelled_images
        assert float(row["labels"]) == pool.num_labels
        assert float(row["labelled_fraction"]) == pytest.approx(pool.num_labels / (POOL * K))
        for key in ("val/mtl_loss", "val/semseg/miou", "val/depth/rmse", "val/normals/mean"):
            assert math.isfinite(float(row[key])), key
    # one monotonic step axis: cycle c adds ceil(labelled images / batch) steps (1 epoch)
    steps = [int(r["step"]) for r in rows]
    expected = np.cumsum([math.ceil(p.num_labelled_images / BATCH) for p in pools]).tolist()
    assert steps == expected
    logged = [int(r["step"]) for r in read_csv(mtal_run / "csv_logs" / "metrics.csv")]
    assert logged == sorted(logged) and logged[-1] == steps[-1]

    for c in range(1, CYCLES):
        sel = read_csv(mtal_run / "selections" / f"cycle_{c:03d}.csv")
        new_images = np.flatnonzero(pools[c].labelled.any(1) & ~pools[c - 1].labelled.any(1))
        assert sorted(int(r["image_index"]) for r in sel) == new_images.tolist()
        for r in sel:
            i = int(r["image_index"])
            assert int(r["cycle"]) == c
            assert r["image_id"] == pools[c].image_ids[i] == f"synthetic-s0-train-{i:06d}"
            assert r["tasks"].split(";") == TASKS
            assert all(math.isfinite(float(r[f"score_{t}"])) for t in TASKS)
        assert (mtal_run / f"cycle_{c - 1:03d}" / "weights.pt").is_file()

    config = yaml.safe_load((mtal_run / "config.yaml").read_text())
    assert config["loop"]["strategy"] == "mtal" and config["loop"]["seed"] == 0
    assert config["seed_everything"] == 0 and config["data"]["pool_seed"] == 0
    state = read_checked_json(mtal_run / "state.json", STATE_SCHEMA, STATE_VERSION)
    seeds = state["seeds"]
    assert seeds["loop"] == 0 and seeds["pool"] == 0 and seeds["model_init"] == 0
    assert {f"fit_cycle_{c}" for c in range(CYCLES)} <= set(seeds)
    assert {f"select_cycle_{c}" for c in range(CYCLES - 1)} <= set(seeds)


def test_loop_records_acquisition_diagnostics(mtal_run: Path) -> None:
    rows = read_csv(mtal_run / "metrics.csv")
    for row in rows[:-1]:  # every cycle that ends with a selection (not the last)
        assert float(row["diag/scored"]) == POOL - float(row["labelled_images"])
        for key in [f"diag/{t}/spearman" for t in TASKS] + ["diag/image/spearman"]:
            assert -1.0 <= float(row[key]) <= 1.0, key
    assert not rows[-1].get("diag/scored")  # the last cycle buys nothing
    logged = read_csv(mtal_run / "csv_logs" / "metrics.csv")
    assert sum(1 for r in logged if r.get("diag/image/spearman")) == CYCLES - 1


def test_same_seed_same_run(mtal_run: Path, tmp_path: Path) -> None:
    run_cli(loop_args(tmp_path / "runs", "mtal", MTAL_FAST))
    again = tmp_path / "runs" / "synthetic" / "mtal" / "seed0"
    names = ["metrics.csv", "state.json", "init_weights.pt"]
    names += [f"pool/cycle_{c:03d}.json" for c in range(CYCLES)]
    names += [f"selections/cycle_{c:03d}.csv" for c in range(1, CYCLES)]
    names += [f"cycle_{c:03d}/weights.pt" for c in range(CYCLES)]
    for name in names:
        assert (again / name).read_bytes() == (mtal_run / name).read_bytes(), name


def test_disk_summary_store_buys_the_same_labels(mtal_run: Path, tmp_path: Path) -> None:
    """``loop.summary_store: disk`` (summaries memory-mapped on unnamed files in the run
    folder) runs the same selections: pools, requests and weights byte-identical to the
    in-memory run, and no file of the store is left in the run folder."""
    runs = tmp_path / "runs"
    run_cli([*loop_args(runs, "mtal", MTAL_FAST), "--loop.summary_store", "disk"])
    again = runs / "synthetic" / "mtal" / "seed0"
    names = [f"pool/cycle_{c:03d}.json" for c in range(CYCLES)]
    names += [f"selections/cycle_{c:03d}.csv" for c in range(1, CYCLES)]
    names += [f"cycle_{c:03d}/weights.pt" for c in range(CYCLES)]
    for name in names:
        assert (again / name).read_bytes() == (mtal_run / name).read_bytes(), name
    assert sorted(p.name for p in again.iterdir()) == sorted(p.name for p in mtal_run.iterdir())
    # the store is not part of the run's identity: a rerun may switch it back
    run_cli([*loop_args(runs, "mtal", MTAL_FAST), "--loop.summary_store", "memory"])
    with pytest.raises(ValueError, match="only read with loop.summary_store: disk"):
        run_cli([*loop_args(runs, "mtal", MTAL_FAST), "--loop.summary_dir", str(tmp_path)])
    missing = tmp_path / "no_such_folder"
    with pytest.raises(ValueError, match="not an existing folder"):
        run_cli(
            [*loop_args(runs, "mtal", MTAL_FAST), "--loop.summary_store", "disk"]
            + ["--loop.summary_dir", str(missing)]
        )


def test_acquire_repeats_the_loop_and_writes_a_valid_pool(mtal_run: Path, tmp_path: Path) -> None:
    pool_file = mtal_run / "pool" / "cycle_001.json"
    pool_bytes = pool_file.read_bytes()
    out, pool_out = tmp_path / "request.csv", tmp_path / "next_pool.json"
    args = ["acquire", *data_args(), "--trainer.enable_progress_bar", "false"]
    args += ["--weights", str(mtal_run / "cycle_001" / "weights.pt"), "--pool", str(pool_file)]
    args += ["--strategy", "mtal", "--strategy_kwargs", json.dumps(MTAL_FAST)]
    args += ["--budget", str(BUDGET_IMAGES), "--out", str(out), "--pool_out", str(pool_out)]
    run_cli(args)
    assert pool_file.read_bytes() == pool_bytes  # never modified in place
    rows = read_csv(out)
    assert list(rows[0])[:5] == ["cycle", "image_index", "image_id", "image_path", "tasks"]
    assert {f"score_{t}" for t in TASKS} <= set(rows[0])
    # same weights, pool and seed as the loop's cycle 1 → the loop's request for cycle 2
    assert out.read_bytes() == (mtal_run / "selections" / "cycle_002.csv").read_bytes()
    before, after = LabelPool.load(pool_file), LabelPool.load(pool_out)
    assert after == LabelPool.load(mtal_run / "pool" / "cycle_002.json")
    new = after.labelled & ~before.labelled
    assert sorted(np.flatnonzero(new.any(1)).tolist()) == sorted(
        int(r["image_index"]) for r in rows
    )
    assert set(after.cycle[new].tolist()) == {2}
    # the same request with the summaries memory-mapped in a folder of ours
    store = tmp_path / "store"
    store.mkdir()
    out_disk = tmp_path / "request_disk.csv"
    disk_args = [a if a != str(out) else str(out_disk) for a in args if a != "--pool_out"]
    disk_args = [a for a in disk_args if a != str(pool_out)] + ["--summary_dir", str(store)]
    run_cli(disk_args)
    assert out_disk.read_bytes() == out.read_bytes()
    assert list(store.iterdir()) == []  # unnamed files: nothing left behind
    with pytest.raises(FileNotFoundError, match="--summary_dir .* is not an existing folder"):
        run_cli([*disk_args[:-1], str(tmp_path / "missing")])


def test_pair_strategy_loop(tmp_path: Path) -> None:
    run_cli(loop_args(tmp_path / "runs", "random_pairs"))
    run = tmp_path / "runs" / "synthetic" / "random_pairs" / "seed0"
    pools = [LabelPool.load(run / "pool" / f"cycle_{c:03d}.json") for c in range(CYCLES)]
    for c in range(1, CYCLES):
        new = pools[c].labelled & ~pools[c - 1].labelled
        assert new.sum() == BUDGET_IMAGES * K  # the same number of labels, as pairs
        sel = read_csv(run / "selections" / f"cycle_{c:03d}.csv")
        requested = {(int(r["image_index"]), t) for r in sel for t in r["tasks"].split(";")}
        assert requested == {(int(i), TASKS[int(k)]) for i, k in np.argwhere(new)}
    # pairs leave some images partially labelled, which training must accept
    assert (pools[-1].labelled.any(1) & ~pools[-1].labelled.all(1)).any()
    rows = read_csv(run / "metrics.csv")
    assert [int(r["cycle"]) for r in rows] == list(range(CYCLES))
    assert all(math.isfinite(float(r["val/mtl_loss"])) for r in rows)


def test_wandb_key_never_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    key = "0123456789abcdef0123456789abcdef01234567"
    monkeypatch.setenv("WANDB_API_KEY", key)
    monkeypatch.setenv("WANDB_MODE", "offline")
    runs = tmp_path / "runs"
    argv = [
        "loop",
        "--data.dataset_kwargs",
        json.dumps({"size": [32, 32], "cache": True}),
        "--data.tasks",
        "[semseg, depth]",
        "--data.size",
        "[32, 32]",
        "--data.pool_size",
        "8",
        "--data.val_size",
        "2",
        "--data.initial",
        "4",
        "--trainer.max_epochs",
        "1",
        "--loop.runs_dir",
        str(runs),
        "--loop.cycles",
        "2",
        "--loop.budget",
        "2",
        "--loop.strategy",
        "random",
        "--loop.logger",
        "wandb",
        "--loop.description",
        f"pasted by mistake: WANDB_API_KEY={key} api_key=s3cr3tvalue password: hunter2",
    ]
    monkeypatch.setattr("sys.argv", ["mtal", *argv])  # what wandb sees as the command line
    run_cli(argv)
    out, err = capfd.readouterr()
    run = runs / "synthetic" / "random" / "seed0"
    files = [p for p in run.rglob("*") if p.is_file()]
    assert any("wandb" in p.parts for p in files)  # the offline W&B run is in the folder
    assert "<redacted>" in (run / "config.yaml").read_text()  # the description went through
    for secret in (key, "s3cr3tvalue", "hunter2"):  # .wandb, debug.log, config.yaml, ...
        leaked = [str(p) for p in files if secret.encode() in p.read_bytes()]
        assert leaked == [], secret
        assert secret not in out and secret not in err
