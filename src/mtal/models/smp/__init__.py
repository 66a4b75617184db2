"""segmentation_models_pytorch encoder-decoders (FPN, DeepLabV3+, U-Net, ...) as the
shared trunk of a multi-task network with mtal's per-task heads."""

from mtal.models.smp.model import SMPNet

__all__ = ["SMPNet"]
