"""GPU check: prove the GPU paths on one CUDA GPU in a few minutes and write a table.

Run from the repository root on a machine with one NVIDIA GPU and a CUDA build of torch::

    WANDB_MODE=disabled NO_ALBUMENTATIONS_UPDATE=1 \\
        .venv/bin/python benchmarks/gpu_check.py [--out benchmarks/gpu_check_results.md]

It checks, each against the CPU or fp32 reference in the same run:

1. search — ``k_center_greedy`` (N=20k, d=512, 2k labelled, 2k picks) and
   ``nearest_distance`` (20k queries, 2k keys) with ``device='auto'`` (the GPU backend
   the auto rule picks: torch-CUDA k-center, faiss-GPU or torch-CUDA nearest) vs
   ``device='cpu'``: picks identical (asserted), max distance difference, speed-up.
2. AMP — one PAD-Net (resnet18) training step at 8×3×256×320, five tasks: autocast
   (bf16 where supported, else fp16 with a GradScaler) vs fp32; median of 10 steps.
3. loop — a 2-cycle ``mtal loop`` (configs/synthetic/smoke.yaml, strategy mtal) with
   ``--trainer.accelerator gpu`` (mixed precision by default on CUDA), in-process: the run
   folder must hold both cycles' pools and metrics rows.
4. scoring — MTAL (C5 committee + inconsistency + pooled features) and PartAL / RBAL
   (S=8 MC-dropout) scoring summaries per batch as ratios to one plain forward of the
   same batches on the GPU (PAD-Net resnet18, 128×160, batch 16, 5 tasks).

Without CUDA it prints why and exits with status 2. ``--dry-run-cpu`` runs every check on
the CPU at tiny sizes (the test suite does, so the script's code paths are exercised
without a GPU); its table says so and proves nothing about a GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtal import search
from mtal.acquisition import AcquisitionContext, create_strategy
from mtal.acquisition.diversity import pooled_task_features
from mtal.acquisition.scoring import eval_mode, mc_forward, seeded_torch, to_device
from mtal.data.datamodule import ActiveDataModule
from mtal.models import create_model

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("semseg", "parts", "saliency", "normals", "edge")
MTAL_FAST = {"ae_epochs": 2, "disc_epochs": 2, "code_dim": 32, "ae_hidden": 8}


@dataclass(frozen=True)
class Sizes:
    """Problem sizes of one run (full GPU check or CPU dry run)."""

    n: int
    d: int
    labelled: int
    budget: int
    keys: int
    amp_image: tuple[int, int]
    amp_batch: int
    backbone: str
    score_image: tuple[int, int]
    score_images: int
    mc_samples: int
    repeats: int
    warmup: int


FULL = Sizes(20_000, 512, 2_000, 2_000, 2_000, (256, 320), 8, "resnet18", (128, 160), 64, 8, 10, 3)
DRY = Sizes(600, 32, 60, 20, 50, (32, 40), 2, "tiny_cnn", (32, 40), 8, 2, 1, 1)


def sync(device: str) -> None:
    """Wait for the GPU so wall-clock timings cover the work."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str) -> tuple[float, Any]:
    """(wall seconds, result) of ``fn()``, GPU work included."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


Row = tuple[str, str, str, str]  # check, setting, result, verdict


# -- 1. search -------------------------------------------------------------------------
def search_rows(device: str, sizes: Sizes, seed: int = 0) -> list[Row]:
    """k-center and nearest neighbour on ``device`` ('auto' backend) vs on the CPU."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(50, sizes.d))
    x = (centres[rng.integers(50, size=sizes.n)] + rng.normal(0, 0.7, (sizes.n, sizes.d))).astype(
        np.float32
    )
    mask = np.zeros(sizes.n, dtype=bool)
    mask[rng.choice(sizes.n, size=sizes.labelled, replace=False)] = True
    dev = "cuda" if device.startswith("cuda") else "cpu"
    setting = f"N={sizes.n}, d={sizes.d}, L={sizes.labelled}, B={sizes.budget}"
    kc = search.resolve_backend("k_center_greedy", device=dev)
    t_cpu, ref = timed(lambda: search.k_center_greedy(x, mask, sizes.budget, device="cpu"), "cpu")
    t_dev, got = timed(lambda: search.k_center_greedy(x, mask, sizes.budget, device=dev), device)
    same = bool(np.array_equal(ref, got))
    rows: list[Row] = [
        (
            f"k-center ({kc} on {dev}) vs CPU (faiss)",
            setting,
            f"{t_dev:.2f} s vs {t_cpu:.2f} s = {t_cpu / t_dev:.1f}× faster; picks identical: {same}",
            "ok" if same else "FAIL: picks differ",
        )
    ]
    keys = x[rng.choice(sizes.n, size=sizes.keys, replace=False)]
    nn = search.resolve_backend("nearest_distance", device=dev)
    t_cpu, d_cpu = timed(lambda: search.nearest_distance(x, keys, device="cpu"), "cpu")
    t_dev, d_dev = timed(lambda: search.nearest_distance(x, keys, device=dev), device)
    err = float(np.abs(d_cpu - d_dev).max())
    # both are float32 norm-expansion searches: differences ~sqrt(d·u)·‖x‖ at distance ~0
    tol = 1e-2 * float(np.sqrt((x.astype(np.float64) ** 2).sum(1).max()))
    rows.append(
        (
            f"nearest neighbour ({nn} on {dev}) vs CPU (faiss)",
            f"{sizes.n} queries, {sizes.keys} keys, d={sizes.d}",
            f"{t_dev:.3f} s vs {t_cpu:.3f} s = {t_cpu / t_dev:.1f}× faster; max |Δd| {err:.1e}",
            "ok" if err <= tol else f"FAIL: |Δd| > {tol:.1e}",
        )
    )
    return rows


