"""A measurement model: a linear operator followed by noise."""

from __future__ import annotations

from torch import Tensor, nn

from .._validation import describe
from ..linalg.operator import LinearOperator

__all__ = ["Physics"]


class Physics(LinearOperator):
    """``physics(x) = noise(A(x))``; ``physics.A(x)`` is the noiseless measurement.

    Args:
        noise: a module ``y -> noisy y`` (e.g. :class:`GaussianNoise`), or ``None``.
    """

    def __init__(self, noise: nn.Module | None = None):
        super().__init__()
        if noise is not None and not callable(noise):
            raise TypeError(f"noise: expected a noise module or None, got {describe(noise)}")
        self.noise = noise

    def forward(self, x: Tensor) -> Tensor:
        y = self.A(x)
        return self.noise(y) if self.noise is not None else y
