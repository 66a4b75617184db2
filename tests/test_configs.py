"""Every YAML in configs/ (except W&B sweeps) parses and instantiates with the ``mtal`` CLI.

Real-dataset configs are pointed at tiny fixture datasets written in the real on-disk
formats by :mod:`mtal.data.fixtures`, with the ``tiny_cnn`` backbone and no pretrained
weights, so the test is fast and offline. The values the classes receive are checked
against the YAML files themselves and against the papers' constants.
"""

from __future__ import annotations

import os
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(
    p.relative_to(ROOT).as_posix()
    for p in (ROOT / "configs").rglob("*.yaml")
    if "sweeps" not in p.relative_to(ROOT / "configs").parts
)
#: registered dataset name → fixture writer name in mtal.data.fixtures.FIXTURE_WRITERS
REAL_DATASETS = ("nyud", "pascal_context", "nyuv2_13", "cityscapes_7", "nuimages", "a9")
#: overrides that make a real-dataset config fast and offline
OFFLINE = [
    "--model.backbone=tiny_cnn",
    "--model.pretrained=false",
    "--data.size=[32, 40]",
    "--data.num_workers=0",
    "--trainer.accelerator=cpu",
]


def instantiate(args: list[str]) -> Any:
    """Parse ``args`` with the mtal CLI (subcommands included) and instantiate the model,
    datamodule, trainer and loop settings without running the subcommand."""
    from mtal.cli import run_cli

    return run_cli(args, execute=False)


def load_yaml(path: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / path).read_text())


