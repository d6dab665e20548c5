"""2-D blur: a true convolution (kernel flipped) with a choice of boundary handling.

``padding="valid"`` keeps only the outputs whose support lies inside the image
(the output shrinks by ``kernel - 1``); the other modes first extend the image
(``"circular"``, ``"reflect"``, ``"replicate"``, ``"zeros"``) so the output keeps its
size, with the kernel centred at ``(kh // 2, kw // 2)``. Each extension is a gather
of pixels, so its exact adjoint is the matching scatter-add.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Physics
from .fourier import apply_spectrum, kernel_spectrum
from .fourier import spectral_solve as fourier_solve

__all__ = ["Blur", "gaussian_kernel", "PADDINGS"]

PADDINGS = ("valid", "circular", "reflect", "replicate", "zeros")

#: the largest Gaussian kernel side gaussian_kernel makes (a bound on memory, 16M taps)
MAX_KERNEL_SIZE = 4097


def gaussian_kernel(
    sigma: float | Sequence[float] | Tensor,
    size: int | Sequence[int] | None = None,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """A normalised (sum 1) Gaussian kernel of shape ``(h, w)``.

    Args:
        sigma: standard deviation in pixels, isotropic or ``(sigma_y, sigma_x)``; a
            tensor sigma gives a kernel differentiable in it.
        size: ``h`` (= ``w``) or ``(h, w)``; default ``2 * ceil(3 sigma) + 1`` per axis.
    """
    sig = torch.as_tensor(sigma, dtype=dtype or torch.get_default_dtype(), device=device)
    if sig.ndim == 0:
        sig = sig.expand(2)
    if sig.shape != (2,):
        raise ValueError(
            f"sigma: expected a number or (sigma_y, sigma_x), got shape {tuple(sig.shape)}"
        )
    if not bool(torch.isfinite(sig).all() and (sig > 0).all()):
        raise ValueError(f"sigma: expected finite values > 0, got {sig.tolist()}")
    if size is None:
        if float(sig.max()) > (MAX_KERNEL_SIZE - 1) / 6:
            raise ValueError(
                f"sigma: the default size 2 ceil(3 sigma) + 1 exceeds {MAX_KERNEL_SIZE} taps for "
                f"sigma={sig.tolist()}; pass size= (or blur a downsampled image)"
            )
        size = tuple(2 * math.ceil(3 * float(s)) + 1 for s in sig)
    elif isinstance(size, int):
        size = (size, size)
    size = tuple(size)
    if len(size) != 2 or any(
        not isinstance(s, int) or isinstance(s, bool) or not 1 <= s <= MAX_KERNEL_SIZE for s in size
    ):
        raise ValueError(
            f"size: expected an integer in [1, {MAX_KERNEL_SIZE}] or (h, w), got {size!r}"
        )
    axes = []
    for n, s in zip(size, sig, strict=True):
        d = (torch.arange(n, dtype=sig.dtype, device=sig.device) - (n - 1) / 2).abs()
        # exp(-(d^2 - d_min^2) / (2 s^2)): the same kernel after normalisation, but the
        # taps nearest the centre stay at 1, so a tiny sigma gives a delta, not 0 / 0.
        d_min = d.min()
        axes.append(torch.exp(-0.5 * ((d - d_min) * (d + d_min) / s / s)))
    kernel = axes[0][:, None] * axes[1][None, :]
    return kernel / kernel.sum()


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


class Blur(Physics):
    """``A x = k * x``, a 2-D convolution per channel, for ``x`` of shape ``(B, C, H, W)``.

    Args:
        kernel: ``(kh, kw)`` shared by batch and channels, or ``(Bk, Ck, kh, kw)``
            with ``Bk`` in ``{1, B}`` (one kernel per sample) and ``Ck`` in ``{1, C}``
            (one per channel). An ``nn.Parameter`` is trained with the module; any
            other tensor (also one produced by a network) is kept as a buffer.
        padding: one of ``"valid"``, ``"circular"``, ``"reflect"``, ``"replicate"``,
            ``"zeros"``.
        noise: noise model applied by ``physics(x)``.
        fft: convolve by FFT (``True``), directly (``False``), or by FFT for kernels of at
            least ``FFT_MIN_TAPS`` taps (``"auto"``, default). Both are exact.

    Fast paths: convolutions by FFT (kernel spectra kept between calls); two CG
    preconditioners, the Fourier one ``(|K_hat|^2 + 1/gamma)^-1`` and the boundary one
    (:meth:`boundary_preconditioner`), picked per padding by ``AUTO_PRECONDITIONER``;
    and, for ``"circular"``, the prox in closed form by FFT (no iterations,
    differentiable by autograd).
    """

    #: kernels with at least this many taps convolve by FFT under ``fft="auto"``
    FFT_MIN_TAPS = 16

    def __init__(self, kernel: Tensor, padding: str = "valid", noise=None, fft="auto"):
        super().__init__(noise=noise)
        if padding not in PADDINGS:
            raise ValueError(f"padding: expected one of {PADDINGS}, got {padding!r}")
        if fft not in (True, False, "auto"):
            raise ValueError(f"fft: expected True, False or 'auto', got {fft!r}")
        self.padding = padding
        self.fft = fft
        _check_kernel(kernel)
        if isinstance(kernel, torch.nn.Parameter):
            self.kernel = kernel
        else:
            self.register_buffer("kernel", kernel)

    # -- geometry ---------------------------------------------------------------------

    def _kernel4d(self) -> Tensor:
        k = self.kernel
        _check_kernel(k)
        return k[None, None] if k.ndim == 2 else k

    def _pads(self, kh: int, kw: int) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) so that the kernel centre is ``(kh // 2, kw // 2)``:
        ``y[i, j] = sum k[m, n] x[i - m + kh // 2, j - n + kw // 2]`` (a delta kernel at
        the centre is the identity)."""
        return (kh - 1) // 2, kh // 2, (kw - 1) // 2, kw // 2

    def _check_image(self, x: Tensor, name: str) -> Tensor:
        if not isinstance(x, Tensor) or x.ndim != 4:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{name}: expected a tensor of shape (B, C, H, W), got {got}")
        if not (x.is_floating_point() or x.is_complex()):
            # conv2d would cast the kernel to integers (mostly zeros): a silent wrong answer.
            raise ValueError(f"{name}: expected a floating or complex tensor, got {x.dtype}")
        k = self._kernel4d()
        bk, ck, kh, kw = k.shape
        b, c, h, w = x.shape
        if bk not in (1, b):
            raise ValueError(f"kernel: expected batch size 1 or {b} (that of {name}), got {bk}")
        if ck not in (1, c):
            raise ValueError(f"kernel: expected 1 or {c} channels (those of {name}), got {ck}")
        return k

    def output_shape(self, input_shape: Sequence[int]) -> torch.Size:
        if len(input_shape) != 4:
            raise ValueError(f"x: expected shape (B, C, H, W), got {tuple(input_shape)}")
        b, c, h, w = input_shape
        kh, kw = self.kernel.shape[-2:]
        if self.padding == "valid":
            if kh > h or kw > w:
                raise ValueError(
                    f"kernel: expected at most the image size {(h, w)} with padding='valid', "
                    f"got {(kh, kw)}"
                )
            return torch.Size((b, c, h - kh + 1, w - kw + 1))
        if self.padding == "reflect":
            top, bottom, left, right = self._pads(kh, kw)
            if max(top, bottom) > h - 1 or max(left, right) > w - 1:
                raise ValueError(
                    f"kernel: padding='reflect' needs a kernel smaller than about twice the image "
                    f"{(h, w)}, got {(kh, kw)}"
                )
        return torch.Size((b, c, h, w))

    # -- the operator -----------------------------------------------------------------

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        k = self._check_image(x, "x")
        self.output_shape(x.shape)
        if self.padding == "circular" and self._use_fft():
            return apply_spectrum(x, self._spectrum(x, x.shape[-2:], centred=True))
        if self.padding != "valid":
            x = self._pad(x, *self._pads(*k.shape[-2:]))
        return self._valid_conv(x, k, transpose=False)

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        k = self._check_image(y, "y")
        if self.padding == "circular" and self._use_fft():
            return apply_spectrum(y, self._spectrum(y, y.shape[-2:], centred=True).conj())
        if self.padding == "valid":
            return self._valid_conv(y, k, transpose=True)
        pads = self._pads(*k.shape[-2:])
        return self._pad_adjoint(self._valid_conv(y, k, transpose=True), *pads)

    def _valid_conv(self, x: Tensor, k: Tensor, *, transpose: bool) -> Tensor:
        """Valid convolution (or its adjoint): direct for small kernels, FFT for large ones.

        By FFT: on the input's grid, a circular convolution with the kernel at the origin
        equals the valid convolution on the window ``[kh-1:, kw-1:]``, where no tap wraps
        around; the adjoint zero-extends to that grid and correlates (conjugate spectrum).
        """
        if not self._use_fft():
            return _conv(x, k, transpose=transpose)
        kh, kw = k.shape[-2:]
        if not transpose:
            full = apply_spectrum(x, self._spectrum(x, x.shape[-2:], centred=False))
            # a copy, not a view: a view would keep the whole grid alive wherever it is kept
            return full[..., kh - 1 :, kw - 1 :].contiguous()
        extended = F.pad(x, (kw - 1, 0, kh - 1, 0))
        return apply_spectrum(
            extended, self._spectrum(x, extended.shape[-2:], centred=False).conj()
        )

    # -- Fourier fast paths -----------------------------------------------------------

    def _spectrum(self, like: Tensor, grid, *, centred: bool) -> Tensor:
        """The kernel's DFT on ``grid``, in ``like``'s precision (half spectrum if real).

        Kept between calls while the kernel is the same tensor at the same version and no
        graph through it is being built (a CG solve calls this twice per iteration; at
        small images building the spectrum cost as much as using it)."""
        k = self.kernel
        real = like.real.dtype if like.is_complex() else like.dtype
        key = (tuple(grid), centred, like.is_complex(), real, like.device)
        cacheable = not (torch.is_grad_enabled() and k.requires_grad)
        cache = self.__dict__.get("_spectra")
        fresh = cache is not None and cache[0]() is k and cache[1] == k._version
        if cacheable and fresh and key in cache[2]:
            return cache[2][key]
        k4 = self._kernel4d().to(real)
        origin = (k4.shape[-2] // 2, k4.shape[-1] // 2) if centred else (0, 0)
        spectrum = kernel_spectrum(k4, grid, origin, real=not like.is_complex())
        if cacheable:
            if not fresh:
                cache = (weakref.ref(k), k._version, {})
                # not through nn.Module.__setattr__: a private cache, never state
                self.__dict__["_spectra"] = cache
            if len(cache[2]) >= 8:  # many grids (varying image sizes): keep the latest
                cache[2].clear()
            cache[2][key] = spectrum
        return spectrum

    def _use_fft(self) -> bool:
        if self.fft == "auto":
            return self.kernel.shape[-2] * self.kernel.shape[-1] >= self.FFT_MIN_TAPS
        return bool(self.fft)

    def normal(self, x: Tensor) -> Tensor:
        """``A^H A x``; by FFT for circular padding as one multiplier ``|K_hat|^2`` (two
        FFTs instead of four), and for valid padding as ``K_hat^H W K_hat`` with ``W`` the
        window of valid outputs, without cropping and re-padding in between."""
        if not self._use_fft() or self.padding not in ("circular", "valid"):
            return super().normal(x)
        self._check_image(x, "x")
        if self.padding == "circular":
            return apply_spectrum(x, self._spectrum(x, x.shape[-2:], centred=True).abs() ** 2)
        self.output_shape(x.shape)
        spectrum = self._spectrum(x, x.shape[-2:], centred=False)
        kh, kw = self.kernel.shape[-2:]
        full = apply_spectrum(x, spectrum)
        if torch.is_grad_enabled():  # out of place: autograd needs the intermediate
            full = F.pad(full[..., kh - 1 :, kw - 1 :], (kw - 1, 0, kh - 1, 0))
        else:  # the outputs that wrap around are the ones "valid" drops
            full[..., : kh - 1, :] = 0
            full[..., :, : kw - 1] = 0
        return apply_spectrum(full, spectrum.conj())

    #: CG's ``"auto"`` preconditioner per padding, where it cuts the iterations by more
    #: than its cost, as measured by ``benchmarks.cg_floor`` (the table is in
    #: ``docs/performance.md``): the Fourier one is the exact inverse for circular
    #: padding; the boundary one (two FFTs and three products per iteration) cuts the
    #: iterations of "valid" by 2-3x and those of "zeros" by 1.5-2.5x at gamma >= 10 (more
    #: than the Fourier one), and costs no more at gamma = 1. For "reflect" it pays only
    #: at large gamma (31 vs 53 iterations at gamma 100, 6 vs 7 at 1) and for "replicate"
    #: nothing does: no preconditioner there.
    AUTO_PRECONDITIONER = {"circular": "fourier", "zeros": "boundary", "valid": "boundary"}

    #: exponent ``p`` of the boundary preconditioner's weight ``w = coverage^p``, measured
    #: on the seed problem (``benchmarks.cg_floor``): smaller ``p`` trusts the circulant
    #: model further into the border band.
    BOUNDARY_POWER = 0.25

    def preconditioner(self, gamma: Tensor):
        """CG's ``"auto"`` choice, per padding from ``AUTO_PRECONDITIONER``:
        :meth:`fourier_preconditioner`, :meth:`boundary_preconditioner` or ``None``."""
        choice = self.AUTO_PRECONDITIONER.get(self.padding)
        if choice == "fourier":
            return self.fourier_preconditioner(gamma)
        if choice == "boundary":
            return self.boundary_preconditioner(gamma)
        return None

    def fourier_preconditioner(self, gamma: Tensor):
        """``r -> F^-1 (|K_hat|^2 + 1/gamma)^-1 F r`` on the image grid: exact for circular
        padding, the circulant approximation of ``A^H A + I/gamma`` otherwise. ``None``
        when gamma varies over pixels (no longer diagonal in Fourier). Use it with any
        padding through ``CG(preconditioner=lambda op, g: op.fourier_preconditioner(g))``."""
        gamma = torch.as_tensor(gamma)
        if gamma.ndim >= 2 and gamma.shape[-2:] != (1, 1):
            return None
        cache: dict = {}

        def apply(r: Tensor) -> Tensor:
            key = (tuple(r.shape), r.dtype, r.device)
            if key not in cache:
                spectrum = self._spectrum(r, r.shape[-2:], centred=True)
                cache.clear()
                cache[key] = 1 / (spectrum.abs() ** 2 + 1 / gamma.to(spectrum.real.dtype))
            return apply_spectrum(r, cache[key])

        return apply

    def boundary_preconditioner(self, gamma: Tensor, *, power: float | None = None):
        """``r -> w^1/2 P (w^1/2 r) + gamma (1 - w) r``, with ``P`` the Fourier preconditioner
        and ``w = coverage^power`` (:meth:`coverage`, ``power`` default ``BOUNDARY_POWER``).

        Where the measurement sees a pixel fully (``w = 1``) this is the circulant inverse;
        where it does not see it at all (``w = 0``, the corners of a "valid" blur) the
        system is ``I / gamma`` there and the preconditioner is its inverse, ``gamma``; in
        the border band between, a blend. A sum of two positive semi-definite terms whose
        null spaces meet only at zero: symmetric positive definite for any ``w`` in
        ``[0, 1]``. ``None`` when gamma varies over pixels (as for the Fourier one)."""
        fourier = self.fourier_preconditioner(gamma)
        if fourier is None:
            return None
        power = self.BOUNDARY_POWER if power is None else power
        gamma = torch.as_tensor(gamma)
        cache: dict = {}

        def apply(r: Tensor) -> Tensor:
            key = (tuple(r.shape), r.dtype, r.device)
            if key not in cache:
                real = r.real.dtype if r.is_complex() else r.dtype
                # floored at the dtype's tiniest positive number: a kernel with zero taps
                # can leave pixels unseen, and under autograd ("unroll") w^power and its
                # square root need a finite derivative there
                coverage = self.coverage(r.shape[-2:], dtype=real, device=r.device)
                w = coverage.clamp_min(torch.finfo(real).tiny) ** power
                cache.clear()
                cache[key] = (w.sqrt(), gamma.to(real) * (1 - w))
            root, rest = cache[key]
            return root * fourier(root * r) + rest * r

        return apply

    def coverage(self, grid, *, dtype=None, device=None) -> Tensor:
        """How fully the measurement sees each pixel of an image of ``grid = (H, W)``:
        ``diag(A^T A) / ||k||^2``, clipped to ``[0, 1]``, shape ``(Bk, Ck, H, W)``.

        ``diag(A^T A)_j`` sums the squared taps over the outputs that read pixel ``j``
        (exact for "valid", "zeros" and "circular", where no output reads a pixel twice;
        for "reflect" and "replicate" the sum of squares, which is at least ``||k||^2``
        wherever all taps land, so the clip gives 1 there). 1 in the interior; for "valid",
        falls towards 0 in a border band as wide as the kernel."""
        k = self._kernel4d().to(dtype=dtype or self.kernel.dtype, device=device)
        h, w = grid
        kh, kw = k.shape[-2:]
        squared = k * k
        out = self.output_shape((1, 1, h, w))[-2:]
        ones = squared.new_ones((*k.shape[:2], *out))
        if self.padding == "circular":
            diag = ones[..., :h, :w] * squared.sum((-2, -1), keepdim=True)
        elif self.padding == "valid":
            diag = _conv(ones, squared, transpose=True)
        else:
            diag = self._pad_adjoint(_conv(ones, squared, transpose=True), *self._pads(kh, kw))
        total = squared.sum((-2, -1), keepdim=True)
        return (diag / total).clamp(0, 1)

    def _closed_form_prox(self, z: Tensor, y: Tensor, gamma: Tensor) -> Tensor | None:
        """Circular padding and a gamma constant over each image: the closed form
        ``F^-1 [(conj(K_hat) F y + F z / gamma) / (|K_hat|^2 + 1/gamma)]``; otherwise
        ``None`` (the iterative solve)."""
        if self.padding != "circular" or (gamma.ndim >= 2 and gamma.shape[-2:] != (1, 1)):
            return None
        real = not z.is_complex()
        spectrum = self._spectrum(z, z.shape[-2:], centred=True)
        fft = torch.fft.rfft2 if real else torch.fft.fft2
        numerator = spectrum.conj() * fft(y) + fft(z) / gamma
        return fourier_solve(numerator, spectrum.abs() ** 2 + 1 / gamma, z.shape[-2:], real=real)

    def _pad(self, x: Tensor, top: int, bottom: int, left: int, right: int) -> Tensor:
        if self.padding == "zeros":
            return F.pad(x, (left, right, top, bottom))
        h, w = x.shape[-2:]
        rows = _pad_index(h, top, bottom, self.padding, x.device)
        cols = _pad_index(w, left, right, self.padding, x.device)
        return x.index_select(-2, rows).index_select(-1, cols)

    def _pad_adjoint(self, x: Tensor, top: int, bottom: int, left: int, right: int) -> Tensor:
        hp, wp = x.shape[-2:]
        h, w = hp - top - bottom, wp - left - right
        if self.padding == "zeros":
            return x[..., top : top + h, left : left + w]
        rows = _pad_index(h, top, bottom, self.padding, x.device)
        cols = _pad_index(w, left, right, self.padding, x.device)
        x = x.new_zeros((*x.shape[:-1], w)).index_add(-1, cols, x)
        return x.new_zeros((*x.shape[:-2], h, w)).index_add(-2, rows, x)

    def extra_repr(self) -> str:
        return f"kernel={tuple(self.kernel.shape)}, padding={self.padding!r}"


def _check_kernel(kernel) -> None:
    if not isinstance(kernel, Tensor):
        raise ValueError(f"kernel: expected a tensor, got {type(kernel).__name__}")
    if kernel.ndim not in (2, 4) or kernel.shape[-1] < 1 or kernel.shape[-2] < 1:
        raise ValueError(
            f"kernel: expected shape (kh, kw) or (B, C, kh, kw), got {tuple(kernel.shape)}"
        )
    if not kernel.is_floating_point():
        raise ValueError(f"kernel: expected a real floating tensor, got dtype {kernel.dtype}")


def _conv(x: Tensor, k: Tensor, *, transpose: bool) -> Tensor:
    """Valid true convolution of each (sample, channel) plane with its kernel, or its adjoint."""
    if x.is_complex():
        return torch.complex(
            _conv(x.real, k, transpose=transpose), _conv(x.imag, k, transpose=transpose)
        )
    b, c, h, w = x.shape
    bk, ck, kh, kw = k.shape
    # conv2d is a cross-correlation: flipping the kernel makes it a convolution. The
    # adjoint is the full cross-correlation with the unflipped kernel (conv2d on the
    # zero-extended input: much faster on CPU than conv_transpose2d).
    weight = k.to(x.dtype) if transpose else k.flip(-2, -1).to(x.dtype)
    if transpose:
        x = F.pad(x, (kw - 1, kw - 1, kh - 1, kh - 1))
        h, w = x.shape[-2:]
    if bk == 1 and ck == 1:
        out = F.conv2d(x.reshape(b * c, 1, h, w), weight)
    else:
        weight = weight.expand(b, c, kh, kw).reshape(b * c, 1, kh, kw)
        out = F.conv2d(x.reshape(1, b * c, h, w), weight, groups=b * c)
    return out.reshape(b, c, *out.shape[-2:])
