"""Pool-scoring cost of the acquisition strategies, relative to one plain inference pass,
and peak memory of scoring versus pool size. Prints markdown tables.

Run (about 4-5 min wall on the shared 2-core CPU at load ~2, more when it is busier;
``--quick``: tiny sizes, about 30 s)::

    WANDB_MODE=disabled NO_ALBUMENTATIONS_UPDATE=1 OMP_NUM_THREADS=1 \\
        .venv/bin/python benchmarks/bench_scoring.py [--quick] [--threads auto|1|2]

Setting: synthetic scenes, PAD-Net on the tiny CNN (``--arch paper``: the paper configs'
HRNet-W18 PAD-Net; ``--breakdowns-only``: the per-batch tables alone), CPU, eval batch
16, the five PASCAL-Context tasks. The pool's scenes are rendered once before timing
(dataset cache), so times are model + scoring work, not scene rendering.

1. Time. Reference = ONE plain inference pass: ``model(image)`` under
   ``torch.inference_mode`` over the same unlabelled images through the same
   ``datamodule.pool_loader``, run right before and right after each ``select()``
   (mean of the two). Each ``select()`` is timed in full, and the time spent inside its
   streaming passes (``stream_summaries``, wrapped here; the strategy files are
   untouched) is reported as its scoring pass (unlabelled images; the pass over the
   labelled images of coreset/mtal separately). Ratios use CPU seconds of this process
   (``time.process_time``, less sensitive to other users of a shared machine);
   wall-clock ratios are printed alongside. mtal's summary pass is also decomposed per
   stage on the same batches, interleaved with the plain forward (the steadiest ratio).
2. Memory. For each pool size, a fresh process (forked from a server that has only
   imported the libraries) builds the pool and model, runs ``select()`` once and
   reports the peak RSS increase (``resource.getrusage`` ``ru_maxrss`` minus the RSS
   before the call, glibc ``MALLOC_MMAP_THRESHOLD_`` fixed so RSS follows live memory)
   and the tracemalloc peak (Python/numpy allocations only: torch's CPU allocator is
   invisible to tracemalloc).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import importlib
import multiprocessing
import os
import resource
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np
import psutil
import torch

from mtal.acquisition import AcquisitionContext, create_strategy, scoring
from mtal.acquisition.diversity import pooled_task_features
from mtal.data.datamodule import ActiveDataModule
from mtal.models import create_model

#: PASCAL-Context's five tasks (PAD-Net's committee=1 has C5 members per task: 4 pairs)
TASKS = ("semseg", "parts", "saliency", "normals", "edge")
#: model variants: the keyword arguments of ``create_model("padnet", ...)``
MODELS: dict[str, dict[str, Any]] = {
    "padnet": {},  # WACV24's learnable committee (pairs) is built by default
    "padnet+committee_order=2": {"committee_order": 2},
    "padnet+committee_order=3": {"committee_order": 3},
    "padnet+loss_prediction": {"loss_prediction": True},
    "padnet+gt_substitution": {"gt_substitution": True},
}
#: modules whose ``stream_summaries`` / diversity helpers are wrapped with timers
STRATEGY_MODULES = (
    "mtal.acquisition.scoring",
    "mtal.acquisition.coreset",
    "mtal.acquisition.equal",
    "mtal.acquisition.ll4al",
    "mtal.acquisition.mtal_consistency",
    "mtal.acquisition.partal",
    "mtal.acquisition.rbal",
)
#: mtal's non-scoring stages, timed separately (module attribute → label)
MTAL_STAGES = {
    "train_autoencoder": "AE training",
    "encode_all": "AE encoding",
    "_nearest": "nearest-neighbour search",
}
#: glibc mmap threshold of the memory workers (bytes): allocations above it are mmapped
#: and returned to the OS when freed
MMAP_THRESHOLD = 1 << 16
MTAL_TARGET = 2.0  # mtal's scoring pass must cost <= 2 plain inference passes
COMMITTEE_TARGET = 1.5  # issue 16.2: learnable-committee scoring <= 1.5 plain passes


@dataclass(frozen=True)
class Case:
    """One timed strategy: table label, registry name, keyword arguments, model variant."""

    label: str
    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    model: str = "padnet"


@dataclass(frozen=True)
class Setting:
    """Sizes of one benchmark run."""

    size: tuple[int, int]
    n_unlabelled: int
    n_labelled: int
    batch: int
    mc_samples: int
    mem_cases: tuple[tuple[Case, tuple[int, ...]], ...]
    breakdown_images: int
    #: PAD-Net trunk and channel widths (``--arch``; the default is the tiny CNN)
    arch: str = "tiny_cnn"


#: ``--arch`` → (backbone, PAD-Net keyword arguments). ``paper``: the paper configs'
#: PAD-Net (configs/pascal/padnet_{mtal,partal}.yaml: HRNet-W18, 64 head / 128 encoder
#: channels), randomly initialised (timing does not depend on the weights' values)
ARCHS: dict[str, tuple[str, dict[str, Any]]] = {
    "tiny_cnn": ("tiny_cnn", {}),
    "paper": ("hrnet_w18", {"head_channels": 64, "encoder_channels": 128, "pretrained": False}),
    "resnet18": ("resnet18", {"head_channels": 64, "encoder_channels": 128, "pretrained": False}),
}


def timing_cases(mc_samples: int) -> list[Case]:
    """The strategies of part 1 (MC strategies with ``mc_samples`` dropout samples)."""
    return [
        Case("random", "random"),
        Case("coreset", "coreset"),
        Case("mtal (C5, committee=1)", "mtal", {"committee": 1}),
        Case("mtal (C5, shared committee)", "mtal", {"committee": 1, "committee_mode": "shared"}),
        Case("mtal (C11, committee=2)", "mtal", {"committee": 2}, "padnet+committee_order=2"),
        Case("mtal (C15, committee=3)", "mtal", {"committee": 3}, "padnet+committee_order=3"),
        Case("equal", "equal"),
        Case("rbal (EquAL ranks, WACV24)", "rbal"),
        Case(f"rbal (MC, S={mc_samples})", "rbal", {"uncertainty": "mc", "mc_samples": mc_samples}),
        Case("ll4al", "ll4al", {}, "padnet+loss_prediction"),
        Case(
            f"partal (S={mc_samples})",
            "partal",
            {"mc_samples": mc_samples},
            "padnet+gt_substitution",
        ),
    ]


FULL = Setting(
    size=(64, 80),
    n_unlabelled=96,
    n_labelled=16,
    batch=16,
    mc_samples=8,
    mem_cases=(
        (Case("mtal (C5)", "mtal", {"committee": 1}), (32, 128, 512)),
        (
            Case("partal (S=8)", "partal", {"mc_samples": 8}, "padnet+gt_substitution"),
            (32, 64, 256),
        ),
    ),
    breakdown_images=48,
)
QUICK = Setting(
    size=(32, 40),
    n_unlabelled=16,
    n_labelled=8,
    batch=8,
    mc_samples=2,
    mem_cases=(
        (Case("mtal (C5)", "mtal", {"committee": 1, "ae_epochs": 2}), (8, 32)),
        (Case("partal (S=2)", "partal", {"mc_samples": 2}, "padnet+gt_substitution"), (8, 32)),
    ),
    breakdown_images=16,
)


# -- measurement helpers --------------------------------------------------------------
@dataclass
class Clock:
    """CPU and wall seconds accumulated by :meth:`measure`."""

    cpu: float = 0.0
    wall: float = 0.0
    calls: int = 0

    @contextlib.contextmanager
    def measure(self) -> Iterator[None]:
        """Add the CPU (this process) and wall time of the block."""
        cpu0, wall0 = time.process_time(), time.perf_counter()
        try:
            yield
        finally:
            self.cpu += time.process_time() - cpu0
            self.wall += time.perf_counter() - wall0
            self.calls += 1


def flops(fn: Callable[[], object]) -> int:
    """Multiply-add FLOPs of one call of ``fn`` as ``torch.utils.flop_counter`` counts them
    (convolutions and matrix products; element-wise work, resizes and softmax are not
    counted): the arithmetic a path cannot avoid at equal kernel speed."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def timed(fn: Callable[[], object]) -> Clock:
    """CPU and wall seconds of one call of ``fn``."""
    clock = Clock()
    with clock.measure():
        fn()
    return clock


