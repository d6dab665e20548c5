"""Plug-and-play prior: a denoiser used as the proximal operator of an implicit prior."""

from __future__ import annotations

from torch import Tensor, nn

from ._inputs import check_denoiser

__all__ = ["PnP"]


class PnP(nn.Module):
    """The prior whose proximal step is a denoiser: ``prox(x, sigma) = D(x, sigma)``.

    In a splitting algorithm ``prox_{gamma g}(x)`` is replaced by the denoiser at level
    ``sigma`` (plug-and-play); ``sigma`` plays the part of ``sqrt(gamma * lambda)``.

    Args:
        denoiser: an ``nn.Module`` called as ``denoiser(x, sigma)`` (e.g. :class:`DnCNN`).
    """

    def __init__(self, denoiser: nn.Module):
        super().__init__()
        self.denoiser = check_denoiser(denoiser)

    def prox(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """``D(x, sigma)``, shaped like ``x``."""
        return self.denoiser(x, sigma)

    def forward(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        return self.prox(x, sigma)