# -- 2. AMP training step --------------------------------------------------------------
def _amp_dtype(device: str) -> torch.dtype:
    """bf16 where the device supports it (CPU, Ampere+), else fp16."""
    if device.startswith("cuda") and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def amp_rows(device: str, sizes: Sizes) -> list[Row]:
    """One PAD-Net training step with autocast vs fp32 (same weights, same batch)."""
    dm = ActiveDataModule(
        dataset="synthetic",
        tasks=list(TASKS),
        size=sizes.amp_image,
        pool_size=sizes.amp_batch,
        val_size=1,
        initial=sizes.amp_batch,
        batch_size=sizes.amp_batch,
        dataset_kwargs={"cache": True},
    )
    dm.setup("fit")
    batch = next(iter(dm.pool_loader(np.arange(sizes.amp_batch), with_labels=True)))
    batch = to_device(batch, device)
    tasks = dm.task_objects
    torch.manual_seed(0)
    model = create_model("padnet", tasks, backbone=sizes.backbone).to(device).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    dtype = _amp_dtype(device)
    dev_type = "cuda" if device.startswith("cuda") else "cpu"

    def loss_of(out: Any) -> torch.Tensor:
        return sum(tasks[t].loss(out.final[t].float(), batch["targets"][t]).mean() for t in tasks)

    results: dict[str, tuple[float, float]] = {}
    for mode in ("fp32", "amp"):
        model.load_state_dict(state)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        scaler = torch.amp.GradScaler(dev_type, enabled=mode == "amp" and dtype == torch.float16)
        first = float("nan")
        times = []

        def one(opt: Any = opt, scaler: Any = scaler, amp: bool = mode == "amp") -> float:
            opt.zero_grad(set_to_none=True)
            with torch.autocast(dev_type, dtype=dtype, enabled=amp):
                out = model(batch["image"])
            loss = loss_of(out)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            return float(loss.detach())

        for step in range(sizes.repeats + sizes.warmup):
            t, loss = timed(one, device)
            if step == 0:
                first = loss
            if step >= sizes.warmup:  # warm-up steps (cuDNN autotuning, allocator) not timed
                times.append(t)
        results[mode] = (statistics.median(times), first)
    (t32, l32), (tamp, lamp) = results["fp32"], results["amp"]
    rel = abs(lamp - l32) / max(abs(l32), 1e-12)
    ok = np.isfinite(lamp) and rel < 0.05
    return [
        (
            f"AMP training step ({str(dtype).replace('torch.', '')} autocast) vs fp32",
            f"PAD-Net {sizes.backbone}, batch {sizes.amp_batch}×3×{sizes.amp_image[0]}×"
            f"{sizes.amp_image[1]}, {len(TASKS)} tasks, Adam; median of {sizes.repeats}",
            f"{tamp * 1e3:.1f} ms vs {t32 * 1e3:.1f} ms = {t32 / tamp:.2f}× faster; first-step "
            f"loss {lamp:.4f} vs {l32:.4f} (rel. diff {rel:.1e})",
            "ok" if ok else "FAIL: AMP loss not finite or >5 % off fp32",
        )
    ]