def _labelled_only(ctx: AcquisitionContext, indices: Any) -> bool:
    """Whether a scoring pass runs over labelled images only (the diversity strategies'
    pass over the labelled set, avoidable with ``AcquisitionContext.train_features``)."""
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    return bool(idx.size) and bool(np.asarray(ctx.pool.labelled)[idx].any(axis=1).all())


@contextlib.contextmanager
def instrumented(clocks: dict[str, Clock]) -> Iterator[None]:
    """Wrap ``stream_summaries`` (label ``"scoring"``, or ``"scoring (labelled images)"``
    for a pass over labelled images only) and mtal's diversity stages (labels of
    :data:`MTAL_STAGES`) in every strategy module with timers, accumulated into
    ``clocks``; restore them after. Nested calls are counted once (the outermost)."""
    depth = {"n": 0}
    patched: list[tuple[Any, str, Any]] = []

    def wrap(fn: Callable[..., Any], label: str) -> Callable[..., Any]:
        def inner(*args: Any, **kwargs: Any) -> Any:
            if depth["n"]:
                return fn(*args, **kwargs)
            key = label
            if label == "scoring" and _labelled_only(args[0], args[1]):
                key = "scoring (labelled images)"
            depth["n"] += 1
            try:
                with clocks.setdefault(key, Clock()).measure():
                    return fn(*args, **kwargs)
            finally:
                depth["n"] -= 1

        return inner

    targets = {"stream_summaries": "scoring", **MTAL_STAGES}
    try:
        for mod_name in STRATEGY_MODULES:
            module = importlib.import_module(mod_name)
            for attr, label in targets.items():
                if hasattr(module, attr):
                    original = getattr(module, attr)
                    patched.append((module, attr, original))
                    setattr(module, attr, wrap(original, label))
        yield
    finally:
        for module, attr, original in reversed(patched):
            setattr(module, attr, original)


