"""Image-quality metrics: PSNR and SSIM per sample, over the whole image or a region.

Complex images are compared by magnitude (``|x_hat|`` against ``|x|``, as is usual for
MRI). Every metric is computed in float64 under ``no_grad`` and returned per sample.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .._validation import check_real, describe

__all__ = ["mse", "psnr", "ssim"]

# SSIM as defined by Wang et al. (2004): an 11x11 Gaussian window of std 1.5 (truncated at
# radius 5, normalised), K1 = 0.01, K2 = 0.03, population (not sample) statistics.
SSIM_SIGMA = 1.5
SSIM_RADIUS = 5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _check_pair(x_hat: Tensor, x: Tensor) -> None:
    for name, t in (("x_hat", x_hat), ("x", x)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {describe(t)}")
        if t.ndim < 1:
            raise ValueError(f"{name}: expected a batched tensor (B, ...), got a 0-d tensor")
    if x_hat.shape != x.shape:
        raise ValueError(
            f"x_hat: expected the shape of x {tuple(x.shape)}, got {tuple(x_hat.shape)}"
        )


def _check_region(region: Tensor | None) -> None:
    if region is not None and not isinstance(region, Tensor):
        raise TypeError(f"region: expected a bool tensor or None, got {describe(region)}")


def _region(region: Tensor | None, x: Tensor) -> Tensor | None:
    """``region`` broadcast to ``x``'s shape as float64 weights, or ``None`` (everywhere)."""
    if region is None:
        return None
    try:
        mask = torch.broadcast_to(region, x.shape)
    except RuntimeError:
        raise ValueError(
            f"region: expected a mask broadcastable to {tuple(x.shape)}, "
            f"got shape {tuple(region.shape)}"
        ) from None
    if not bool(mask.flatten(1).any(1).all()):
        raise ValueError("region: expected at least one pixel per sample, got an empty region")
    return mask.to(torch.float64)


def _magnitudes(x_hat: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    a = x_hat.abs() if x_hat.is_complex() else x_hat
    b = x.abs() if x.is_complex() else x
    return a.double(), b.double()


def _out_dtype(x: Tensor) -> torch.dtype:
    real = x.real.dtype if x.is_complex() else x.dtype
    return real if real.is_floating_point else torch.get_default_dtype()


def psnr(x_hat: Tensor, x: Tensor, max_val: float = 1.0, *, region: Tensor | None = None) -> Tensor:
    """Peak signal-to-noise ratio per sample, in dB: ``10 log10(max_val^2 / MSE_i)``.

    Args:
        x_hat: estimate ``(B, ...)``.
        x: reference, same shape. Complex inputs are compared by magnitude.
        max_val: the peak value of the signal (1 for images in ``[0, 1]``).
        region: optional bool mask broadcastable to ``x`` (e.g. from
            :func:`~unrolled.evaluation.determined_region`): the MSE is taken over it alone.

    Returns:
        ``(B,)`` tensor in the real dtype of ``x`` (``inf`` where ``x_hat == x``), not
        differentiable.
    """
    _check_pair(x_hat, x)
    max_val = check_real("max_val", max_val, positive=True)
    _check_region(region)
    with torch.no_grad():
        a, b = _magnitudes(x_hat, x)
        err = (a - b).square()
        mask = _region(region, x)
        if mask is None:
            err = err.flatten(1).mean(1)
        else:
            err = (err * mask).flatten(1).sum(1) / mask.flatten(1).sum(1)
        out = 10 * torch.log10(max_val**2 / err)
    return out.to(_out_dtype(x))


def _gaussian_window(dtype, device) -> Tensor:
    t = torch.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=dtype, device=device)
    g = torch.exp(-0.5 * (t / SSIM_SIGMA) ** 2)
    return g / g.sum()


def _blur_valid(x: Tensor, g: Tensor) -> Tensor:
    """Separable valid correlation of ``(N, 1, H, W)`` with the window ``g``."""
    x = F.conv2d(x, g.view(1, 1, -1, 1))
    return F.conv2d(x, g.view(1, 1, 1, -1))


def ssim(x_hat: Tensor, x: Tensor, max_val: float = 1.0, *, region: Tensor | None = None) -> Tensor:
    """Structural similarity per sample, averaged over channels and window positions.

    The SSIM map of Wang et al. (Gaussian window std 1.5, 11x11; ``C1 = (0.01 L)^2``,
    ``C2 = (0.03 L)^2`` with ``L = max_val``) is computed at every position where the
    window fits inside the image, per channel, and averaged; with ``region`` only the
    window centres inside the region count. Images ``(B, C, H, W)`` (or ``(B, H, W)``) of
    at least 11x11; complex inputs compared by magnitude.

    Returns a ``(B,)`` tensor in the real dtype of ``x``, not differentiable.
    """
    _check_pair(x_hat, x)
    max_val = check_real("max_val", max_val, positive=True)
    _check_region(region)
    if x.ndim == 3:
        x_hat, x = x_hat.unsqueeze(1), x.unsqueeze(1)
        region = None if region is None else region.unsqueeze(-3)
    if x.ndim != 4:
        raise ValueError(
            f"x: expected images (B, C, H, W) or (B, H, W), got shape {tuple(x.shape)}"
        )
    size = 2 * SSIM_RADIUS + 1
    if x.shape[-1] < size or x.shape[-2] < size:
        raise ValueError(
            f"x: SSIM needs images of at least {size}x{size}, got {tuple(x.shape[-2:])}"
        )
    mask = _region(region, x)
    with torch.no_grad():
        a, b = _magnitudes(x_hat, x)
        batch, channels, h, w = b.shape
        g = _gaussian_window(torch.float64, b.device)
        flat = torch.stack([a, b, a * a, b * b, a * b]).reshape(5 * batch * channels, 1, h, w)
        mu_a, mu_b, aa, bb, ab = _blur_valid(flat, g).reshape(
            5, batch, channels, h - size + 1, w - size + 1
        )
        var_a = aa - mu_a**2
        var_b = bb - mu_b**2
        cov = ab - mu_a * mu_b
        c1, c2 = (SSIM_K1 * max_val) ** 2, (SSIM_K2 * max_val) ** 2
        smap = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
            (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
        )
        if mask is None:
            out = smap.flatten(1).mean(1)
        else:
            inner = mask[..., SSIM_RADIUS : h - SSIM_RADIUS, SSIM_RADIUS : w - SSIM_RADIUS]
            count = inner.flatten(1).sum(1)
            if bool((count == 0).any()):
                raise ValueError(
                    "region: expected at least one pixel at least 5 pixels from the border, "
                    "got none for SSIM"
                )
            out = (smap * inner).flatten(1).sum(1) / count
    return out.to(_out_dtype(x))


def mse(x_hat: Tensor, x: Tensor) -> Tensor:
    """Mean squared error ``mean |x_hat - x|^2`` over every element (complex-safe); a scalar,
    differentiable (the default training loss)."""
    _check_pair(x_hat, x)
    diff = x_hat - x
    return (diff.abs().square() if diff.is_complex() else diff.square()).mean()
