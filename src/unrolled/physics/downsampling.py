"""Downsampling (super-resolution): an anti-alias blur, then keeping every ``factor``-th pixel.

``A x = S (k * x)`` where ``S`` keeps the pixels ``(factor i, factor j)`` and the blur is
:class:`~unrolled.physics.Blur` (a sub-module, so its kernel is found by the implicit
backward). ``A^H y = k^H * (S^H y)`` with ``S^H`` the zero-filling upsampling.

With circular padding (or no filter) the prox has a closed form in Fourier. With ``K``
the DFT of the blur's impulse response, decimation folds the spectrum into
``factor^2`` aliases, so ``A A^H`` is diagonal on the low-resolution grid with entries
``d = mean over aliases of |K|^2``, and (Woodbury)
``h = z + gamma A^H (I + gamma A A^H)^-1 (y - A z)`` costs a few FFTs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .._validation import check_choice, check_int
from . import _util
from .base import Physics
from .blur import PADDINGS, Blur
from .kernels import gaussian_kernel

__all__ = ["Downsampling"]


class Downsampling(Physics):
    """``A x = (k * x)[..., ::factor, ::factor]`` for ``x`` of shape ``(B, C, H, W)``.

    Args:
        factor: integer decimation factor ``s >= 1``.
        kernel: the anti-alias filter: ``"gaussian"`` (default, ``sigma = s / 2``), a
            kernel tensor as :class:`Blur` takes it (``(kh, kw)`` or ``(B, C, kh, kw)``,
            trainable if an ``nn.Parameter`` or made by a network), or ``None`` for
            plain decimation.
        padding: boundary handling of the filter, one of ``PADDINGS``; ``"circular"``
            gets the closed-form FFT prox, the others the iterative default.
        noise: noise model applied by ``physics(x)``.

    The filtered image (``H x W``, or ``(H - kh + 1) x (W - kw + 1)`` with ``"valid"``)
    must have sides divisible by ``s``; the output is ``(B, C, H' / s, W' / s)``.
    """

    def __init__(
        self,
        factor: int,
        kernel: Tensor | str | None = "gaussian",
        padding: str = "circular",
        noise=None,
    ):
        super().__init__(noise=noise)
        check_int("factor", factor, minimum=1)
        check_choice("padding", padding, PADDINGS)
        self.factor = factor
        self.padding = padding
        if isinstance(kernel, str):
            if kernel != "gaussian":
                raise ValueError(f"kernel: expected 'gaussian', a tensor or None, got {kernel!r}")
            kernel = gaussian_kernel(sigma=factor / 2)
        self.blur = None if kernel is None else Blur(kernel, padding=padding)

    # -- geometry ---------------------------------------------------------------------

    def _filtered_shape(self, input_shape: Sequence[int], name: str) -> tuple[int, ...]:
        if len(input_shape) != 4:
            raise ValueError(f"{name}: expected shape (B, C, H, W), got {tuple(input_shape)}")
        shape = tuple(input_shape) if self.blur is None else self.blur.output_shape(input_shape)
        s = self.factor
        if shape[-2] % s or shape[-1] % s:
            raise ValueError(
                f"{name}: expected a filtered image of sides divisible by factor={s}, got "
                f"{tuple(shape[-2:])} from {name} of shape {tuple(input_shape)}"
            )
        return shape

    def output_shape(self, input_shape: Sequence[int]) -> torch.Size:
        b, c, h, w = self._filtered_shape(input_shape, "x")
        return torch.Size((b, c, h // self.factor, w // self.factor))

    # -- the operator -----------------------------------------------------------------

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        _util.check_image(x, "x")
        self._filtered_shape(x.shape, "x")
        if self.blur is not None:
            x = self.blur.A(x)
        return x[..., :: self.factor, :: self.factor]

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        _util.check_image(y, "y")
        s = self.factor
        up = y.new_zeros((*y.shape[:-2], s * y.shape[-2], s * y.shape[-1]))
        up[..., ::s, ::s] = y
        return up if self.blur is None else self.blur.A_adjoint(up)

    # -- closed-form prox -------------------------------------------------------------

    def _closed_form_prox(self, z: Tensor, y: Tensor, gamma: Tensor) -> Tensor | None:
        """Closed form in Fourier for circular padding (or no filter) and a ``gamma``
        constant over each image (a number, ``(B,)``, ``(B, C, 1, 1)``...); otherwise
        ``None`` (the iterative solve)."""
        g = gamma
        circular = self.blur is None or self.padding == "circular"
        if not (circular and _util.constant_over(g, 2)):
            return None
        s = self.factor
        zf = torch.fft.fft2(z)
        transfer = self._transfer(z)
        kz = zf if transfer is None else transfer * zf
        # low-resolution spectrum of A z: the mean of the s^2 aliases
        residual = torch.fft.fft2(y) - _fold(kz, s) / s**2
        if transfer is None:
            d = torch.ones((), dtype=z.real.dtype, device=z.device)
        else:
            d = _fold((transfer.conj() * transfer).real, s) / s**2
        w = residual / (1 + g * d)
        up = w.repeat(*(1,) * (w.ndim - 2), s, s)  # spectrum of the zero-filling upsampling
        hf = zf + g * (up if transfer is None else transfer.conj() * up)
        return _util.real_part_like(torch.fft.ifft2(hf), z)

    def _transfer(self, z: Tensor) -> Tensor | None:
        """DFT of the filter's impulse response on the image grid, ``(Bk, Ck, H, W)``.

        Taken from the blur itself (applied to a unit impulse), so it matches its
        kernel-centring convention by construction and is differentiable in the kernel.
        """
        if self.blur is None:
            return None
        k = self.blur._kernel4d()
        real = z.real.dtype if z.is_complex() else z.dtype
        delta = torch.zeros((*k.shape[:2], *z.shape[-2:]), dtype=real, device=z.device)
        delta[..., 0, 0] = 1
        return torch.fft.fft2(self.blur.A(delta))

    def extra_repr(self) -> str:
        return f"factor={self.factor}, padding={self.padding!r}"


def _fold(spectrum: Tensor, s: int) -> Tensor:
    """Sum of the ``s x s`` aliases: ``X[k1 + j1 H/s, k2 + j2 W/s]`` summed over ``j1, j2``."""
    *lead, h, w = spectrum.shape
    return spectrum.reshape(*lead, s, h // s, s, w // s).sum(dim=(-4, -2))
