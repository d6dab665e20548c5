"""What the convolutional denoisers share: their checks, the noise-level input channel and
the residual form."""

from __future__ import annotations

import abc

from torch import Tensor, nn

from .._validation import check_bool, check_int, check_real
from ._inputs import check_image, with_noise_level

__all__ = ["NoiseLevelDenoiser"]


class NoiseLevelDenoiser(nn.Module, metaclass=abc.ABCMeta):
    """A denoiser ``D(x, sigma)`` for real images ``(B, C, H, W)`` whose network sees the
    noise level as one extra constant input channel.

    ``residual=True``: ``D(x, sigma) = x - net([x, sigma])`` (the network predicts the
    noise); otherwise ``D(x, sigma) = net([x, sigma])``. A subclass builds its layers and
    implements :meth:`network`; the input is checked here, once, before it runs.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        bias: bool,
        residual: bool,
        last_init_scale: float,
    ):
        super().__init__()
        check_int("in_channels", in_channels, minimum=1)
        check_int("out_channels", out_channels, minimum=1)
        check_bool("bias", bias)
        check_bool("residual", residual)
        check_real("last_init_scale", last_init_scale, minimum=0)
        if residual and in_channels != out_channels:
            raise ValueError(
                f"out_channels: residual=True needs out_channels == in_channels "
                f"({in_channels}), got {out_channels}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.residual = residual

    @abc.abstractmethod
    def network(self, t: Tensor) -> Tensor:
        """The network on ``[x, sigma]`` ``(B, C + 1, H, W)``; ``(B, out_channels, H, W)``."""

    def forward(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """Denoise ``x`` ``(B, C, H, W)`` at noise level ``sigma``: a number, a 0-d or
        one-element tensor, or a ``(B,)`` tensor. Returns ``(B, out_channels, H, W)``."""
        weights = next(self.parameters())
        check_image(x, self.in_channels, type(self).__name__, weights.dtype)
        out = self.network(with_noise_level(x, sigma))
        return x - out if self.residual else out
