"""Noise models, reproducible under a seed."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .._validation import check_real, check_tensor, describe, is_integer

__all__ = ["GaussianNoise", "PoissonNoise", "make_generator"]


def make_generator(generator: torch.Generator | int | None) -> torch.Generator | None:
    """A CPU ``torch.Generator`` from a seed, or the generator itself (``None``: global RNG)."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if not is_integer(generator):
        raise TypeError(
            f"generator: expected a torch.Generator, an integer seed or None, "
            f"got {describe(generator)}"
        )
    return torch.Generator().manual_seed(generator)


def _randn(shape, dtype, device, generator: torch.Generator | None) -> Tensor:
    # Samples are drawn on the generator's device and moved, so a seed gives the
    # same noise on every device.
    if generator is None:
        return torch.randn(shape, dtype=dtype, device=device)
    return torch.randn(shape, dtype=dtype, device=generator.device, generator=generator).to(device)


#: the largest Poisson rate (photons per pixel) PoissonNoise samples
MAX_POISSON_RATE = 1e18


def _check_measurement(y) -> None:
    check_tensor("y", y)
    if not (y.is_floating_point() or y.is_complex()):
        raise ValueError(f"y: expected a floating or complex tensor, got dtype {y.dtype}")


def _check_level(name: str, value) -> None:
    if not isinstance(value, Tensor):
        check_real(name, value, minimum=0)
    elif bool((value < 0).any() or ~torch.isfinite(value).all()):
        raise ValueError(f"{name}: expected finite values >= 0, got {value.detach().tolist()}")


class GaussianNoise(nn.Module):
    """``y + sigma * n`` with ``n ~ N(0, I)`` (complex data: unit-variance circular noise).

    Args:
        sigma: standard deviation, a number or a tensor broadcastable to ``y``
            (e.g. ``(B, 1, 1, 1)`` for one level per sample).
        generator: a ``torch.Generator`` or an integer seed, for reproducible noise.
    """

    def __init__(self, sigma: float | Tensor = 0.1, generator: torch.Generator | int | None = None):
        super().__init__()
        _check_level("sigma", sigma)
        self.sigma = sigma
        self.generator = make_generator(generator)

    def forward(self, y: Tensor) -> Tensor:
        _check_measurement(y)
        if isinstance(self.sigma, Tensor):
            try:
                fits = torch.broadcast_shapes(self.sigma.shape, y.shape) == y.shape
            except RuntimeError:
                fits = False
            if not fits:  # broadcasting must not change y's shape either
                raise ValueError(
                    f"sigma: expected a number or a tensor that broadcasts to y's "
                    f"{tuple(y.shape)}, got shape {tuple(self.sigma.shape)}"
                )
        real = y.real.dtype if y.is_complex() else y.dtype
        # Beyond this, y + sigma * n overflows to inf for ordinary draws (|n| < 16 always).
        limit = torch.finfo(real).max / 16
        level = float(self.sigma.max()) if isinstance(self.sigma, Tensor) else self.sigma
        if level > limit:
            raise ValueError(
                f"sigma: expected at most {limit:.3g} for y of dtype {y.dtype} (larger noise "
                f"overflows it), got {level:.3g}"
            )
        if y.is_complex():
            parts = _randn((2, *y.shape), y.real.dtype, y.device, self.generator)
            n = torch.complex(parts[0], parts[1]) / math.sqrt(2)
        else:
            n = _randn(y.shape, y.dtype, y.device, self.generator)
        return y + self.sigma * n

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"


class PoissonNoise(nn.Module):
    """``gain * Poisson(y / gain)``: photon-counting noise with ``y >= 0``.

    Args:
        gain: photons per unit intensity are ``1 / gain``.
        generator: a ``torch.Generator`` or an integer seed.
    """

    def __init__(self, gain: float = 1.0, generator: torch.Generator | int | None = None):
        super().__init__()
        _check_level("gain", gain)
        if gain == 0:
            raise ValueError("gain: expected a number > 0, got 0")
        self.gain = gain
        self.generator = make_generator(generator)

    def forward(self, y: Tensor) -> Tensor:
        _check_measurement(y)
        if y.is_complex():
            raise ValueError("y: Poisson noise expects real intensities, got a complex tensor")
        if bool((y < 0).any()):
            raise ValueError("y: Poisson noise expects intensities >= 0, got negative values")
        if self.gain > torch.finfo(y.dtype).max:
            raise ValueError(
                f"gain: expected at most the largest {y.dtype} ({torch.finfo(y.dtype).max:.3g}) "
                f"for y of that dtype, got {self.gain!r}"
            )
        rate = (y / self.gain).detach()
        if bool((rate > MAX_POISSON_RATE).any()):
            # torch.poisson returns -2**63 (an int64 overflow) for rates from about 9e18.
            raise ValueError(
                f"gain: y / gain reaches {float(rate.max()):.3g}, above the {MAX_POISSON_RATE:.0e} "
                "photons Poisson sampling can count; use a larger gain (or Gaussian noise)"
            )
        if self.generator is None:
            counts = torch.poisson(rate)
        else:
            counts = torch.poisson(rate.to(self.generator.device), generator=self.generator)
        return counts.to(y.device, y.dtype) * self.gain

    def extra_repr(self) -> str:
        return f"gain={self.gain}"
