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


DEVICE_SCRIPT = SCRIPT.parent / "gpu_device.sh"


def _wheel(path: Path, name: str, version: str) -> Path:
    """A minimal pure-Python wheel holding package ``name`` (one module constant)."""
    import zipfile

    dist = f"{name}-{version}.dist-info"
    wheel = path / f"{name}-{version}-py3-none-any.whl"
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{dist}/RECORD"] = "".join(f"{f},,\n" for f in files) + f"{dist}/RECORD,,\n"
    with zipfile.ZipFile(wheel, "w") as zf:
        for arcname, text in files.items():
            zf.writestr(arcname, text)
    return wheel


def test_device_check_installs_the_carried_wheels_and_returns_gpu_checks_status(
    tmp_path,
) -> None:
    """``gpu_device.sh check`` (what the lent GPU machine runs): installs .whl/*.whl into
    the site folder, runs benchmarks/gpu_check.py with src/ and that folder on PYTHONPATH,
    W&B disabled, the table under $OUT, and exits with gpu_check's own status."""
    import os
    import shutil
    import subprocess

    repo = tmp_path / "repo"
    (repo / "benchmarks").mkdir(parents=True)
    (repo / "src").mkdir()
    (repo / ".whl").mkdir()
    shutil.copy(DEVICE_SCRIPT, repo / "benchmarks" / "gpu_device.sh")
    _wheel(repo / ".whl", "carried_pkg", "0.3")
    # a stand-in for gpu_check.py: reports what it sees, writes its table, exits 3
    (repo / "benchmarks" / "gpu_check.py").write_text(
        "import os, sys\n"
        "import carried_pkg\n"
        "out = sys.argv[sys.argv.index('--out') + 1]\n"
        "open(out, 'w').write('table')\n"
        "print('SEEN', carried_pkg.VERSION, os.environ['WANDB_MODE'], os.environ['PYTHONPATH'])\n"
        "sys.exit(3)\n"
    )
    site, out = tmp_path / "site", tmp_path / "out"
    out.mkdir()
    bindir = Path(sys.executable).parent  # python3 = this interpreter (torch importable)
    env = {
        **os.environ,
        "GPU_SITE": str(site),
        "OUT": str(out),
        "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    got = subprocess.run(
        ["bash", str(repo / "benchmarks" / "gpu_device.sh"), "check"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert got.returncode == 3, got.stdout + got.stderr
    assert (site / "carried_pkg" / "__init__.py").is_file()
    seen = next(line for line in got.stdout.splitlines() if line.startswith("SEEN"))
    assert seen.split()[1:3] == ["0.3", "disabled"]
    assert seen.split()[3] == f"{repo}/src:{site}"
    assert (out / "gpu_check_results.md").read_text() == "table"
    assert "gpu_check exit status 3" in got.stdout


def test_device_check_without_wheels_says_what_to_run(tmp_path) -> None:
    """No .whl/ carried: exit 1 naming the ``wheels`` step and the carry."""
    import shutil
    import subprocess

    (tmp_path / "benchmarks").mkdir()
    shutil.copy(DEVICE_SCRIPT, tmp_path / "benchmarks" / "gpu_device.sh")
    got = subprocess.run(
        ["bash", str(tmp_path / "benchmarks" / "gpu_device.sh"), "check"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert got.returncode == 1
    assert "run 'wheels' first" in got.stderr and "carry .whl" in got.stderr
