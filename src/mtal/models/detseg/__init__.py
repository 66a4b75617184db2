"""Detection + segmentation network (Hekimoglu et al., ICCVW 2023; Salscheider's
shared-backbone, two-head design): one encoder, an FCOS-style detection head and a
segmentation head."""

from mtal.models.detseg.model import DetHead, DetSeg

__all__ = ["DetHead", "DetSeg"]
