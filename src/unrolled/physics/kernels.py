"""Blur kernels."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .._validation import check_int, check_number_or_tensor

__all__ = ["MAX_KERNEL_SIZE", "gaussian_kernel"]

#: the largest Gaussian kernel side gaussian_kernel makes (a bound on memory, 16M taps)
MAX_KERNEL_SIZE = 4097


def gaussian_kernel(
    sigma: float | Sequence[float] | Tensor,
    size: int | Sequence[int] | None = None,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """A normalised (sum 1) Gaussian kernel of shape ``(h, w)``.

    Args:
        sigma: standard deviation in pixels, isotropic or ``(sigma_y, sigma_x)``; a
            tensor sigma gives a kernel differentiable in it.
        size: ``h`` (= ``w``) or ``(h, w)``; default ``2 * ceil(3 sigma) + 1`` per axis.
    """
    expected = "a number, (sigma_y, sigma_x) or a tensor"
    for s in sigma if isinstance(sigma, (tuple, list)) else (sigma,):
        check_number_or_tensor("sigma", s, expected)  # a bool would become 1.0
    sig = torch.as_tensor(sigma, dtype=dtype or torch.get_default_dtype(), device=device)
    if sig.ndim == 0:
        sig = sig.expand(2)
    if sig.shape != (2,):
        raise ValueError(
            f"sigma: expected a number or (sigma_y, sigma_x), got shape {tuple(sig.shape)}"
        )
    if not bool(torch.isfinite(sig).all() and (sig > 0).all()):
        raise ValueError(f"sigma: expected finite values > 0, got {sig.tolist()}")
    if size is None:
        if float(sig.max()) > (MAX_KERNEL_SIZE - 1) / 6:
            raise ValueError(
                f"sigma: the default size 2 ceil(3 sigma) + 1 exceeds {MAX_KERNEL_SIZE} taps for "
                f"sigma={sig.tolist()}; pass size= (or blur a downsampled image)"
            )
        size = tuple(2 * math.ceil(3 * float(s)) + 1 for s in sig)
    elif not isinstance(size, (tuple, list)):
        size = (size, size)
    if len(size) != 2:
        raise ValueError(f"size: expected an integer or (h, w), got {tuple(size)!r}")
    size = tuple(check_int("size", s, minimum=1, maximum=MAX_KERNEL_SIZE) for s in size)
    axes = []
    for n, s in zip(size, sig, strict=True):
        d = (torch.arange(n, dtype=sig.dtype, device=sig.device) - (n - 1) / 2).abs()
        # exp(-(d^2 - d_min^2) / (2 s^2)): the same kernel after normalisation, but the
        # taps nearest the centre stay at 1, so a tiny sigma gives a delta, not 0 / 0.
        d_min = d.min()
        axes.append(torch.exp(-0.5 * ((d - d_min) * (d + d_min) / s / s)))
    kernel = axes[0][:, None] * axes[1][None, :]
    return kernel / kernel.sum()
