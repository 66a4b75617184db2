"""Multi-process helpers for ``mtal loop`` under Lightning DDP: rank queries, pool shards
and the ``torch.distributed`` collectives that put sharded scoring summaries back
together and make every rank use rank 0's selection.

Processes are created by Lightning's strategies (``--trainer.strategy ddp``, SLURM,
torchrun); nothing here starts one. Before the first ``trainer.fit`` initialises the
process group the rank comes from the launcher's environment (Lightning's own rule), and
every collective is a no-op in a single process.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")

log = logging.getLogger(__name__)


def _dist() -> Any:
    """``torch.distributed`` when a process group is initialised, else None."""
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def rank() -> int:
    """This process's global rank: the process group's, else the launcher's environment
    (``RANK``, ``LOCAL_RANK``, ``SLURM_PROCID``, ... as Lightning reads them), else 0."""
    dist = _dist()
    if dist is not None:
        return int(dist.get_rank())
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    found = getattr(rank_zero_only, "rank", None)
    return int(found) if found is not None else 0


def world_size() -> int:
    """The number of processes in the process group (1 without one)."""
    dist = _dist()
    return int(dist.get_world_size()) if dist is not None else 1


def is_rank_zero() -> bool:
    """Whether this process writes the run folder (rank 0, or the only process)."""
    return rank() == 0


def local_device() -> Any:
    """The device this rank scores on: ``cuda:LOCAL_RANK`` when CUDA is present (the GPU
    Lightning's DDP gave this rank), else the CPU."""
    import torch

    if not torch.cuda.is_available():
        return torch.device("cpu")
    dist = _dist()
    if dist is not None:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def shard_range(n: int, block: int, world: int, at: int) -> tuple[int, int]:
    """``[start, end)`` of rank ``at``'s share of ``n`` items split into ``world``
    contiguous runs of whole blocks of ``block`` items (the first ranks take one block
    more when they do not divide). Whole batches keep each sample in the batch it would
    have had in one process, so its summaries are bitwise the same."""
    if n < 0 or block < 1 or world < 1 or not 0 <= at < world:
        raise ValueError(f"shard_range: n={n}, block={block}, world={world}, at={at}")
    blocks = -(-n // block)
    per, extra = divmod(blocks, world)
    first = at * per + min(at, extra)
    last = first + per + (1 if at < extra else 0)
    return min(n, first * block), min(n, last * block)


def shard_seed(seed: int | None, at: int) -> int | None:
    """The scoring seed of rank ``at``'s shard: rank 0 keeps ``seed`` (its batches get the
    masks one process would draw for them), the others an independent seed derived from
    ``(seed, rank)`` so their MC-dropout masks do not repeat rank 0's."""
    if seed is None or at == 0:
        return seed
    return int(np.random.SeedSequence([int(seed), int(at)]).generate_state(1)[0])


def gather_objects(obj: T) -> list[T]:
    """``obj`` from every rank, in rank order (``all_gather_object``); ``[obj]`` alone."""
    dist = _dist()
    if dist is None or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def from_rank_zero(obj: T) -> T:
    """Rank 0's ``obj`` on every rank (``broadcast_object_list``); ``obj`` alone."""
    dist = _dist()
    if dist is None or dist.get_world_size() == 1:
        return obj
    box = [obj if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def agree_with_rank_zero(selection: T, state: dict[str, Any]) -> T:
    """Rank 0's ``selection``; the strategy's cross-cycle ``state`` dict is made rank 0's
    in place (one process, and rank 0 itself, keep theirs as they are)."""
    chosen, agreed = from_rank_zero((selection, state))
    if agreed is not state:
        state.clear()
        state.update(agreed)
    return chosen


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    dist = _dist()
    if dist is not None and dist.get_world_size() > 1:
        dist.barrier()


def sharded_summaries(
    indices: np.ndarray,
    block: int,
    seed: int | None,
    run: Callable[[np.ndarray, int | None], dict[str, Any]],
) -> dict[str, Any]:
    """Score ``indices`` across ranks: each rank runs ``run(its_shard, its_seed)`` on its
    :func:`shard_range`, the per-sample summaries are gathered on every rank and
    concatenated in rank order, which is the order of ``indices``."""
    import torch

    world, me = world_size(), rank()
    start, end = shard_range(len(indices), block, world, me)
    log.info("rank %d/%d scores positions [%d, %d) of %d", me, world, start, end, len(indices))
    parts = gather_objects(run(indices[start:end], shard_seed(seed, me)))
    keys = next((list(p) for p in parts if p), [])
    return {key: torch.cat([p[key] for p in parts if p]) for key in keys}


def rank_zero_writes(func: Callable[..., T]) -> Callable[..., T | None]:
    """Decorate a run-folder writer so that only rank 0 runs it (other ranks: None)."""
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> T | None:
        if is_rank_zero():
            return func(*args, **kwargs)
        log.debug("rank %d leaves %s to rank 0", rank(), func.__qualname__)
        return None

    return wrapper


def check_loop_trainer(trainer: Any) -> None:
    """Refuse a strategy whose launcher runs each fit in child processes that end with it
    (``ddp_spawn``, ``ddp_fork``, ``ddp_notebook``): ``mtal loop`` scores, selects and
    continues between fits in the processes that trained, which only ``ddp`` (Lightning
    re-runs the command on every rank) and external launchers (SLURM, torchrun) keep."""
    from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher

    launcher = getattr(trainer.strategy, "launcher", None)
    if isinstance(launcher, _MultiProcessingLauncher):
        name = type(trainer.strategy).__name__
        method = getattr(launcher, "_start_method", "?")
        raise ValueError(
            f"trainer.strategy: {name} with start method {method!r} runs every fit in "
            "child processes that end with it, so `mtal loop` could not score the pool and "
            "continue in them; use --trainer.strategy ddp (Lightning re-runs the command on "
            "each rank) or launch the ranks with SLURM/torchrun"
        )
