"""Measurement models: linear operators with exact adjoints, plus noise."""

from .base import Physics
from .blur import PADDINGS, Blur
from .compressed_sensing import CompressedSensing
from .downsampling import Downsampling
from .initial import (
    INITIAL_ESTIMATES,
    initial_estimate,
    normalized_adjoint,
    smooth_least_squares,
)
from .inpainting import Inpainting
from .kernels import gaussian_kernel
from .mri import MRI, MultiCoilMRI, cartesian_mask, fft2c, ifft2c, smooth_coil_maps
from .noise import GaussianNoise, PoissonNoise

__all__ = [
    "INITIAL_ESTIMATES",
    "MRI",
    "PADDINGS",
    "Blur",
    "CompressedSensing",
    "Downsampling",
    "GaussianNoise",
    "Inpainting",
    "MultiCoilMRI",
    "Physics",
    "PoissonNoise",
    "cartesian_mask",
    "fft2c",
    "gaussian_kernel",
    "ifft2c",
    "initial_estimate",
    "normalized_adjoint",
    "smooth_coil_maps",
    "smooth_least_squares",
]
