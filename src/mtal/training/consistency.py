"""The L_ct choices of MTPSL's joint-space consistency (Li, Liu, Bilen, CVPR 2022).

``CONSISTENCY_LOSSES`` maps ``partial_kwargs.consistency`` to a module that compares, for
one ordered pair (s unlabelled, t labelled), the mapped predictions ``m_s = m^{s→st}(ŷ^s)``
with the mapped labels ``m_t = m^{t→st}(y^t)`` of the n images selected for that pair:

- ``cosine`` (the method, Eq. 3): ``L_ct = d(m_s, m_t)``, d = cosine distance.
- ``contrastive`` (the paper's **Contrastive-Loss** baseline, Sec. 4): an InfoNCE loss in
  the joint space; per image, its mapped prediction and mapped label are the positive pair
  and the mapped labels of the batch's other images of the same pair are the negatives.
- ``discriminator`` (the paper's **Discriminator-Loss** baseline, Sec. 4): a discriminator
  learns to tell mapped labels (real) from mapped predictions (fake); the network and the
  mapping are trained adversarially so that mapped predictions look like mapped labels.

The official code (VICO-UoE/MTPSL) includes neither baseline, and the paper's passage
that defines them could not be consulted when this was built (only its abstract, method
overview and project page), so what is fixed here is this suite's reading of the two
names within the paper's joint-space framework, each open point an option with the
choice stated (see README "MTPSL"). Every entry returns ``(l_ct, side)``:
per-sample losses ``[n]`` that join the consistency term, and per-sample losses of the
entry's own parameters (the discriminator's) or None.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from mtal.registry import Registry
from mtal.training.partial import as_maps, cosine_distance

#: ``partial_kwargs.consistency`` → L_ct module (built with ``feature_channels``,
#: ``num_tasks`` and ``partial_kwargs.consistency_kwargs``)
CONSISTENCY_LOSSES: Registry[nn.Module] = Registry("cross-task consistency measure")


def create_consistency(name: str, /, **kwargs: Any) -> nn.Module:
    """Build the L_ct entry ``name`` (unknown names list the known ones)."""
    return CONSISTENCY_LOSSES.create(name, **kwargs)


class ConsistencyLoss(nn.Module):
    """Base: ``forward(m_s, m_t, pair) -> (l_ct [n], side [n] | None)``."""

    def __init__(self, feature_channels: int, num_tasks: int) -> None:
        super().__init__()
        self.feature_channels = int(feature_channels)
        self.num_tasks = int(num_tasks)

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimiser groups of the entry's own parameters (none by default)."""
        return []


@CONSISTENCY_LOSSES.register("cosine")
class CosineConsistency(ConsistencyLoss):
    """Eq. 3: ``L_ct = 1 − mean_pixels cos(m_s, m_t)`` per image."""

    def forward(self, m_s: Tensor, m_t: Tensor, pair: Tensor) -> tuple[Tensor, None]:
        return cosine_distance(m_s, m_t), None


def similarity_matrix(a: Tensor, b: Tensor) -> Tensor:
    """``S[i, j] = mean_pixels cos(a_i, b_j)`` (cosine along channels), ``[n, n]``; so
    ``1 − S[i, i]`` is the cosine distance of Eq. 3. ``b`` is resized to ``a``'s size."""
    a, b = as_maps(a, b)
    a = F.normalize(a, dim=1, eps=1e-12)
    b = F.normalize(b, dim=1, eps=1e-12)
    pixels = a.shape[-2] * a.shape[-1]
    return a.reshape(a.shape[0], -1) @ b.reshape(b.shape[0], -1).T / pixels