@pytest.fixture(scope="module")
def fixture_roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny copies (4 train / 2 val images) of each real dataset in its own format."""
    from mtal.data.fixtures import write_synthetic_fixture

    base = tmp_path_factory.mktemp("datasets")
    roots = {}
    for name in REAL_DATASETS:
        write_synthetic_fixture(name, base / name, n_train=4, n_val=2, size=(32, 40))
        roots[name] = base / name
    return roots


def test_every_config_is_covered() -> None:
    expected = {
        "configs/synthetic/mtal.yaml",
        "configs/synthetic/demo.yaml",
        "configs/synthetic/smoke.yaml",
        "configs/synthetic/partal.yaml",
        "configs/nyud/padnet_mtal.yaml",
        "configs/nyud/padnet_partal.yaml",
        "configs/pascal/padnet_mtal.yaml",
        "configs/pascal/padnet_partal.yaml",
        "configs/cityscapes/hps.yaml",
        "configs/nyuv2_13/hps.yaml",
    }
    assert expected <= set(CONFIGS)


@pytest.mark.parametrize("path", CONFIGS)
def test_config_instantiates(
    path: str, fixture_roots: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mtal.loop import LoopSettings
    from mtal.models.backbones import BACKBONES

    monkeypatch.chdir(ROOT)
    raw = load_yaml(path)
    assert set(raw) <= {"seed_everything", "model", "data", "trainer", "loop"}, path
    dataset = raw["data"]["dataset"]
    overrides: list[str] = []
    if dataset in REAL_DATASETS:
        root = raw["data"]["root"]
        assert root.startswith("data/"), f"{path}: data.root should live under data/"
        overrides = [f"--data.root={fixture_roots[dataset]}", *OFFLINE]
        # the real backbone must exist (built in or in timm), even though it is not built here
        backbone = raw["model"]["backbone"]
        # segnet is its own encoder-decoder (its configs say backbone: segnet, unused)
        if backbone not in BACKBONES and raw["model"]["model"] != "segnet":
            import timm

            assert timm.is_model(backbone), f"{path}: unknown backbone {backbone!r}"
    cli = instantiate(["loop", "--config", path, *overrides])
    assert cli.skipped_subcommand == "loop"

    # the loop section becomes LoopSettings with exactly the file's values
    settings = cli.config_init["loop"]["loop"]
    assert isinstance(settings, LoopSettings)
    for key, value in raw["loop"].items():
        got = getattr(settings, key)  # a nested section (loop.early_stopping) is a dataclass
        assert (asdict(got) if is_dataclass(got) else got) == value, f"{path}: loop.{key}"

    # model hyperparameters are the file's values (except the offline overrides)
    model = cli.model
    replaced = {"backbone", "pretrained"} if overrides else set()
    for key, value in raw["model"].items():
        if key not in replaced:
            assert model.hparams[key] == value, f"{path}: model.{key}"

    # data: tasks linked into the model, in the file's order; the split opens
    dm = cli.datamodule
    for key, value in raw["data"].items():
        if key not in {"root", "size", "num_workers"}:
            got = dm.hparams[key] if key in dm.hparams else getattr(dm, key)
            assert (list(got) if isinstance(got, tuple) else got) == value, f"{path}: data.{key}"
    assert type(dm.initial) is type(raw["data"]["initial"]), f"{path}: data.initial type"
    assert list(dm.tasks) == raw["data"]["tasks"]
    assert model.task_names == raw["data"]["tasks"]
    expected_len = 4 if dataset in REAL_DATASETS else raw["data"].get("pool_size")
    assert dm.pool_length == expected_len
    assert cli.trainer.max_epochs == raw["trainer"]["max_epochs"]

    # the network was built and answers on a tiny batch with every task
    import torch

    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 32, 40))
    assert set(out.final) == set(raw["data"]["tasks"])


def test_paper_constants() -> None:
    """The published protocols, spelled out (hand-written reference values)."""
    nyud = load_yaml("configs/nyud/padnet_mtal.yaml")
    assert nyud["model"]["task_weights"] == {"semseg": 1.0, "depth": 1.0, "normals": 10.0}
    assert (nyud["model"]["optimizer"], nyud["model"]["lr"]) == ("adam", 1e-4)
    assert nyud["data"]["batch_size"] == 6 and nyud["model"]["backbone"] == "hrnet_w18"
    assert nyud["model"]["pretrained"] is True and nyud["model"]["model"] == "padnet"
    assert (nyud["data"]["initial"], nyud["loop"]["budget"]) == (0.1, 0.1)
    assert nyud["trainer"]["max_epochs"] == 20 and nyud["loop"]["continuous"] is True

    pascal = load_yaml("configs/pascal/padnet_mtal.yaml")
    assert pascal["model"]["task_weights"] == {
        "semseg": 1.0, "parts": 2.0, "saliency": 5.0, "normals": 10.0, "edge": 50.0
    }  # fmt: skip
    assert (pascal["model"]["optimizer"], pascal["model"]["lr"]) == ("sgd", 1e-2)
    assert pascal["model"]["momentum"] == 0.9 and pascal["data"]["batch_size"] == 8
    # task options live in data: only; the CLI links them to the model
    assert "task_options" not in pascal["model"]
    assert pascal["data"]["task_options"]["edge"]["pos_weight"] == 0.95

    for path, initial, labels, tasks in (
        ("configs/nyud/padnet_partal.yaml", 100, 240, 3),
        ("configs/pascal/padnet_partal.yaml", 1000, 1500, 5),
    ):
        partal = load_yaml(path)
        assert partal["data"]["initial"] == initial and isinstance(partal["data"]["initial"], int)
        assert (partal["loop"]["budget"], partal["loop"]["budget_unit"]) == (labels, "labels")
        assert labels % tasks == 0 and len(partal["data"]["tasks"]) == tasks
        assert partal["trainer"]["max_epochs"] == 100
        assert partal["model"]["model_kwargs"]["gt_substitution"] is True
        assert partal["model"]["weight_decay"] == 1e-4 and partal["model"]["poly_power"] == 0.9
    assert load_yaml("configs/nyud/padnet_partal.yaml")["model"]["lr"] == 1e-4


def test_synthetic_protocols_are_small() -> None:
    """The CPU configs keep the sizes the demo and tests rely on."""
    mtal = load_yaml("configs/synthetic/mtal.yaml")
    assert 300 <= mtal["data"]["pool_size"] <= 400
    h, w = mtal["data"]["dataset_kwargs"]["size"]
    assert h <= 64 and w <= 80
    assert mtal["loop"]["cycles"] == 5 and 2 <= mtal["trainer"]["max_epochs"] <= 3
    smoke = load_yaml("configs/synthetic/smoke.yaml")
    assert smoke["data"]["dataset_kwargs"]["size"] == [32, 40]
    assert 24 <= smoke["data"]["pool_size"] <= 40 and smoke["trainer"]["max_epochs"] == 1


def test_unknown_key_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    raw = load_yaml("configs/synthetic/smoke.yaml")
    raw["model"]["head_chanels"] = 8  # a typo
    bad = tmp_path / "typo.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(SystemExit) as info:
        instantiate(["loop", "--config", str(bad)])
    assert info.value.code != 0
    err = capsys.readouterr().err
    assert "head_chanels" in err


def test_unknown_loop_key_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    raw = load_yaml("configs/synthetic/smoke.yaml")
    raw["loop"]["budjet"] = 3
    bad = tmp_path / "typo.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(SystemExit):
        instantiate(["loop", "--config", str(bad)])
    assert "budjet" in capsys.readouterr().err


def test_task_options_reach_the_model_through_the_link() -> None:
    from mtal.cli import DEFAULT_CONFIG, run_cli

    cli = run_cli(
        ["fit", "--config", str(DEFAULT_CONFIG), "--data.task_options",
         '{"edge": {"pos_weight": 0.8, "thresholds": 3, "metric_mode": "approx"}}'],
        execute=False,
    )  # fmt: skip
    assert cli.skipped_subcommand == "fit"  # parsed and built, not run
    assert cli.model.hparams.task_options["edge"]["pos_weight"] == 0.8
    assert cli.model.task_objects["edge"].options["pos_weight"] == 0.8
    assert cli.datamodule.task_objects["edge"].options["pos_weight"] == 0.8


@pytest.mark.parametrize("subcommand", ["fit", "validate", "test"])
def test_a_loop_config_serves_every_subcommand(subcommand: str) -> None:
    """The paper configs carry a loop: section; fit/validate/test accept and ignore it."""
    from mtal.cli import run_cli

    cli = run_cli(
        [subcommand, "--config", str(ROOT / "configs/synthetic/mtal.yaml")], execute=False
    )
    assert cli.skipped_subcommand == subcommand
    assert cli.config[subcommand]["loop"]["strategy"] == "mtal"
