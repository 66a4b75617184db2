"""Labels from people, end to end on a procedural fixture in the NYUD_MT layout: the loop
with ``loop.oracle: human`` requests labels and stops, the label files come back through
``mtal label import`` (refused when missing, extra or malformed), and the loop continues;
a crash before the request is written repeats the same request."""

from __future__ import annotations

import json
import os
import shutil
import sys
import traceback
from pathlib import Path

import numpy as np
import pytest

from mtal.cli import main, run_cli
from mtal.data.fixtures import save_png, write_synthetic_fixture
from mtal.data.pool import LabelPool
from mtal.labelling import EXIT_LABELS_REQUESTED
from mtal.labelling.manifest import find_request, read_request
from mtal.loop import CRASH_ENV

TASKS = ["semseg", "depth", "normals"]
N_TRAIN, INITIAL, BUDGET = 12, 4, 2


def loop_args(root: Path, runs: Path, cycles: int = 3) -> list[str]:
    return [
        "loop",
        "--data.dataset", "nyud",
        "--data.root", str(root),
        "--data.tasks", json.dumps(TASKS),
        "--data.dataset_kwargs", "{}",
        "--data.size", "[32, 32]",
        "--data.initial", str(INITIAL),
        "--data.batch_size", "4",
        "--data.eval_batch_size", "4",
        "--trainer.max_epochs", "1",
        "--trainer.enable_progress_bar", "false",
        "--loop.runs_dir", str(runs),
        "--loop.cycles", str(cycles),
        "--loop.budget", str(BUDGET),
        "--loop.strategy", "random",
        "--loop.oracle", "human",
        "--loop.experiment", "nyud",
        "--loop.logger", "none",
    ]  # fmt: skip


