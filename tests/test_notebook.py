"""notebooks/explore_run.ipynb runs headless (nbclient) on a tiny smoke run folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "explore_run.ipynb"


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-cycle MTAL run on the smoke config: runs/nb/mtal/seed0 in a temp folder."""
    from mtal.cli import run_cli

    runs = tmp_path_factory.mktemp("runs")
    cwd = Path.cwd()
    os.chdir(ROOT)
    try:
        run_cli(
            [
                "loop",
                "--config=configs/synthetic/smoke.yaml",
                "--loop.strategy=mtal",
                "--loop.experiment=nb",
                f"--loop.runs_dir={runs}",
            ]
        )
    finally:
        os.chdir(cwd)
    run = runs / "nb" / "mtal" / "seed0"
    assert (run / "selections" / "cycle_001.csv").exists()
    return run


def execute(run: Path, monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Execute the notebook with ``MTAL_RUN=run``; returns the executed cells."""
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("MTAL_RUN", str(run))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb,
        timeout=110,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()
    return nb.cells


def outputs_of(cells: list[dict], kind: str) -> list[dict]:
    found = []
    for cell in cells:
        for out in cell.get("outputs", []):
            if kind in out.get("data", {}) or out.get("output_type") == kind:
                found.append(out)
    return found


def test_notebook_committed_without_outputs() -> None:
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert "RUN = " in first.source and "runs/demo" in first.source


def test_notebook_executes_on_a_run_folder(
    smoke_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cells = execute(smoke_run, monkeypatch)
    assert not outputs_of(cells, "error")
    code = [c for c in cells if c.cell_type == "code"]
    # the curves (from mtal.report) and one selection grid for the one run
    assert outputs_of(code[2:3], "image/png"), "no AL curve displayed"
    assert len(outputs_of(code[-1:], "image/png")) == 1, "expected one selection grid"
    text = "".join(
        "".join(o.get("text", "")) for c in cells for o in c.get("outputs", [])
        if o.get("output_type") == "stream"
    )  # fmt: skip
    assert "1 run(s) shown" in text
    report = smoke_run.parent.parent / "report"
    assert (report / "curve_mtl_loss.png").exists() and (report / "table.md").exists()
    # the table rendered in the notebook is the report's table
    markdown = outputs_of(cells, "text/markdown")
    assert any("| mtal |" in "".join(o["data"]["text/markdown"]) for o in markdown)
