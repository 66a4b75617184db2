"""Ordinary mistakes must not corrupt a run folder (issue 13): a rerun with other
settings, two processes on one folder, an interrupted run, bad split files, secrets in
the config, and the smaller checks (metrics table, pool sense, paths, acquire outputs,
data check, file modes, stale temporary files).

The lock and signal tests run the real ``python -m mtal.cli`` command as processes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

from mtal.cli import main, run_cli
from mtal.data.base import DatasetLayoutError
from mtal.data.datamodule import ActiveDataModule
from mtal.data.fixtures import write_nyud
from mtal.data.pool import LabelPool
from mtal.data.synthetic import SyntheticScenes
from mtal.io import StateFileError, atomic_write_bytes
from mtal.loop import MetricsTable
from mtal.loop.identity import ConfigChangedError
from mtal.loop.lock import RunLock, RunLockedError
from mtal.report import table_rows
from mtal.tracking import REDACTED, redact

REPO = Path(__file__).resolve().parents[1]
RUN = Path("synthetic") / "random" / "seed0"
SECRET = "0123456789abcdef0123456789abcdef01234567"  # a W&B-style 40-hex key


def loop_argv(runs: Path, *extra: str) -> list[str]:
    """A tiny loop (12 images of 32×32, 2 tasks, 1 epoch, 2 images a cycle)."""
    return [
        "loop",
        "--data.tasks",
        "[semseg, depth]",
        "--data.dataset_kwargs",
        '{"size": [32, 32], "cache": true}',
        "--data.size",
        "[32, 32]",
        "--data.pool_size",
        "12",
        "--data.val_size",
        "2",
        "--data.initial",
        "4",
        "--data.batch_size",
        "4",
        "--trainer.max_epochs",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        "--loop.runs_dir",
        str(runs),
        "--loop.cycles",
        "3",
        "--loop.budget",
        "2",
        "--loop.strategy",
        "random",
        "--loop.logger",
        "none",
        *extra,
    ]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` but the lock file (its content is the holder's PID)."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and p.name != ".lock"
    }


@pytest.fixture(scope="module")
def two_cycles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run stopped after 2 of its 3 cycles (pools 0-2, weights 0-1); its description
    holds credentials in free text."""
    runs = tmp_path_factory.mktemp("identity") / "runs"
    note = f"api_key=s3cr3tvalue password: hunter2 key {SECRET}"
    run_cli(loop_argv(runs, "--loop.stop_after", "2", "--loop.description", note))
    return runs


def copy_of(runs: Path, tmp_path: Path) -> Path:
    shutil.copytree(runs, tmp_path / "runs")
    return tmp_path / "runs"


# -- 1. the run's identity --------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--loop.budget", "3"], ["loop.budget: 2.0 → 3.0"]),
        (
            ["--model.lr", "0.01", "--trainer.max_epochs", "2"],
            ["model.lr: 0.0001 → 0.01", "trainer.max_epochs: 1 → 2"],
        ),
        (["--data.pool_seed", "5", "--loop.continuous", "false"], ["data.pool_seed: 0 → 5"]),
        (
            ["--loop.strategy", "coreset", "--loop.name", "random"],
            ['loop.strategy: "random" → "coreset"'],
        ),
        (["--loop.cycles", "2"], ["a run cannot be shortened"]),  # it reached cycle 2
    ],
)
def test_rerun_with_changed_settings_stops_listing_each_key_and_touches_nothing(
    two_cycles: Path, tmp_path: Path, extra: list[str], expected: list[str]
) -> None:
    runs = copy_of(two_cycles, tmp_path)
    before = snapshot(runs)
    with pytest.raises(ConfigChangedError) as err:
        run_cli(loop_argv(runs, *extra))
    for line in expected:
        assert line in str(err.value)
    if "loop.continuous" in extra:
        assert "loop.continuous: true → false" in str(err.value)
    assert snapshot(runs) == before


