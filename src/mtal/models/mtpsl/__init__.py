"""Cross-task mappings of multi-task partially-supervised learning (Li, Liu, Bilen, CVPR 2022).

``CONSISTENCY_MAPPINGS`` holds the mapping families compared in the paper: ``joint`` (the
method: one shared mapping network conditioned on the task pair by FiLM, Sec. 3.2),
``joint_unconditioned`` (its ablation without conditioning), ``direct`` (Direct-Map) and
``perceptual`` (Perceptual-Map); :class:`PairDiscriminator` is the joint-space
discriminator of the Discriminator-Loss baseline. All are used only in training; the
losses that use them live in :mod:`mtal.training.partial` and
:mod:`mtal.training.consistency`.
"""

from __future__ import annotations

from mtal.models.mtpsl.discriminator import PairDiscriminator
from mtal.models.mtpsl.film import FiLM, pair_matrix
from mtal.models.mtpsl.mapping import (
    CONSISTENCY_MAPPINGS,
    DirectMapping,
    JointTaskMapping,
    PerceptualMapping,
    create_mapping,
)

__all__ = [
    "CONSISTENCY_MAPPINGS",
    "DirectMapping",
    "FiLM",
    "JointTaskMapping",
    "PairDiscriminator",
    "PerceptualMapping",
    "create_mapping",
    "pair_matrix",
]
