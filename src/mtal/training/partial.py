"""Multi-task partially-supervised learning (Li, Liu, Bilen, CVPR 2022, Sec. 3).

Training signals for images that carry only some task labels (``labelled`` B×K):

- **SL** (Eq. 1): ``(1/N) Σ_n (1/|T_n|) Σ_{t∈T_n} L_t(ŷ_n^t, y_n^t)``, the per-image
  normalisation by the number of labelled tasks |T_n|; ``SL_REDUCTIONS["per_image"]``.
  ``"per_task"`` is the suite's default reduction (mean over the labelled samples of
  each task, :func:`mtal.training.module.reduce_task_losses`).
- **SSL** (Eq. 2, ``ssl``): random-crop consistency on the *unlabelled* tasks U_n,
  ``‖ act(h(f(c(x)))) − act(c(h(f(x)))) ‖²`` (MSE of activated outputs).
- **MTPSL** (Eq. 3–4, ``mtpsl``): for every unlabelled s and labelled t of an image,
  ``L_ct(m^{s→st}(ŷ^s), m^{t→st}(y^t)) + λ_R·[d(m^{s→st}(ŷ^s), f_φ(x)) +
  d(m^{t→st}(y^t), f_φ(x))]`` with L_ct = d = cosine distance, the mapping from
  :mod:`mtal.models.mtpsl`, summed over the pairs of an image and averaged over the
  batch, times ``weight`` (the official code's ``con_weight`` 2.0, ``reg_weight`` 0.5).
  ``consistency`` swaps L_ct for the paper's Contrastive-Loss / Discriminator-Loss
  baselines (:mod:`mtal.training.consistency`).

Only ground truth of labelled pairs is ever indexed: every loss gathers ``y^t`` through
``labelled[:, t]``. Every random choice (crop boxes, Gumbel noise) comes from a generator
seeded by ``(seed, global_step)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtal.registry import Registry

if TYPE_CHECKING:
    from mtal.tasks.base import Task
    from mtal.types import MultiTaskOutput

#: name → ``(per_sample B×K, labelled B×K, weight B×K | None) -> K`` supervised reduction
SL_REDUCTIONS: Registry[Tensor] = Registry("supervised loss normalisation")
#: name → partial-supervision term (``none`` builds nothing)
PARTIAL_SUPERVISION: Registry[nn.Module | None] = Registry("partial supervision")


# ------------------------------------------------------------------ Eq. 1 (SL)
@SL_REDUCTIONS.register("per_task")
def per_task_losses(per_sample: Tensor, labelled: Tensor, weight: Tensor | None = None) -> Tensor:
    """The suite's default: per task, the mean over the samples labelled for it."""
    from mtal.training.module import reduce_task_losses

    return reduce_task_losses(per_sample, labelled, weight)


@SL_REDUCTIONS.register("per_image")
def per_image_losses(per_sample: Tensor, labelled: Tensor, weight: Tensor | None = None) -> Tensor:
    """Eq. 1's normalisation split per task: entry k is ``(1/N) Σ_n s_nk·L_nk / |T_n|``
    over the N batch images with ≥ 1 label, so summing the K entries gives Eq. 1.

    Unlabelled entries contribute exactly 0 to value and gradient (``torch.where``)."""
    mask = labelled.to(torch.bool)
    w = mask.to(per_sample.dtype)
    if weight is not None:
        w = torch.where(mask, weight.to(per_sample.dtype), per_sample.new_zeros(()))
    per_image = mask.sum(1, keepdim=True).to(per_sample.dtype)  # |T_n|
    contrib = torch.where(w != 0, w * per_sample, per_sample.new_zeros(()))
    contrib = contrib / per_image.clamp_min(1)
    images = (per_image > 0).sum().clamp_min(1).to(per_sample.dtype)
    return contrib.sum(0) / images


