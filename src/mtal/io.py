"""Crash-safe file writes and checksummed state files.

Every state file of a run (label pool, strategy state, metrics) is written through
these helpers: a crash mid-write leaves either the old file or the new one, never a
torn one, and a state file that was damaged or belongs to something else is refused
loudly instead of being silently replaced by a fresh start.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "StateFileError",
    "append_csv_row_atomic",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "canonical_json",
    "read_checked_json",
    "write_checked_json",
]

_RESTORE_HINT = (
    "refusing to start from scratch; restore the file from backup or delete the run "
    "folder to restart deliberately"
)


class StateFileError(ValueError):
    """A state file is missing, unreadable, foreign, of another version or corrupt."""


def _fsync_dir(directory: Path) -> None:
    """fsync a directory so a rename inside it survives a power loss (no-op where the
    platform cannot open directories, e.g. Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: temp file in the same directory, flush,
    fsync, ``os.replace``, fsync of the directory. Returns the path."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _write_error(exc, path) from exc
    try:
        # mkstemp creates 0600; result files get the permissions the umask gives any file
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        if isinstance(exc, OSError):
            raise _write_error(exc, path) from exc
        raise
    _fsync_dir(path.parent)
    return path


def _umask() -> int:
    """The process umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_error(exc: OSError, path: Path) -> OSError:
    """``exc`` with a message naming the file (the old file, if any, is intact)."""
    reason = exc.strerror or str(exc)
    hint = " (free disk space, then rerun the same command)" if exc.errno == 28 else ""
    return type(exc)(
        exc.errno,
        f"cannot write {path}: {reason}{hint}; the previous version of the file, if any, is intact",
    )


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Atomically write ``text`` (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2) -> Path:
    """Atomically write ``obj`` as JSON. The object is serialised *before* the file is
    touched, so a serialisation error leaves the old file intact and no temp file."""
    text = json.dumps(obj, indent=indent, allow_nan=True)
    return atomic_write_text(path, text + "\n")


def canonical_json(payload: Any) -> str:
    """The canonical JSON text of ``payload`` (sorted keys, no spaces) that is hashed."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=True)


def _sha256(payload: Any) -> str:
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


def write_checked_json(
    path: str | os.PathLike[str], payload: Any, schema: str, version: int
) -> Path:
    """Atomically write ``{"schema", "version", "sha256", "payload"}``; the checksum is the
    SHA-256 of the payload's canonical JSON, checked by :func:`read_checked_json`."""
    document = {
        "schema": schema,
        "version": int(version),
        "sha256": _sha256(payload),
        "payload": payload,
    }
    return atomic_write_json(path, document)


def read_checked_json(path: str | os.PathLike[str], schema: str, version: int) -> Any:
    """Read a file written by :func:`write_checked_json` and return its payload.

    Raises :class:`StateFileError` naming the file and the problem when it is missing,
    not JSON, of a foreign schema, of another version, or fails its checksum.
    """
    path = Path(path)
    if not path.is_file():
        raise StateFileError(
            f"state file {path} is missing (expected schema {schema!r}); {_RESTORE_HINT}"
        )
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise StateFileError(
            f"state file {path} is not valid JSON ({err}); {_RESTORE_HINT}"
        ) from err
    if not isinstance(document, dict) or not {"schema", "version", "sha256", "payload"} <= set(
        document
    ):
        raise StateFileError(
            f"state file {path} lacks the fields schema/version/sha256/payload "
            f"(expected a {schema!r} file); {_RESTORE_HINT}"
        )
    if document["schema"] != schema:
        raise StateFileError(
            f"state file {path} has schema {document['schema']!r}, expected {schema!r} "
            f"(wrong file?); {_RESTORE_HINT}"
        )
    found = document["version"]
    if not isinstance(found, int) or found != version:
        relation = (
            "newer than this mtal understands (upgrade mtal)"
            if isinstance(found, int) and found > version
            else "older than this mtal reads (convert it or use the mtal that wrote it)"
        )
        raise StateFileError(
            f"state file {path} has {schema!r} version {found!r}, expected {version}: "
            f"{relation}; {_RESTORE_HINT}"
        )
    if _sha256(document["payload"]) != document["sha256"]:
        raise StateFileError(
            f"state file {path} fails its SHA-256 checksum (edited or corrupted); {_RESTORE_HINT}"
        )
    return document["payload"]


def append_csv_row_atomic(path: str | os.PathLike[str], row: Mapping[str, Any]) -> Path:
    """Append ``row`` to a CSV by atomically rewriting the whole file with a header.

    Columns are the union of the existing header and the row's keys: existing columns
    keep their order, new ones are appended in the row's order; missing cells are empty.
    """
    path = Path(path)
    rows: list[dict[str, str]] = []
    columns: list[str] = []
    if path.exists():
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = list(reader.fieldnames or [])
            rows = [dict(r) for r in reader]
    for key in row:
        if str(key) not in columns:
            columns.append(str(key))
    rows.append({str(k): v for k, v in row.items()})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buffer.getvalue())
