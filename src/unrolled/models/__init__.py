"""Denoisers (``D(x, sigma)``) and the plug-and-play prior built on them."""

from .complex import ComplexDenoiser
from .dncnn import DnCNN
from .pnp import PnP
from .unet import UNet

__all__ = ["ComplexDenoiser", "DnCNN", "PnP", "UNet"]