# ------------------------------------------------------------------ shared pieces
def step_generator(seed: int, step: int) -> torch.Generator:
    """A CPU generator seeded by ``(seed, step)``: reproducible, independent per step."""
    state = np.random.SeedSequence([int(seed), int(step)]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def as_maps(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """``(a, b)`` as B×C×h×w maps (B×D → 1×1 maps), ``b`` resized (adaptive average
    pooling) to ``a``'s spatial size when they differ."""
    if a.ndim == 2:
        a = a[:, :, None, None]
    if b.ndim == 2:
        b = b[:, :, None, None]
    if tuple(b.shape[-2:]) != tuple(a.shape[-2:]):
        b = F.adaptive_avg_pool2d(b, a.shape[-2:])
    return a, b


def cosine_distance(a: Tensor, b: Tensor) -> Tensor:
    """Per-sample ``1 − mean_pixels cos(a, b)`` (cosine along channels), ``[B]``.

    ``b`` is resized (adaptive average pooling) to ``a``'s spatial size when they differ;
    B×D inputs are treated as 1×1 maps."""
    a, b = as_maps(a, b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"cosine distance between maps of {a.shape[1]} and {b.shape[1]} channels; the "
            f"mapping's out_channels must equal the channels of f_phi(x)"
        )
    return 1.0 - F.cosine_similarity(a, b, dim=1, eps=1e-12).flatten(1).mean(1)


def regulariser(mapped_source: Tensor, mapped_target: Tensor, features: Tensor) -> Tensor:
    """Eq. 4's R per sample: ``d(m^{s→st}(ŷ^s), f) + d(m^{t→st}(y^t), f)``, d = cosine
    distance, ``f`` resized to the mapped maps' spatial size."""
    return cosine_distance(mapped_source, features) + cosine_distance(mapped_target, features)


def consistency_terms(
    mapped_source: Tensor, mapped_target: Tensor, features: Tensor
) -> tuple[Tensor, Tensor]:
    """Eq. 3–4 per sample: ``L_ct = d(m^{s→st}(ŷ^s), m^{t→st}(y^t))`` and R
    (:func:`regulariser`), d = cosine distance."""
    l_ct = cosine_distance(mapped_source, mapped_target)
    return l_ct, regulariser(mapped_source, mapped_target, features)


def gumbel_hard(raw: Tensor, generator: torch.Generator, tau: float = 1.0) -> Tensor:
    """Straight-through hard Gumbel-softmax over the class axis 1 (seeded noise)."""
    u = torch.rand(raw.shape, generator=generator, dtype=torch.float32).to(raw.device)
    g = -torch.log(-torch.log(u.clamp(1e-10, 1.0 - 1e-7)))
    soft = ((raw + g.to(raw.dtype)) / tau).softmax(dim=1)
    hard = F.one_hot(soft.argmax(1), raw.shape[1]).movedim(-1, 1).to(soft.dtype)
    return hard - soft.detach() + soft


def _max_normalised(x: Tensor) -> Tensor:
    """``x / max(x)`` per sample (MTPSL's depth pre-processing)."""
    peak = x.flatten(1).amax(1).clamp_min(1e-12)
    return x / peak.view(-1, *([1] * (x.ndim - 1)))


#: how predictions and labels enter a mapping network, keyed by task name, else kind:
#: ``(pred(task, raw, generator), gt(task, target))``, both B×C×H×W in the same space
MapInput = tuple[Callable[..., Tensor], Callable[..., Tensor]]
MAP_INPUTS: dict[str, MapInput] = {
    # MTPSL: hard Gumbel-softmax of the logits vs one-hot labels (ignored pixels 0)
    "categorical": (
        lambda task, raw, gen: gumbel_hard(raw, gen),
        lambda task, y: task.encode_target(y),
    ),
    "binary": (lambda task, raw, gen: task.activate(raw), lambda task, y: task.encode_target(y)),
    # MTPSL: depth divided by its per-image maximum
    "regression": (
        lambda task, raw, gen: _max_normalised(task.activate(raw)),
        lambda task, y: _max_normalised(task.encode_target(y)),
    ),
    # MTPSL: unit normals shifted to [0, 1]
    "normals": (
        lambda task, raw, gen: (task.activate(raw) + 1.0) / 2.0,
        lambda task, y: (task.encode_target(y) + 1.0) / 2.0,
    ),
}


def map_input(task: Task) -> MapInput:
    """The pre-processing pair of ``task`` (by name, else by kind)."""
    entry = MAP_INPUTS.get(task.name) or MAP_INPUTS.get(task.kind)
    if entry is None:
        raise KeyError(
            f"no mapping pre-processing for task {task.name!r} (kind {task.kind!r}); "
            f"add an entry to mtal.training.partial.MAP_INPUTS"
        )
    return entry


def _features(out: MultiTaskOutput) -> Tensor:
    """f_φ(x): the model's shared map (``extras["shared"]``), else its pooled embedding."""
    shared = out.extras.get("shared") if out.extras else None
    if shared is not None:
        return shared
    if out.embedding is None:
        raise ValueError(
            "MTPSL's regulariser needs f_phi(x): the model returned neither "
            "extras['shared'] nor an embedding"
        )
    return out.embedding


def feature_channels(net: nn.Module) -> int:
    """Channels of f_φ(x) for ``net`` (``shared_channels``, else the encoder embedding)."""
    channels = getattr(net, "shared_channels", None)
    if channels is None and hasattr(net, "encoder"):
        channels = net.encoder.embedding_dim
    if channels is None:
        raise ValueError(
            f"cannot tell the feature width of {type(net).__name__} for MTPSL's mapping; "
            f"give partial_kwargs.feature_channels"
        )
    return int(channels)


class PartialSupervision(nn.Module):
    """Base of the extra training terms for partially labelled batches."""

    name: ClassVar[str] = ""

    def __init__(self, tasks: Mapping[str, Task], weight: float, seed: int) -> None:
        super().__init__()
        self.tasks = dict(tasks)
        self.task_names = list(tasks)
        self.weight = float(weight)
        self.seed = int(seed)

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimiser groups of this term's own parameters (none by default)."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"params": params, "lr": lr}] if params else []


@PARTIAL_SUPERVISION.register("none")
def no_partial_supervision(**kwargs: Any) -> None:
    """Plain supervised learning on the labelled pairs only."""
    return None


# ------------------------------------------------------------------ Eq. 2 (SSL)
def random_crop_boxes(
    batch: int, height: int, width: int, max_scale: float, generator: torch.Generator
) -> list[tuple[int, int, int, int]]:
    """Per image a box ``(top, left, h, w)`` of side ``1/sc`` of the image, sc ~ U[1, max_scale]."""
    scales = 1.0 + torch.rand(batch, generator=generator) * (float(max_scale) - 1.0)
    offsets = torch.rand(batch, 2, generator=generator)
    boxes = []
    for sc, (oy, ox) in zip(scales.tolist(), offsets.tolist()):
        h, w = max(1, round(height / sc)), max(1, round(width / sc))
        boxes.append(
            (
                int(oy * (height - h + 1)) if h < height else 0,
                int(ox * (width - w + 1)) if w < width else 0,
                h,
                w,
            )
        )
    return boxes


def crop_resize(x: Tensor, boxes: list[tuple[int, int, int, int]]) -> Tensor:
    """Crop each sample of ``x`` (B×C×H×W) to its box and resize back to H×W (bilinear)."""
    size = x.shape[-2:]
    return torch.cat(
        [
            F.interpolate(
                x[i : i + 1, :, top : top + h, left : left + w],
                size=size,
                mode="bilinear",
                align_corners=False,
            )
            for i, (top, left, h, w) in enumerate(boxes)
        ]
    )


@PARTIAL_SUPERVISION.register("ssl")
class CropConsistency(PartialSupervision):
    """SSL baseline (Eq. 2): for the unlabelled tasks U_n of each image, the MSE between
    the activated prediction of a random crop c(x) (resized to the input size) and the
    same crop of the full-image prediction; summed over U_n, averaged over the batch,
    times ``weight``. ``max_scale`` bounds the crop's zoom (MTPSL's RandomScaleCrop uses
    up to 1.5); ``detach_full`` stops gradients through the full-image side."""

    name = "ssl"

    def __init__(
        self,
        tasks: Mapping[str, Task],
        weight: float = 1.0,
        max_scale: float = 1.5,
        detach_full: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(tasks, weight, seed)
        if float(max_scale) < 1.0:
            raise ValueError(f"partial_kwargs.max_scale={max_scale}: the crop zoom must be >= 1")
        self.max_scale = float(max_scale)
        self.detach_full = bool(detach_full)

    def forward(
        self, module: nn.Module, batch: Mapping[str, Any], out: MultiTaskOutput, labelled: Tensor
    ) -> Tensor:
        image = batch["image"]
        unlabelled = ~labelled.to(torch.bool)
        total = image.new_zeros(())
        if not bool(unlabelled.any()):
            return total
        gen = step_generator(self.seed, int(getattr(module, "global_step", 0)))
        boxes = random_crop_boxes(
            image.shape[0], image.shape[-2], image.shape[-1], self.max_scale, gen
        )
        cropped = module(crop_resize(image, boxes)).final
        for k, name in enumerate(self.task_names):
            rows = unlabelled[:, k]
            if not bool(rows.any()):
                continue
            task = self.tasks[name]
            full = out.final[name].detach() if self.detach_full else out.final[name]
            target = task.activate(crop_resize(full, boxes))
            pred = task.activate(cropped[name])
            mse = (pred - target).pow(2).flatten(1).mean(1)
            total = total + torch.where(rows, mse, mse.new_zeros(())).sum()
        return self.weight * total / image.shape[0]


# ------------------------------------------------------------------ Eq. 3-4 (MTPSL)
PairLoss = Callable[
    ["CrossTaskConsistency", Tensor, Tensor, int, int, Tensor], tuple[Tensor, Tensor | None]
]
#: mapping family → ``(loss, side)`` of one ordered pair (s, t) on the selected images:
#: per-sample consistency losses and per-sample losses of the L_ct entry's own
#: parameters (the Discriminator-Loss discriminator), or None
PAIR_LOSSES: dict[str, PairLoss] = {}


def _joint_pair_loss(
    self: CrossTaskConsistency, src: Tensor, tgt: Tensor, s: int, t: int, feat: Tensor
) -> tuple[Tensor, Tensor | None]:
    from mtal.models.mtpsl import pair_matrix

    pair = pair_matrix(len(self.task_names), s, t, device=src.device)
    pair = pair.expand(src.shape[0], -1, -1)
    ms = self.mapping(src, self.task_names[s], pair)
    mt = self.mapping(tgt, self.task_names[t], pair)
    l_ct, side = self.consistency(ms, mt, pair)
    if self.reg_weight:
        f = feat.detach() if self.detach_features else feat
        l_ct = l_ct + self.reg_weight * regulariser(ms, mt, f)
    return l_ct, side


def _direct_pair_loss(
    self: CrossTaskConsistency, src: Tensor, tgt_raw: Tensor, s: int, t: int, feat: Tensor
) -> tuple[Tensor, None]:
    mapped = self.mapping(src, self.task_names[s], self.task_names[t])
    return self.tasks[self.task_names[t]].loss(mapped, tgt_raw), None


def _perceptual_pair_loss(
    self: CrossTaskConsistency, src: Tensor, tgt_raw: Tensor, s: int, t: int, feat: Tensor
) -> tuple[Tensor, None]:
    name_t = self.task_names[t]
    task_t = self.tasks[name_t]
    mapped = self.mapping(src, self.task_names[s], name_t)
    pred_in, gt_in = map_input(task_t)
    gen = self._generator
    loss = cosine_distance(
        self.mapping.encode(pred_in(task_t, mapped, gen), name_t),
        self.mapping.encode(gt_in(task_t, tgt_raw), name_t),
    )
    return loss, None


PAIR_LOSSES.update(
    {
        "joint": _joint_pair_loss,
        "joint_unconditioned": _joint_pair_loss,
        "direct": _direct_pair_loss,
        "perceptual": _perceptual_pair_loss,
    }
)
#: mappings whose target side is the raw label (compared in t's label space)
_RAW_TARGET = {"direct", "perceptual"}


#: consistency-weight schedules over the training progress p ∈ [0, 1]: the official
#: code's ``--rampup fixed`` (default) and ``up`` (linear over the first half)
RAMPUPS: dict[str, Callable[[float], float]] = {
    "fixed": lambda progress: 1.0,
    "linear": lambda progress: min(1.0, progress / 0.5),
}


def training_progress(module: nn.Module) -> float:
    """``global_step / estimated_stepping_batches`` of the module's trainer (0 without)."""
    trainer = getattr(module, "_trainer", None)
    if trainer is None:
        return 0.0
    total = float(trainer.estimated_stepping_batches)
    if not math.isfinite(total) or total <= 0:
        return 0.0
    return min(1.0, float(module.global_step) / total)


@PARTIAL_SUPERVISION.register("mtpsl")
class CrossTaskConsistency(PartialSupervision):
    """MTPSL's cross-task consistency (Eq. 3–4) through a mapping of
    :data:`mtal.models.mtpsl.CONSISTENCY_MAPPINGS`: ``joint`` (the method; ``reg_weight 0``
    is the ablation w/o regularisation), ``joint_unconditioned``, ``direct`` (Direct-Map)
    and ``perceptual`` (Perceptual-Map). For each ordered pair (s unlabelled, t labelled)
    only images labelled for t are gathered; per image the pair losses are summed, then
    averaged over the batch and scaled by ``weight``. ``film_lr`` is the learning rate of
    the FiLM (a_θ) parameters (the official code: 1e-3; default: the model's lr);
    ``rampup`` scales ``weight`` over training (:data:`RAMPUPS`: ``fixed``, the paper's
    and the code's default, or ``linear``, the code's ``--rampup up``).

    ``consistency`` picks L_ct of the joint mappings
    (:data:`mtal.training.consistency.CONSISTENCY_LOSSES`, built with
    ``consistency_kwargs``): ``cosine`` (Eq. 3, the method), ``contrastive`` (the
    Contrastive-Loss baseline) or ``discriminator`` (the Discriminator-Loss baseline);
    R stays as set by ``reg_weight``. The discriminator's own loss is added unscaled by
    ``weight`` and ramp (its gradient reaches the discriminator only)."""

    name = "mtpsl"

    def __init__(
        self,
        tasks: Mapping[str, Task],
        feature_channels: int,
        mapping: str = "joint",
        mapping_kwargs: Mapping[str, Any] | None = None,
        weight: float = 2.0,
        reg_weight: float = 0.5,
        detach_features: bool = True,
        film_lr: float | None = None,
        rampup: str = "fixed",
        consistency: str = "cosine",
        consistency_kwargs: Mapping[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(tasks, weight, seed)
        from mtal.models.mtpsl import create_mapping
        from mtal.training.consistency import create_consistency

        if rampup not in RAMPUPS:
            raise ValueError(f"partial_kwargs.rampup={rampup!r}: choose one of {sorted(RAMPUPS)}")
        self.rampup = rampup

        if len(self.task_names) < 2:
            raise ValueError(
                f"partial_supervision: mtpsl needs >= 2 tasks for task pairs, got {self.task_names}"
            )
        if mapping not in PAIR_LOSSES:
            raise ValueError(
                f"partial_kwargs.mapping={mapping!r}: choose one of {sorted(PAIR_LOSSES)}"
            )
        self.mapping_name = mapping
        if consistency != "cosine" and PAIR_LOSSES[mapping] is not _joint_pair_loss:
            joint = sorted(k for k, v in PAIR_LOSSES.items() if v is _joint_pair_loss)
            raise ValueError(
                f"partial_kwargs.consistency={consistency!r} compares embeddings of the "
                f"joint space: use it with mapping one of {joint}, not mapping={mapping!r}"
            )
        self.consistency_name = consistency
        try:
            self.consistency = create_consistency(
                consistency,
                feature_channels=int(feature_channels),
                num_tasks=len(self.task_names),
                **dict(consistency_kwargs or {}),
            )
        except TypeError as exc:
            raise ValueError(
                f"partial_kwargs.consistency_kwargs {sorted(consistency_kwargs or {})} do "
                f"not fit consistency={consistency!r}: {exc}"
            ) from exc
        channels = {t: int(task.out_channels) for t, task in self.tasks.items()}
        self.mapping = create_mapping(
            mapping,
            in_channels=channels,
            out_channels=int(feature_channels),
            **dict(mapping_kwargs or {}),
        )
        self.reg_weight = float(reg_weight)
        self.detach_features = bool(detach_features)
        self.film_lr = None if film_lr is None else float(film_lr)
        self._generator = step_generator(self.seed, 0)

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """The mapping's parameters at ``lr``, its FiLM (a_θ) parameters at ``film_lr``,
        the L_ct entry's own (the discriminator) as that entry sets them."""
        from mtal.models.mtpsl import FiLM

        own = self.consistency.param_groups(lr)
        taken = {id(p) for g in own for p in g["params"]}
        film = {
            id(p) for m in self.mapping.modules() if isinstance(m, FiLM) for p in m.parameters()
        }
        params = [p for p in self.parameters() if id(p) not in taken]
        rest = [p for p in params if id(p) not in film]
        groups = [{"params": rest, "lr": lr}] if rest else []
        film_params = [p for p in params if id(p) in film]
        if film_params:
            groups.append({"params": film_params, "lr": self.film_lr or lr, "weight_decay": 0.0})
        return groups + own

    def forward(
        self, module: nn.Module, batch: Mapping[str, Any], out: MultiTaskOutput, labelled: Tensor
    ) -> Tensor:
        labelled = labelled.to(torch.bool)
        per_image = batch["image"].new_zeros(batch["image"].shape[0])
        if not bool((~labelled).any()):
            return per_image.sum()
        side_image = per_image.clone()
        self._generator = step_generator(self.seed, int(getattr(module, "global_step", 0)))
        feat = _features(out)
        pair_loss = PAIR_LOSSES[self.mapping_name]
        raw_target = self.mapping_name in _RAW_TARGET
        for s, name_s in enumerate(self.task_names):
            for t, name_t in enumerate(self.task_names):
                if s == t:
                    continue
                rows = (~labelled[:, s] & labelled[:, t]).nonzero().squeeze(1)
                if rows.numel() == 0:
                    continue
                task_s, task_t = self.tasks[name_s], self.tasks[name_t]
                src = map_input(task_s)[0](task_s, out.final[name_s][rows], self._generator)
                y_t = batch["targets"][name_t][rows]  # labelled for t: safe to read
                tgt = y_t if raw_target else map_input(task_t)[1](task_t, y_t)
                loss, side = pair_loss(self, src, tgt, s, t, feat[rows])
                per_image = per_image.index_add(0, rows, loss.to(per_image.dtype))
                if side is not None:
                    side_image = side_image.index_add(0, rows, side.to(per_image.dtype))
        ramp = RAMPUPS[self.rampup](training_progress(module))
        return self.weight * ramp * per_image.mean() + side_image.mean()


def create_partial_supervision(
    name: str, tasks: Mapping[str, Task], net: nn.Module, **kwargs: Any
) -> PartialSupervision | None:
    """Build the term ``name`` (``none`` → None) for ``tasks`` and the network ``net``."""
    factory = PARTIAL_SUPERVISION.get(name)
    if factory is CrossTaskConsistency:
        kwargs.setdefault("feature_channels", feature_channels(net))
    elif "feature_channels" in kwargs:
        raise ValueError(f"partial_kwargs.feature_channels is used by mtpsl only, not {name!r}")
    try:
        return factory(tasks=tasks, **kwargs)
    except TypeError as exc:
        raise ValueError(f"partial_kwargs {sorted(kwargs)} do not fit {name!r}: {exc}") from exc