# -- 3. a 2-cycle mtal loop ------------------------------------------------------------
def loop_rows(device: str, workdir: Path) -> list[Row]:
    """``mtal loop`` for 2 cycles on ``device`` through the CLI, in-process."""
    from mtal.cli import run_cli
    from mtal.data.pool import LabelPool

    runs = workdir / "runs"
    accelerator = "gpu" if device.startswith("cuda") else "cpu"
    args = [
        "loop",
        "--config",
        str(ROOT / "configs" / "synthetic" / "smoke.yaml"),
        "--trainer.accelerator",
        accelerator,
        "--loop.strategy",
        "mtal",
        "--loop.strategy_kwargs",
        json.dumps(MTAL_FAST),
        "--loop.cycles",
        "2",
        "--loop.runs_dir",
        str(runs),
    ]
    t, _ = timed(lambda: run_cli(args), device)
    folders = sorted(p.parent for p in runs.rglob("state.json"))  # one run folder
    ok = len(folders) == 1
    detail = f"{len(folders)} run folders (expected 1)"
    if ok:
        folder = folders[0]
        lines = (folder / "metrics.csv").read_text().strip().splitlines()
        pools = sorted((folder / "pool").glob("cycle_*.json"))
        grew = len(pools) >= 2 and (
            LabelPool.load(pools[1]).num_labels > LabelPool.load(pools[0]).num_labels
        )
        ok = len(lines) == 3 and grew  # header + one row per cycle; the pool grew
        detail = f"{len(lines) - 1} metrics rows, {len(pools)} pool files, pool grew: {grew}"
    return [
        (
            f"mtal loop, 2 cycles, --trainer.accelerator {accelerator}",
            "configs/synthetic/smoke.yaml, strategy mtal (fast AE)",
            f"{t:.1f} s wall; {detail}",
            "ok" if ok else "FAIL",
        )
    ]


# -- 4. scoring cost on the device -----------------------------------------------------
def _mtal_summary(ctx: AcquisitionContext, batch: dict, strategy: Any) -> torch.Tensor:
    out = ctx.model(batch["image"], committee=1)
    strategy.inconsistency(ctx, out)
    return pooled_task_features(out.task_features, list(ctx.tasks), strategy.feature_pool)


def _mc_summary(ctx: AcquisitionContext, batch: dict, s: int, gt: bool) -> torch.Tensor:
    extra = {"gt": dict(batch["targets"]), "gt_mask": batch["labelled"]} if gt else {}
    out = mc_forward(ctx, batch, s, **extra)
    b = batch["image"].shape[0]
    return torch.stack(
        [
            ctx.tasks[n].mc_uncertainty(out.final[n].reshape(s, b, *out.final[n].shape[1:]))
            for n in ctx.tasks
        ],
        dim=1,
    )


def _each(batches: Sequence[dict], fn: Callable[[dict], Any]) -> None:
    """``fn`` on every batch (results dropped: only the time counts)."""
    for b in batches:
        fn(b)


