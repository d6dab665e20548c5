"""2-D convolution with boundary handling, as plain functions (what :class:`Blur` applies).

``y[i, j] = sum_{m, n} k[m, n] x[i - m + kh // 2, j - n + kw // 2]``: a true
convolution (kernel flipped) of each ``(sample, channel)`` plane with its kernel, the
kernel centred at ``(kh // 2, kw // 2)``. ``padding="valid"`` keeps the outputs whose
support lies inside the image (the output shrinks by ``kernel - 1``); the other modes
first extend the image (``"circular"``, ``"reflect"``, ``"replicate"``, ``"zeros"``) so
the output keeps its size. Each extension is a gather of pixels, so its exact adjoint
is the matching scatter-add.

These functions check nothing: ``x`` is ``(B, C, H, W)`` floating or complex,
``kernel`` is ``(Bk, Ck, kh, kw)`` real with ``Bk`` in ``{1, B}`` and ``Ck`` in
``{1, C}``. A ``spectrum`` argument selects the FFT path: the kernel's DFT on the grid
:func:`fft_grid` names (the half spectrum of ``rfft2`` for real data), or ``None`` for
the direct convolution. Both are exact.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

from .fourier import apply_spectrum

__all__ = [
    "PADDINGS",
    "blur",
    "blur_adjoint",
    "blur_normal",
    "fft_grid",
    "kernel_pads",
    "pad",
    "pad_adjoint",
    "valid_conv",
    "valid_conv_adjoint",
    "valid_window",
]

PADDINGS = ("valid", "circular", "reflect", "replicate", "zeros")


def kernel_pads(kh: int, kw: int) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` extension that centres the kernel at
    ``(kh // 2, kw // 2)`` (a delta kernel at the centre is the identity)."""
    return (kh - 1) // 2, kh // 2, (kw - 1) // 2, kw // 2


def fft_grid(padding: str, image_hw, kernel_hw) -> tuple[tuple[int, int], bool]:
    """``(grid, centred)``: where the FFT path needs the kernel's spectrum for images of
    size ``image_hw``. Circular padding convolves on the image grid with the kernel
    centred; the other modes take a valid convolution of the (extended) image, which on
    that grid is a circular one with the kernel at the origin."""
    (h, w), (kh, kw) = image_hw, kernel_hw
    if padding == "circular":
        return (h, w), True
    if padding == "valid":
        return (h, w), False
    return (h + kh - 1, w + kw - 1), False


@lru_cache(maxsize=256)
def _pad_index(n: int, before: int, after: int, mode: str, device: torch.device) -> Tensor:
    i = torch.arange(-before, n + after, device=device)
    if mode == "circular":
        return i % n
    if mode == "replicate":
        return i.clamp(0, n - 1)
    # reflect about the edge pixels, not repeating them (numpy's "reflect")
    i = i.abs()
    return torch.where(i > n - 1, 2 * (n - 1) - i, i)


