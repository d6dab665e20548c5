"""Fourier-domain helpers for convolution operators.

On an ``(H, W)`` grid a circular convolution is diagonal in the 2-D DFT:
``k (*) x = F^-1 (K_hat . F x)``, with ``K_hat`` the DFT of the kernel placed on the
grid. These helpers build ``K_hat`` (differentiably in the kernel) and apply
spectral multipliers to real or complex images.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["kernel_spectrum", "apply_spectrum", "spectral_solve"]


def kernel_spectrum(
    kernel: Tensor, grid: tuple[int, int], origin: tuple[int, int], *, real: bool
) -> Tensor:
    """DFT of a ``(..., kh, kw)`` kernel placed on a ``grid`` with tap ``(m, n)`` at
    ``((m - origin[0]) mod H, (n - origin[1]) mod W)``.

    Taps that wrap onto the same pixel add up, so a kernel larger than the grid gives
    the circular convolution the spatial operator computes. ``real=True`` returns the
    half spectrum of ``rfft2`` (for real images), else the full ``fft2`` one.
    """
    h, w = grid
    kh, kw = kernel.shape[-2:]
    rows = (torch.arange(kh, device=kernel.device) - origin[0]) % h
    cols = (torch.arange(kw, device=kernel.device) - origin[1]) % w
    placed = kernel.new_zeros((*kernel.shape[:-2], kh, w)).index_add(-1, cols, kernel)
    placed = kernel.new_zeros((*kernel.shape[:-2], h, w)).index_add(-2, rows, placed)
    return torch.fft.rfft2(placed) if real else torch.fft.fft2(placed)


def apply_spectrum(x: Tensor, spectrum: Tensor) -> Tensor:
    """``F^-1 (spectrum . F x)`` over the last two dims (real ``x`` uses ``rfft2``)."""
    if x.is_complex():
        return torch.fft.ifft2(torch.fft.fft2(x) * spectrum)
    return torch.fft.irfft2(torch.fft.rfft2(x) * spectrum, s=x.shape[-2:])


def spectral_solve(x_hat_numerator: Tensor, denominator: Tensor, shape, *, real: bool) -> Tensor:
    """``F^-1 (numerator / denominator)`` back to an image of ``shape`` (last two dims)."""
    out = x_hat_numerator / denominator
    return torch.fft.irfft2(out, s=shape) if real else torch.fft.ifft2(out)
