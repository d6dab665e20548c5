"""Cartesian MRI: single-coil (closed-form prox) and multi-coil (iterative prox).

k-space is centred: ``F x = fftshift(fft2(ifftshift(x), norm="ortho"))`` over the last
two dimensions, so masks show the low frequencies in the middle. ``F`` is unitary
(``F^H = F^-1``), so a single-coil ``A = M F`` has a diagonal normal operator in
k-space. Images and measurements are complex tensors throughout.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .._validation import check_int, check_real, check_shape, check_tensor
from . import _util
from .base import Physics

__all__ = ["MRI", "MultiCoilMRI", "cartesian_mask", "smooth_coil_maps", "fft2c", "ifft2c"]

_DIMS = (-2, -1)


def fft2c(x: Tensor) -> Tensor:
    """Centred orthonormal 2-D DFT over the last two dimensions."""
    return torch.fft.fftshift(
        torch.fft.fft2(torch.fft.ifftshift(x, dim=_DIMS), norm="ortho"), dim=_DIMS
    )


def ifft2c(k: Tensor) -> Tensor:
    """Inverse (= adjoint) of :func:`fft2c`."""
    return torch.fft.fftshift(
        torch.fft.ifft2(torch.fft.ifftshift(k, dim=_DIMS), norm="ortho"), dim=_DIMS
    )


def _check_img_size(img_size) -> tuple[int, int] | None:
    if img_size is None:
        return None
    return check_shape("img_size", img_size, length=2, expected="(H, W) with positive sides")


class MRI(Physics):
    """Single-coil Cartesian MRI ``A x = m * F x`` for complex ``x`` of shape ``(B, C, H, W)``.

    Args:
        mask: real sampling weights in centred k-space: ``(H, W)``, ``(C, H, W)``,
            ``(B, C, H, W)`` or ``(W,)`` (phase-encode lines, the same on every row).
            0/1 or soft weights; ``torch.sigmoid(logits)`` makes a trainable mask (the
            implicit and closed-form backward passes route its gradient to the logits).
        img_size: optional ``(H, W)``, checked against the mask and the images.
        noise: noise model applied by ``physics(x)``.

    Closed-form prox (diagonal in k-space):
    ``h = F^H [(m y + F z / gamma) / (m^2 + 1 / gamma)]``.
    """

    def __init__(self, mask: Tensor, img_size: Sequence[int] | None = None, noise=None):
        super().__init__(noise=noise)
        mask = _util.check_mask_tensor(mask, allow_complex=False)
        self.img_size = _check_img_size(img_size)
        if self.img_size is not None:
            lead = ((1, 1) + tuple(mask.shape[:-2]))[-2:] if mask.ndim > 1 else (1, 1)
            geometry = (*lead, *self.img_size)
            _util.mask_for(mask, geometry, mask.dtype, "mask", "img_size")
        _util.keep_tensor(self, "mask", mask)

    def _mask_like(self, shape, what: str, mask: Tensor | None = None, dtype=None) -> Tensor:
        if self.img_size is not None and tuple(shape[-2:]) != self.img_size:
            raise ValueError(
                f"{what}: expected spatial size {self.img_size} (img_size), got {tuple(shape)}"
            )
        mask = self.mask if mask is None else mask
        return _util.mask_for(mask, shape, dtype or mask.dtype, "mask", what)

    def domain_dtype(self) -> torch.dtype:
        return self.mask.dtype.to_complex()

    def output_shape(self, input_shape: Sequence[int]) -> torch.Size:
        if len(input_shape) != 4:
            raise ValueError(f"x: expected shape (B, C, H, W), got {tuple(input_shape)}")
        self._mask_like(input_shape, "x")
        return torch.Size(input_shape)

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        _util.check_image(x, "x", complex_required=True)
        return self._mask_like(x.shape, "x", dtype=x.dtype) * fft2c(x)

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        _util.check_image(y, "y", complex_required=True)
        return ifft2c(self._mask_like(y.shape, "y", dtype=y.dtype) * y)

    def normal(self, x: Tensor) -> Tensor:
        _util.check_image(x, "x", complex_required=True)
        m = self._mask_like(x.shape, "x", dtype=x.dtype)
        return ifft2c(m * m * fft2c(x))

    def _closed_form_prox(self, z: Tensor, y: Tensor, gamma: Tensor) -> Tensor | None:
        """Closed form for a gamma constant over each image (a number, ``(B,)``,
        ``(B, C, 1, 1)``...); a gamma varying over pixels is solved iteratively."""
        _util.check_image(z, "z", complex_required=True)
        if not _util.constant_over(gamma, 2):
            return None
        m = self._mask_like(z.shape, "z", dtype=z.dtype)
        return ifft2c((m * y + fft2c(z) / gamma) / (m * m + 1 / gamma))

    def extra_repr(self) -> str:
        return f"mask={tuple(self.mask.shape)}"


class MultiCoilMRI(Physics):
    """Multi-coil Cartesian MRI ``(A x)_c = m * F (S_c x)``, output ``(B, Ncoils, H, W)``.

    Args:
        mask: real sampling weights in centred k-space, shared by the coils or per coil:
            ``(H, W)``, ``(W,)``, ``(Ncoils, H, W)`` or ``(B, 1 or Ncoils, H, W)``.
        coil_maps: complex sensitivities ``S``, ``(1 or B, Ncoils, H, W)`` (shared by the
            batch or per sample). Trainable / learnable like the mask.
        noise: noise model applied by ``physics(x)``.

    ``x`` is one complex image per sample, ``(B, 1, H, W)``. The adjoint is
    ``A^H y = sum_c conj(S_c) F^H (m y_c)``. The prox is iterative (the default).
    """

    def __init__(self, mask: Tensor, coil_maps: Tensor, noise=None):
        super().__init__(noise=noise)
        mask = _util.check_mask_tensor(mask, allow_complex=False)
        expected = "a tensor of shape (B or 1, Ncoils, H, W)"
        check_tensor("coil_maps", coil_maps, expected)
        if coil_maps.ndim != 4:
            raise ValueError(f"coil_maps: expected {expected}, got {tuple(coil_maps.shape)}")
        if not coil_maps.is_complex():
            raise ValueError(f"coil_maps: expected a complex tensor, got dtype {coil_maps.dtype}")
        # Batch sizes 1 and B mix freely; check the mask against the coil maps' geometry.
        batch = mask.shape[0] if mask.ndim == 4 and mask.shape[0] > 1 else coil_maps.shape[0]
        if coil_maps.shape[0] not in (1, batch):
            raise ValueError(
                f"coil_maps: expected batch size 1 or {batch} (that of mask), "
                f"got {coil_maps.shape[0]}"
            )
        geometry = (batch, coil_maps.shape[1], *coil_maps.shape[-2:])
        _util.mask_for(mask, geometry, mask.dtype, "mask", "the coil maps")
        _util.keep_tensor(self, "mask", mask)
        _util.keep_tensor(self, "coil_maps", coil_maps)

    @property
    def ncoils(self) -> int:
        return self.coil_maps.shape[1]

    def domain_dtype(self) -> torch.dtype:
        return self.coil_maps.dtype

    def _maps(self, shape: Sequence[int], name: str) -> Tensor:
        """Coil maps checked against data of shape ``(B, *, H, W)``."""
        s = self.coil_maps
        b, _, h, w = shape
        if s.shape[0] not in (1, b) or tuple(s.shape[-2:]) != (h, w):
            raise ValueError(
                f"coil_maps: expected shape (1 or {b}, Ncoils, {h}, {w}) to match {name} of "
                f"shape {tuple(shape)}, got {tuple(s.shape)}"
            )
        return s

    def _check_x(self, shape: Sequence[int], name: str) -> None:
        if len(shape) != 4 or shape[1] != 1:
            raise ValueError(f"{name}: expected an image of shape (B, 1, H, W), got {tuple(shape)}")

    def output_shape(self, input_shape: Sequence[int]) -> torch.Size:
        self._check_x(input_shape, "x")
        b, _, h, w = input_shape
        self._maps(input_shape, "x")
        _util.mask_for(self.mask, (b, self.ncoils, h, w), self.mask.dtype, "mask", "the k-space")
        return torch.Size((b, self.ncoils, h, w))

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        _util.check_image(x, "x", complex_required=True)
        self._check_x(x.shape, "x")
        k = fft2c(self._maps(x.shape, "x").to(x.dtype) * x)
        return _util.mask_for(self.mask, k.shape, k.dtype, "mask", "the k-space") * k

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        _util.check_image(y, "y", complex_required=True)
        b, c, h, w = y.shape
        if c != self.ncoils:
            raise ValueError(
                f"y: expected {self.ncoils} coils, shape (B, {self.ncoils}, H, W), "
                f"got {tuple(y.shape)}"
            )
        m = _util.mask_for(self.mask, y.shape, y.dtype, "mask", "y")
        maps = self._maps(y.shape, "y").to(y.dtype)
        return (maps.conj() * ifft2c(m * y)).sum(dim=1, keepdim=True)

    def extra_repr(self) -> str:
        return f"ncoils={self.ncoils}, mask={tuple(self.mask.shape)}"


# -- helpers: synthetic sampling masks and coil sensitivities ---------------------------


def cartesian_mask(
    shape: Sequence[int],
    acceleration: float = 4,
    center_fraction: float = 0.08,
    *,
    seed: int | None = 0,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """A Cartesian undersampling mask ``(H, W)`` in centred k-space.

    Whole columns (phase-encode lines) are sampled: the ``round(W * center_fraction)``
    (at least 1) around the centre, and random others until ``round(W / acceleration)``
    lines are sampled in all. Deterministic for a given ``seed`` (drawn on the CPU).
    """
    h, w = check_shape("shape", shape, length=2, expected="(H, W) with positive sides")
    check_real("acceleration", acceleration, minimum=1)
    check_real("center_fraction", center_fraction, minimum=0, maximum=1)
    check_int("seed", seed, allow_none=True)
    total = max(1, round(w / acceleration))
    center = min(total, max(1, round(w * center_fraction)))
    start = w // 2 - center // 2  # the DC column of the centred spectrum is w // 2
    lines = torch.zeros(w, dtype=torch.bool)
    lines[start : start + center] = True
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    others = torch.nonzero(~lines).squeeze(1)
    pick = others[torch.randperm(others.numel(), generator=gen)[: total - center]]
    lines[pick] = True
    return lines.to(dtype or torch.get_default_dtype()).expand(h, w).clone()


def smooth_coil_maps(
    ncoils: int,
    shape: Sequence[int],
    *,
    width: float = 0.7,
    normalize: bool = True,
    seed: int | None = 0,
    dtype: torch.dtype = torch.complex64,
) -> Tensor:
    """Smooth synthetic complex coil sensitivities, shape ``(1, ncoils, H, W)``.

    Coil ``c`` is a Gaussian blob of standard deviation ``width`` (in units of the
    half-side) centred at ``1.2 (cos t_c, sin t_c)`` around the image, ``t_c = 2 pi c /
    ncoils``, times a smooth phase ``exp(i (a_c . r + b_c))`` with a random linear ramp
    and offset from ``seed``. ``normalize`` scales them so ``sum_c |S_c|^2 = 1``.
    """
    check_int("ncoils", ncoils, minimum=1)
    h, w = check_shape("shape", shape, length=2, expected="(H, W) with positive sides")
    check_real("width", width, positive=True)
    check_int("seed", seed, allow_none=True)
    if not dtype.is_complex:
        raise ValueError(f"dtype: expected a complex dtype, got {dtype}")
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    ys = torch.linspace(-1, 1, h, dtype=torch.float64)[:, None]
    xs = torch.linspace(-1, 1, w, dtype=torch.float64)[None, :]
    angles = 2 * math.pi * torch.arange(ncoils, dtype=torch.float64) / ncoils
    ramps = torch.rand(ncoils, 2, generator=gen, dtype=torch.float64) * 2 - 1  # radians per unit
    offsets = torch.rand(ncoils, generator=gen, dtype=torch.float64) * 2 * math.pi
    maps = []
    for c in range(ncoils):
        cy, cx = 1.2 * math.sin(angles[c]), 1.2 * math.cos(angles[c])
        magnitude = torch.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * width**2))
        phase = ramps[c, 0] * ys + ramps[c, 1] * xs + offsets[c]
        maps.append(torch.polar(magnitude, phase))
    maps = torch.stack(maps)[None]
    if normalize:
        maps = maps / (maps.abs() ** 2).sum(dim=1, keepdim=True).sqrt()
    return maps.to(dtype)