def test_a_deliberate_change_is_recorded_and_growing_cycles_is_allowed(
    two_cycles: Path, tmp_path: Path
) -> None:
    runs = copy_of(two_cycles, tmp_path)
    run = runs / RUN
    identity = (run / "identity.json").read_bytes()
    # the same command with more cycles and a new description resumes without a flag
    run_cli(loop_argv(runs, "--loop.cycles", "4", "--loop.stop_after", "1"))
    history = yaml.safe_load((run / "config_history.yaml").read_text())
    assert history[-1]["changes"] == {"loop.cycles": {"old": 3, "new": 4}}
    # a changed budget needs the flag, and is appended, never replacing the original
    changed = ["--loop.cycles", "5", "--loop.budget", "1", "--loop.stop_after", "1"]
    with pytest.raises(ConfigChangedError, match="loop.budget"):
        run_cli(loop_argv(runs, *changed))
    run_cli(loop_argv(runs, *changed, "--loop.allow_config_change", "true"))
    history = yaml.safe_load((run / "config_history.yaml").read_text())
    assert history[-1]["changes"] == {
        "loop.budget": {"old": 2.0, "new": 1.0},
        "loop.cycles": {"old": 4, "new": 5},
    }
    assert history[-1]["from_cycle"] == 3 and history[-1]["reason"] == "loop.allow_config_change"
    assert (run / "identity.json").read_bytes() == identity
    # cycle 3 bought 1 image (2 labels), the earlier cycles 2 images each
    pools = [LabelPool.load(run / "pool" / f"cycle_{c:03d}.json") for c in range(5)]
    assert [p.num_labels for p in pools] == [8, 12, 16, 20, 22]
    # the recorded change is now part of the identity: rerunning with it is no change
    before = snapshot(runs)
    with pytest.raises(ConfigChangedError, match="loop.budget: 1.0 → 2.0"):
        run_cli(loop_argv(runs, "--loop.cycles", "5"))
    assert snapshot(runs) == before


def test_a_written_request_csv_is_never_replaced_by_another(
    two_cycles: Path, tmp_path: Path
) -> None:
    runs = copy_of(two_cycles, tmp_path)
    run = runs / RUN
    # a crash between the request and the pool write: the request stays, the pool not
    (run / "pool" / "cycle_002.json").unlink()
    request = run / "selections" / "cycle_002.csv"
    lines = request.read_text().splitlines()
    other = "\n".join([lines[0], *(line.replace("2,", "9,", 1) for line in lines[1:])]) + "\n"
    request.write_text(other)  # as if another selection had been sent out
    with pytest.raises(StateFileError, match="already holds another request") as err:
        run_cli(loop_argv(runs, "--loop.stop_after", "1"))
    assert str(request) in str(err.value) and request.read_text() == other
    assert not (run / "pool" / "cycle_002.json").exists()


# -- 2. the lock and 4. exit codes (real processes) --------------------------------------


def _env() -> dict[str, str]:
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    env.update(PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO / "src"))
    return env


def start_cli(argv: list[str], log: Path) -> int:
    """Fork a child that runs the ``mtal`` entry point (:func:`mtal.cli.main`, exactly
    what the console script runs) with output to ``log``; returns its PID. A fork does
    not pay the interpreter and torch start-up of a fresh ``python -m mtal.cli``."""
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        code = 1
        try:
            import torch

            torch.set_num_threads(1)  # the parent's OpenMP pool does not survive fork()
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            sys.stdout = sys.stderr = open(fd, "w", buffering=1, closefd=False)  # noqa: SIM115
            os.environ["WANDB_MODE"] = "disabled"
            code = main(argv)
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid


def wait_for(log: Path, text: str, pid: int, limit: float = 90.0) -> None:
    """Wait until ``text`` is in ``log`` (the child must still run)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text():
            return
        done, _ = os.waitpid(pid, os.WNOHANG)
        assert not done, log.read_text()[-3000:]
        time.sleep(0.05)
    pytest.fail(f"{text!r} not in {log}: {log.read_text()[-3000:]}")


def exit_status(pid: int, limit: float = 60.0) -> int:
    """The child's exit code (128 + n when a signal killed it)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status) % 256
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"child {pid} ran past {limit}s")


def test_second_process_on_a_run_folder_fails_naming_the_holder_and_sigterm_exits_143(
    tmp_path: Path,
) -> None:
    runs = tmp_path / "runs"
    argv = loop_argv(runs, "--trainer.max_epochs", "500")
    first_log, second_log = tmp_path / "first.txt", tmp_path / "second.txt"
    first = start_cli(argv, first_log)
    try:
        wait_for(first_log, "new run", first)  # holding the lock, about to fit cycle 0
        second = start_cli(argv, second_log)
        assert exit_status(second) == 1
        message = second_log.read_text()
        assert f"in use by another mtal process (PID {first}" in message
        assert "Traceback" not in message
        time.sleep(1.0)  # well inside cycle 0's fit
        os.kill(first, signal.SIGTERM)
        assert exit_status(first) == 143
    finally:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(first, signal.SIGKILL)
            os.waitpid(first, 0)
    assert "interrupted at cycle 0; rerun the same command to resume" in first_log.read_text()
    RunLock(runs / RUN).acquire().release()  # released with the process
    assert not (runs / RUN / "cycle_000").exists()  # the fit did not finish: nothing saved


