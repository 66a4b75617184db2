"""Streaming scoring passes over the pool.

Each batch is pushed through the model and immediately reduced to small per-sample
summaries (scores ``[B, K]``, pooled features ``[B, D]``); full-resolution predictions
never outlive their batch, so memory does not grow with the pool's pixels.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch

from mtal import distributed
from mtal.acquisition.base import AcquisitionContext
from mtal.buffers import float32_buffer
from mtal.progress import bar

#: a summary larger than this many values per sample is refused (it would make the
#: retained memory scale with the pool's pixels instead of its size)
MAX_VALUES_PER_SAMPLE = 1 << 16

Summarise = Callable[[dict[str, Any]], Mapping[str, torch.Tensor]]


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Put ``model`` (and every submodule) in eval mode; restore each module's mode after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.train(training)


@contextlib.contextmanager
def seeded_torch(seed: int | None, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run the block with torch's RNG (CPU, and ``device`` if CUDA) seeded by ``seed``
    and restore the global RNG state afterwards (MC-dropout masks become reproducible
    without disturbing training randomness). ``None`` leaves the RNG untouched."""
    if seed is None:
        yield
        return
    dev = torch.device(device)
    cuda = (
        [dev.index if dev.index is not None else torch.cuda.current_device()]
        if (dev.type == "cuda")
        else []
    )
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield


def to_device(obj: Any, device: torch.device | str) -> Any:
    """Move tensors nested in dicts/lists/tuples to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, Mapping):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def stream_summaries(
    ctx: AcquisitionContext,
    indices: np.ndarray,
    summarise: Summarise,
    *,
    with_labels: bool = False,
    max_values_per_sample: int = MAX_VALUES_PER_SAMPLE,
    seed: int | None = None,
    sharded: bool = True,
    lead: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Run ``summarise(batch)`` over ``datamodule.pool_loader(indices)`` in inference mode.

    ``summarise`` gets a batch already on ``ctx.device`` and returns named per-sample
    tensors ``[B, ...]``; they are moved to CPU at once and concatenated. Rows of the
    result follow the order of ``indices``. The model is in eval mode during the pass and
    gets its previous mode back afterwards. ``seed`` seeds torch's RNG for the pass
    (MC dropout) without disturbing the global state. Under DDP (``sharded``) each rank
    scores its whole-batch share and the summaries of all ranks come back in order
    (:func:`mtal.distributed.sharded_summaries`). ``lead`` maps a summary name to rows
    that come *before* the streamed rows of that name in the same buffer: a caller that
    needs ``[lead; streamed]`` (MTAL's labelled + unlabelled features) gets it without a
    second copy of the pool's rows (issue 16.6). With ``ctx.summary_dir`` set the buffers
    are memory-mapped unnamed files in that folder (:func:`mtal.buffers.float32_buffer`):
    the same numbers, but the pool's rows live in the page cache, not in the process's
    own memory.
    """
    indices = np.asarray(indices, dtype=np.int64)
    lead = dict(lead or {})
    folder = ctx.summary_dir
    if lead and (indices.size == 0 or (sharded and distributed.world_size() > 1)):
        # no single buffer to share: stream, then prepend (the streamed rows are one shard
        # gathered from every rank, or nothing)
        got = stream_summaries(
            ctx,
            indices,
            summarise,
            with_labels=with_labels,
            max_values_per_sample=max_values_per_sample,
            seed=seed,
            sharded=sharded,
        )
        return _prepend(lead, got, folder)
    if indices.size == 0:
        return {}
    # -- DDP: shard the pass across ranks, gather the summaries (issue 16 part 3) --
    if sharded and distributed.world_size() > 1:
        block = int(getattr(ctx.datamodule, "eval_batch_size", 0) or 1)
        options = {"with_labels": with_labels, "max_values_per_sample": max_values_per_sample}

        def local(part: np.ndarray, part_seed: int | None) -> dict[str, torch.Tensor]:
            return stream_summaries(ctx, part, summarise, seed=part_seed, sharded=False, **options)

        return distributed.sharded_summaries(indices, block, seed, local)
    if len(np.unique(indices)) != len(indices):  # score each image once, rows repeated
        unique = indices[np.sort(np.unique(indices, return_index=True)[1])]
        once = stream_summaries(
            ctx,
            unique,
            summarise,
            with_labels=with_labels,
            max_values_per_sample=max_values_per_sample,
            seed=seed,
            sharded=sharded,
        )
        at = {int(i): r for r, i in enumerate(unique)}
        take = torch.as_tensor([at[int(i)] for i in indices], dtype=torch.int64)
        return _prepend(lead, {key: value[take] for key, value in once.items()}, folder)
    # one preallocated float32 buffer per summary, rows written where the index belongs:
    # peak memory is one copy of the summaries (no per-batch list, concatenation and
    # reorder copies); numpy buffers, so the result is a plain tensor (trainable)
    row_of = {int(i): r for r, i in enumerate(indices)}
    filled = np.zeros(len(indices), dtype=bool)
    buffers: dict[str, np.ndarray] = {}
    seen = 0
    with eval_mode(ctx.model), seeded_torch(seed, ctx.device), torch.inference_mode():
        loader = ctx.datamodule.pool_loader(indices, with_labels=with_labels)
        total = len(loader) if hasattr(loader, "__len__") else None
        for batch in bar(loader, total=total, desc=f"scoring {len(indices)} images"):
            batch = to_device(batch, ctx.device)
            size = int(batch["index"].shape[0])
            out = summarise(batch)
            got = batch["index"].detach().to("cpu", torch.int64).tolist()
            rows = np.asarray([row_of.get(int(i), -1) for i in got], dtype=np.int64)
            seen += len(got)
            if (rows < 0).any() or filled[rows[rows >= 0]].any() or seen > len(indices):
                raise RuntimeError(
                    f"pool_loader returned index {got} outside the {len(indices)} requested "
                    "or twice; ActiveDataModule.pool_loader must yield each index once"
                )
            filled[rows] = True
            for key, value in out.items():
                if value.shape[0] != size:
                    raise ValueError(
                        f"scoring summary {key!r} has {value.shape[0]} rows for a batch of {size}"
                    )
                per_sample = value[0].numel() if size else 0
                if per_sample > max_values_per_sample:
                    raise ValueError(
                        f"scoring summary {key!r} keeps {per_sample} values per sample "
                        f"(limit {max_values_per_sample}); reduce it (pool/average) inside the "
                        "batch so memory does not grow with the pool's pixels"
                    )
                if key not in buffers:
                    buffers[key] = _allocate(
                        key, lead.get(key), len(indices), value.shape[1:], folder
                    )
                at = rows + (len(lead[key]) if key in lead else 0)
                buffers[key][at] = value.detach().to("cpu", torch.float32).numpy()
    if not filled.all():
        missing = indices[~filled]
        raise RuntimeError(
            f"pool_loader returned {seen} samples for {len(indices)} requested indices "
            f"(missing e.g. {missing[:5].tolist()}); ActiveDataModule.pool_loader must yield "
            "each index once"
        )
    unused = sorted(set(lead) - set(buffers))
    if unused:
        raise ValueError(
            f"stream_summaries: lead rows were given for {unused} but summarise returned "
            f"only {sorted(buffers)}; lead keys must be summaries the pass produces"
        )
    return {key: torch.from_numpy(buf) for key, buf in buffers.items()}


def _allocate(
    key: str,
    lead: torch.Tensor | None,
    rows: int,
    shape: tuple[int, ...] | torch.Size,
    folder: str | None = None,
) -> np.ndarray:
    """One float32 buffer for ``rows`` streamed rows of ``shape``, with ``lead``'s rows
    already written in front of them (in memory, or mapped in ``folder``)."""
    if lead is None:
        return float32_buffer((rows, *shape), folder)
    if tuple(lead.shape[1:]) != tuple(shape):
        raise ValueError(
            f"stream_summaries: lead rows of {key!r} have shape {tuple(lead.shape[1:])} but "
            f"the pass returns {tuple(shape)} per sample; both must come from the same model"
        )
    buf = float32_buffer((len(lead) + rows, *shape), folder)
    buf[: len(lead)] = lead.detach().to("cpu", torch.float32).numpy()
    return buf