def scoring_rows(device: str, sizes: Sizes) -> list[Row]:
    """Per-batch scoring summaries / one plain forward of the same batches, on ``device``."""
    dm = ActiveDataModule(
        dataset="synthetic",
        tasks=list(TASKS),
        size=sizes.score_image,
        pool_size=sizes.score_images + 8,
        val_size=1,
        initial=8,
        eval_batch_size=16,
        dataset_kwargs={"cache": True},
    )
    dm.setup("fit")
    unl = np.asarray(dm.pool.unlabelled_images())
    batches = [to_device(b, device) for b in dm.pool_loader(unl, with_labels=True)]
    s = sizes.mc_samples
    mtal = create_strategy("mtal", committee=1)
    cases: list[tuple[str, dict, Callable[[AcquisitionContext, dict], Any]]] = [
        ("mtal C5 (committee=1)", {}, lambda c, b: _mtal_summary(c, b, mtal)),
        (f"partal S={s}", {"gt_substitution": True}, lambda c, b: _mc_summary(c, b, s, True)),
        (f"rbal S={s}", {}, lambda c, b: _mc_summary(c, b, s, False)),
    ]
    rows: list[Row] = []
    for label, model_kw, summary in cases:
        torch.manual_seed(0)
        model = create_model("padnet", dm.task_objects, backbone=sizes.backbone, **model_kw)
        ctx = AcquisitionContext(
            model=model.to(device),
            tasks=dm.task_objects,
            pool=dm.pool,
            datamodule=dm,
            device=device,
        )
        ratios = []
        with eval_mode(ctx.model), torch.inference_mode(), seeded_torch(0, device):
            for b in batches[:1]:  # warm-up
                ctx.model(b["image"])
                summary(ctx, b)
            plain = partial(_each, batches, lambda b, c=ctx: c.model(b["image"]))
            scored = partial(_each, batches, partial(summary, ctx))
            for _ in range(max(2, sizes.repeats // 3)):
                t_plain, _ = timed(plain, device)
                t_score, _ = timed(scored, device)
                ratios.append(t_score / t_plain)
        med = statistics.median(ratios)
        rows.append(
            (
                f"scoring {label} / one plain pass",
                f"PAD-Net {sizes.backbone}, {len(unl)} images {sizes.score_image[0]}×"
                f"{sizes.score_image[1]}, batch 16, {len(TASKS)} tasks",
                f"{med:.2f}× (rounds: {', '.join(f'{r:.2f}' for r in ratios)})",
                "measured",
            )
        )
    return rows


# -- main ------------------------------------------------------------------------------
def environment(device: str) -> str:
    """One line naming the device, torch/CUDA and faiss builds."""
    faiss = search._faiss()
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else "CPU (dry run)"
    return (
        f"{name}; torch {torch.__version__} (CUDA {torch.version.cuda}), faiss "
        f"{getattr(faiss, '__version__', '?')} (GPUs seen by faiss: {gpus})"
    )


def table(rows: Sequence[Row], header: str) -> str:
    """Markdown table of the check rows."""
    lines = [header, "", "| check | setting | result | verdict |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines) + "\n"


CHECKS: dict[str, Callable[[str, Sizes, Path], list[Row]]] = {
    "search": lambda dev, sz, wd: search_rows(dev, sz),
    "amp": lambda dev, sz, wd: amp_rows(dev, sz),
    "loop": lambda dev, sz, wd: loop_rows(dev, wd),
    "scoring": lambda dev, sz, wd: scoring_rows(dev, sz),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "gpu_check_results.md")
    parser.add_argument("--dry-run-cpu", action="store_true", help="every check on CPU, tiny")
    parser.add_argument("--only", nargs="*", choices=sorted(CHECKS), default=None)
    args = parser.parse_args(argv)
    if args.dry_run_cpu:
        device, sizes = "cpu", DRY
    elif not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA GPU is visible to torch (torch.cuda.is_available() is False; "
            f"torch {torch.__version__}, built for CUDA {torch.version.cuda}). Run it on a "
            "machine with an NVIDIA GPU and a CUDA build of torch, or pass --dry-run-cpu to "
            "exercise its code on the CPU (that proves nothing about a GPU).",
            file=sys.stderr,
        )
        return 2
    else:
        device, sizes = "cuda", FULL
    start = time.perf_counter()
    env = environment(device)
    print(f"gpu_check on {env}", flush=True)
    rows: list[Row] = []
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or list(CHECKS):
            try:
                got = CHECKS[name](device, sizes, Path(tmp))
            except Exception as err:  # noqa: BLE001 - one failing check must not hide the rest
                got = [(name, "-", f"raised {type(err).__name__}: {err}", "FAIL")]
            for row in got:
                print(" | ".join(row), flush=True)
            failed |= any(r[3].startswith("FAIL") for r in got)
            rows += got
    header = (
        f"GPU check ({'CPU DRY RUN — not a GPU result' if args.dry_run_cpu else 'CUDA'}): {env}; "
        f"{time.perf_counter() - start:.0f} s wall; command: python benchmarks/gpu_check.py"
        + (" --dry-run-cpu" if args.dry_run_cpu else "")
    )
    text = table(rows, header)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print("\n" + text + f"\nwritten to {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
