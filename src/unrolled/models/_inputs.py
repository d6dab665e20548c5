"""Input checks and the noise-level channel shared by the denoisers."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .._validation import check_number_or_tensor, check_tensor, describe

__all__ = [
    "check_denoiser",
    "check_image",
    "kaiming_init",
    "noise_level_map",
    "with_noise_level",
]


def check_image(x: Tensor, channels: int, owner: str, dtype: torch.dtype | None = None) -> None:
    """Refuse anything but a real ``(B, channels, H, W)`` floating tensor (of ``dtype``,
    the network's, when given)."""
    check_tensor("x", x)
    if x.is_complex():
        raise ValueError(
            f"x: {owner} expects real images (B, C, H, W), got a complex tensor; "
            "split real and imaginary parts into channels if that is what you want"
        )
    if not x.is_floating_point():
        raise ValueError(f"x: expected a floating tensor, got dtype {x.dtype}")
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(f"x: expected shape (B, {channels}, H, W), got {tuple(x.shape)}")
    if dtype is not None and x.dtype != dtype:
        raise ValueError(
            f"x: expected dtype {dtype} (that of the {owner}'s weights; convert one of them "
            f"with .to()), got {x.dtype}"
        )


def check_denoiser(denoiser: nn.Module) -> nn.Module:
    """Refuse anything but an ``nn.Module`` (called as ``denoiser(x, sigma)``)."""
    if not isinstance(denoiser, nn.Module):
        raise TypeError(
            "denoiser: expected an nn.Module called as denoiser(x, sigma), "
            f"got {describe(denoiser)}"
        )
    return denoiser


def noise_level_map(sigma: float | Tensor, x: Tensor) -> Tensor:
    """The constant ``(B, 1, H, W)`` channel holding the noise level of each sample.

    ``sigma`` is a number, a 0-d or one-element tensor (one level for the batch), a
    ``(B,)`` tensor or a ``(B, 1, 1, 1)`` tensor (one level per sample). A tensor keeps
    its autograd history, so a trainable level receives a gradient.
    """
    b, _, h, w = x.shape
    check_number_or_tensor("sigma", sigma, "a number >= 0 or a tensor")
    if not isinstance(sigma, Tensor):
        if not (math.isfinite(sigma) and 0 <= sigma <= torch.finfo(x.dtype).max):
            raise ValueError(
                f"sigma: expected a finite number >= 0 representable in {x.dtype}, got {sigma!r}"
            )
        return x.new_full((b, 1, h, w), float(sigma))
    if sigma.is_complex() or not sigma.is_floating_point():
        raise ValueError(f"sigma: expected a real floating tensor, got dtype {sigma.dtype}")
    if sigma.numel() == 1:
        s = sigma.reshape(1, 1, 1, 1)
    elif tuple(sigma.shape) in ((b,), (b, 1, 1, 1)):
        s = sigma.reshape(b, 1, 1, 1)
    else:
        raise ValueError(
            f"sigma: expected a number, a 0-d tensor, a ({b},) or a ({b}, 1, 1, 1) tensor, "
            f"got shape {tuple(sigma.shape)}"
        )
    if bool(((s < 0) | ~torch.isfinite(s)).any()):
        raise ValueError(
            f"sigma: expected finite values >= 0, got {sigma.detach().flatten().tolist()}"
        )
    s = s.to(dtype=x.dtype, device=x.device)
    if not bool(torch.isfinite(s).all()):
        raise ValueError(
            f"sigma: expected values representable in {x.dtype}, got "
            f"{sigma.detach().flatten().tolist()}"
        )
    return s.expand(b, 1, h, w)


def with_noise_level(x: Tensor, sigma: float | Tensor) -> Tensor:
    """``x`` with the noise-level channel appended: ``(B, C + 1, H, W)``."""
    return torch.cat([x, noise_level_map(sigma, x)], dim=1)


def kaiming_init(conv: nn.Conv2d | nn.ConvTranspose2d, *, scale: float = 1.0, relu: bool = True):
    """He-normal weights (fan-in, gain ``sqrt(2)`` before a ReLU, 1 otherwise) times
    ``scale``; zero bias."""
    nn.init.kaiming_normal_(conv.weight, nonlinearity="relu" if relu else "linear")
    if isinstance(conv, nn.ConvTranspose2d):
        # kaiming_normal_ reads the weight's dim 1 as fan-in, which for a transposed conv is
        # the output side. An output pixel sees kh * kw / (sh * sw) taps per input channel.
        kh, kw = conv.kernel_size
        sh, sw = conv.stride
        fan_in = max(conv.in_channels * kh * kw // (sh * sw), 1)
        std = math.sqrt(2.0 if relu else 1.0) / math.sqrt(fan_in)
        nn.init.normal_(conv.weight, 0.0, std)
    with torch.no_grad():
        conv.weight.mul_(scale)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
