"""``mtal data check``: read every file of the configured splits and list each one that
cannot be read, so a corrupt file fails before training instead of after it.

Pool (train) samples are read for their image only: a label the pool has not bought is
never read. Validation and test samples are read with all their targets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: how many problems a message shows before "... and N more"
SHOWN = 10


def check_samples(dataset: Any, indices: Sequence[int], tasks: Sequence[str]) -> list[str]:
    """One line per sample of ``indices`` whose image or ``tasks`` cannot be read."""
    problems = []
    for index in indices:
        try:
            dataset.load(int(index), list(tasks))
        except Exception as exc:  # any reader error is a problem of that file
            path = dataset.image_path(int(index))
            where = f"{dataset.split} sample {index} (id {dataset.image_id(int(index))!r}"
            where += f", {path})" if path is not None else ")"
            problems.append(f"{where}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    return problems


def check_datamodule(
    datamodule: Any, splits: Sequence[str] = ("train", "val", "test")
) -> list[str]:
    """Problems of every configured split: the pool's images (its first ``pool_size``
    samples) and the val/test samples the loop evaluates (first ``val_size``)."""
    problems: list[str] = []
    seen: set[str] = set()
    for split in splits:
        name = datamodule.splits[split]
        if name in seen:
            continue
        seen.add(name)
        if split == "train":
            dataset, indices, tasks = datamodule.train_dataset, range(datamodule.pool_length), ()
        else:
            dataset = datamodule._dataset(split)
            indices, tasks = datamodule._eval_indices(split).tolist(), dataset.tasks
        problems += check_samples(dataset, indices, tasks)
    return problems


def format_problems(problems: Sequence[str]) -> str:
    """A message listing the first :data:`SHOWN` problems."""
    lines = [f"{len(problems)} unreadable dataset file(s):"]
    lines += [f"  {p}" for p in problems[:SHOWN]]
    if len(problems) > SHOWN:
        lines.append(f"  ... and {len(problems) - SHOWN} more")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``mtal data check [--config CONFIG.yaml] [--data.KEY VALUE ...]``: exit 1 on problems."""
    import argparse

    import yaml

    parser = argparse.ArgumentParser(prog="mtal data check", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="the experiment's YAML (its data: section is used)")
    args, rest = parser.parse_known_args(list(argv or []))
    data: dict[str, Any] = {}
    if args.config:
        raw = yaml.safe_load(open(args.config, encoding="utf-8")) or {}  # noqa: SIM115
        data = dict(raw.get("data") or {})
    if len(rest) % 2:
        parser.error(f"expected --data.KEY VALUE pairs, got {rest}")
    for key, value in zip(rest[::2], rest[1::2]):
        if not key.startswith("--data."):
            parser.error(f"{key}: only --data.KEY VALUE overrides are accepted")
        data[key.removeprefix("--data.")] = yaml.safe_load(value)
    from mtal.data.datamodule import ActiveDataModule

    problems = check_datamodule(ActiveDataModule(**data))
    if problems:
        print(format_problems(problems))
        return 1
    print("[mtal] data check: every file of the configured splits is readable")
    return 0
