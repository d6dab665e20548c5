"""Measurement models described by plain values, for files and command lines.

A saved model keeps the measurement it was trained for as a dict such as
``{"operator": "blur", "kernel_sigma": 2.5, "padding": "valid", "noise_sigma": 0.1}``;
:func:`physics_from_spec` builds the operator again, for images of any size where the
operator allows it (a blur kernel does not depend on the image size; an MRI mask and
coil maps are drawn for the size asked, from the stored seed).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import Physics
from .blur import PADDINGS, Blur
from .kernels import gaussian_kernel
from .mri import MultiCoilMRI, cartesian_mask, smooth_coil_maps
from .noise import GaussianNoise

__all__ = ["OPERATORS", "blur_spec", "mri_spec", "physics_from_spec"]

#: the operators a spec can name
OPERATORS = ("blur", "mri")


def blur_spec(
    kernel_sigma: float, *, padding: str = "valid", noise_sigma: float = 0.0, kernel_size=None
) -> dict:
    """The spec of a Gaussian blur (``kernel_size`` ``None``: ``2 ceil(3 sigma) + 1``)."""
    return {
        "operator": "blur",
        "kernel_sigma": float(kernel_sigma),
        "kernel_size": kernel_size,
        "padding": padding,
        "noise_sigma": float(noise_sigma),
    }


def mri_spec(*, acceleration: int, coils: int, noise_sigma: float = 0.0, seed: int = 0) -> dict:
    """The spec of multi-coil Cartesian MRI (mask and coil maps drawn from ``seed``)."""
    return {
        "operator": "mri",
        "acceleration": int(acceleration),
        "coils": int(coils),
        "noise_sigma": float(noise_sigma),
        "seed": int(seed),
    }


def _get(spec: dict, key: str):
    if key not in spec:
        raise ValueError(f"physics: the {spec.get('operator')!r} spec needs {key!r}, got {spec}")
    return spec[key]


def physics_from_spec(
    spec: dict,
    image_size: Sequence[int] | None = None,
    *,
    dtype: torch.dtype | None = None,
) -> Physics:
    """The operator (with its Gaussian noise) a spec describes.

    Args:
        spec: a dict from :func:`blur_spec` or :func:`mri_spec`.
        image_size: ``(H, W)`` of the images; needed for MRI only.
        dtype: the real dtype of the images (default: torch's default dtype).
    """
    if not isinstance(spec, dict) or spec.get("operator") not in OPERATORS:
        got = spec.get("operator") if isinstance(spec, dict) else type(spec).__name__
        raise ValueError(f"physics: expected a spec with operator in {OPERATORS}, got {got!r}")
    sigma = float(_get(spec, "noise_sigma"))
    noise = GaussianNoise(sigma) if sigma > 0 else None
    if spec["operator"] == "blur":
        padding = _get(spec, "padding")
        if padding not in PADDINGS:
            raise ValueError(f"physics: padding: expected one of {PADDINGS}, got {padding!r}")
        kernel = gaussian_kernel(_get(spec, "kernel_sigma"), spec.get("kernel_size"), dtype=dtype)
        return Blur(kernel, padding=padding, noise=noise)
    if image_size is None:
        raise ValueError("image_size: MRI needs the image size (H, W) to draw its mask, got None")
    shape = tuple(int(s) for s in image_size)
    seed = int(_get(spec, "seed"))
    mask = cartesian_mask(shape, acceleration=int(_get(spec, "acceleration")), seed=seed)
    maps = smooth_coil_maps(int(_get(spec, "coils")), shape, seed=seed)
    return MultiCoilMRI(mask, maps, noise=noise)
