"""Image-quality metrics and the default training loss.

Complex images are compared by magnitude in :func:`psnr` (``|x_hat|`` against ``|x|``,
as is usual for MRI), while :func:`mse` measures the complex error ``|x_hat - x|^2``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["psnr", "mse"]


def _check_pair(x_hat: Tensor, x: Tensor) -> None:
    for name, t in (("x_hat", x_hat), ("x", x)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if t.ndim < 1:
            raise ValueError(f"{name}: expected a batched tensor (B, ...), got a 0-d tensor")
    if x_hat.shape != x.shape:
        raise ValueError(
            f"x_hat: expected the shape of x {tuple(x.shape)}, got {tuple(x_hat.shape)}"
        )


def psnr(x_hat: Tensor, x: Tensor, max_val: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio per sample, in dB: ``10 log10(max_val^2 / MSE_i)``.

    Args:
        x_hat: estimate ``(B, ...)``.
        x: reference, same shape. Complex inputs are compared by magnitude.
        max_val: the peak value of the signal (1 for images in ``[0, 1]``).

    Returns:
        ``(B,)`` tensor in the real dtype of ``x`` (``inf`` where ``x_hat == x``), not
        differentiable (computed under ``no_grad``).
    """
    _check_pair(x_hat, x)
    if isinstance(max_val, bool) or not isinstance(max_val, (int, float)):
        raise TypeError(f"max_val: expected a number, got {type(max_val).__name__}")
    if not (math.isfinite(max_val) and max_val > 0):
        raise ValueError(f"max_val: expected a finite number > 0, got {max_val!r}")
    with torch.no_grad():
        a = x_hat.abs() if x_hat.is_complex() else x_hat
        b = x.abs() if x.is_complex() else x
        # float64 accumulation: a float32 mean over a large image loses digits.
        err = (a.double() - b.double()).square().flatten(1).mean(1)
        out = 10 * torch.log10(max_val**2 / err)
    return out.to(b.dtype if b.is_floating_point() else torch.get_default_dtype())


def mse(x_hat: Tensor, x: Tensor) -> Tensor:
    """Mean squared error ``mean |x_hat - x|^2`` over every element (complex-safe); a scalar."""
    _check_pair(x_hat, x)
    diff = x_hat - x
    return (diff.abs().square() if diff.is_complex() else diff.square()).mean()
