"""Inpainting: a diagonal operator ``A x = m * x`` (0/1 mask or real or complex weights)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from . import _util
from .base import Physics

__all__ = ["Inpainting"]


class Inpainting(Physics):
    """``A x = m * x`` elementwise for ``x`` of shape ``(B, C, H, W)``; ``A^H y = conj(m) * y``.

    Args:
        mask: ``(H, W)``, ``(C, H, W)`` or ``(1, C, H, W)`` shared by the batch, or
            ``(B, C, H, W)`` one per sample (channels may be 1: shared by the channels);
            ``(W,)`` is a pattern of columns. 0/1, bool, real or complex weights. An
            ``nn.Parameter`` is trained with the module; any other tensor (also one
            produced by a network, e.g. ``sigmoid(logits)``) is kept as a buffer.
        noise: noise model applied by ``physics(x)``.

    The prox is closed-form: ``h = (conj(m) y + z / gamma) / (|m|^2 + 1 / gamma)``,
    differentiated by plain autograd.
    """

    def __init__(self, mask: Tensor, noise=None):
        super().__init__(noise=noise)
        _util.keep_tensor(self, "mask", _util.check_mask_tensor(mask))

    def _mask(self, x: Tensor, name: str) -> Tensor:
        _util.check_image(x, name)
        return _util.mask_for(self.mask, x.shape, x.dtype, "mask", name)

    def output_shape(self, input_shape: Sequence[int]) -> torch.Size:
        if len(input_shape) != 4:
            raise ValueError(f"x: expected shape (B, C, H, W), got {tuple(input_shape)}")
        _util.mask_for(self.mask, input_shape, self.mask.dtype, "mask", "x")
        return torch.Size(input_shape)

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        return self._mask(x, "x") * x

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        return self._mask(y, "y").conj() * y

    def normal(self, x: Tensor) -> Tensor:
        return _abs2(self._mask(x, "x")) * x

    def _closed_form_prox(self, z: Tensor, y: Tensor, gamma: Tensor) -> Tensor:
        """``h = (conj(m) y + z / gamma) / (|m|^2 + 1 / gamma)`` for any gamma (a number,
        ``(B,)`` or a tensor broadcasting to ``z``)."""
        m = self._mask(z, "z")
        return (m.conj() * y + z / gamma) / (_abs2(m) + 1 / gamma)

    def extra_repr(self) -> str:
        return f"mask={tuple(self.mask.shape)}"


def _abs2(m: Tensor) -> Tensor:
    # m * m rather than abs(m)**2: abs has an undefined derivative at 0 for complex m and
    # this keeps the gradient exact at masked-out (zero) entries.
    return (m.conj() * m).real if m.is_complex() else m * m
