"""Atomic writes, checksummed state files and the atomic CSV append."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

import pytest

from mtal import io as mio
from mtal.io import (
    StateFileError,
    append_csv_row_atomic,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    read_checked_json,
    write_checked_json,
)


def test_atomic_write_bytes_and_text_leave_only_the_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "blob.bin"
    atomic_write_bytes(target, b"\x00\x01abc")
    assert target.read_bytes() == b"\x00\x01abc"
    atomic_write_text(target, "héllo")
    assert target.read_text(encoding="utf-8") == "héllo"
    assert sorted(os.listdir(target.parent)) == ["blob.bin"]


def test_serialisation_failure_keeps_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    atomic_write_json(target, {"a": 1})
    before = target.read_bytes()
    with pytest.raises(TypeError):
        atomic_write_json(target, {"a": object()})
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["state.json"]


def test_failed_replace_removes_temp_and_keeps_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "state.json"
    atomic_write_text(target, "old")

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(mio.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["state.json"]


def test_checked_json_round_trip_and_checksum(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    payload = {"b": [1, 2.5, None], "a": "x"}
    write_checked_json(path, payload, "demo.state", 3)
    doc = json.loads(path.read_text())
    assert doc["schema"] == "demo.state" and doc["version"] == 3
    canonical = '{"a":"x","b":[1,2.5,null]}'
    assert doc["sha256"] == hashlib.sha256(canonical.encode()).hexdigest()
    assert read_checked_json(path, "demo.state", 3) == payload


def _rewrite(path: Path, **changes: object) -> None:
    doc = json.loads(path.read_text())
    doc.update(changes)
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        ("missing", "missing"),
        ("garbage", "not valid JSON"),
        ("truncated", "not valid JSON"),
        ("fields", "lacks the fields"),
        ("schema", "schema 'other.state'"),
        ("newer", "newer"),
        ("older", "older"),
        ("tampered", "checksum"),
    ],
)
def test_bad_state_files_raise_state_file_error(tmp_path: Path, damage: str, needle: str) -> None:
    path = tmp_path / "s.json"
    write_checked_json(path, {"n": [1, 2, 3]}, "demo.state", 2)
    if damage == "missing":
        path.unlink()
    elif damage == "garbage":
        path.write_bytes(b"\xff\xfe not json")
    elif damage == "truncated":
        path.write_text(path.read_text()[:-20])
    elif damage == "fields":
        path.write_text(json.dumps({"n": [1, 2, 3]}))
    elif damage == "schema":
        _rewrite(path, schema="other.state")
    elif damage == "newer":
        _rewrite(path, version=3)
    elif damage == "older":
        _rewrite(path, version=1)
    elif damage == "tampered":
        _rewrite(path, payload={"n": [1, 2, 4]})
    with pytest.raises(StateFileError) as info:
        read_checked_json(path, "demo.state", 2)
    message = str(info.value)
    assert needle in message
    assert str(path) in message
    assert "refusing to start from scratch" in message
    assert isinstance(info.value, ValueError)


def test_append_csv_row_unions_columns_in_stable_order(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    append_csv_row_atomic(path, {"cycle": 0, "loss": 1.5})
    append_csv_row_atomic(path, {"loss": 1.25, "cycle": 1, "miou": 0.3})
    append_csv_row_atomic(path, {"cycle": 2})
    assert path.read_text() == "cycle,loss,miou\n0,1.5,\n1,1.25,0.3\n2,,\n"
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["cycle"] for r in rows] == ["0", "1", "2"]
    assert os.listdir(tmp_path) == ["metrics.csv"]
