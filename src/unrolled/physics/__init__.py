"""Measurement models: linear operators with exact adjoints, plus noise."""

from .base import Physics
from .blur import PADDINGS, Blur, gaussian_kernel
from .noise import GaussianNoise, PoissonNoise

__all__ = ["PADDINGS", "Blur", "GaussianNoise", "Physics", "PoissonNoise", "gaussian_kernel"]
