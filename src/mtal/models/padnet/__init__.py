"""PAD-Net with pairwise/triplet/quadruple committees and ground-truth substitution."""

from mtal.models.padnet.distillation import (
    MultiModalDistillation,
    committee_partner_sets,
    member_name,
)
from mtal.models.padnet.model import PADNet

__all__ = ["MultiModalDistillation", "PADNet", "committee_partner_sets", "member_name"]
