"""A real denoiser applied to complex images, through their real and imaginary parts."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._validation import check_tensor
from ._inputs import check_denoiser

__all__ = ["ComplexDenoiser"]


class ComplexDenoiser(nn.Module):
    """``D(x, sigma)`` for complex ``x`` ``(B, C, H, W)``: the wrapped real denoiser sees
    ``(B, 2C, H, W)`` (real parts, then imaginary parts) and its output is put back together
    as a complex tensor.

    The real/imaginary split is linear and invertible, so gradients pass through it
    unchanged; the wrapped denoiser must take and return ``2C`` channels (e.g.
    ``DnCNN(2, 2)`` for one complex channel). Real inputs are refused.
    """

    def __init__(self, denoiser: nn.Module):
        super().__init__()
        self.denoiser = check_denoiser(denoiser)

    def forward(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """Denoise complex ``x`` ``(B, C, H, W)``; returns a complex ``(B, C, H, W)``."""
        check_tensor("x", x, "a complex tensor (B, C, H, W)")
        if not x.is_complex() or x.ndim != 4:
            raise ValueError(
                f"x: expected a complex tensor (B, C, H, W), got shape {tuple(x.shape)}, "
                f"dtype {x.dtype}"
            )
        c = x.shape[1]
        out = self.denoiser(torch.cat([x.real, x.imag], dim=1), sigma)
        if out.shape[1] != 2 * c:
            raise ValueError(
                f"denoiser: expected {2 * c} output channels (real and imaginary parts), "
                f"got {out.shape[1]}"
            )
        return torch.complex(out[:, :c], out[:, c:])