def build(
    setting: Setting, n_unlabelled: int, model_kwargs: dict[str, Any], cache: bool
) -> AcquisitionContext:
    """A pool of ``n_labelled`` fully labelled + ``n_unlabelled`` unlabelled synthetic scenes
    and a seeded PAD-Net (trunk ``setting.arch``) → an acquisition context."""
    dm = ActiveDataModule(
        dataset="synthetic",
        tasks=list(TASKS),
        size=setting.size,
        pool_size=n_unlabelled + setting.n_labelled,
        val_size=2,
        initial=setting.n_labelled,
        eval_batch_size=setting.batch,
        dataset_kwargs={"cache": cache},
    )
    dm.setup("fit")
    torch.manual_seed(0)
    backbone, arch_kwargs = ARCHS[setting.arch]
    model = create_model(
        "padnet", tasks=dm.task_objects, backbone=backbone, **arch_kwargs, **model_kwargs
    )
    model.eval()
    return AcquisitionContext(
        model=model, tasks=dm.task_objects, pool=dm.pool, datamodule=dm, cycle=1, seed=0
    )


def plain_pass(ctx: AcquisitionContext, indices: np.ndarray) -> None:
    """The reference: one ``model(image)`` per pool batch, inference mode, eval mode."""
    ctx.model.eval()
    with torch.inference_mode():
        for batch in ctx.datamodule.pool_loader(indices):
            ctx.model(batch["image"])


def budget_for(ctx: AcquisitionContext) -> int:
    """Labels to buy: 8 whole images' worth (K labels each)."""
    return 8 * len(ctx.tasks)


# -- part 1: time ---------------------------------------------------------------------
@dataclass
class TimeRow:
    """Times of one strategy and the plain pass it is compared with."""

    case: Case
    select: Clock
    scoring: Clock
    labelled: Clock
    stages: dict[str, Clock]
    reference: Clock


def bench_time(setting: Setting) -> list[TimeRow]:
    """Time every case's ``select`` (scoring passes separately). Each select is bracketed
    by plain passes of its model (the pass after one case is the pass before the next
    case of that model); its reference is the mean of the two, so a change of the
    machine's load during the run affects numerator and denominator alike."""
    contexts: dict[str, AcquisitionContext] = {}
    last_plain: dict[str, Clock] = {}
    rows: list[TimeRow] = []
    for case in timing_cases(setting.mc_samples):
        if case.model not in contexts:
            ctx = build(setting, setting.n_unlabelled, MODELS[case.model], cache=True)
            plain_pass(ctx, np.arange(ctx.num_images))  # renders, caches every scene; warms up
            contexts[case.model] = ctx
        ctx = contexts[case.model]
        unl = np.asarray(ctx.pool.unlabelled_images())
        before = last_plain.get(case.model) or timed(partial(plain_pass, ctx, unl))
        ctx.state = {}
        strategy = create_strategy(case.name, **case.kwargs)
        clocks: dict[str, Clock] = {}
        with instrumented(clocks):
            total = timed(partial(strategy.select, ctx, budget_for(ctx)))
        after = last_plain[case.model] = timed(partial(plain_pass, ctx, unl))
        reference = Clock((before.cpu + after.cpu) / 2, (before.wall + after.wall) / 2, 2)
        scoring_clock = clocks.pop("scoring", Clock())
        labelled_clock = clocks.pop("scoring (labelled images)", Clock())
        stages = {k: v for k, v in clocks.items() if v.calls}
        rows.append(TimeRow(case, total, scoring_clock, labelled_clock, stages, reference))
        print(
            f"  timed {case.label}: select {total.cpu:.1f} CPU-s, scoring "
            f"{scoring_clock.cpu:.1f} CPU-s (plain {before.cpu:.1f} / {after.cpu:.1f})",
            flush=True,
        )
    return rows