def _prepend(
    lead: Mapping[str, torch.Tensor], got: dict[str, torch.Tensor], folder: str | None = None
) -> dict[str, torch.Tensor]:
    """``got`` with ``lead``'s rows written in front of the summaries they name (one new
    buffer each, in memory or mapped in ``folder``)."""
    out = dict(got)
    for key, rows in lead.items():
        rows = rows.detach().to("cpu", torch.float32)
        if key not in got:
            out[key] = rows
            continue
        tail = got[key].detach().to("cpu", torch.float32)
        buf = _allocate(key, rows, len(tail), tuple(tail.shape[1:]), folder)
        buf[len(rows) :] = tail.numpy()
        out[key] = torch.from_numpy(buf)
    return out


def forward(ctx: AcquisitionContext, batch: Mapping[str, Any], **kwargs: Any) -> Any:
    """Call the context's model on a batch's image with contract keyword arguments."""
    return ctx.model(batch["image"], **kwargs)


def accepts_keyword(model: torch.nn.Module, name: str) -> bool:
    """Whether ``model.forward`` declares the keyword parameter ``name``."""
    param = inspect.signature(model.forward).parameters.get(name)
    return param is not None and param.kind in (param.KEYWORD_ONLY, param.POSITIONAL_OR_KEYWORD)


def accepts_mc_samples(model: torch.nn.Module) -> bool:
    """Whether ``model.forward`` declares an ``mc_samples`` parameter (mtal's models do:
    they run the deterministic trunk once and replicate only what carries dropout)."""
    return accepts_keyword(model, "mc_samples")


def _replicate(obj: Any, samples: int) -> Any:
    """Tensors nested in dicts stacked ``samples`` times on the batch axis (sample-major)."""
    if isinstance(obj, torch.Tensor):
        return obj.repeat(samples, *([1] * (obj.dim() - 1)))
    if isinstance(obj, Mapping):
        return {k: _replicate(v, samples) for k, v in obj.items()}
    return obj


def mc_forward(
    ctx: AcquisitionContext, batch: Mapping[str, Any], samples: int, **kwargs: Any
) -> Any:
    """``samples`` MC-dropout predictions of every image of ``batch`` in one call; rows of
    ``final`` are sample-major (``s·B + b``). A model that declares ``mc_samples`` computes
    its deterministic trunk once; any other gets the image (and ``gt``/``gt_mask``)
    replicated ``samples`` times — the same dropout masks either way for the same seed."""
    if accepts_mc_samples(ctx.model):
        return ctx.model(batch["image"], mc_dropout=True, mc_samples=samples, **kwargs)
    image = _replicate(batch["image"], samples)
    return ctx.model(image, mc_dropout=True, **_replicate(kwargs, samples))


def embedding_summary(ctx: AcquisitionContext) -> Summarise:
    """Summary function returning the pooled backbone embedding ``[B, D]``."""

    def summarise(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        out = forward(ctx, batch)
        if out.embedding is None:
            raise ValueError(
                "the model returned no MultiTaskOutput.embedding; coreset needs the pooled "
                "backbone feature (use a model from mtal.models)"
            )
        return {"embedding": out.embedding.flatten(1)}

    return summarise


def labelled_features(
    ctx: AcquisitionContext, indices: np.ndarray, summarise: Summarise, key: str
) -> torch.Tensor:
    """Features ``[n, D]`` of labelled pool ``indices``: from ``ctx.train_features`` when
    the loop provides that hook, else from a streaming pass with ``summarise``."""
    indices = np.asarray(indices, dtype=np.int64)
    if ctx.train_features is not None:
        feats = torch.as_tensor(ctx.train_features(indices)).to("cpu", torch.float32)
        if feats.shape[0] != len(indices):
            raise ValueError(
                f"AcquisitionContext.train_features returned {feats.shape[0]} rows for "
                f"{len(indices)} indices; it must return one feature row per index"
            )
        return feats.flatten(1)
    if indices.size == 0:
        return torch.zeros(0, 0)
    return stream_summaries(ctx, indices, summarise)[key]