def test_a_stale_lock_after_kill_9_does_not_block(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    script = (
        "import importlib.util, sys, time\n"
        f"spec = importlib.util.spec_from_file_location('lock', {str(REPO / 'src/mtal/loop/lock.py')!r})\n"
        "lock = importlib.util.module_from_spec(spec); spec.loader.exec_module(lock)\n"
        f"lock.RunLock({str(folder)!r}).acquire(); print('held', flush=True); time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
    with pytest.raises(RunLockedError, match=f"PID {holder.pid}"):
        RunLock(folder).acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    assert (folder / ".lock").exists()  # the file stays, the lock does not
    RunLock(folder).acquire().release()


def test_a_locked_run_folder_stops_an_in_process_loop(two_cycles: Path, tmp_path: Path) -> None:
    runs = copy_of(two_cycles, tmp_path)
    lock = RunLock(runs / RUN).acquire()
    try:
        before = snapshot(runs)
        with pytest.raises(RunLockedError, match=f"PID {os.getpid()}"):
            run_cli(loop_argv(runs))
        assert snapshot(runs) == before
    finally:
        lock.release()


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_experiment_exits_with_the_signal_code(
    tmp_path: Path, signum: int, code: int
) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        yaml.safe_dump(
            {
                "name": "interrupt",
                "config": str(REPO / "configs/synthetic/smoke.yaml"),
                "strategies": ["random", "coreset"],
                "seeds": [0],
                "overrides": {"trainer.max_epochs": 500, "loop.logger": "none"},
            }
        )
    )
    log = tmp_path / "log.txt"
    pid = start_cli(["experiment", str(grid), "--runs-dir", str(tmp_path / "runs")], log)
    try:
        wait_for(log, "new run", pid)
        time.sleep(1.0)  # inside cycle 0's fit of run 1 of 2
        os.kill(pid, signum)
        assert exit_status(pid) == code
    finally:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    assert "interrupted at cycle 0; rerun the same command to resume" in log.read_text()
    assert "[2/2]" not in log.read_text()


# -- 3. report rows keyed by cycle -------------------------------------------------------


def test_report_rows_are_keyed_by_cycle_when_a_metric_is_nan() -> None:
    nan = float("nan")
    rows = [
        {"cycle": 0.0, "labels": 8.0, "labelled_fraction": 0.2, "val/mtl_loss": 3.0, "val/d": 1.0},
        {"cycle": 1.0, "labels": 12.0, "labelled_fraction": 0.3, "val/mtl_loss": nan, "val/d": 0.9},
        {"cycle": 2.0, "labels": 16.0, "labelled_fraction": 0.4, "val/mtl_loss": 2.0, "val/d": 0.8},
    ]
    table = table_rows({"random": [rows]}, ["val/mtl_loss", "val/d"])
    assert [(r["cycle"], r["labels"], r["% labels"]) for r in table] == [
        ("0", "8", "20.0"),
        ("1", "12", "30.0"),
        ("2", "16", "40.0"),
    ]
    assert [r["val/mtl_loss"] for r in table] == ["3.0000 ± 0.0000", "", "2.0000 ± 0.0000"]
    assert [r["val/d"] for r in table] == [
        "1.0000 ± 0.0000",
        "0.9000 ± 0.0000",
        "0.8000 ± 0.0000",
    ]


# -- 5. split files ------------------------------------------------------------------------


@pytest.fixture()
def nyud_root(tmp_path: Path) -> Path:
    root = tmp_path / "nyud"
    write_nyud(root, SyntheticScenes(size=(32, 32), length=10), n_train=8, n_val=2)
    return root


@pytest.mark.parametrize("damage", ["duplicate", "val_in_train", "escape"])
def test_bad_split_files_are_errors_naming_file_and_line(nyud_root: Path, damage: str) -> None:
    train = nyud_root / "gt_sets" / "train.txt"
    val = nyud_root / "gt_sets" / "val.txt"
    ids = train.read_text().split()
    if damage == "duplicate":
        train.write_text("\n".join([*ids, ids[2]]) + "\n")
        expected = [f"{train}:{len(ids) + 1}", "listed twice", "line 3"]
    elif damage == "val_in_train":
        val_id = val.read_text().split()[0]
        train.write_text("\n".join([*ids, val_id]) + "\n")
        expected = [f"{train}:{len(ids) + 1}", f"{val}:1", repr(val_id)]
    else:
        train.write_text("\n".join([*ids, "../../x"]) + "\n")
        expected = [f"{train}:{len(ids) + 1}", "leaving the dataset root"]
    dm = ActiveDataModule("nyud", root=str(nyud_root), tasks=["semseg", "depth"], initial=2)
    with pytest.raises(DatasetLayoutError) as err:
        dm.setup("fit")
    for text in expected:
        assert text in str(err.value)


# -- 6. secrets ------------------------------------------------------------------------------


def test_free_text_credentials_are_redacted() -> None:
    text = f'api_key=abc123 password: hunter2 "secret": "s3" --wandb-token tok9 k {SECRET}'
    out = redact({"loop": {"description": text}, "token": "x", "note": "tokens are fine"})
    assert out["loop"]["description"] == (
        f'api_key={REDACTED} password: {REDACTED} "secret": {REDACTED} '
        f"--wandb-token {REDACTED} k {REDACTED}"
    )
    assert out["token"] == REDACTED and out["note"] == "tokens are fine"


def test_loop_config_yaml_has_no_secret(two_cycles: Path) -> None:
    text = "".join(p.read_text() for p in (two_cycles / RUN).glob("*.yaml"))
    text += (two_cycles / RUN / "identity.json").read_text()
    assert "s3cr3tvalue" not in text and "hunter2" not in text and SECRET not in text
    assert "api_key=<redacted>" in (two_cycles / RUN / "config.yaml").read_text()


def test_fit_writes_a_redacted_config_and_no_args_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = "livekey-" + "9" * 32
    monkeypatch.setenv("WANDB_API_KEY", live)
    note = f"key {SECRET} live {live} password=hunter2"
    argv = loop_argv(tmp_path / "runs", "--loop.description", note)
    argv[0] = "fit"
    argv += ["--trainer.max_steps", "1", "--trainer.limit_val_batches", "1"]
    argv += ["--trainer.default_root_dir", str(tmp_path / "fit")]
    monkeypatch.setattr(sys, "argv", ["mtal", *argv])  # as the console script sees it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_cli(argv)
    assert not [w for w in caught if "args parameter" in str(w.message)]
    (saved,) = (tmp_path / "fit").rglob("config.yaml")
    text = saved.read_text()
    assert SECRET not in text and live not in text and "hunter2" not in text
    assert yaml.safe_load(text)["trainer"]["max_steps"] == 1


# -- 7. smaller defects ------------------------------------------------------------------------


def test_a_truncated_metrics_row_is_refused(tmp_path: Path) -> None:
    table = MetricsTable(tmp_path / "metrics.csv")
    table.put({"cycle": 0, "labels": 8.0, "val/mtl_loss": 3.0})
    table.put({"cycle": 1, "labels": 12.0, "val/mtl_loss": 2.5})
    data = table.path.read_bytes()
    table.path.write_bytes(data[: data.rindex(b",")] + b"\n")  # the last row lost a cell
    with pytest.raises(StateFileError, match="line 3 has 2 cells, the header 3"):
        table.rows()
    table.path.write_bytes(data[:-3])  # the last cell cut short, no final newline
    with pytest.raises(StateFileError, match="cut short"):
        table.rows()


@pytest.mark.parametrize("damage", ["cycle_99", "negative_weight"])
def test_a_checksummed_pool_that_makes_no_sense_is_refused(
    two_cycles: Path, tmp_path: Path, damage: str
) -> None:
    runs = copy_of(two_cycles, tmp_path)
    path = runs / RUN / "pool" / "cycle_002.json"
    pool = LabelPool.load(path)
    row, col = np.argwhere(pool.labelled)[0]
    if damage == "cycle_99":
        pool.cycle[row, col], match = 99, r"cycle\(s\) \[99\]"
    else:
        pool.weight[row, col] = float("nan") if damage == "nan_weight" else -1.0
        match = "negative weights"
    pool.save(path)  # a valid checksum
    before = snapshot(runs)
    with pytest.raises(StateFileError, match=match) as err:
        run_cli(loop_argv(runs))
    assert str(path) in str(err.value) and snapshot(runs) == before


@pytest.mark.parametrize(
    ("flag", "value"), [("--loop.name", "../../../x"), ("--loop.experiment", "..")]
)
def test_run_names_cannot_leave_runs_dir(tmp_path: Path, flag: str, value: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"{flag.removeprefix('--')}={value!r}")):
        run_cli(loop_argv(tmp_path / "deep" / "runs", flag, value))
    assert not any(tmp_path.rglob("*"))


