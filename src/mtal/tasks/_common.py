"""Shared machinery of the dense tasks: option checking, masked per-sample means and the
categorical / binary task families (semseg + parts, edge + saliency share their code)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from mtal.tasks.base import Task

DISCREPANCY_TARGETS = ("soft", "hard", "kl")


class OptionsTask(Task):
    """A Task whose keyword options are checked against ``default_options``.

    Unknown options raise a ``TypeError`` naming the task and the known options, so a typo
    in a config never silently falls back to a default.
    """

    default_options: ClassVar[dict[str, Any]] = {}

    def __init__(self, num_classes: int | None = None, **options: Any) -> None:
        unknown = sorted(set(options) - set(self.default_options))
        if unknown:
            known = ", ".join(sorted(self.default_options)) or "(none)"
            raise TypeError(
                f"task {self.name!r} got unknown option(s) {unknown}; known options: {known}"
            )
        merged = {**self.default_options, **options}
        super().__init__(num_classes=num_classes, **merged)
        self._check_options()

    def _check_options(self) -> None:
        """Validate option values; subclasses extend (call super)."""
        if "discrepancy_target" in self.options:
            self._check_choice("discrepancy_target", DISCREPANCY_TARGETS)

    def _check_choice(self, key: str, choices: tuple[str, ...]) -> None:
        value = self.options[key]
        if value not in choices:
            raise ValueError(
                f"task {self.name!r}: option {key}={value!r} is not one of {list(choices)}"
            )

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in sorted(self.options.items()))
        nc = f"num_classes={self.num_classes}, " if self.num_classes is not None else ""
        return f"{type(self).__name__}({nc}{opts})"


# ---------------------------------------------------------------------------------------
# small tensor helpers
# ---------------------------------------------------------------------------------------


def masked_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-sample mean ``[B]`` of ``values`` (B×H×W) over ``valid`` (B×H×W bool).

    Invalid entries are replaced by 0 with ``torch.where`` (so NaN/inf there never reach
    the result or the gradient); a sample without a valid pixel gives exactly 0.
    """
    zero = values.new_zeros(())
    total = torch.where(valid, values, zero).flatten(1).sum(1)
    count = valid.flatten(1).sum(1).clamp(min=1).to(values.dtype)
    return total / count


def check_raw(task: Task, raw: torch.Tensor, what: str = "raw") -> None:
    """Raise a readable error unless ``raw`` is B×out_channels×H×W."""
    if raw.dim() != 4 or raw.shape[1] != task.out_channels:
        raise ValueError(
            f"task {task.name!r}: {what} must be B×{task.out_channels}×H×W, "
            f"got shape {tuple(raw.shape)}; check the head's out_channels"
        )


def check_samples(task: Task, raw_samples: torch.Tensor) -> None:
    """Raise a readable error unless ``raw_samples`` is S×B×out_channels×H×W."""
    if raw_samples.dim() != 5 or raw_samples.shape[2] != task.out_channels:
        raise ValueError(
            f"task {task.name!r}: mc_uncertainty expects S×B×{task.out_channels}×H×W "
            f"MC-dropout outputs, got shape {tuple(raw_samples.shape)}"
        )


def as_array(array: Any, task: str) -> np.ndarray:
    """``np.asarray`` with an error naming the task when the input is not array-like."""
    try:
        return np.asarray(array)
    except (TypeError, ValueError) as err:  # pragma: no cover - numpy rarely refuses
        raise TypeError(f"task {task!r}: target is not array-like: {err}") from err


def gaussian_entropy(variance: torch.Tensor, floor: float, dim: int) -> torch.Tensor:
    """Differential entropy of a Gaussian with diagonal covariance ``variance`` along
    ``dim``: ½·Σ_c log(2πe·max(σ_c², floor)) = ½·log((2πe)^d·det Σ)."""
    var = variance.clamp(min=floor)
    return 0.5 * (math.log(2 * math.pi * math.e) + var.log()).sum(dim)


def mc_variance(samples: torch.Tensor) -> torch.Tensor:
    """Unbiased (Bessel-corrected) variance over the MC axis 0; needs ≥ 2 samples."""
    if samples.shape[0] < 2:
        raise ValueError(
            f"regression mc_uncertainty needs at least 2 MC-dropout samples to estimate a "
            f"variance, got S={samples.shape[0]}; raise the number of MC passes"
        )
    return samples.var(dim=0, correction=1)


# ---------------------------------------------------------------------------------------
# categorical tasks (semseg, parts)
# ---------------------------------------------------------------------------------------