def pad(x: Tensor, pads: tuple[int, int, int, int], mode: str) -> Tensor:
    """Extend ``x`` by ``pads = (top, bottom, left, right)`` pixels."""
    top, bottom, left, right = pads
    if mode == "zeros":
        return F.pad(x, (left, right, top, bottom))
    h, w = x.shape[-2:]
    rows = _pad_index(h, top, bottom, mode, x.device)
    cols = _pad_index(w, left, right, mode, x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


def pad_adjoint(x: Tensor, pads: tuple[int, int, int, int], mode: str) -> Tensor:
    """The adjoint of :func:`pad`: each extended pixel is added back to its source."""
    top, bottom, left, right = pads
    hp, wp = x.shape[-2:]
    h, w = hp - top - bottom, wp - left - right
    if mode == "zeros":
        return x[..., top : top + h, left : left + w]
    rows = _pad_index(h, top, bottom, mode, x.device)
    cols = _pad_index(w, left, right, mode, x.device)
    x = x.new_zeros((*x.shape[:-1], w)).index_add(-1, cols, x)
    return x.new_zeros((*x.shape[:-2], h, w)).index_add(-2, rows, x)


def _direct(x: Tensor, kernel: Tensor, *, transpose: bool) -> Tensor:
    """Valid true convolution of each plane with its kernel by ``conv2d``, or its adjoint."""
    if x.is_complex():
        return torch.complex(
            _direct(x.real, kernel, transpose=transpose),
            _direct(x.imag, kernel, transpose=transpose),
        )
    b, c, h, w = x.shape
    bk, ck, kh, kw = kernel.shape
    # conv2d is a cross-correlation: flipping the kernel makes it a convolution. The
    # adjoint is the full cross-correlation with the unflipped kernel (conv2d on the
    # zero-extended input: much faster on CPU than conv_transpose2d).
    weight = kernel.to(x.dtype) if transpose else kernel.flip(-2, -1).to(x.dtype)
    if transpose:
        x = F.pad(x, (kw - 1, kw - 1, kh - 1, kh - 1))
        h, w = x.shape[-2:]
    if bk == 1 and ck == 1:
        out = F.conv2d(x.reshape(b * c, 1, h, w), weight)
    else:
        weight = weight.expand(b, c, kh, kw).reshape(b * c, 1, kh, kw)
        out = F.conv2d(x.reshape(1, b * c, h, w), weight, groups=b * c)
    return out.reshape(b, c, *out.shape[-2:])


def valid_conv(x: Tensor, kernel: Tensor, spectrum: Tensor | None = None) -> Tensor:
    """The valid convolution, ``(H - kh + 1, W - kw + 1)`` outputs.

    By FFT: on the input's grid, a circular convolution with the kernel at the origin
    equals the valid convolution on the window ``[kh-1:, kw-1:]``, where no tap wraps.
    """
    if spectrum is None:
        return _direct(x, kernel, transpose=False)
    kh, kw = kernel.shape[-2:]
    # a copy, not a view: a view would keep the whole grid alive wherever it is kept
    return apply_spectrum(x, spectrum)[..., kh - 1 :, kw - 1 :].contiguous()


def valid_conv_adjoint(y: Tensor, kernel: Tensor, spectrum: Tensor | None = None) -> Tensor:
    """The adjoint of :func:`valid_conv`: zero-extend to the input grid and correlate
    (the conjugate spectrum)."""
    if spectrum is None:
        return _direct(y, kernel, transpose=True)
    kh, kw = kernel.shape[-2:]
    return apply_spectrum(F.pad(y, (kw - 1, 0, kh - 1, 0)), spectrum.conj())


def blur(x: Tensor, kernel: Tensor, padding: str, spectrum: Tensor | None = None) -> Tensor:
    """``k * x`` with the boundary handling ``padding``."""
    if padding == "circular" and spectrum is not None:
        return apply_spectrum(x, spectrum)
    if padding != "valid":
        x = pad(x, kernel_pads(*kernel.shape[-2:]), padding)
    return valid_conv(x, kernel, spectrum)


def blur_adjoint(y: Tensor, kernel: Tensor, padding: str, spectrum: Tensor | None = None) -> Tensor:
    """The adjoint of :func:`blur`."""
    if padding == "circular" and spectrum is not None:
        return apply_spectrum(y, spectrum.conj())
    out = valid_conv_adjoint(y, kernel, spectrum)
    return out if padding == "valid" else pad_adjoint(out, kernel_pads(*kernel.shape[-2:]), padding)


def valid_window(grid, kernel_hw, *, dtype=None, device=None) -> Tensor:
    """``(H, W)`` mask of the outputs of a valid convolution on the FFT ``grid``: 1 at the
    outputs :func:`valid_conv` keeps, 0 on the first ``kh - 1`` rows and ``kw - 1``
    columns (where the circular convolution wraps around)."""
    (h, w), (kh, kw) = grid, kernel_hw
    window = torch.ones((h, w), dtype=dtype, device=device)
    window[: kh - 1, :] = 0
    window[:, : kw - 1] = 0
    return window


def blur_normal(
    x: Tensor,
    kernel: Tensor,
    padding: str,
    spectrum: Tensor | None = None,
    *,
    adjoint: Tensor | None = None,
    window: Tensor | None = None,
) -> Tensor:
    """``A^H A x``. By FFT for circular padding as one multiplier ``|K_hat|^2`` (two FFTs
    instead of four), and for valid padding as ``K_hat^H W K_hat`` with ``W`` the window
    of valid outputs (:func:`valid_window`), without cropping and re-padding in between.

    A solve applies this many times: it may pass ``adjoint`` (``spectrum.conj()``, best
    resolved) and ``window`` (in ``x``'s dtype) built once instead of once per call."""
    if spectrum is None or padding not in ("circular", "valid"):
        return blur_adjoint(blur(x, kernel, padding, spectrum), kernel, padding, spectrum)
    if padding == "circular":
        return apply_spectrum(x, spectrum.abs() ** 2)
    if adjoint is None:
        adjoint = spectrum.conj()
    if window is None:
        window = valid_window(x.shape[-2:], kernel.shape[-2:], dtype=x.dtype, device=x.device)
    full = apply_spectrum(x, spectrum)
    # the outputs that wrap around are the ones "valid" drops; out of place under
    # autograd, which needs the intermediate
    full = full * window if torch.is_grad_enabled() else full.mul_(window)
    return apply_spectrum(full, adjoint)
