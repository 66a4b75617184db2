"""Hard parameter sharing (HPS) baseline network."""

from mtal.models.hps.model import HPS

__all__ = ["HPS"]