def stash_unlabelled(root: Path, stash: Path) -> None:
    """Move every label file of the images outside the initial set to ``stash`` (same
    relative layout): the dataset holds only what the pool has bought."""
    from mtal.data.nyud import NYUD

    ds = NYUD(root, "train", tasks=TASKS)
    pool = LabelPool([ds.image_id(i) for i in range(len(ds))], TASKS)
    pool.initialise(count=INITIAL, seed=0)  # what the datamodule does (pool_seed 0)
    for i in pool.unlabelled_images().tolist():
        for task in TASKS:
            src = ds.task_path(i, task)
            dest = stash / src.relative_to(root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(src, dest)


def loop_exit(argv: list[str]) -> int:
    """Run ``mtal loop`` in-process; its exit status (0 when it ran to the end)."""
    try:
        run_cli(argv)
    except SystemExit as stop:
        return int(stop.code or 0)
    return 0


def deliver(stash: Path, to: Path, label_paths: list[str]) -> Path:
    """Copy the stashed files of ``label_paths`` into a delivery folder ``to``."""
    for rel in label_paths:
        (to / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(stash / rel, to / rel)
    return to


def label_import(run: Path, request_id: str, source: Path, *extra: str) -> int:
    return main(["label", "import", "--run", str(run), "--request", request_id,
                 "--from", str(source), *extra])  # fmt: skip


@pytest.fixture(scope="module")
def requested(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A human-oracle run stopped after cycle 0 with its first request written."""
    base = tmp_path_factory.mktemp("human")
    root, stash, runs = base / "NYUD_MT", base / "stash", base / "runs"
    write_synthetic_fixture("nyud", root, n_train=N_TRAIN, n_val=2, size=(32, 32))
    stash_unlabelled(root, stash)
    assert loop_exit(loop_args(root, runs)) == EXIT_LABELS_REQUESTED
    return {"root": root, "stash": stash, "runs": runs, "run": runs / "nyud" / "random" / "seed0"}


def test_loop_stops_with_a_request(
    requested: dict[str, Path], capsys: pytest.CaptureFixture
) -> None:
    run = requested["run"]
    request = find_request(run, 1)
    assert request is not None and request.cycle == 1
    assert not (run / "pool" / "cycle_001.json").exists()  # nothing bought yet
    assert len(request.pairs) == BUDGET * len(TASKS)
    assert {p["label_path"] for p in request.pairs if p["task"] == "semseg"} == {
        f"segmentation/{p['image_id']}.png" for p in request.pairs if p["task"] == "semseg"
    }
    tasks = json.loads((run / request.exports["labelstudio_semseg"]).read_text())
    assert len(tasks) == BUDGET and tasks[0]["data"]["image"].startswith("/data/local-files/?d=")
    assert tasks[0]["meta"]["request_id"] == request.request_id
    config = (run / "requests" / f"{request.request_id}.labelstudio" / "semseg.xml").read_text()
    assert "<BrushLabels" in config and 'value="class_39"' in config
    # a rerun before the import stops again with the same request and does not refit
    assert loop_exit(loop_args(requested["root"], requested["runs"])) == EXIT_LABELS_REQUESTED
    out = capsys.readouterr().out
    assert "labels requested" in out and f"--request {request.request_id}" in out
    assert "rerun this command" in out
    assert len(list((run / "requests").glob("c001-*.json"))) == 1
    assert len((run / "metrics.csv").read_text().splitlines()) == 2  # header + cycle 0


def test_import_refuses_missing_labels(requested: dict[str, Path], tmp_path: Path) -> None:
    run, request = requested["run"], find_request(requested["run"], 1)
    half = [p["label_path"] for p in request.pairs][:-1]
    source = deliver(requested["stash"], tmp_path / "delivery", half)
    assert label_import(run, request.request_id, source) == 1
    assert not (run / "pool" / "cycle_001.json").exists()
    assert not (requested["root"] / half[0]).exists()  # nothing copied


def test_import_refuses_an_unrequested_label(requested: dict[str, Path], tmp_path: Path) -> None:
    run, request = requested["run"], find_request(requested["run"], 1)
    wanted = [p["label_path"] for p in request.pairs]
    other = next(
        p.relative_to(requested["stash"]).as_posix()
        for p in sorted(requested["stash"].rglob("*.npy"))
        if p.relative_to(requested["stash"]).as_posix() not in wanted
    )
    source = deliver(requested["stash"], tmp_path / "delivery", [*wanted, other])
    assert label_import(run, request.request_id, source) == 1
    listing = tmp_path / "list.json"
    rows = [{"image_id": "999999", "task": "depth", "path": "x.npy"}]
    listing.write_text(json.dumps(rows))
    assert label_import(run, request.request_id, listing) == 1
    assert not (run / "pool" / "cycle_001.json").exists()


@pytest.mark.parametrize("broken", ["class", "shape", "not_npy", "empty"])
def test_import_refuses_malformed_labels(
    requested: dict[str, Path], tmp_path: Path, broken: str, capsys: pytest.CaptureFixture
) -> None:
    run, request = requested["run"], find_request(requested["run"], 1)
    wanted = [p["label_path"] for p in request.pairs]
    source = deliver(requested["stash"], tmp_path / "delivery", wanted)
    seg = next(r for r in wanted if r.startswith("segmentation/"))
    depth = next(r for r in wanted if r.startswith("depth/"))
    if broken == "class":  # NYUD classes are 0 (void) and 1..40
        save_png(source / seg, np.full((32, 32), 77, np.uint8))
    elif broken == "shape":
        np.save(source / depth, np.ones((16, 32), np.float32))
    elif broken == "not_npy":
        (source / depth).write_bytes(b"not a numpy file")
    else:  # void everywhere: carries no label
        save_png(source / seg, np.zeros((32, 32), np.uint8))
    assert label_import(run, request.request_id, source) == 1
    err = capsys.readouterr().err
    assert (
        "refused, nothing imported" in err
        and (seg if broken in ("class", "empty") else depth) in err
    )
    assert not (run / "pool" / "cycle_001.json").exists()
    assert not (requested["root"] / wanted[0]).exists()


def test_acquire_writes_the_same_request_for_label_studio(
    requested: dict[str, Path], tmp_path: Path
) -> None:
    """``mtal acquire --format labelstudio`` from the run's cycle-0 weights and pool
    requests what the loop requested, and its request imports the same way."""
    run = requested["run"]
    loop_request = find_request(run, 1)
    data = loop_args(requested["root"], requested["runs"])[1:13]  # the --data.* arguments
    out = tmp_path / "out" / "request.csv"
    out.parent.mkdir()  # acquire refuses to invent a missing output folder (issue 13)
    run_cli(
        ["acquire", *data, "--trainer.enable_progress_bar", "false"]
        + ["--weights", str(run / "cycle_000" / "weights.pt")]
        + ["--pool", str(run / "pool" / "cycle_000.json"), "--budget", str(BUDGET)]
        + ["--strategy", "random", "--out", str(out), "--format", "labelstudio"]
    )
    request = find_request(out.parent, 1)
    assert request is not None and request.request_id == loop_request.request_id
    assert request.pairs == loop_request.pairs
    assert (out.parent / request.exports["labelstudio_depth"]).exists()
    source = deliver(
        requested["stash"], tmp_path / "delivery", [p["label_path"] for p in request.pairs]
    )
    assert label_import(out.parent, request.request_id, source) == 0
    pool = LabelPool.load(out.parent / "requests" / f"{request.request_id}.pool.json")
    assert pool.num_labels == LabelPool.load(run / "pool" / "cycle_000.json").num_labels + len(
        request.pairs
    )


def test_round_trip_continues_and_partial_import(
    requested: dict[str, Path], tmp_path: Path
) -> None:
    root, stash, runs, run = (requested[k] for k in ("root", "stash", "runs", "run"))
    request = find_request(run, 1)
    wanted = [p["label_path"] for p in request.pairs]
    source = deliver(stash, tmp_path / "delivery1", wanted)
    assert label_import(run, request.request_id, source) == 0
    before = LabelPool.load(run / "pool" / "cycle_000.json")
    after = LabelPool.load(run / "pool" / "cycle_001.json")
    new = after.labelled & ~before.labelled
    assert {(int(i), TASKS[int(k)]) for i, k in np.argwhere(new)} == request.pair_keys()
    assert set(after.cycle[new].tolist()) == {1}
    assert all((root / rel).read_bytes() == (stash / rel).read_bytes() for rel in wanted)
    assert label_import(run, request.request_id, source) == 1  # imported once
    # continue: cycle 1 fits on the imported labels, then the next request stops it
    assert loop_exit(loop_args(root, runs)) == EXIT_LABELS_REQUESTED
    second = find_request(run, 2)
    assert second is not None and second.base_pool == "pool/cycle_001.json"
    wanted2 = [p["label_path"] for p in second.pairs]
    source2 = deliver(stash, tmp_path / "delivery2", wanted2[:3])
    assert label_import(run, second.request_id, source2) == 1  # incomplete, no --partial
    assert label_import(run, second.request_id, source2, "--partial") == 0
    record = json.loads((run / "requests" / f"{second.request_id}.import.json").read_text())
    assert len(record["imported"]) == 3 and len(record["missing"]) == len(wanted2) - 3
    pool2 = LabelPool.load(run / "pool" / "cycle_002.json")
    assert pool2.num_labels == after.num_labels + 3
    assert loop_exit(loop_args(root, runs)) == 0  # the last cycle fits and the run ends
    assert len((run / "metrics.csv").read_text().splitlines()) == 4


def test_crash_before_the_request_repeats_it(requested: dict[str, Path], tmp_path: Path) -> None:
    """SIGKILL right before the manifest write (forked child); the rerun writes the same
    request as the uncrashed run."""
    runs = tmp_path / "runs"
    root = tmp_path / "NYUD_MT"
    write_synthetic_fixture("nyud", root, n_train=N_TRAIN, n_val=2, size=(32, 32))
    stash_unlabelled(root, tmp_path / "stash")
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        code = 1
        try:
            import torch

            torch.set_num_threads(1)
            os.environ[CRASH_ENV] = "before_pool_write:1"
            loop_exit(loop_args(root, runs))
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status), status
    run = runs / "nyud" / "random" / "seed0"
    assert find_request(run, 1) is None and (run / "selections" / "cycle_001.csv").exists()
    assert loop_exit(loop_args(root, runs)) == EXIT_LABELS_REQUESTED
    again = find_request(run, 1)
    first = read_request(requested["run"], again.request_id)  # same id: same pool and pairs
    assert again.pairs == first.pairs


def test_report_plots_against_cumulative_cost(requested: dict[str, Path]) -> None:
    """After the round trip: the report's cost axis, hand-priced from the pool files."""
    from mtal.report import write_report
    from mtal.report_costs import cumulative_costs

    run = requested["run"]
    prices = {"semseg": 10.0, "depth": 0.5, "normals": 2.0}
    record = next((run / "requests").glob("c002-*.import.json"))
    partial = sum(prices[t] for _, t in json.loads(record.read_text())["imported"])
    # 4 initial images × 12.5, + 2 whole images × 12.5, + the 3 partially imported pairs
    assert cumulative_costs(run, prices) == {0: 50.0, 1: 75.0, 2: 75.0 + partial}
    out = write_report(requested["runs"] / "nyud", task_costs=prices)
    assert (out / "cost_curve_mtl_loss.png").exists()
    assert "Annotation cost needed" in (out / "savings_cost.md").read_text()


def test_human_oracle_needs_a_file_dataset(tmp_path: Path) -> None:
    from mtal.loop import LoopSettings, validate_settings

    with pytest.raises(ValueError, match="loop.oracle='crowd': choose one of"):
        validate_settings(LoopSettings(oracle="crowd"))
    argv = ["loop", "--config", "configs/synthetic/smoke.yaml", "--loop.oracle", "human"]
    with pytest.raises(ValueError, match="labels from people need a file dataset"):
        run_cli([*argv, "--loop.runs_dir", str(tmp_path / "runs"), "--loop.logger", "none"])
    assert not (tmp_path / "runs").exists()  # refused before the run folder is written
