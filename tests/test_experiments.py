"""Experiment grids (experiments/*.yaml) and W&B sweeps (configs/sweeps/*.yaml).

Every grid loads and expands, normally and with its smoke section, into ``mtal loop``
argument lists that the real CLI parser accepts, with registered strategies whose
options fit. The demo grid's smoke version runs end to end in-process, writes its
report, and a rerun skips every finished run. Every sweep is a valid W&B sweep whose
commands, built by wandb's own agent helpers, parse with the CLI into distinct run folders.
"""

from __future__ import annotations

import csv
import itertools
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

ROOT = Path(__file__).resolve().parents[1]
GRIDS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "experiments").glob("*.yaml"))
SWEEPS = sorted(
    p.relative_to(ROOT).as_posix() for p in (ROOT / "configs" / "sweeps").glob("*.yaml")
)


def build_cli(args: list[str]) -> Any:
    """The mtal LightningCLI on ``args`` with classes instantiated and nothing run."""
    from mtal.cli import run_cli

    return run_cli(args, execute=False)


@pytest.fixture(scope="module")
def parser(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The CLI's argument parser (built once; parsing does not instantiate anything)."""
    cwd = Path.cwd()
    os.chdir(ROOT)
    try:
        cli = build_cli(["loop", "--config", "configs/synthetic/smoke.yaml"])
    finally:
        os.chdir(cwd)
    return cli.parser


def run_folder(cfg: Any) -> Path:
    """``runs/<experiment>/<name or strategy>/seed<k>`` of a parsed ``loop`` config."""
    loop = cfg["loop"]["loop"]
    label = loop["name"] or loop["strategy"]
    return Path(loop["runs_dir"]) / loop["experiment"] / label / f"seed{loop['seed']}"


def test_expected_grids_exist() -> None:
    names = {Path(g).stem for g in GRIDS}
    assert {
        "demo",
        "wacv24_nyud",
        "wacv24_pascal",
        "wacv24_tab1",
        "wacv24_fig7a",
        "wacv24_fig7b",
        "partal_nyud",
        "partal_pascal",
    } <= names


@pytest.mark.parametrize("smoke", [False, True], ids=["full", "smoke"])
@pytest.mark.parametrize("grid_path", GRIDS)
def test_grid_expands_to_valid_runs(
    grid_path: str, smoke: bool, parser: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mtal.acquisition import STRATEGIES, create_strategy
    from mtal.experiment import expand, load_grid, run_grid
    from mtal.loop import LoopSettings, validate_settings

    monkeypatch.chdir(ROOT)
    raw = yaml.safe_load(Path(grid_path).read_text())
    assert "smoke" in raw, f"{grid_path} needs a smoke: section"
    grid = load_grid(grid_path, smoke=smoke)
    if smoke:
        # the tiny procedural config of the grid's tasks (det+seg grids: detseg_smoke.yaml)
        assert grid.config in (
            "configs/synthetic/smoke.yaml",
            "configs/synthetic/detseg_smoke.yaml",
        )
        assert grid.seeds == [0]
    assert (ROOT / grid.config).is_file()
    runs = expand(grid, runs_dir="/tmp/never-written")
    refs = 0 if grid.reference is None else len(grid.reference_seeds or grid.seeds)
    cells = max(len(grid.variants), 1) * len(grid.strategies) - len(grid.exclude)
    assert len(runs) == cells * len(grid.seeds) + refs
    folders = set()
    for run in runs:
        cfg = parser.parse_args(run.args)
        assert cfg["subcommand"] == "loop"
        folder = run_folder(cfg)
        assert folder == run.folder, f"{grid_path}: the grid's folder differs from the loop's"
        folders.add(folder)
        loop = cfg["loop"]["loop"]
        validate_settings(LoopSettings(**loop.as_dict()))  # what `mtal loop` checks first
        assert loop["strategy"] in STRATEGIES, f"{grid_path}: unknown strategy {loop['strategy']}"
        create_strategy(loop["strategy"], **dict(loop["strategy_kwargs"] or {}))
        if smoke:
            assert loop["cycles"] == (1 if run.strategy == "full" else 2)
    assert len(folders) == len(runs), f"{grid_path}: two runs share a run folder"
    # dry run: prints and returns every run without executing anything
    assert run_grid(grid, runs_dir="/tmp/never-written", dry_run=True) == runs
    assert not Path("/tmp/never-written").exists()


def _write_grid(path: Path, **extra: Any) -> Path:
    grid = {
        "name": "g",
        "config": "configs/synthetic/smoke.yaml",
        "strategies": ["random", "mtal"],
        "seeds": [0, 1],
        "variants": {"sl": {}, "mtpsl": {"model.partial_supervision": "mtpsl"}},
        **extra,
    }
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


def test_exclude_leaves_out_named_cells(tmp_path: Path) -> None:
    from mtal.experiment import expand, load_grid

    grid = load_grid(_write_grid(tmp_path / "g.yaml", exclude=["mtal-mtpsl"]))
    labels = [(r.strategy, r.seed) for r in expand(grid, runs_dir=str(tmp_path))]
    assert labels == [
        ("random-sl", 0),
        ("random-sl", 1),
        ("mtal-sl", 0),
        ("mtal-sl", 1),
        ("random-mtpsl", 0),
        ("random-mtpsl", 1),
    ]


def test_exclude_of_an_unknown_cell_names_the_cells(tmp_path: Path) -> None:
    from mtal.experiment import GridError, load_grid

    with pytest.raises(GridError, match=r"exclude names cell\(s\) \['mtal-dwa'\].*mtal-mtpsl"):
        load_grid(_write_grid(tmp_path / "g.yaml", exclude=["mtal-dwa"]))


def test_jobs_runs_each_cell_once_as_a_logged_subprocess(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``mtal experiment --jobs 2`` starts one single-threaded ``mtal loop`` per unfinished
    cell with its own log, and a failing cell fails the grid."""
    import subprocess

    from mtal import experiment

    calls: list[tuple[list[str], str]] = []

    def fake_run(cmd: list[str], env: dict[str, str], stdout: Any, stderr: Any) -> Any:
        calls.append((cmd, env["OMP_NUM_THREADS"]))
        stdout.write("log line\n")
        code = 2 if "1" == cmd[cmd.index("--loop.seed") + 1] and "mtal" in cmd else 0
        return subprocess.CompletedProcess(cmd, code)

    monkeypatch.setattr(experiment.subprocess, "run", fake_run)
    path = _write_grid(tmp_path / "g.yaml", exclude=["mtal-mtpsl", "mtal-sl"])
    assert experiment.main([str(path), "--runs-dir", str(tmp_path), "--jobs", "2"]) == 0
    assert len(calls) == 4 and {threads for _, threads in calls} == {"1"}
    assert (tmp_path / "g" / "logs" / "random-sl-seed1.log").read_text() == "log line\n"
    calls.clear()
    failing = _write_grid(tmp_path / "f.yaml", exclude=["random-mtpsl", "random-sl"])
    with pytest.raises(RuntimeError, match=r"mtal-sl seed1 failed \(exit 2\)"):
        experiment.main([str(failing), "--runs-dir", str(tmp_path), "--jobs", "2"])


def test_paper_grids(monkeypatch: pytest.MonkeyPatch) -> None:
    """The axes of the published figures (hand-written reference)."""
    from mtal.experiment import expand, load_grid

    monkeypatch.chdir(ROOT)
    nyud = load_grid("experiments/wacv24_nyud.yaml")
    assert set(nyud.strategies) == {
        "mtal",
        "random",
        "coreset",
        "ll4al",
        "equal",
        "rbal",
        "partal",
        "equal-semseg",
        "equal-depth",
        "equal-normals",  # EquAL-XX
    }
    # options that change the network apply to their strategy only
    assert nyud.strategy_overrides["ll4al"] == {"model.loss_prediction": True}
    assert nyud.strategy_overrides["partal"]["model.model_kwargs"]["gt_substitution"] is True
    assert "mtal" not in nyud.strategy_overrides
    for run in expand(nyud, runs_dir="runs"):
        has_lp = "--model.loss_prediction" in run.args
        assert has_lp == (run.strategy == "ll4al"), run.args
    smoke = load_grid("experiments/wacv24_nyud.yaml", smoke=True)
    assert set(smoke.strategies) == set(nyud.strategies)
    assert smoke.strategy_overrides["partal"]["model.model_kwargs"]["gt_substitution"] is True
    assert nyud.seeds == [0, 1, 2] and nyud.reference is not None
    fig7a = load_grid("experiments/wacv24_fig7a.yaml")
    committees = {
        name: v["loop.strategy_kwargs"]["committee"] for name, v in fig7a.variants.items()
    }
    assert committees == {"C5": 1, "C11": 2, "C15": 3}
    pascal = load_grid("experiments/wacv24_pascal.yaml")
    assert pascal.description.startswith("WACV24 Fig. 4") and nyud.description.startswith(
        "WACV24 Fig. 5"
    )
    assert {f"equal-{t}" for t in ("semseg", "parts", "saliency", "normals", "edge")} <= set(
        pascal.strategies
    )
    tab1 = load_grid("experiments/wacv24_tab1.yaml")
    for name, v in tab1.variants.items():  # DWA alone, not DWA x the fixed weights
        assert (v.get("model.task_weights", "fixed") is None) == name.startswith("dwa"), name
    for grid in ("partal_nyud", "partal_pascal"):
        partal = load_grid(f"experiments/{grid}.yaml")
        assert {"rbal", "ll4al"} <= set(partal.strategies)
        assert partal.strategy_overrides["rbal"]["loop.strategy_kwargs"]["uncertainty"] == "mc"
    fig12 = load_grid("experiments/partal_fig12.yaml")
    assert {n: v["loop.strategy_kwargs"]["normalise"] for n, v in fig12.variants.items()} == {
        "normalised": True,
        "raw": False,
    }
    demo = load_grid("experiments/demo.yaml")
    assert (demo.name, demo.config) == ("demo", "configs/synthetic/demo.yaml")
    assert demo.strategies == ["mtal", "random", "coreset"] and demo.seeds == [0, 1, 2]
    assert demo.reference is not None and demo.reference["data.initial"] == 1.0


def read_metrics(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_demo_smoke_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mtal.experiment import load_grid, run_grid
    from mtal.report import write_report

    monkeypatch.chdir(ROOT)
    runs_dir = tmp_path / "runs"
    grid = load_grid("experiments/demo.yaml", smoke=True)
    smoke = yaml.safe_load(Path(grid.config).read_text())
    executed = run_grid(grid, runs_dir=str(runs_dir))
    assert [r.strategy for r in executed] == ["full", "mtal", "random", "coreset"]

    pool, tasks = smoke["data"]["pool_size"], len(smoke["data"]["tasks"])
    initial = round(smoke["data"]["initial"] * pool)
    step = smoke["loop"]["budget"] * tasks  # budget counts images; K labels each
    for strategy in ("mtal", "random", "coreset"):
        rows = read_metrics(runs_dir / "demo" / strategy / "seed0" / "metrics.csv")
        assert [int(r["cycle"]) for r in rows] == [0, 1]
        assert [float(r["labels"]) for r in rows] == [initial * tasks, initial * tasks + step]
        selection = runs_dir / "demo" / strategy / "seed0" / "selections" / "cycle_001.csv"
        assert len(read_metrics(selection)) == smoke["loop"]["budget"]
    full = read_metrics(runs_dir / "demo" / "full" / "seed0" / "metrics.csv")
    assert [float(r["labels"]) for r in full] == [pool * tasks]

    report = write_report(runs_dir / "demo")
    assert (report / "curve_mtl_loss.png").stat().st_size > 1000
    table = (report / "table.md").read_text()
    for strategy in ("mtal", "random", "coreset"):
        assert f"| {strategy} |" in table
    assert "fully-trained" in (report / "savings.md").read_text()

    # a rerun finds every run finished and executes nothing
    assert run_grid(grid, runs_dir=str(runs_dir)) == []


# -- W&B sweeps ----------------------------------------------------------------------------


def sweep_values(spec: dict[str, Any]) -> list[Any]:
    """Representative values of one sweep parameter (all values, or a range's ends)."""
    if "values" in spec:
        return list(spec["values"])
    if "value" in spec:
        return [spec["value"]]
    if "min" in spec and "max" in spec:
        return [spec["min"], spec["max"]]
    raise AssertionError(f"parameter spec {spec} has no values/value/min+max")


def agent_command(sweep: dict[str, Any], params: dict[str, Any]) -> list[str]:
    """The command ``wandb agent`` would run for ``params``, built with wandb's helpers
    and macro substitution (as in wandb.wandb_agent.Agent._command_run)."""
    from wandb.sdk.launch.sweeps import utils

    command = utils.create_sweep_command(list(sweep["command"]))
    sweep_vars = utils.create_sweep_command_args(
        {"args": {k: {"value": v} for k, v in params.items()}}
    )
    sweep_vars.update(interpreter=["python"], program=[sweep["program"]], env=["/usr/bin/env"])
    out: list[str] = []
    for chunk in map(str, command):
        if chunk.startswith("${") and chunk.endswith("}"):
            out += sweep_vars.get(chunk[2:-1]) or []
        else:
            out.append(chunk)
    return out


@pytest.mark.parametrize("path", SWEEPS)
def test_sweep_is_valid(path: str, parser: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from mtal.loop import LoopSettings, validate_settings

    monkeypatch.chdir(ROOT)
    sweep = yaml.safe_load(Path(path).read_text())
    assert {"program", "method", "metric", "parameters", "command"} <= set(sweep)
    assert sweep["method"] in {"grid", "random", "bayes"}
    assert sweep["metric"] == {"name": "val/mtl_loss", "goal": "minimize"}
    assert "${args}" in sweep["command"] or "${args_no_equals}" in sweep["command"]
    names = list(sweep["parameters"])
    combos = list(itertools.product(*(sweep_values(sweep["parameters"][n]) for n in names)))
    assert combos
    folders = set()
    for combo in combos:
        command = agent_command(sweep, dict(zip(names, combo)))
        assert command[:3] == ["/usr/bin/env", "mtal", "loop"], command
        cfg = parser.parse_args(command[2:])  # fails on an unknown key or a bad value
        validate_settings(LoopSettings(**cfg["loop"]["loop"].as_dict()))
        folders.add(run_folder(cfg))
    # each assignment trains in its own folder (a shared folder would be resumed)
    assert len(folders) == len(combos), f"{path}: sweep runs share run folders"
    # the first assignment also instantiates (values accepted by the classes)
    command = agent_command(sweep, dict(zip(names, combos[0])))
    cli = build_cli(command[2:])
    assert cli.skipped_subcommand == "loop"


def test_grid_baselines_must_be_cells_and_reach_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mtal import experiment
    from mtal.experiment import GridError, load_grid

    with pytest.raises(GridError, match=r"baselines names cell\(s\) \['mtal-mtpsl'\]"):
        load_grid(
            _write_grid(tmp_path / "b.yaml", exclude=["mtal-mtpsl"], baselines=["mtal-mtpsl"])
        )
    path = _write_grid(tmp_path / "g.yaml", baselines=["random-sl"])
    assert load_grid(path).baselines == ["random-sl"]
    seen: list[list[str]] = []
    monkeypatch.setattr(experiment, "run_grid", lambda *a, **k: [])
    import mtal.report

    monkeypatch.setattr(mtal.report, "main", lambda argv: seen.append(list(argv)) or 0)
    experiment.main([str(path), "--runs-dir", str(tmp_path), "--report"])
    assert seen == [[str(tmp_path / "g"), "--baseline", "random-sl"]]
