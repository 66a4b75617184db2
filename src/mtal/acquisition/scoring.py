"""Streaming scoring passes over the pool.

Each batch is pushed through the model and immediately reduced to small per-sample
summaries (scores ``[B, K]``, pooled features ``[B, D]``); full-resolution predictions
never outlive their batch, so memory does not grow with the pool's pixels.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch

from mtal.acquisition.base import AcquisitionContext
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
) -> dict[str, torch.Tensor]:
    """Run ``summarise(batch)`` over ``datamodule.pool_loader(indices)`` in inference mode.

    ``summarise`` gets a batch already on ``ctx.device`` and returns named per-sample
    tensors ``[B, ...]``; they are moved to CPU at once and concatenated. Rows of the
    result follow the order of ``indices``. The model is in eval mode during the pass and
    gets its previous mode back afterwards. ``seed`` seeds torch's RNG for the pass
    (MC dropout) without disturbing the global state.
    """
    indices = np.asarray(indices, dtype=np.int64)
    if indices.size == 0:
        return {}
    chunks: dict[str, list[torch.Tensor]] = {}
    seen: list[torch.Tensor] = []
    with eval_mode(ctx.model), seeded_torch(seed, ctx.device), torch.inference_mode():
        loader = ctx.datamodule.pool_loader(indices, with_labels=with_labels)
        total = len(loader) if hasattr(loader, "__len__") else None
        for batch in bar(loader, total=total, desc=f"scoring {len(indices)} images"):
            batch = to_device(batch, ctx.device)
            size = int(batch["index"].shape[0])
            out = summarise(batch)
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
                chunks.setdefault(key, []).append(value.detach().to("cpu", torch.float32))
            seen.append(batch["index"].detach().to("cpu", torch.int64))
    got = torch.cat(seen).numpy()
    position = {int(i): p for p, i in enumerate(got)}
    missing = [int(i) for i in indices if int(i) not in position]
    if missing or len(got) != len(indices):
        raise RuntimeError(
            f"pool_loader returned {len(got)} samples for {len(indices)} requested indices "
            f"(missing e.g. {missing[:5]}); ActiveDataModule.pool_loader must yield each index once"
        )
    order = torch.as_tensor([position[int(i)] for i in indices], dtype=torch.int64)
    # plain (non-inference) tensors, so callers may train on them (MTAL's auto-encoder)
    return {key: torch.cat(parts)[order].clone() for key, parts in chunks.items()}


def forward(ctx: AcquisitionContext, batch: Mapping[str, Any], **kwargs: Any) -> Any:
    """Call the context's model on a batch's image with contract keyword arguments."""
    return ctx.model(batch["image"], **kwargs)


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