def test_acquire_refuses_to_overwrite_its_pool_or_invent_a_folder(tmp_path: Path) -> None:
    from mtal.acquire import acquire_once

    pool = tmp_path / "pool.json"
    pool.write_text("{}")
    common = dict(weights=tmp_path / "w.pt", budget=2, budget_unit="images", strategy="random")
    common.update(strategy_kwargs={}, pool=pool)
    with pytest.raises(ValueError, match="is the input --pool"):
        acquire_once(None, None, out=pool, **common)
    with pytest.raises(ValueError, match="is the input --pool"):
        acquire_once(None, None, out=tmp_path / "a.csv", pool_out=pool, **common)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        acquire_once(None, None, out=tmp_path / "typo" / "a.csv", **common)
    assert pool.read_text() == "{}" and not (tmp_path / "typo").exists()


def test_data_check_names_a_corrupt_unlabelled_image_and_the_loop_checks_up_front(
    nyud_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dm = ActiveDataModule(
        "nyud", root=str(nyud_root), tasks=["semseg", "depth"], initial=4, pool_size=8
    )
    unlabelled = dm.pool.image_ids[int(dm.pool.unlabelled_images()[0])]
    culprit = nyud_root / "images" / f"{unlabelled}.jpg"
    culprit.write_bytes(b"not a jpeg")
    flags = ["--data.dataset", "nyud", "--data.root", str(nyud_root)]
    assert main(["data", "check", *flags, "--data.tasks", "[semseg, depth]"]) == 1
    assert str(culprit) in capsys.readouterr().out
    runs = tmp_path / "runs"
    argv = loop_argv(runs, *flags, "--data.pool_size", "8", "--data.dataset_kwargs", "{}")
    with pytest.raises(DatasetLayoutError, match=re.escape(str(culprit))):
        run_cli(argv)
    assert not runs.exists()  # nothing written, not even the run folder


def test_user_errors_print_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere"
    argv = loop_argv(tmp_path / "runs", "--data.dataset", "nyud", "--data.root", str(missing))
    argv += ["--data.dataset_kwargs", "{}"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"mtal loop: error: data.root={str(missing)!r}: missing NYUD")
    assert "Traceback" not in err
    assert main(loop_argv(tmp_path / "runs", "--data.tasks", "[semseg, bogus]")) == 1
    assert "data.tasks: SyntheticScenes has no task(s) ['bogus']" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--data.pool_size", "100000"], "data.pool_size=100000"),
        (["--data.val_size", "0"], "data.val_size=0"),
        (["--loop.monitor", "val/mtl_los"], "loop.monitor='val/mtl_los'"),
    ],
)
def test_no_silent_clamps(tmp_path: Path, extra: list[str], match: str) -> None:
    with pytest.raises(ValueError, match=re.escape(match)):
        run_cli(loop_argv(tmp_path / "runs", *extra))


def test_stale_temporary_files_are_removed_and_modes_follow_the_umask(
    two_cycles: Path, tmp_path: Path
) -> None:
    runs = copy_of(two_cycles, tmp_path)
    run = runs / RUN
    stale = [run / ".metrics.csv.abc.tmp", run / "pool" / ".cycle_003.json.x.tmp"]
    for path in stale:
        path.write_bytes(b"torn")
    run_cli(loop_argv(runs))  # finishes cycle 2
    assert not any(p.exists() for p in stale)
    old = os.umask(0o022)
    try:
        written = atomic_write_bytes(tmp_path / "x.txt", b"x")
    finally:
        os.umask(old)
    assert written.stat().st_mode & 0o777 == 0o644
    assert (run / "metrics.csv").stat().st_mode & 0o777 == 0o666 & ~old


def test_a_full_disk_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    def full(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    target = tmp_path / "state.json"
    target.write_text(json.dumps({"old": True}))
    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OSError, match=re.escape(f"cannot write {target}: No space left")):
        atomic_write_bytes(target, b"new")
    assert json.loads(target.read_text()) == {"old": True}
    assert not list(tmp_path.glob(".*.tmp"))