@CONSISTENCY_LOSSES.register("contrastive")
class ContrastiveConsistency(ConsistencyLoss):
    """Contrastive-Loss: InfoNCE with anchor ``m_s[i]``, positive ``m_t[i]`` and negatives
    ``m_t[j]``, j ≠ i, the other images of the batch selected for the same pair:
    ``l_i = −log(exp(S_ii/τ) / Σ_j exp(S_ij/τ))`` with S of :func:`similarity_matrix`.

    ``temperature`` τ (ours: 0.1, SimCLR's ImageNet value; none was at hand);
    ``symmetric`` also averages in the label→prediction direction (CLIP-style; default
    off). A pair with one selected image has no negative and costs 0 (log 1)."""

    def __init__(
        self,
        feature_channels: int,
        num_tasks: int,
        temperature: float = 0.1,
        symmetric: bool = False,
    ) -> None:
        super().__init__(feature_channels, num_tasks)
        if not float(temperature) > 0:
            raise ValueError(
                f"partial_kwargs.consistency_kwargs.temperature={temperature}: the "
                f"InfoNCE temperature must be > 0 (e.g. 0.1)"
            )
        self.temperature = float(temperature)
        self.symmetric = bool(symmetric)

    def forward(self, m_s: Tensor, m_t: Tensor, pair: Tensor) -> tuple[Tensor, None]:
        logits = similarity_matrix(m_s, m_t) / self.temperature
        loss = -logits.log_softmax(dim=1).diagonal()
        if self.symmetric:
            loss = 0.5 * (loss - logits.log_softmax(dim=0).diagonal())
        return loss, None


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Per-sample GAN discriminator loss ``mean_pixels[−log σ(r) − log(1 − σ(f))]``
    (binary cross-entropy: real → 1, fake → 0), ``[n]``."""
    return (F.softplus(-real_logits) + F.softplus(fake_logits)).flatten(1).mean(1)


def generator_loss(fake_logits: Tensor) -> Tensor:
    """Per-sample non-saturating generator loss ``mean_pixels[−log σ(f)]``, ``[n]``."""
    return F.softplus(-fake_logits).flatten(1).mean(1)


@CONSISTENCY_LOSSES.register("discriminator")
class DiscriminatorConsistency(ConsistencyLoss):
    """Discriminator-Loss: a pair-conditioned discriminator D
    (:class:`mtal.models.mtpsl.PairDiscriminator`, hidden ``channels``) on the joint space.

    ``side`` = :func:`discriminator_loss` of D on detached ``m_t`` (real) and ``m_s``
    (fake): its gradient reaches D only. ``l_ct`` = :func:`generator_loss` of ``m_s``
    through D with *detached* parameters: its gradient reaches the network and the mapping
    only. Both are minimised in the same optimiser step (simultaneous GAN updates, D in
    its own parameter group at ``lr``, default the model's), so the Lightning module keeps
    automatic optimisation. Our choices (none was at hand): non-saturating loss, only
    the prediction side is pushed (the mapped label is D's "real"), PatchGAN-style
    per-pixel logits."""

    def __init__(
        self,
        feature_channels: int,
        num_tasks: int,
        channels: Sequence[int] = (64, 64),
        lr: float | None = None,
    ) -> None:
        super().__init__(feature_channels, num_tasks)
        from mtal.models.mtpsl import PairDiscriminator

        self.discriminator = PairDiscriminator(self.feature_channels, self.num_tasks, channels)
        self.lr = None if lr is None else float(lr)

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """D's parameters at ``lr`` (``consistency_kwargs.lr``, default the model's)."""
        params = [p for p in self.discriminator.parameters() if p.requires_grad]
        return [{"params": params, "lr": self.lr or lr}] if params else []

    def forward(self, m_s: Tensor, m_t: Tensor, pair: Tensor) -> tuple[Tensor, Tensor]:
        d = self.discriminator
        if tuple(m_t.shape[-2:]) != tuple(m_s.shape[-2:]):
            m_t = F.adaptive_avg_pool2d(m_t, m_s.shape[-2:])
        side = discriminator_loss(d(m_t.detach(), pair), d(m_s.detach(), pair))
        frozen = {name: p.detach() for name, p in d.named_parameters()}
        fake = functional_call(d, frozen, (m_s, pair))
        return generator_loss(fake), side