def time_table(rows: list[TimeRow], setting: Setting, threads: int) -> str:
    """Markdown table of part 1."""
    lines = [
        f"Pool scoring time, N = {setting.n_unlabelled} unlabelled + {setting.n_labelled} "
        f"labelled images, {setting.size[0]}×{setting.size[1]}, {len(TASKS)} tasks, PAD-Net "
        f"{ARCHS[setting.arch][0]}, batch {setting.batch}, CPU, {threads} torch thread(s); "
        "ratio = CPU seconds / CPU seconds of one plain inference pass over the same unlabelled images "
        "(mean of the passes right before and after that select; wall-clock ratio in "
        "brackets).",
        "",
        "| strategy | plain pass (CPU s) | scoring pass, unlabelled (CPU s) | "
        "**scoring / plain** | + pass over labelled (CPU s) | full select (CPU s) | "
        "select / plain | other stages of select (CPU s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ref = r.reference
        stages = ", ".join(f"{MTAL_STAGES.get(k, k)} {c.cpu:.2f}" for k, c in r.stages.items())
        labelled = f"{r.labelled.cpu:.2f}" if r.labelled.calls else "—"
        lines.append(
            f"| {r.case.label} | {ref.cpu:.2f} | {r.scoring.cpu:.2f} | "
            f"**{r.scoring.cpu / ref.cpu:.2f}×** ({r.scoring.wall / ref.wall:.2f}×) | "
            f"{labelled} | {r.select.cpu:.2f} | {r.select.cpu / ref.cpu:.2f}× "
            f"({r.select.wall / ref.wall:.2f}×) | {stages or '—'} |"
        )
    return "\n".join(lines)


def mtal_verdict(rows: list[TimeRow], interleaved: float) -> str:
    """One line: mtal (committee=1)'s scoring pass against the ≤ 2× target (the target
    applies to the scoring pass over the unlabelled pool, not to the AE training), from
    the timed select and from the per-batch interleaved breakdown; met only if both are."""
    row = next(r for r in rows if r.case.label == "mtal (C5, committee=1)")
    ratio = row.scoring.cpu / row.reference.cpu
    verdict = "met" if max(ratio, interleaved) <= MTAL_TARGET else "NOT met"
    return (
        f"mtal (C5) scoring pass = {ratio:.2f}× one plain pass in select() (bracketed "
        f"reference), {interleaved:.2f}× per-batch interleaved (breakdown below): target "
        f"≤ {MTAL_TARGET:g}× {verdict}; full select incl. labelled pass and AE = "
        f"{row.select.cpu / row.reference.cpu:.2f}×."
    )


# -- mtal breakdown -------------------------------------------------------------------
def mtal_breakdown(setting: Setting) -> tuple[str, float]:
    """Where mtal's scoring pass goes, per stage of its per-batch summary, on the first
    ``breakdown_images`` unlabelled images (batches loaded once, then each stage timed
    on the same batches): plain forward, committee=1 forward (the learnable committee,
    WACV24's, and the shared one), the learnable committee as select() runs it
    (``refine=False``; member by member and ``committee_batched``), inconsistency, pooled
    features; plus the loader alone. Returns the table and the summary pass's ratio."""
    ctx = build(setting, setting.breakdown_images, MODELS["padnet"], cache=True)
    strategy = create_strategy("mtal", committee=1)
    names = list(ctx.tasks)
    unl = np.asarray(ctx.pool.unlabelled_images())
    plain_pass(ctx, np.arange(ctx.num_images))  # render + warm up
    loader = Clock()
    with loader.measure():
        batches = [b["image"] for b in ctx.datamodule.pool_loader(unl)]
    keys = ("plain", "committee", "shared", "scoring", "batched", "incons", "feat")
    clocks = {k: Clock() for k in keys}
    committee = ctx.model.learnable_committee
    diff = scale = 0.0
    with scoring.eval_mode(ctx.model), torch.inference_mode():
        for image in batches:
            with clocks["plain"].measure():
                ctx.model(image)
            with clocks["shared"].measure():
                ctx.model(image, committee=1, committee_mode="shared")
            with clocks["committee"].measure():
                full = ctx.model(image, committee=1)
            committee.batched = True
            with clocks["batched"].measure():
                stacked = ctx.model(image, committee=1, refine=False)
            committee.batched = False
            # what select() runs (anchor 'initial'): no distillation/final heads
            with clocks["scoring"].measure():
                out = ctx.model(image, committee=1, refine=False)
            diff = max(
                diff,
                *(
                    float((m - full.committee[k][n]).abs().max())
                    for src in (out, stacked)
                    for k, ms in src.committee.items()
                    for n, m in ms.items()
                ),
            )
            # a randomly initialised HRNet's eval activations reach ~1e6: report the
            # difference relative to the members' largest magnitude too
            scale = max(
                scale,
                *(float(m.abs().max()) for ms in full.committee.values() for m in ms.values()),
            )
            with clocks["incons"].measure():
                strategy.inconsistency(ctx, out)
            with clocks["feat"].measure():
                pooled_task_features(out.task_features, names, strategy.feature_pool)
        image = batches[0]
        plain_flops = flops(lambda: ctx.model(image))
        score_flops = flops(
            lambda: strategy.inconsistency(ctx, ctx.model(image, committee=1, refine=False))
        )
    floor = score_flops / plain_flops
    ref = clocks["plain"].cpu + loader.cpu
    parts = [
        ("loader (cached scenes, eval transform, collate)", loader),
        ("model(image) (plain forward)", clocks["plain"]),
        ("model(image, committee=1) (learnable committee)", clocks["committee"]),
        ("model(image, committee=1, committee_mode='shared')", clocks["shared"]),
        (
            "model(image, committee=1, refine=False) (select()'s path: no distillation/final)",
            clocks["scoring"],
        ),
        ("  same, committee_batched (stacked member kernels)", clocks["batched"]),
        ("inconsistency (Task.discrepancy × members)", clocks["incons"]),
        ("pooled task features", clocks["feat"]),
    ]
    lines = [
        f"mtal scoring breakdown, {len(unl)} images (same batches for every stage; "
        "share = CPU seconds / (loader + plain forward), i.e. / one plain pass):",
        "",
        "| stage | CPU s | share of one plain pass |",
        "|---|---|---|",
    ]
    lines += [f"| {label} | {c.cpu:.2f} | {c.cpu / ref:.2f}× |" for label, c in parts]
    before = loader.cpu + sum(clocks[k].cpu for k in ("committee", "incons", "feat"))
    total = loader.cpu + sum(clocks[k].cpu for k in ("scoring", "incons", "feat"))
    lines += [
        f"| mtal summary pass before issue 16.2 (loader + committee + incons + feat) | "
        f"{before:.2f} | {before / ref:.2f}× |",
        f"| **mtal summary pass (loader + refine=False committee + incons + feat)** | "
        f"{total:.2f} | **{total / ref:.2f}×** |",
        "",
        f"Learnable committee scoring = {total / ref:.2f}× one plain pass per batch: target "
        f"≤ {COMMITTEE_TARGET:g}× {'met' if total / ref <= COMMITTEE_TARGET else 'NOT met'}; "
        f"max abs diff of the members (refine=False, batched) vs model(image, committee=1): "
        f"{diff:.1e} (relative to the members' largest magnitude {scale:.1e}: "
        f"{diff / max(scale, 1e-30):.1e}).",
        f"Arithmetic floor of that path (convolution + matmul FLOPs of refine=False "
        f"committee + inconsistency / plain forward, one batch): {floor:.2f}× "
        f"({score_flops / 1e9:.2f} / {plain_flops / 1e9:.2f} GFLOP); measured / floor: "
        f"{total / ref / floor:.2f}.",
    ]
    return "\n".join(lines), total / ref


# -- MC-dropout breakdown (partal / rbal) ---------------------------------------------
#: MC strategies of the breakdown: label → (model variant, ground-truth substitution,
#: extra forward kwargs); "partal, mc_scope final" is the last-layer option (issue 16.1)
MC_CASES: dict[str, tuple[str, bool, dict[str, Any]]] = {
    "rbal": ("padnet", False, {}),
    "partal": ("padnet+gt_substitution", True, {}),
    "partal, mc_scope final": ("padnet+gt_substitution", True, {"mc_scope": "final"}),
}
MC_TARGET = 2.0  # MC scoring at S=8 must cost <= 2 plain inference passes


def _mc_summary(
    ctx: AcquisitionContext,
    batch: dict[str, Any],
    s: int,
    gt: bool,
    old: bool,
    kwargs: dict[str, Any] | None = None,
):
    """One batch's MC uncertainty summary: the ``mc_samples`` path (``old=False``) or the
    previous path, the whole batch replicated S times through the network (``old=True``)."""
    extra: dict[str, Any] = {}
    if gt:
        extra = {"gt": dict(batch["targets"]), "gt_mask": batch["labelled"]}
    if old:
        out = scoring._replicate({"image": batch["image"], **extra}, s)
        out = ctx.model(out.pop("image"), mc_dropout=True, **out, **(kwargs or {}))
    else:
        out = scoring.mc_forward(ctx, batch, s, **extra, **(kwargs or {}))
    b = batch["image"].shape[0]
    cols = [
        ctx.tasks[n].mc_uncertainty(out.final[n].reshape(s, b, *out.final[n].shape[1:]))
        for n in ctx.tasks
    ]
    return torch.stack(cols, dim=1)


def mc_breakdown(setting: Setting, rounds: int = 3) -> tuple[str, dict[str, float]]:
    """MC-dropout scoring per batch, interleaved with the plain forward on the same
    batches (``rounds`` repeats; min and median of the per-round ratios): the
    ``mc_samples`` path (trunk once) vs the previous replicated batch. Also checks both
    paths give the same uncertainties for the same seed."""
    s = setting.mc_samples
    lines = [
        f"MC-dropout scoring (S={s}), {setting.breakdown_images} unlabelled images, batches "
        f"loaded once; per round each batch runs plain forward, the mc_samples path and the "
        f"replicated-batch path back to back; ratio = CPU s / plain-forward CPU s; {rounds} "
        "rounds (min / median over rounds):",
        "",
        "| strategy | plain forward (CPU s, median) | mc_samples path / plain (min / median) "
        "| replicated batch / plain (min / median) | speed-up | max abs diff of u "
        "| arithmetic floor (FLOPs / plain) | measured / floor |",
        "|---|---|---|---|---|---|---|---|",
    ]
    best: dict[str, float] = {}
    for label, (variant, gt, kwargs) in MC_CASES.items():
        ctx = build(setting, setting.breakdown_images, MODELS[variant], cache=True)
        unl = np.asarray(ctx.pool.unlabelled_images())
        plain_pass(ctx, np.arange(ctx.num_images))  # render + warm up
        batches = list(ctx.datamodule.pool_loader(unl, with_labels=gt))
        ratios: dict[str, list[float]] = {"new": [], "old": []}
        plains: list[float] = []
        diff = 0.0
        with scoring.eval_mode(ctx.model), torch.inference_mode():
            for r in range(rounds):
                clocks = {k: Clock() for k in ("plain", "new", "old")}
                for i, batch in enumerate(batches):
                    with clocks["plain"].measure():
                        ctx.model(batch["image"])
                    with clocks["new"].measure(), scoring.seeded_torch(r * 1000 + i):
                        u_new = _mc_summary(ctx, batch, s, gt, old=False, kwargs=kwargs)
                    with clocks["old"].measure(), scoring.seeded_torch(r * 1000 + i):
                        u_old = _mc_summary(ctx, batch, s, gt, old=True, kwargs=kwargs)
                    diff = max(diff, float((u_new - u_old).abs().max()))
                plains.append(clocks["plain"].cpu)
                for k in ratios:
                    ratios[k].append(clocks[k].cpu / clocks["plain"].cpu)
            first = batches[0]
            mc_path = partial(_mc_summary, ctx, first, s, gt, old=False, kwargs=kwargs)
            floor = flops(mc_path) / flops(partial(ctx.model, first["image"]))
        new, old = np.asarray(ratios["new"]), np.asarray(ratios["old"])
        best[label] = float(np.median(new))
        lines.append(
            f"| {label} (S={s}) | {np.median(plains):.2f} | **{new.min():.2f}× / "
            f"{np.median(new):.2f}×** | {old.min():.2f}× / {np.median(old):.2f}× | "
            f"{np.median(old) / np.median(new):.1f}× | {diff:.1e} | {floor:.2f}× | "
            f"{np.median(new) / floor:.2f} |"
        )
    verdict = ", ".join(
        f"{k} {v:.2f}× ({'met' if v <= MC_TARGET else 'NOT met'})" for k, v in best.items()
    )
    lines += [
        "",
        f"Target MC scoring ≤ {MC_TARGET:.0f}× one plain pass (median): {verdict}. The "
        "floor counts the convolution and matmul FLOPs of one batch's path (element-wise "
        "work not counted): a ratio below it needs less arithmetic, i.e. another estimator.",
    ]
    return "\n".join(lines), best


# -- part 2: memory -------------------------------------------------------------------
def output_bytes_per_image(ctx: AcquisitionContext, committee: int) -> int:
    """Bytes of one image's full-resolution outputs (final, initial, committee members)
    as float32: what scoring would retain per image if it kept its predictions."""
    with torch.inference_mode():
        image = next(iter(ctx.datamodule.pool_loader([0])))["image"][:1]
        out = ctx.model(image, committee=committee)
    maps = list(out.final.values()) + list((out.initial or {}).values())
    for members in (out.committee or {}).values():
        maps += [m for name, m in members.items() if name != "initial"]
    return int(sum(m.numel() for m in maps)) * 4


def memory_worker(setting: Setting, case: Case, n_unlabelled: int, threads: int) -> dict:
    """In a fresh process: build a pool of ``n_unlabelled`` images (no scene cache), run
    ``select`` once, return peak RSS increase and tracemalloc peak (bytes)."""
    torch.set_num_threads(threads)
    ctx = build(setting, n_unlabelled, MODELS[case.model], cache=False)
    with torch.inference_mode():  # load kernels/weights with a 1-image forward
        ctx.model(next(iter(ctx.datamodule.pool_loader([0])))["image"][:1])
    strategy = create_strategy(case.name, **case.kwargs)
    proc = psutil.Process()
    rss_before = proc.memory_info().rss
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracemalloc.start()
    strategy.select(ctx, budget_for(ctx))
    _, py_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "rss_before": rss_before,
        "maxrss_before": maxrss_before,
        "maxrss_after": maxrss_after,
        "peak_increase": maxrss_after - rss_before,
        "tracemalloc_peak": py_peak,
        "output_bytes": output_bytes_per_image(ctx, case.kwargs.get("committee", 0)),
    }


