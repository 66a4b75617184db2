"""benchmarks/gpu_check.py: without CUDA it refuses with a clear message; its every check
runs on the CPU (--dry-run-cpu), so the GPU run exercises code already run here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


def test_without_cuda_it_says_so_and_exits_non_zero(monkeypatch, capsys, tmp_path) -> None:
    gpu_check = load()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path / "t.md")]) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU is visible to torch" in err and "--dry-run-cpu" in err
    assert not (tmp_path / "t.md").exists()


def test_dry_run_on_cpu_runs_every_check_and_writes_the_table(tmp_path) -> None:
    gpu_check = load()
    out = tmp_path / "gpu_check.md"
    assert gpu_check.main(["--dry-run-cpu", "--out", str(out)]) == 0
    text = out.read_text()
    assert "CPU DRY RUN" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    checks = [r.split(" | ")[0] for r in rows[1:]]
    assert len(checks) == 7, text
    for prefix in ("| k-center", "| nearest neighbour", "| AMP training step", "| mtal loop"):
        assert any(c.startswith(prefix) for c in checks), (prefix, text)
    assert sum("scoring" in c for c in checks) == 3
    assert "FAIL" not in text and "picks identical: True" in text
    assert "2 metrics rows, 2 pool files, pool grew: True" in text


def test_a_failing_check_is_reported_and_sets_the_exit_status(monkeypatch, tmp_path) -> None:
    gpu_check = load()

    def broken(*_: object) -> list:
        raise RuntimeError("boom")

    monkeypatch.setitem(gpu_check.CHECKS, "search", broken)
    out = tmp_path / "t.md"
    assert gpu_check.main(["--dry-run-cpu", "--only", "search", "--out", str(out)]) == 1
    assert "raised RuntimeError: boom | FAIL" in out.read_text()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_amp_dtype_on_cuda() -> None:
    assert load()._amp_dtype("cuda") in (torch.bfloat16, torch.float16)