class CategoricalTask(OptionsTask):
    """Per-pixel classification with cross-entropy; targets are int64 B×H×W, 255 ignored.

    Options: ``discrepancy_target`` ("soft": cross-entropy with softmax(other) as the
    target distribution, default — it equals KL(q‖p) + H(q), so a member q that is itself
    uncertain raises the discrepancy even where it agrees; "kl": KL(softmax(other) ‖
    softmax(raw)) = soft − H(q), zero when the two agree; "hard": cross-entropy with
    argmax(other)),
    ``absent`` (mIoU treatment of classes absent from prediction and GT, see
    :class:`mtal.metrics.MeanIoU`).
    """

    kind: ClassVar[str] = "categorical"
    default_options: ClassVar[dict[str, Any]] = {"discrepancy_target": "soft", "absent": "ignore"}

    def __init__(self, num_classes: int | None = None, **options: Any) -> None:
        if num_classes is None or int(num_classes) < 2:
            raise ValueError(
                f"task {self.name!r} needs num_classes >= 2 (the number of output classes, "
                f"e.g. the dataset's num_classes[{self.name!r}]), got {num_classes!r}"
            )
        super().__init__(num_classes=int(num_classes), **options)

    @property
    def out_channels(self) -> int:
        assert self.num_classes is not None
        return self.num_classes

    @property
    def ignore_value(self) -> float:
        return 255

    def empty_target(self, height: int, width: int) -> torch.Tensor:
        return torch.full((height, width), 255, dtype=torch.int64)

    def target_from_numpy(self, array: np.ndarray) -> torch.Tensor:
        arr = as_array(array, self.name)
        if arr.ndim != 2:
            raise ValueError(
                f"task {self.name!r}: expected an H×W integer label map, got shape {arr.shape}"
            )
        out = torch.from_numpy(arr.astype(np.int64, copy=True))
        bad = (out != 255) & ((out < 0) | (out >= self.out_channels))
        if bool(bad.any()):
            values = sorted(set(out[bad].unique().tolist()))[:10]
            raise ValueError(
                f"task {self.name!r}: label values {values} are outside 0..{self.out_channels - 1}"
                " and not the ignore value 255; check the dataset's num_classes"
            )
        return out

    def valid_mask(self, target: torch.Tensor) -> torch.Tensor:
        return target != 255

    def activate(self, raw: torch.Tensor) -> torch.Tensor:
        return raw.softmax(dim=-3)

    def encode_target(self, target: torch.Tensor) -> torch.Tensor:
        """One-hot, class axis at -3 (B×C×H×W, or C×H×W for one sample); ignore → zeros."""
        valid = self.valid_mask(target)
        safe = torch.where(valid, target, torch.zeros_like(target))
        onehot = F.one_hot(safe.long(), self.out_channels).to(torch.float32)
        onehot = onehot * valid.unsqueeze(-1)
        return onehot.movedim(-1, -3)

    def loss(self, raw: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_raw(self, raw)
        per_pixel = F.cross_entropy(raw, target.long(), ignore_index=255, reduction="none")
        return masked_mean(per_pixel, self.valid_mask(target))

    def discrepancy(self, raw: torch.Tensor, other_raw: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of ``raw`` against softmax(other) ("soft"), argmax(other)
        ("hard"), or the KL (soft minus H(q)); one member of :meth:`discrepancies`."""
        return self.discrepancies(raw, [other_raw])[0]

    def discrepancies(self, raw: torch.Tensor, others: Sequence[torch.Tensor]) -> torch.Tensor:
        """:meth:`discrepancy` against every member with ``raw``'s log-softmax computed
        once (the same numbers; cross-entropy is NLL of the log-softmax)."""
        check_raw(self, raw)
        log_p = raw.log_softmax(1)
        rows = []
        for other_raw in others:
            check_raw(self, other_raw, "other_raw")
            other = other_raw.detach()
            if self.options["discrepancy_target"] == "hard":
                per_pixel = F.nll_loss(log_p, other.argmax(1), reduction="none")
                rows.append(per_pixel.flatten(1).mean(1))
                continue
            soft = other.softmax(1)
            per_pixel = -(soft * log_p).sum(1)
            if self.options["discrepancy_target"] == "kl":
                per_pixel = per_pixel - torch.special.entr(soft).sum(1)  # minus H(q)
            rows.append(per_pixel.flatten(1).mean(1))
        return torch.stack(rows, dim=0)

    def mc_uncertainty(self, raw_samples: torch.Tensor) -> torch.Tensor:
        """Mean over pixels of the Shannon entropy (nats) of the MC-mean softmax."""
        check_samples(self, raw_samples)
        mean_prob = raw_samples.softmax(2).mean(0)
        entropy = -torch.special.xlogy(mean_prob, mean_prob).sum(1)
        return entropy.flatten(1).mean(1)

    def metric(self) -> Any:
        from mtal.metrics import MeanIoU

        return MeanIoU(self.out_channels, ignore_index=255, absent=self.options["absent"])

    @property
    def headline(self) -> tuple[str, bool]:
        return ("miou", True)


# ---------------------------------------------------------------------------------------
# binary tasks (edge, saliency)
# ---------------------------------------------------------------------------------------


class BinaryTask(OptionsTask):
    """Per-pixel binary task; targets are float32 B×1×H×W in {0, 1} with 255 ignored.

    The loss is the class-balanced binary cross-entropy of Vandenhende et al.
    (``BalancedCrossEntropyLoss``), per pixel

        ℓ = −[ w · y · log σ(x) + (1 − w) · (1 − y) · log(1 − σ(x)) ]

    averaged over the sample's valid pixels; ``w`` comes from :meth:`positive_weight`.
    """

    kind: ClassVar[str] = "binary"

    @property
    def out_channels(self) -> int:
        return 1

    @property
    def ignore_value(self) -> float:
        return 255

    def empty_target(self, height: int, width: int) -> torch.Tensor:
        return torch.full((1, height, width), 255.0, dtype=torch.float32)

    def target_from_numpy(self, array: np.ndarray) -> torch.Tensor:
        arr = as_array(array, self.name)
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim != 2:
            raise ValueError(
                f"task {self.name!r}: expected an H×W map in {{0, 1, 255}}, got shape {arr.shape}"
            )
        out = torch.from_numpy(arr.astype(np.float32, copy=True))
        bad = (out != 0) & (out != 1) & (out != 255)
        if bool(bad.any()):
            values = sorted(set(out[bad].unique().tolist()))[:10]
            raise ValueError(
                f"task {self.name!r}: values {values} are not in {{0, 1, 255}}; binarise the "
                "map (non-zero → 1) in the dataset loader"
            )
        return out.unsqueeze(0)

    def valid_mask(self, target: torch.Tensor) -> torch.Tensor:
        return (target != 255).squeeze(-3)

    def activate(self, raw: torch.Tensor) -> torch.Tensor:
        return raw.sigmoid()

    def encode_target(self, target: torch.Tensor) -> torch.Tensor:
        """The {0, 1} float map with ignored pixels set to 0."""
        return torch.where(target == 255, torch.zeros_like(target), target).float()

    def positive_weight(self, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Weight ``w`` of the positive term, broadcastable to B×H×W (fixed or per image)."""
        fixed = self.options.get("pos_weight")
        if fixed is not None:
            return target.new_tensor(float(fixed)).expand(target.shape[0]).view(-1, 1, 1)
        # per image: fraction of negatives among the valid pixels (HED-style balance);
        # for soft targets the "negative mass" Σ(1 − y) generalises the count
        negatives = torch.where(valid, 1.0 - target, target.new_zeros(())).flatten(1).sum(1)
        count = valid.flatten(1).sum(1).clamp(min=1).to(target.dtype)
        return (negatives / count).view(-1, 1, 1)

    def balanced_bce(self, raw: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample balanced BCE ``[B]`` of logits ``raw`` (B×1×H×W) against ``target``
        (B×1×H×W, values in [0, 1] or 255 = ignore)."""
        check_raw(self, raw)
        x = raw.squeeze(-3)
        return self._balanced_bce_logs(F.logsigmoid(x), F.logsigmoid(-x), target)

    def _balanced_bce_logs(
        self, log_pos: torch.Tensor, log_neg: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        """:meth:`balanced_bce` from ``log σ(x)`` and ``log σ(−x)`` (B×H×W)."""
        valid = self.valid_mask(target)
        y = torch.where(valid, target.squeeze(-3), target.new_zeros(())).to(log_pos.dtype)
        w = self.positive_weight(y, valid)
        per_pixel = -(w * y * log_pos + (1.0 - w) * (1.0 - y) * log_neg)
        return masked_mean(per_pixel, valid)

    def loss(self, raw: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.balanced_bce(raw, target)

    def discrepancy(self, raw: torch.Tensor, other_raw: torch.Tensor) -> torch.Tensor:
        """The task loss with sigmoid(other) ("soft", which includes the member's own
        balanced entropy) or sigmoid(other) ≥ 0.5 ("hard") as the target; "kl" subtracts
        the member's loss against itself (the balanced Bernoulli KL, 0 when they agree);
        every pixel is valid."""
        return self.discrepancies(raw, [other_raw])[0]

    def discrepancies(self, raw: torch.Tensor, others: Sequence[torch.Tensor]) -> torch.Tensor:
        """:meth:`discrepancy` against every member with ``raw``'s ``log σ(±x)`` computed
        once (the same numbers)."""
        check_raw(self, raw)
        x = raw.squeeze(-3)
        log_pos, log_neg = F.logsigmoid(x), F.logsigmoid(-x)
        rows = []
        for other_raw in others:
            check_raw(self, other_raw, "other_raw")
            other = other_raw.detach()
            prob = other.sigmoid()
            if self.options["discrepancy_target"] == "hard":
                prob = (prob >= 0.5).to(prob.dtype)
            out = self._balanced_bce_logs(log_pos, log_neg, prob)
            if self.options["discrepancy_target"] == "kl":
                out = out - self.balanced_bce(other, prob)
            rows.append(out)
        return torch.stack(rows, dim=0)

    def mc_uncertainty(self, raw_samples: torch.Tensor) -> torch.Tensor:
        """Mean over pixels of the binary entropy (nats) of the MC-mean sigmoid."""
        check_samples(self, raw_samples)
        p = raw_samples.sigmoid().mean(0).squeeze(1)
        entropy = -(torch.special.xlogy(p, p) + torch.special.xlogy(1.0 - p, 1.0 - p))
        return entropy.flatten(1).mean(1)