def bench_memory(setting: Setting, threads: int) -> list[tuple[Case, int, dict]]:
    """Run :func:`memory_worker` for every memory case and pool size, each in a new
    process forked from a forkserver that has imported torch and mtal only, with glibc's
    ``MALLOC_MMAP_THRESHOLD_`` fixed (unless already set) so RSS follows live memory."""
    # a fixed mmap threshold: glibc's default raises it after the first large free, so
    # later activations come from the heap, fragment it, and the measured peak depends on
    # the number of batches (default malloc: partal 600-830 MiB, noisy, at any pool size)
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(MMAP_THRESHOLD))
    mp = multiprocessing.get_context("forkserver")
    mp.set_forkserver_preload(["torch", "mtal.acquisition", "mtal.data.datamodule", "mtal.models"])
    results = []
    for case, sizes in setting.mem_cases:
        for n in sizes:
            with concurrent.futures.ProcessPoolExecutor(
                max_workers=1, mp_context=mp, max_tasks_per_child=1
            ) as pool:
                res = pool.submit(memory_worker, setting, case, n, threads).result()
            results.append((case, n, res))
            print(
                f"  memory {case.label} N={n}: +{res['peak_increase'] / 2**20:.1f} MiB peak RSS",
                flush=True,
            )
    return results


