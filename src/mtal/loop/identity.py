"""A run's identity: the resolved settings that decide what is bought and how it is
trained, stored at its first run and compared on every rerun.

``identity.json`` (checksummed) holds the flattened, redacted config of the first run,
minus :data:`NOT_IDENTITY` (display, logging and hardware options). A rerun whose
settings differ in any other key stops with an error listing each key (old → new)
before anything is written. Growing ``loop.cycles`` is allowed; any other change needs
``--loop.allow_config_change true`` and is appended to ``config_history.yaml``; the
original ``identity.json`` is never rewritten.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtal.io import StateFileError, atomic_write_bytes, read_checked_json, write_checked_json
from mtal.tracking import redact

IDENTITY_SCHEMA = "mtal.identity"
IDENTITY_VERSION = 1
IDENTITY_FILE = "identity.json"
HISTORY_FILE = "config_history.yaml"
CYCLES = "loop.cycles"
#: how an absent key is shown (and stored) in a change
UNSET = "<unset>"

#: dotted keys (or prefixes ending in ".") that do not change what is bought or how it
#: is trained: display, logging, output place, hardware and this process's stopping point
NOT_IDENTITY: tuple[str, ...] = (
    "loop.runs_dir",
    "loop.stop_after",
    "loop.verbose",
    "loop.logger",
    "loop.wandb_project",
    "loop.description",
    "loop.allow_config_change",
    "loop.check_data_up_to",
    "loop.summary_store",
    "loop.summary_dir",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "trainer.logger",
    "trainer.default_root_dir",
    "trainer.enable_checkpointing",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.profiler",
    "trainer.enable_autolog_hparams",
    "trainer.model_registry",
    "data.dataset_kwargs.cache",
    "data.num_workers",
    "data.eval_batch_size",
)


class ConfigChangedError(ValueError):
    """A rerun's settings differ from the run's identity."""


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``; lists and scalars are leaves (JSON-normalised)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.loads(json.dumps(value, default=str))
    return flat


def _is_identity(key: str) -> bool:
    return not any(key == k or (k.endswith(".") and key.startswith(k)) for k in NOT_IDENTITY)


def identity_of(config: Mapping[str, Any]) -> dict[str, Any]:
    """The identity keys of a resolved config (redacted, flattened, sorted)."""
    flat = flatten(redact(json.loads(json.dumps(dict(config), default=str))))
    return {k: flat[k] for k in sorted(flat) if _is_identity(k)}


def diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Key → (old, new) for every key whose value differs (absent keys show as ``<unset>``)."""
    keys = sorted(set(old) | set(new))
    return {
        k: (old.get(k, UNSET), new.get(k, UNSET))
        for k in keys
        if old.get(k, UNSET) != new.get(k, UNSET)
    }


def describe(changes: Mapping[str, tuple[Any, Any]]) -> str:
    """One line per change: ``  key: old → new``."""
    return "\n".join(f"  {k}: {json.dumps(o)} → {json.dumps(n)}" for k, (o, n) in changes.items())


@dataclass
class IdentityCheck:
    """The outcome of :func:`check_identity`; :meth:`record` writes it (call after the
    checks of the run passed, with the run folder locked)."""

    root: Path
    identity: dict[str, Any]
    original: dict[str, Any] | None
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    cycle: int = 0
    reason: str = ""

    def record(self) -> None:
        """Write ``identity.json`` at the first run; append a change to the history."""
        if self.original is None:
            write_checked_json(
                self.root / IDENTITY_FILE,
                {"config": self.identity},
                IDENTITY_SCHEMA,
                IDENTITY_VERSION,
            )
        if self.changes:
            append_history(self.root, self.changes, self.cycle, self.reason)


def read_history(root: Path) -> list[dict[str, Any]]:
    """The entries of ``config_history.yaml`` (empty when there is none)."""
    import yaml

    path = Path(root) / HISTORY_FILE
    if not path.exists():
        return []
    try:
        entries = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    except yaml.YAMLError as exc:
        raise StateFileError(f"{path} is not valid YAML ({exc}); restore it") from exc
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and isinstance(e.get("changes"), dict) for e in entries
    ):
        raise StateFileError(f"{path} is not a list of {{changes: ...}} entries; restore it")
    return entries


def append_history(
    root: Path, changes: Mapping[str, tuple[Any, Any]], cycle: int, reason: str
) -> None:
    """Append one dated entry to ``config_history.yaml`` (atomic rewrite)."""
    import yaml

    entries = read_history(root)
    entries.append(
        {
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "from_cycle": int(cycle),
            "reason": reason,
            "changes": {k: {"old": o, "new": n} for k, (o, n) in changes.items()},
        }
    )
    text = yaml.safe_dump(entries, sort_keys=False, allow_unicode=True)
    atomic_write_bytes(Path(root) / HISTORY_FILE, text.encode())


def effective_identity(root: Path) -> dict[str, Any] | None:
    """The stored identity with every recorded change applied (None: no identity yet)."""
    path = Path(root) / IDENTITY_FILE
    if not path.exists():
        return None
    payload = read_checked_json(path, IDENTITY_SCHEMA, IDENTITY_VERSION)
    if not isinstance(payload, dict) or not isinstance(payload.get("config"), dict):
        raise StateFileError(f"{path} lacks its 'config' mapping; restore it")
    current = dict(payload["config"])
    for entry in read_history(root):
        for key, change in entry["changes"].items():
            new = change.get("new", UNSET) if isinstance(change, dict) else UNSET
            if new == UNSET:
                current.pop(key, None)
            else:
                current[key] = new
    return current


def check_identity(
    root: Path, config: Mapping[str, Any], *, latest: int, fresh: bool, allow_change: bool
) -> IdentityCheck:
    """Compare ``config`` with the run's identity; raise :class:`ConfigChangedError`
    listing every differing key unless the only change is a larger ``loop.cycles`` or
    ``allow_change``. ``latest`` is the newest cycle with a pool file. Writes nothing."""
    root = Path(root)
    identity = identity_of(config)
    stored = None if fresh else effective_identity(root)
    check = IdentityCheck(root, identity, stored, cycle=latest)
    if fresh:
        return check
    if stored is None:  # a run folder written before identities existed: adopt this one
        check.original = None
        return check
    changes = diff(stored, identity)
    new_cycles = identity.get(CYCLES)
    if isinstance(new_cycles, int) and new_cycles <= latest:
        raise ConfigChangedError(
            f"loop.cycles={new_cycles}, but the run in {root} already reached cycle {latest} "
            f"(cycles count from 0); a run cannot be shortened; rerun with "
            f"--loop.cycles {stored.get(CYCLES, latest + 1)} or use another loop.name"
        )
    grown = CYCLES in changes and isinstance(new_cycles, int) and new_cycles > stored.get(CYCLES, 0)
    others = {k: v for k, v in changes.items() if not (k == CYCLES and grown)}
    if others and not allow_change:
        raise ConfigChangedError(
            f"the settings differ from those the run in {root} was started with "
            f"({root / IDENTITY_FILE}), so resuming would mix two experiments:\n"
            f"{describe(others)}\nrerun with the original settings (see {root / 'config.yaml'}), "
            f"choose another loop.name for a new run, or pass --loop.allow_config_change true "
            f"to change them deliberately from cycle {latest} on (recorded in {HISTORY_FILE})"
        )
    check.changes = changes
    check.reason = "loop.allow_config_change" if others else "growing loop.cycles (always allowed)"
    return check
