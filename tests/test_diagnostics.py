"""Acquisition diagnostics: Spearman of a score against the true task loss (hand-computed
ranks on a constructed model), the oracle path, and poisoned labels never changing a
selection."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from mtal.acquisition.base import AcquisitionContext, Selection, Strategy
from mtal.data.pool import LabelPool
from mtal.diagnostics import acquisition_diagnostics, spearman
from mtal.types import MultiTaskOutput

H = 4


class SquareTask:
    """Regression stand-in: loss = mean (raw − target)²; every pixel valid unless NaN."""

    kind = "regression"

    def loss(self, raw: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ((raw - target) ** 2).flatten(1).mean(1)

    def valid_mask(self, target: torch.Tensor) -> torch.Tensor:
        return torch.isfinite(target).squeeze(1)


class ZeroModel(torch.nn.Module):
    """Predicts 0 everywhere: the true loss of image i for task t is its target²."""

    def forward(self, image: torch.Tensor, **kw: Any) -> MultiTaskOutput:
        return MultiTaskOutput(final={t: torch.zeros(image.shape[0], 1, H, H) for t in "ab"})


class LabelDataModule:
    """pool_loader delivers a task's target (``labels[i, k]`` everywhere) only where the
    attached pool marks it labelled (NaN otherwise), as ActiveDataModule does."""

    def __init__(self, pool: LabelPool, labels: np.ndarray) -> None:
        self.pool, self.labels, self.loads = pool, labels, []

    def attach_pool(self, pool: LabelPool) -> None:
        self.pool = pool

    def pool_loader(self, indices: np.ndarray, with_labels: bool = False) -> Iterator[dict]:
        idx = np.asarray(indices, dtype=np.int64)
        mask = self.pool.labelled[idx] if with_labels else np.zeros((len(idx), 2), bool)
        self.loads.append(mask.copy())
        values = np.where(mask, self.labels[idx], np.nan)
        yield {
            "image": torch.zeros(len(idx), 3, H, H),
            "targets": {
                t: torch.as_tensor(values[:, k], dtype=torch.float32)
                .view(-1, 1, 1, 1)
                .expand(-1, 1, H, H)
                for k, t in enumerate("ab")
            },
            "labelled": torch.as_tensor(mask),
            "weight": torch.ones(len(idx), 2),
            "index": torch.as_tensor(idx),
        }


class FixedScores(Strategy):
    """Scores the unlabelled images with preset per-task and image scores."""

    name = "fixed"
    granularity = "image"

    def __init__(self, task_scores: np.ndarray, image_score: np.ndarray) -> None:
        super().__init__(tie_break="index")
        self.task_scores, self.image_score = task_scores, image_score

    def acquire(self, ctx: AcquisitionContext, count: int, rng: np.random.Generator) -> Selection:
        unl = np.asarray(ctx.pool.unlabelled_images())
        return self.image_selection(
            ctx, unl, self.image_score, count, rng, task_scores=self.task_scores
        )


def context(labels: np.ndarray) -> AcquisitionContext:
    pool = LabelPool([str(i) for i in range(6)], ["a", "b"])
    pool.label_images([0], cycle=0)
    return AcquisitionContext(
        model=ZeroModel(),
        tasks={"a": SquareTask(), "b": SquareTask()},
        pool=pool,
        datamodule=LabelDataModule(pool, labels),
    )


#: targets of images 0..5 (image 0 labelled); true losses are their squares:
#: a: 1, 9, 4, 25, 16 on images 1..5 (ranks 1 3 2 5 4); b: 25, 16, 9, 4, 1 (ranks 5 4 3 2 1)
LABELS = np.array([[7, 7], [1, 5], [3, 4], [2, 3], [5, 2], [4, 1]], dtype=np.float64)


def test_spearman_matches_hand_computed_ranks() -> None:
    ctx = context(LABELS)
    scores = np.array([[10, 1], [20, 2], [30, 3], [40, 4], [50, 5.0]])  # ranks 1..5 both
    image = np.array([5, 1, 2, 4, 3.0])  # ranks 5 1 2 4 3
    strat = FixedScores(scores, image)
    sel = strat.select(ctx, 2 * 2)
    assert sel.images.tolist() == [1, 4]
    diag = acquisition_diagnostics(strat, ctx, weights={"a": 1.0, "b": 2.0})
    # a: d = (1−1, 2−3, 3−2, 4−5, 5−4) → Σd² = 4 → ρ = 1 − 6·4/(5·24) = 0.8
    assert diag["diag/a/spearman"] == pytest.approx(0.8)
    # b: losses in exactly reversed order → ρ = −1
    assert diag["diag/b/spearman"] == pytest.approx(-1.0)
    # weighted totals 1+50, 9+32, 4+18, 25+8, 16+2 = 51, 41, 22, 33, 18 → ranks 5 4 2 3 1
    # vs image ranks 5 1 2 4 3: d = 0, −3, 0, 1, 2 → Σd² = 14 → ρ = 1 − 84/120 = 0.3
    assert diag["diag/image/spearman"] == pytest.approx(0.3)
    assert diag["diag/scored"] == 5
    # the oracle copy was attached for the pass only; the context's pool is untouched
    assert ctx.datamodule.pool is ctx.pool and ctx.pool.num_labelled_images == 1
    assert ctx.datamodule.loads[-1].all()


def test_spearman_undefined_cases_and_subsample() -> None:
    assert np.isnan(spearman([1, 2], [3, 4]))  # fewer than 3 images
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))  # constant score
    assert spearman([1, 2, np.nan, 3], [2, 4, 0, 6]) == pytest.approx(1.0)
    ctx = context(LABELS)
    strat = FixedScores(np.tile(np.arange(5.0)[:, None], (1, 2)), np.arange(5.0))
    strat.select(ctx, 2)
    assert acquisition_diagnostics(strat, ctx, max_images=3, seed=1)["diag/scored"] == 3


def test_poisoned_labels_never_change_a_selection() -> None:
    poisoned = LABELS.copy()
    poisoned[1:] = 1e6 * np.arange(1, 6)[:, None]  # every unlabelled image's labels
    picks, diags = [], []
    for labels in (LABELS, poisoned):
        ctx = context(labels)
        strat = FixedScores(np.tile(np.arange(5.0)[:, None], (1, 2)), np.arange(5.0))
        picks.append(strat.select(ctx, 4).images.tolist())
        # select loaded no label of an unlabelled image (it loaded none at all here)
        assert not any(m.any() for m in ctx.datamodule.loads)
        diags.append(acquisition_diagnostics(strat, ctx))
    assert picks[0] == picks[1]
    assert diags[0] != diags[1]  # the oracle does read them, after select


@pytest.fixture(scope="module")
def real() -> tuple[Any, torch.nn.Module]:
    from mtal.data.datamodule import ActiveDataModule
    from mtal.models import create_model

    torch.manual_seed(0)
    dm = ActiveDataModule(
        dataset="synthetic",
        tasks=["semseg", "depth", "normals"],
        size=(32, 32),
        pool_size=12,
        val_size=2,
        initial=3,
        eval_batch_size=6,
        dataset_kwargs={"cache": True},
    )
    dm.setup("fit")
    kw = {"head_channels": 8, "encoder_channels": 8}
    net = create_model(
        "padnet",
        dm.task_objects,
        backbone="tiny_cnn",
        loss_prediction=True,
        gt_substitution=True,
        **kw,
    )
    return dm, net.eval()


REAL = [
    ("random", {}),
    ("mtal", {"variant": "inconsistency"}),
    ("partal", {"mc_samples": 2}),
    ("rbal", {"mc_samples": 2}),
    ("equal", {}),
    ("ll4al", {}),
]


@pytest.mark.parametrize(("name", "kw"), REAL)
def test_poisoned_labels_never_change_a_real_strategy_selection(real, name, kw) -> None:
    from mtal.acquisition import create_strategy

    dm, net = real
    dataset = dm.train_dataset
    clean_load = dataset.load
    unlabelled = set(dm.pool.unlabelled_images().tolist())
    read: list[int] = []

    def poisoned_load(index: int, wanted: Any) -> dict:
        out = clean_load(index, wanted)
        if wanted and index in unlabelled:
            read.append(index)
            out = {k: (v if k == "image" else np.full_like(v, 7)) for k, v in out.items()}
        return out

    def run() -> tuple[Selection, dict]:
        ctx = AcquisitionContext(model=net, tasks=dm.task_objects, pool=dm.pool, datamodule=dm)
        strat = create_strategy(name, **kw)
        sel = strat.select(ctx, 6)
        assert read == [], f"select() read labels of unlabelled images {read}"
        return sel, acquisition_diagnostics(strat, ctx, seed=0)

    clean_sel, clean_diag = run()
    dataset.load = poisoned_load
    try:
        poisoned_sel, poisoned_diag = run()
    finally:
        dataset.load = clean_load
    assert poisoned_sel.pairs.tolist() == clean_sel.pairs.tolist()
    np.testing.assert_array_equal(poisoned_sel.scores, clean_sel.scores)
    assert read, "the oracle pass must read the unlabelled images' labels"
    assert set(clean_diag) == set(poisoned_diag) and "diag/depth/spearman" in clean_diag


def test_diagnose_table_has_every_default_method(real, tmp_path) -> None:
    from mtal.diagnostics import DIAGNOSE_METHODS, diagnose_rows, format_table, write_csv
    from mtal.training.module import MultiTaskModule

    dm, _ = real
    torch.manual_seed(0)
    module = MultiTaskModule(
        tasks=list(dm.task_objects),
        num_classes=dict(dm.num_classes),
        backbone="tiny_cnn",
        model_kwargs={"head_channels": 8, "encoder_channels": 8, "gt_substitution": True},
        task_weights={"semseg": 1.0, "depth": 1.0, "normals": 10.0},
    )
    methods = {k: dict(v) for k, v in DIAGNOSE_METHODS.items()}
    for spec in methods.values():
        if spec["strategy"] in ("partal", "rbal"):
            spec["mc_samples"] = 2
        if spec["strategy"] == "mtal":
            spec.update(ae_epochs=1, code_dim=8, ae_hidden=4)
    rows = diagnose_rows(module, dm, methods)
    by = {r["method"]: r for r in rows}
    assert list(by) == list(DIAGNOSE_METHODS)
    scored = 12 - 3  # unlabelled images of the fixture pool
    for label, r in by.items():
        if label == "ll4al":  # this network has no loss-prediction module
            assert r["note"].startswith("skipped: ll4al needs predicted losses"), r
            continue
        assert r["diag/scored"] == scored, label
        assert all(np.isfinite(r[f"diag/{t}/spearman"]) for t in dm.task_objects), label
        pairs = r["strategy"] == "partal"  # pair strategies rank per task only
        assert ("diag/image/spearman" in r) == (not pairs), label
    text = format_table(rows, list(dm.task_objects))
    assert all(label in text for label in DIAGNOSE_METHODS)
    write_csv(rows, tmp_path / "d.csv")
    import csv

    with (tmp_path / "d.csv").open() as handle:
        got = list(csv.DictReader(handle))
    assert [g["method"] for g in got] == list(DIAGNOSE_METHODS)
    assert float(got[0]["diag/depth/spearman"]) == pytest.approx(
        by[got[0]["method"]]["diag/depth/spearman"]
    )


def test_report_writes_diagnostics_table_and_plot(tmp_path) -> None:
    from mtal.report import write_report

    exp = tmp_path / "exp"
    values = {  # strategy -> seed -> (image ρ, depth ρ) of cycle 0
        "mtal": {0: (0.2, 0.1), 1: (0.4, -0.1)},
        "partal": {0: (None, 0.5), 1: (None, 0.3)},
    }
    for strategy, seeds in values.items():
        for seed, (image, depth) in seeds.items():
            folder = exp / strategy / f"seed{seed}"
            folder.mkdir(parents=True)
            head = "cycle,labels,labelled_fraction,val/mtl_loss,diag/depth/spearman"
            row = f"0,10,0.1,1.0,{depth}"
            if image is not None:
                head, row = head + ",diag/image/spearman", row + f",{image}"
            (folder / "metrics.csv").write_text(f"{head}\n{row}\n1,20,0.2,0.9,\n")
    out = write_report(exp)
    text = (out / "diagnostics.md").read_text()
    assert "| mtal | 10.0 | 0.300 ± 0.100 | 0.000 ± 0.100 |" in text
    assert "| partal | 10.0 |  | 0.400 ± 0.100 |" in text
    assert (out / "diagnostics.png").stat().st_size > 1000


def test_diagnose_subcommand_parses_and_names_a_missing_weights_file(tmp_path) -> None:
    from mtal.cli import run_cli

    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="diagnose --weights .*nope.pt"):
        run_cli(["diagnose", "--weights", str(missing), "--out", str(tmp_path / "d.csv")])
    assert not (tmp_path / "d.csv").exists()


def test_report_adds_equal_star_as_the_best_single_task_equal() -> None:
    from mtal.report import add_equal_star

    runs = {
        "equal-depth": [[{"cycle": 0, "val/mtl_loss": 3.0}, {"cycle": 1, "val/mtl_loss": 2.0}]],
        "equal-semseg": [[{"cycle": 0, "val/mtl_loss": 3.0}, {"cycle": 1, "val/mtl_loss": 1.5}]],
        "mtal": [[{"cycle": 0, "val/mtl_loss": 1.0}, {"cycle": 1, "val/mtl_loss": 0.5}]],
    }
    assert add_equal_star(runs) == "equal-semseg"
    assert runs["equal*"] is runs["equal-semseg"]
    assert add_equal_star({"mtal": runs["mtal"]}) is None