def memory_table(results: list[tuple[Case, int, dict]], setting: Setting) -> str:
    """Markdown table of part 2, with the largest/smallest ratio per strategy."""
    mib = 2**20
    lines = [
        f"Peak memory of one select() vs pool size (fresh process per row, "
        f"{setting.n_labelled} labelled + N unlabelled images, {setting.size[0]}×"
        f"{setting.size[1]}, no scene cache, MALLOC_MMAP_THRESHOLD_="
        f"{os.environ.get('MALLOC_MMAP_THRESHOLD_', 'glibc default')}). "
        "'kept outputs' = what retaining every "
        "image's full-resolution outputs (final + initial + committee) would take.",
        "",
        "| strategy | N unlabelled | peak RSS increase (MiB) | tracemalloc peak (MiB) | "
        "kept outputs would be (MiB) |",
        "|---|---|---|---|---|",
    ]
    summary = []
    for case, _ in setting.mem_cases:
        mine = [(n, r) for c, n, r in results if c == case]
        for n, r in mine:
            flag = "" if r["maxrss_after"] > r["maxrss_before"] else " (≤; below an earlier peak)"
            lines.append(
                f"| {case.label} | {n} | {r['peak_increase'] / mib:.1f}{flag} | "
                f"{r['tracemalloc_peak'] / mib:.2f} | {r['output_bytes'] * n / mib:.0f} |"
            )
        (n_lo, lo), (n_hi, hi) = mine[0], mine[-1]
        # least-squares slope of the peak over all sizes (bytes per extra image)
        sizes, peaks = [n for n, _ in mine], [r["peak_increase"] for _, r in mine]
        slope = float(np.polyfit(sizes, peaks, 1)[0])
        summary.append(
            f"{case.label}: pool ×{n_hi / n_lo:.0f} ({n_lo}→{n_hi}) → peak RSS increase "
            f"×{hi['peak_increase'] / max(lo['peak_increase'], 1):.2f} "
            f"({lo['peak_increase'] / mib:.1f}→{hi['peak_increase'] / mib:.1f} MiB, "
            f"fitted slope {slope / 1024:.0f} KiB per extra image vs "
            f"{hi['output_bytes'] / 1024:.0f} KiB of full-resolution outputs per image), "
            "tracemalloc "
            f"×{hi['tracemalloc_peak'] / max(lo['tracemalloc_peak'], 1):.2f}"
        )
    return "\n".join(lines + [""] + [f"- {s}" for s in summary])


