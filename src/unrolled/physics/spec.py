"""Measurement models described by plain values, for files and command lines.

A saved model keeps the measurement it was trained for as a dict such as
``{"operator": "blur", "kernel_sigma": 2.5, "padding": "valid", "noise_sigma": 0.1}``;
:func:`physics_from_spec` builds the operator again, for images of any size where the
operator allows it: a blur kernel or a decimation factor does not depend on the image
size; an inpainting mask, an MRI mask and coil maps are drawn for the size asked, from
the stored seed; a compressed-sensing matrix exists for the one image shape it records.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .._validation import check_instance
from .base import Physics
from .blur import PADDINGS, Blur
from .compressed_sensing import CompressedSensing
from .downsampling import Downsampling
from .inpainting import Inpainting
from .kernels import gaussian_kernel
from .mri import MRI, MultiCoilMRI, cartesian_mask, smooth_coil_maps
from .noise import GaussianNoise

__all__ = [
    "COMPLEX_OPERATORS",
    "OPERATORS",
    "blur_spec",
    "compressed_sensing_spec",
    "downsampling_spec",
    "inpainting_spec",
    "mri_spec",
    "physics_from_spec",
]

#: the operators a spec can name ("mri": single-coil with ``coils`` None, else multi-coil)
OPERATORS = ("blur", "inpainting", "downsampling", "compressed_sensing", "mri")
#: the operators that measure complex images
COMPLEX_OPERATORS = ("mri",)


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


def inpainting_spec(*, keep: float, noise_sigma: float = 0.0, seed: int = 0) -> dict:
    """The spec of inpainting: a random mask, shared by the channels, keeping each pixel
    with probability ``keep`` (drawn from ``seed`` for the image size)."""
    return {
        "operator": "inpainting",
        "keep": float(keep),
        "noise_sigma": float(noise_sigma),
        "seed": int(seed),
    }


def downsampling_spec(*, factor: int, padding: str = "circular", noise_sigma: float = 0.0) -> dict:
    """The spec of Gaussian anti-aliasing (``sigma = factor / 2``) and decimation."""
    return {
        "operator": "downsampling",
        "factor": int(factor),
        "padding": padding,
        "noise_sigma": float(noise_sigma),
    }


def compressed_sensing_spec(
    *, ratio: float, shape: Sequence[int], noise_sigma: float = 0.0, seed: int = 0
) -> dict:
    """The spec of compressed sensing of ``(C, H, W)`` images: ``round(ratio * C H W)``
    Gaussian measurements, the matrix drawn from ``seed``."""
    return {
        "operator": "compressed_sensing",
        "ratio": float(ratio),
        "shape": [int(s) for s in shape],
        "noise_sigma": float(noise_sigma),
        "seed": int(seed),
    }


def mri_spec(
    *, acceleration: int, coils: int | None, noise_sigma: float = 0.0, seed: int = 0
) -> dict:
    """The spec of Cartesian MRI (mask and coil maps drawn from ``seed``): multi-coil with
    ``coils`` coils, single-coil with ``coils`` None."""
    return {
        "operator": "mri",
        "acceleration": int(acceleration),
        "coils": None if coils is None else int(coils),
        "noise_sigma": float(noise_sigma),
        "seed": int(seed),
    }


def _get(spec: dict, key: str):
    if key not in spec:
        raise ValueError(f"physics: the {spec.get('operator')!r} spec needs {key!r}, got {spec}")
    return spec[key]


def _image_size(spec: dict, image_size: Sequence[int] | None) -> tuple[int, int]:
    if image_size is None:
        raise ValueError(
            f"image_size: {spec['operator']} needs the image size (H, W) to draw its "
            "operator, got None"
        )
    return tuple(int(s) for s in image_size)  # type: ignore[return-value]


def _padding(spec: dict) -> str:
    padding = _get(spec, "padding")
    if padding not in PADDINGS:
        raise ValueError(f"physics: padding: expected one of {PADDINGS}, got {padding!r}")
    return padding


def _operator(spec: dict, image_size, dtype: torch.dtype | None, noise) -> Physics:
    name = spec["operator"]
    if name == "blur":
        kernel = gaussian_kernel(_get(spec, "kernel_sigma"), spec.get("kernel_size"), dtype=dtype)
        return Blur(kernel, padding=_padding(spec), noise=noise)
    if name == "downsampling":
        return Downsampling(int(_get(spec, "factor")), padding=_padding(spec), noise=noise)
    if name == "compressed_sensing":
        shape = tuple(int(s) for s in _get(spec, "shape"))
        if image_size is not None and tuple(int(s) for s in image_size) != shape[-2:]:
            raise ValueError(
                f"image_size: this compressed-sensing matrix measures {shape[-2]}x{shape[-1]} "
                f"images, got {tuple(image_size)}"
            )
        m = max(1, round(float(_get(spec, "ratio")) * shape[0] * shape[1] * shape[2]))
        return CompressedSensing(m, shape, seed=int(_get(spec, "seed")), dtype=dtype, noise=noise)
    size = _image_size(spec, image_size)
    seed = int(_get(spec, "seed"))
    if name == "inpainting":
        generator = torch.Generator().manual_seed(seed)
        mask = torch.rand(size, generator=generator, dtype=torch.float64) < float(
            _get(spec, "keep")
        )
        return Inpainting(mask.to(dtype or torch.get_default_dtype()), noise=noise)
    mask = cartesian_mask(
        size, acceleration=int(_get(spec, "acceleration")), seed=seed, dtype=dtype
    )
    coils = _get(spec, "coils")
    if coils is None:
        return MRI(mask, noise=noise)
    complex_dtype = torch.complex128 if mask.dtype == torch.float64 else torch.complex64
    maps = smooth_coil_maps(int(coils), size, seed=seed, dtype=complex_dtype)
    return MultiCoilMRI(mask, maps, noise=noise)


def physics_from_spec(
    spec: dict,
    image_size: Sequence[int] | None = None,
    *,
    dtype: torch.dtype | None = None,
) -> Physics:
    """The operator (with its Gaussian noise) a spec describes.

    Args:
        spec: a dict from one of the ``*_spec`` functions of this module.
        image_size: ``(H, W)`` of the images; needed for inpainting and MRI.
        dtype: the real dtype of the images (default: torch's default dtype).
    """
    check_instance("physics", spec, dict, f"a spec (a dict) with operator in {OPERATORS}")
    if spec.get("operator") not in OPERATORS:
        got = spec.get("operator")
        raise ValueError(f"physics: expected a spec with operator in {OPERATORS}, got {got!r}")
    sigma = float(_get(spec, "noise_sigma"))
    return _operator(spec, image_size, dtype, GaussianNoise(sigma) if sigma > 0 else None)
