"""The region of an image that a measurement determines.

With valid padding a blur sees the pixels near the border through only part of its
kernel, so no method can recover them as well as the interior: a PSNR over the whole
image mixes two problems. The determined region is the set of pixels whose whole kernel
footprint lies inside the image (for a ``kh x kw`` kernel, the image minus a border of
``kh // 2`` rows at the top, ``kh - 1 - kh // 2`` at the bottom, likewise for columns);
for inpainting, the observed pixels; for every other operator, the whole image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .._validation import check_int, describe
from ..linalg.operator import LinearOperator
from ..physics import Blur, Downsampling, Inpainting

__all__ = ["determined_region"]


def _valid_interior(shape: Sequence[int], kh: int, kw: int, device) -> Tensor:
    h, w = shape[-2:]
    mask = torch.zeros(h, w, dtype=torch.bool, device=device)
    top, left = kh // 2, kw // 2
    bottom, right = h - (kh - 1 - kh // 2), w - (kw - 1 - kw // 2)
    if bottom > top and right > left:
        mask[top:bottom, left:right] = True
    return mask


def determined_region(physics: LinearOperator, shape: Sequence[int]) -> Tensor:
    """A bool mask, broadcastable to images of ``shape`` ``(..., H, W)``, of the pixels
    the measurement determines (see the module's description)."""
    if not isinstance(shape, Sequence) or isinstance(shape, str):
        raise TypeError(
            f"shape: expected a sequence of integers (..., H, W), got {describe(shape)}"
        )
    shape = tuple(check_int("shape", s, minimum=0) for s in shape)
    if len(shape) < 2:
        raise ValueError(f"shape: expected (..., H, W), got {shape}")
    blur = physics.blur if isinstance(physics, Downsampling) else physics
    if isinstance(blur, Blur) and blur.padding == "valid":
        kh, kw = blur.kernel.shape[-2:]
        return _valid_interior(shape, kh, kw, blur.kernel.device)
    if isinstance(physics, Inpainting):
        # A (W,) mask is a pattern of columns: it broadcasts along the rows as it is.
        seen = physics.mask != 0
        return torch.broadcast_to(seen, torch.broadcast_shapes(seen.shape, shape[-2:]))
    return torch.ones(shape[-2:], dtype=torch.bool)
