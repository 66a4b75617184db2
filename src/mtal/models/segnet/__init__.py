"""SegNet, the multi-task version of mtan (Liu, Johns, Davison, CVPR 2019) used by MTPSL."""

from mtal.models.segnet.model import SegNet

__all__ = ["SegNet"]
