"""What a person sees and gets: a tiny ``mtal loop`` prints no warning, banner or tip; W&B
(offline) receives the request table and the AL curves; ``mtal report`` writes one
gallery per run and cycle and the overview figure; ``import mtal`` stays light."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from mtal.gallery import NOT_REQUESTED, REQUESTED, cell_caption, read_request, render_gallery
from mtal.progress import Clock, FitProgress

ROOT = Path(__file__).resolve().parents[1]
#: what must not appear in normal output (Lightning's banners and tips, any warning)
NOISE = re.compile(r"warn|deprecat|tip:|gpu available|tpu available|seed set|litlogger", re.I)


def loop_command(runs: Path) -> list[str]:
    args = [
        "loop",
        "--data.pool_size", "12",
        "--data.val_size", "2",
        "--data.dataset_kwargs", '{"size": [24, 24], "cache": true}',
        "--data.tasks", '["semseg", "depth"]',
        "--data.batch_size", "4",
        "--trainer.max_epochs", "1",
        "--loop.cycles", "2",
        "--loop.budget", "2",
        "--loop.strategy", "partal",
        "--loop.strategy_kwargs", '{"mc_samples": 2, "gt_substitution": false}',
        "--loop.logger", "wandb",
        "--loop.runs_dir", str(runs),
    ]  # fmt: skip
    # run_cli(args) from -c: sys.argv holds no arguments (LightningCLI's own args warning
    # is issue 13's)
    code = (
        f"from mtal.cli import run_cli, with_default_config; run_cli(with_default_config({args!r}))"
    )
    return [sys.executable, "-c", code]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    runs = tmp_path_factory.mktemp("runs")
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_DATA_DIR": str(runs / "wandb-data"),
        "PYTHONPATH": str(ROOT / "src"),
    }
    env.pop("PYTHONWARNINGS", None)
    done = subprocess.run(
        loop_command(runs), cwd=runs, env=env, capture_output=True, text=True, timeout=240
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return runs / "synthetic" / "partal" / "seed0", output


def test_loop_output_has_no_warning_banner_or_tip(run: tuple[Path, str]) -> None:
    _, output = run
    noisy = [line for line in output.splitlines() if NOISE.search(line)]
    assert noisy == []
    cycle_lines = [line for line in output.splitlines() if line.startswith("[mtal] cycle 0:")]
    assert len(cycle_lines) == 1 and "ETA" in cycle_lines[0]


def test_wandb_gets_the_request_table_and_curves(run: tuple[Path, str]) -> None:
    folder, _ = run
    media = next(folder.glob("wandb/offline-run-*/files/media/table"))
    (request,) = media.glob("al/request_*.table.json")
    table = json.loads(request.read_text())
    assert table["columns"][:5] == ["cycle", "thumbnail", "image_index", "image_id", "tasks"]
    _, rows = read_request(folder / "selections" / "cycle_001.csv")
    assert [r[3] for r in table["data"]] == [r["image_id"] for r in rows]
    assert [r[4] for r in table["data"]] == [r["tasks"] for r in rows]
    # the run-level JSON names the media type; the thumbnails go into the run's table
    # artifact, staged (offline) under WANDB_DATA_DIR
    assert all(r[1] == "Image" for r in table["data"])
    staged = (folder.parents[2] / "wandb-data" / "artifacts" / "staging").iterdir()
    pngs = [p for p in staged if p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"]
    assert len(pngs) == len(rows)
    assert list(media.glob("al/curve/val/mtl_loss_table_*.table.json"))


def test_report_writes_galleries_and_overview(run: tuple[Path, str]) -> None:
    from mtal.report import write_report

    folder, _ = run
    report = write_report(folder.parent.parent)
    assert (report / "overview.png").stat().st_size > 0
    galleries = sorted((report / "gallery").glob("*.png"))
    assert [g.name for g in galleries] == ["partal_seed0_cycle_001.png"]


def test_caption_marks_requested_tasks_and_scores() -> None:
    row = {"image_id": "img-7", "tasks": "depth", "score_semseg": "", "score_depth": "0.25"}
    assert cell_caption(row, ["semseg", "depth"]) == (
        f"img-7\n{NOT_REQUESTED} semseg \u2013\n{REQUESTED} depth 0.25"
    )


def test_gallery_refuses_a_changed_dataset(tmp_path: Path) -> None:
    from mtal.data import create_dataset

    request = tmp_path / "cycle_001.csv"
    request.write_text(
        "cycle,image_index,image_id,image_path,tasks,score_semseg\n1,2,other-id,,semseg,0.5\n"
    )
    dataset = create_dataset("synthetic", split="train", tasks=["semseg"], size=[16, 16])
    with pytest.raises(ValueError, match="other-id.*dataset changed"):
        render_gallery(request, dataset, tmp_path / "g.png")


def test_quiet_lightning_keeps_real_warnings() -> None:
    from mtal.quiet import INFO_LOGGERS, quiet_lightning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_lightning(verbose=False)
        assert all(logging.getLogger(n).level == logging.WARNING for n in INFO_LOGGERS)
        message = "`isinstance(treespec, LeafSpec)` is deprecated, use ..."
        warnings.warn_explicit(message, FutureWarning, "_pytree.py", 21,
                               module="lightning.pytorch.utilities._pytree")  # fmt: skip
        warnings.warn_explicit(message, FutureWarning, "mine.py", 1, module="mine")
        warnings.warn("a real warning", UserWarning, stacklevel=1)
        assert [str(w.message)[:12] for w in caught] == ["`isinstance(", "a real warni"]
        quiet_lightning(verbose=True)
        assert all(logging.getLogger(n).level == logging.INFO for n in INFO_LOGGERS)


def test_clock_eta(monkeypatch: pytest.MonkeyPatch) -> None:
    now = iter([100.0, 130.0, 160.0])
    monkeypatch.setattr("mtal.progress.time.perf_counter", lambda: next(now))
    clock = Clock(4)
    assert clock.lap() == "1/4, 00:30 elapsed, ETA 01:30"  # 30 s a step, 3 left
    assert clock.lap() == "2/4, 01:00 elapsed, ETA 01:00"


def test_fit_progress_bar_counts_steps() -> None:
    import lightning as L
    import torch

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch: list[torch.Tensor], _: int) -> torch.Tensor:
            return self.layer(batch[0]).pow(2).mean()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.TensorDataset(torch.ones(6, 2))
    out = io.StringIO()
    trainer = L.Trainer(max_epochs=2, callbacks=[FitProgress("cycle 3 fit", file=out)],
                        logger=False, enable_progress_bar=False, enable_checkpointing=False,
                        enable_model_summary=False, log_every_n_steps=1)  # fmt: skip
    trainer.fit(Tiny(), torch.utils.data.DataLoader(data, batch_size=2))
    assert "cycle 3 fit" in out.getvalue() and "6/6" in out.getvalue()


def test_import_mtal_stays_light() -> None:
    code = (
        "import sys, mtal, mtal.cli, mtal.gallery, mtal.experiment; "
        "print(sorted(m for m in ('torch', 'lightning', 'segmentation_models_pytorch', "
        "'wandb', 'timm', 'faiss', 'matplotlib') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_grid_prints_eta_per_finished_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import mtal.cli
    from mtal.experiment import Grid, run_grid

    ran: list[list[str]] = []
    monkeypatch.setattr(mtal.cli, "run_cli", lambda args: ran.append(args))
    grid = Grid(
        name="g", config="configs/synthetic/smoke.yaml", strategies=["random"], seeds=[0, 1]
    )
    run_grid(grid, runs_dir=str(tmp_path))
    done = [line for line in capsys.readouterr().out.splitlines() if ": done (runs" in line]
    assert len(ran) == 2 and len(done) == 2
    assert done[0].startswith("[1/2] g random seed0: done (runs 1/2, ")
    assert "ETA" in done[1] and done[1].endswith("ETA 00:00)")
