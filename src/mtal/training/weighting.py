"""Loss weighting schemes that combine per-task losses into one training loss.

Every scheme is an ``nn.Module`` (learnable weights are registered, optimised and
checkpointed with the LightningModule) with

- ``forward(losses, *, shared_parameters=None) -> (total, effective_weights)`` where
  ``losses`` maps task name → scalar loss and ``effective_weights`` maps task name →
  the float multiplier the scheme applied to that task this step;
- ``on_train_epoch_end(epoch_mean_losses)``, called once per training epoch with the
  epoch's mean task losses (DWA uses it; the others ignore it).

No scheme calls ``backward``; GradNorm returns its auxiliary loss from
:meth:`GradNorm.gradnorm_step` and the LightningModule steps the weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from mtal.registry import Registry

WEIGHTINGS: Registry[LossWeighting] = Registry("weighting")

#: Task kinds known to the uncertainty weighting and the factor c in c·exp(−s)·L.
UNCERTAINTY_FACTORS: dict[str, float] = {"regression": 0.5, "categorical": 1.0, "binary": 1.0}


def create_weighting(name: str, task_names: Sequence[str], **kwargs: Any) -> LossWeighting:
    """Build the weighting scheme registered as ``name`` for the tasks ``task_names``."""
    return WEIGHTINGS.create(name, task_names=task_names, **kwargs)


def _check_task_dict(
    mapping: Mapping[str, Any], task_names: Sequence[str], what: str, *, require_all: bool
) -> None:
    """Raise a ValueError naming unknown (and, if required, missing) tasks of ``mapping``."""
    unknown = [k for k in mapping if k not in task_names]
    missing = [k for k in task_names if k not in mapping] if require_all else []
    if unknown or missing:
        parts = []
        if unknown:
            parts.append(f"unknown task(s) {unknown}")
        if missing:
            parts.append(f"missing task(s) {missing}")
        raise ValueError(
            f"{what}: {' and '.join(parts)}; the tasks are {list(task_names)} "
            f"(use exactly these names)"
        )


class LossWeighting(nn.Module):
    """Base class: holds the ordered task names and validates the loss dicts."""

    #: True when the scheme needs Lightning manual optimisation (GradNorm).
    requires_manual_optimization: ClassVar[bool] = False
    #: True when the constructor takes ``task_kinds`` (name → Task.kind).
    uses_task_kinds: ClassVar[bool] = False

    def __init__(self, task_names: Sequence[str]) -> None:
        super().__init__()
        names = tuple(task_names)
        if not names:
            raise ValueError("a loss weighting needs at least one task; got task_names=[]")
        if len(set(names)) != len(names):
            raise ValueError(f"task_names has duplicates: {list(names)}")
        self.task_names: tuple[str, ...] = names

    def _stack(self, losses: Mapping[str, Tensor]) -> Tensor:
        """The losses as a K-vector in ``task_names`` order (checks the keys)."""
        _check_task_dict(
            losses, self.task_names, "losses passed to the weighting", require_all=True
        )
        return torch.stack([losses[t].reshape(()) for t in self.task_names])

    def _as_dict(self, values: Tensor) -> dict[str, float]:
        return {t: float(v) for t, v in zip(self.task_names, values.detach().cpu().tolist())}

    def on_train_epoch_end(self, epoch_mean_losses: Mapping[str, float]) -> None:
        """Per-epoch hook (mean training loss per task); stateless schemes ignore it."""


@WEIGHTINGS.register("fixed")
class FixedWeighting(LossWeighting):
    """Σ_k w_k·L_k with constant per-task weights from the config (missing tasks: 1)."""

    def __init__(
        self, task_names: Sequence[str], weights: Mapping[str, float] | None = None
    ) -> None:
        super().__init__(task_names)
        weights = dict(weights or {})
        _check_task_dict(weights, self.task_names, "fixed weighting 'weights'", require_all=False)
        w = torch.tensor([float(weights.get(t, 1.0)) for t in self.task_names])
        self.register_buffer("weights", w)

    def forward(
        self, losses: Mapping[str, Tensor], *, shared_parameters: Sequence[Tensor] | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        vec = self._stack(losses)
        w = self.weights.to(vec)
        return (w * vec).sum(), self._as_dict(w)


@WEIGHTINGS.register("equal")
class EqualWeighting(FixedWeighting):
    """Σ_k L_k: every task weighted 1."""

    def __init__(self, task_names: Sequence[str]) -> None:
        super().__init__(task_names, weights=None)


@WEIGHTINGS.register("dwa")
class DynamicWeightAverage(LossWeighting):
    """Dynamic Weight Average (Liu et al., CVPR 2019).

    w_k(t) = K·exp(r_k(t−1)/T) / Σ_i exp(r_i(t−1)/T),  r_k(t−1) = L_k(t−1)/L_k(t−2),
    with L_k the mean training loss of task k over an epoch. The first two epochs use
    w_k = 1. A ratio that cannot be formed (task had no labelled sample in one of the
    two epochs, or a zero/non-finite loss) is taken as 1. With ``base_weights`` the
    total is Σ_k b_k·w_k(t)·L_k (the papers' fixed weights on top of DWA); the
    reported effective weight is b_k·w_k(t).
    """

    def __init__(
        self,
        task_names: Sequence[str],
        temperature: float = 2.0,
        base_weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(task_names)
        if temperature <= 0:
            raise ValueError(f"dwa temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        base = dict(base_weights or {})
        _check_task_dict(base, self.task_names, "dwa 'base_weights'", require_all=False)
        k = len(self.task_names)
        self.register_buffer(
            "base_weights", torch.tensor([float(base.get(t, 1.0)) for t in self.task_names])
        )
        # mean losses of the last two epochs: row 0 = t−2, row 1 = t−1
        self.register_buffer("history", torch.full((2, k), float("nan")))
        self.register_buffer("epochs_seen", torch.zeros((), dtype=torch.long))

    def dwa_weights(self) -> Tensor:
        """The current DWA weights w_k(t) (without base weights), a K-vector."""
        k = len(self.task_names)
        if int(self.epochs_seen) < 2:
            return torch.ones(k, device=self.history.device)
        prev2, prev1 = self.history[0], self.history[1]
        ratio = prev1 / prev2
        ratio = torch.where(torch.isfinite(ratio) & (prev2 > 0), ratio, torch.ones_like(ratio))
        return k * torch.softmax(ratio / self.temperature, dim=0)

    def on_train_epoch_end(self, epoch_mean_losses: Mapping[str, float]) -> None:
        """Push the epoch's mean task losses (a missing task counts as unknown)."""
        _check_task_dict(epoch_mean_losses, self.task_names, "dwa epoch losses", require_all=False)
        row = torch.tensor(
            [float(epoch_mean_losses.get(t, math.nan)) for t in self.task_names],
            dtype=self.history.dtype,
            device=self.history.device,
        )
        self.history[0] = self.history[1].clone()
        self.history[1] = row
        self.epochs_seen += 1

    def forward(
        self, losses: Mapping[str, Tensor], *, shared_parameters: Sequence[Tensor] | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        vec = self._stack(losses)
        w = (self.dwa_weights() * self.base_weights).to(vec)
        return (w * vec).sum(), self._as_dict(w)


@WEIGHTINGS.register("uncertainty")
class UncertaintyWeighting(LossWeighting):
    """Homoscedastic uncertainty weighting (Kendall, Gal, Cipolla, CVPR 2018).

    Learns s_k = log σ_k² per task (initialised to ``init_log_var``) and minimises
    Σ_k c_k·exp(−s_k)·L_k + ½·s_k, i.e. the paper's 1/(2σ²)·L + log σ for regression
    (c = ½) and 1/σ²·L + log σ for classification (c = 1, categorical and binary).
    ``task_kinds`` maps task name → "regression" | "categorical" | "binary"; a task
    not listed is treated as regression. Effective weight: c_k·exp(−s_k).
    """

    uses_task_kinds: ClassVar[bool] = True

    def __init__(
        self,
        task_names: Sequence[str],
        task_kinds: Mapping[str, str] | None = None,
        init_log_var: float = 0.0,
    ) -> None:
        super().__init__(task_names)
        kinds = dict(task_kinds or {})
        _check_task_dict(kinds, self.task_names, "uncertainty 'task_kinds'", require_all=False)
        bad = {t: k for t, k in kinds.items() if k not in UNCERTAINTY_FACTORS}
        if bad:
            raise ValueError(
                f"uncertainty 'task_kinds' has unknown kind(s) {bad}; "
                f"known kinds: {sorted(UNCERTAINTY_FACTORS)}"
            )
        self.task_kinds = {t: kinds.get(t, "regression") for t in self.task_names}
        factors = [UNCERTAINTY_FACTORS[self.task_kinds[t]] for t in self.task_names]
        self.register_buffer("factors", torch.tensor(factors))
        self.log_vars = nn.Parameter(torch.full((len(self.task_names),), float(init_log_var)))

    def forward(
        self, losses: Mapping[str, Tensor], *, shared_parameters: Sequence[Tensor] | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        vec = self._stack(losses)
        s = self.log_vars.to(vec.dtype)
        w = self.factors.to(vec) * torch.exp(-s)
        total = (w * vec + 0.5 * s).sum()
        return total, self._as_dict(w)


@WEIGHTINGS.register("gradnorm")
class GradNorm(LossWeighting):
    """GradNorm (Chen et al., ICML 2018): learnable w_k balancing gradient magnitudes.

    The network loss is Σ_k w_k·L_k with w_k treated as constants (``forward``). The
    weights are trained by :meth:`gradnorm_step`'s loss
    L_grad = Σ_k |G_k − Ḡ·r_k^α|, G_k = ‖∇_W w_k·L_k‖₂ on the last shared layer W,
    Ḡ = mean_k G_k, r_k = L̃_k / mean_i L̃_i, L̃_k = L_k/L_k(0), target held constant.
    After each optimiser step call :meth:`renormalize` so Σ_k w_k = K. L_k(0) is the
    first loss seen for the task; a task without L_k(0) yet, or with a zero loss this
    step (no labelled sample), is left out of that step's L_grad.
    """

    requires_manual_optimization: ClassVar[bool] = True

    def __init__(self, task_names: Sequence[str], alpha: float = 1.5) -> None:
        super().__init__(task_names)
        self.alpha = float(alpha)
        k = len(self.task_names)
        self.task_weights = nn.Parameter(torch.ones(k))
        self.register_buffer("initial_losses", torch.full((k,), float("nan")))

    def forward(
        self, losses: Mapping[str, Tensor], *, shared_parameters: Sequence[Tensor] | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        vec = self._stack(losses)
        w = self.task_weights.detach().clone().to(vec.dtype)
        return (w * vec).sum(), self._as_dict(w)

    def gradnorm_step(
        self, losses: Mapping[str, Tensor], shared_parameters: Sequence[Tensor]
    ) -> Tensor:
        """L_grad for this step (differentiable w.r.t. ``task_weights``); records L_k(0)."""
        params = [p for p in shared_parameters if p.requires_grad]
        if not params:
            raise ValueError(
                "gradnorm_step needs the trainable parameters of the last shared layer; "
                "got none (set the module's gradnorm_layer to a shared layer's name)"
            )
        vec = self._stack(losses)
        with torch.no_grad():
            fresh = torch.isnan(self.initial_losses) & (vec.detach() > 0)
            self.initial_losses.copy_(
                torch.where(fresh, vec.detach().to(self.initial_losses), self.initial_losses)
            )
        active = [
            i
            for i in range(len(self.task_names))
            if not math.isnan(float(self.initial_losses[i])) and float(vec[i].detach()) > 0
        ]
        if not active:
            return self.task_weights.sum() * 0.0
        norms = []
        for i in active:
            grads = torch.autograd.grad(
                self.task_weights[i] * vec[i], params, create_graph=True, allow_unused=True
            )
            flat = [g.reshape(-1) for g in grads if g is not None]
            norms.append(torch.cat(flat).norm(2) if flat else vec.new_zeros(()))
        g_norm = torch.stack(norms)
        with torch.no_grad():
            rel = vec.detach()[active] / self.initial_losses[active].to(vec)
            ratio = rel / rel.mean()
            target = g_norm.mean() * ratio.pow(self.alpha)
        return (g_norm - target).abs().sum()

    @torch.no_grad()
    def renormalize(self) -> None:
        """Rescale the weights so they sum to K (and stay positive)."""
        w = self.task_weights.clamp_min(1e-6)
        self.task_weights.copy_(w * len(self.task_names) / w.sum())
