"""Denoisers (``D(x, sigma)``) and the plug-and-play prior built on them."""

from .complex import ComplexDenoiser
from .dncnn import DnCNN
from .ensemble import ENSEMBLES, ensemble_average
from .pnp import PnP
from .unet import UNet

__all__ = ["ENSEMBLES", "ComplexDenoiser", "DnCNN", "PnP", "UNet", "ensemble_average"]
