"""What guards a run folder for the length of a run: the OS lock (taken before anything
is read, released by the kernel if the process dies), the clean-up of temporary files
an interrupted write left, and the up-front read of every dataset file."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mtal.loop.lock import LOCK_NAME, RunLock, remove_stale_temp_files


def _missing(folder: Path) -> list[Path]:
    """The folders of ``folder``'s path that do not exist yet, deepest first."""
    missing = []
    for path in (folder, *folder.parents):
        if path.exists():
            break
        missing.append(path)
    return missing


@contextlib.contextmanager
def locked_run_folder(run_dir: Path) -> Iterator[RunLock]:
    """Hold the run folder's lock for the block; a folder this call created is removed
    again when the block fails before writing anything but the lock file."""
    run_dir = Path(run_dir)
    created = _missing(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = RunLock(run_dir)
    done = held = False
    try:
        lock.acquire()
        held = True
        remove_stale_temp_files(run_dir)
        yield lock
        done = True
    finally:
        # only the holder tidies up: another process's fresh folder is never removed
        empty = held and [p.name for p in run_dir.iterdir()] == [LOCK_NAME]
        if not done and created and empty:
            with contextlib.suppress(OSError):
                (run_dir / LOCK_NAME).unlink()
                for folder in created:
                    folder.rmdir()
        lock.release()


def check_data_up_front(datamodule: Any, limit: int) -> None:
    """Read every file of the configured splits (pool images only, all val/test targets)
    before the first fit, when the dataset is file-based and holds at most ``limit``
    images; a bad file fails here, naming it, instead of after hours of training."""
    from mtal.data.check import check_datamodule, format_problems

    if limit <= 0 or datamodule.train_dataset.image_path(0) is None:
        return
    if datamodule.pool_length + len(datamodule.val_dataloader().dataset) > limit:
        return
    problems = check_datamodule(datamodule, splits=("train", "val"))
    if problems:
        from mtal.data.base import DatasetLayoutError

        raise DatasetLayoutError(
            format_problems(problems)
            + "\nfix or remove these files (`mtal data check` lists them all), or set "
            "loop.check_data_up_to 0 to skip this check"
        )