# -- main -----------------------------------------------------------------------------
def choose_threads(arg: str) -> int:
    """``auto``: 2 torch threads when the 1-minute load average leaves a core free, else 1."""
    if arg != "auto":
        return int(arg)
    return 2 if os.getloadavg()[0] < 1.0 else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (< 60 s)")
    parser.add_argument("--threads", default="auto", help="torch threads: auto, 1 or 2")
    parser.add_argument("--skip-memory", action="store_true", help="part 1 only")
    parser.add_argument("--n", type=int, default=None, help="unlabelled images for part 1")
    parser.add_argument(
        "--mc-only", action="store_true", help="only the MC-dropout (partal/rbal) breakdown"
    )
    parser.add_argument(
        "--breakdowns-only",
        action="store_true",
        help="only the per-batch breakdowns (mtal committee, MC dropout), no select() timing",
    )
    parser.add_argument(
        "--arch",
        choices=sorted(ARCHS),
        default="tiny_cnn",
        help="PAD-Net trunk: tiny_cnn (default), paper (HRNet-W18, 64/128 channels), resnet18",
    )
    args = parser.parse_args()
    setting = replace(QUICK if args.quick else FULL, arch=args.arch)
    if args.n is not None:
        setting = replace(setting, n_unlabelled=args.n)
    threads = choose_threads(args.threads)
    torch.set_num_threads(threads)
    load = os.getloadavg()
    start = time.perf_counter()
    print(
        f"torch {torch.__version__}, {threads} torch thread(s), {os.cpu_count()} CPUs, "
        f"load average {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}, PAD-Net trunk "
        f"{ARCHS[setting.arch][0]} ({setting.arch})",
        flush=True,
    )
    if args.breakdowns_only or args.mc_only:
        tables = [] if args.mc_only else [mtal_breakdown(setting)[0]]
        print("\n\n".join([*tables, mc_breakdown(setting)[0]]))
        print(f"\ntotal runtime {time.perf_counter() - start:.0f} s (wall)")
        return
    rows = bench_time(setting)
    breakdown, interleaved = mtal_breakdown(setting)
    mc_table, _ = mc_breakdown(setting)
    memory = None if args.skip_memory else bench_memory(setting, threads)
    print()
    print(time_table(rows, setting, threads))
    print()
    print(mtal_verdict(rows, interleaved))
    print()
    print(breakdown)
    print()
    print(mc_table)
    if memory is not None:
        print()
        print(memory_table(memory, setting))
    print(f"\ntotal runtime {time.perf_counter() - start:.0f} s (wall)")


if __name__ == "__main__":
    main()
