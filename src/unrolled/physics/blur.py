"""2-D blur: the :class:`Blur` module, which holds and checks the kernel.

The convolution maths are plain functions in :mod:`unrolled.physics.convolution`
(``padding="valid"`` shrinks the output by ``kernel - 1``; ``"circular"``,
``"reflect"``, ``"replicate"`` and ``"zeros"`` extend the image first). The module checks
its kernel and each input once per call, and gives an iterative solve a normal operator
that checks nothing (:meth:`Blur.normal_map`), so no check runs inside CG.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .._validation import check_choice, check_instance, check_tensor
from .base import Physics
from .convolution import (
    PADDINGS,
    blur,
    blur_adjoint,
    blur_normal,
    fft_grid,
    kernel_pads,
    pad_adjoint,
    valid_conv_adjoint,
    valid_window,
)
from .fourier import apply_spectrum, kernel_spectrum
from .fourier import spectral_solve as fourier_solve
from .separable import SEPARABLE_MAX_SIDE, SeparableInverse, rank_one_factors

__all__ = ["Blur", "PADDINGS"]


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

    Fast paths: convolutions by FFT (kernel spectra kept between calls); for a
    separable kernel, the exact inverse of the prox's system as CG's preconditioner
    (:meth:`separable_preconditioner`, any padding); otherwise two CG preconditioners,
    the Fourier one ``(|K_hat|^2 + 1/gamma)^-1`` and the boundary one
    (:meth:`boundary_preconditioner`), picked per padding by ``AUTO_PRECONDITIONER``;
    and, for ``"circular"``, the prox in closed form by FFT (no iterations,
    differentiable by autograd).
    """

    #: kernels with at least this many taps convolve by FFT under ``fft="auto"``
    FFT_MIN_TAPS = 16

    def __init__(self, kernel: Tensor, padding: str = "valid", noise=None, fft="auto"):
        super().__init__(noise=noise)
        check_choice("padding", padding, PADDINGS)
        _check_fft(fft)
        self.padding = padding
        self.fft = fft
        # what _kept keeps, shared with the shallow copies a prox takes (not state: never
        # saved, and rebuilt from the kernel whenever it changes)
        self.__dict__["_kept_store"] = {}
        _check_kernel(kernel)
        if isinstance(kernel, torch.nn.Parameter):
            self.kernel = kernel
        else:
            self.register_buffer("kernel", kernel)

    # -- checks, once per call -----------------------------------------------------

    def _kernel4d(self) -> Tensor:
        k = self.kernel
        return k[None, None] if k.ndim == 2 else k

    def _check_image(self, x: Tensor, name: str) -> Tensor:
        """Check ``x`` and the kernel against each other; return the kernel as 4-D."""
        check_tensor(name, x, "a tensor of shape (B, C, H, W)")
        if x.ndim != 4:
            raise ValueError(
                f"{name}: expected a tensor of shape (B, C, H, W), got {tuple(x.shape)}"
            )
        if not (x.is_floating_point() or x.is_complex()):
            # conv2d would cast the kernel to integers (mostly zeros): a silent wrong answer.
            raise ValueError(f"{name}: expected a floating or complex tensor, got {x.dtype}")
        _check_kernel(self.kernel)  # it may have been reassigned since construction
        k = self._kernel4d()
        bk, ck = k.shape[:2]
        b, c = x.shape[:2]
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
            top, bottom, left, right = kernel_pads(kh, kw)
            if max(top, bottom) > h - 1 or max(left, right) > w - 1:
                raise ValueError(
                    f"kernel: padding='reflect' needs a kernel smaller than about twice the image "
                    f"{(h, w)}, got {(kh, kw)}"
                )
        return torch.Size((b, c, h, w))

    # -- the operator: checks here, maths in unrolled.physics.convolution ------------

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        k = self._check_image(x, "x")
        self.output_shape(x.shape)
        return blur(x, k, self.padding, self._spectrum_for(x, x.shape[-2:]))

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        k = self._check_image(y, "y")
        h, w = y.shape[-2:]
        kh, kw = k.shape[-2:]
        image = (h + kh - 1, w + kw - 1) if self.padding == "valid" else (h, w)
        return blur_adjoint(y, k, self.padding, self._spectrum_for(y, image))

    def normal(self, x: Tensor) -> Tensor:
        """``A^H A x`` (see :func:`~unrolled.physics.convolution.blur_normal`)."""
        return self.normal_map(x)(x)

    def normal_map(self, like: Tensor) -> Callable[[Tensor], Tensor]:
        """``x -> A^H A x`` for inputs like ``like``, checked once here: the kernel and,
        on the FFT path, its spectrum are fixed for the whole solve. A kernel of rank one
        to ``like``'s rounding, on an image of at most ``SEPARABLE_MAX_SIDE`` a side,
        takes two matrix products instead (:mod:`unrolled.physics.separable`)."""
        k = self._check_image(like, "x")
        self.output_shape(like.shape)
        real = like.real.dtype if like.is_complex() else like.dtype
        separable = self._separable(like, max_ratio=torch.finfo(real).eps)
        if separable is not None:
            return separable.normal
        spectrum = self._spectrum_for(like, like.shape[-2:])
        padding = self.padding
        extras = {}
        if spectrum is not None and padding == "valid":
            # made once (kept with the spectrum), not once per CG iteration
            grid = tuple(like.shape[-2:])
            key = (grid, tuple(k.shape[-2:]), like.dtype, like.device)
            extras["adjoint"] = self._kept(
                ("adjoint", *key), lambda: spectrum.conj().resolve_conj()
            )
            extras["window"] = self._kept(
                ("window", *key),
                lambda: valid_window(grid, k.shape[-2:], dtype=like.dtype, device=like.device),
            )

        def normal(x: Tensor) -> Tensor:
            return blur_normal(x, k, padding, spectrum, **extras)

        return normal

    def _separable(self, like: Tensor, *, max_ratio: float):
        """The separable route of :meth:`normal_map` for images like ``like``, or ``None``
        where it is not taken: circular padding (the FFT is exact and cheaper there), a
        kernel that requires grad, one further from rank one than ``max_ratio``, or an
        image larger than ``SEPARABLE_MAX_SIDE``."""
        if self.padding == "circular" or self.kernel.requires_grad:
            return None
        if max(like.shape[-2:]) > SEPARABLE_MAX_SIDE:
            return None
        factors = self._rank_one()
        if factors is None or factors.ratio > max_ratio:
            return None
        return self._separable_inverse(like)

    def _rank_one(self):
        return self._kept(("rank one",), lambda: rank_one_factors(self._kernel4d()))

    def _separable_inverse(self, like: Tensor) -> SeparableInverse:
        """The :class:`~unrolled.physics.separable.SeparableInverse` for images like
        ``like`` (a kernel of rank one), kept between calls."""
        factors = self._rank_one()
        key = (tuple(like.shape[-2:]), like.dtype, like.device)
        return self._kept(
            ("separable", *key),
            lambda: SeparableInverse(
                factors.u, factors.v, self.padding, key[0], dtype=like.dtype, device=like.device
            ),
        )

    # -- Fourier fast paths -----------------------------------------------------------

    def _spectrum(self, like: Tensor, grid, *, centred: bool) -> Tensor:
        """The kernel's DFT on ``grid``, in ``like``'s precision (half spectrum if real).

        Kept between calls (:meth:`_kept`): a CG solve calls this twice per iteration; at
        small images building the spectrum cost as much as using it."""
        real = like.real.dtype if like.is_complex() else like.dtype
        key = ("spectrum", tuple(grid), centred, like.is_complex(), real, like.device)

        def build():
            k4 = self._kernel4d().to(real)
            origin = (k4.shape[-2] // 2, k4.shape[-1] // 2) if centred else (0, 0)
            return kernel_spectrum(k4, grid, origin, real=not like.is_complex())

        return self._kept(key, build)

    def _kept(self, key, build):
        """``build()``, kept between calls while the kernel holds the same data (the same
        memory, at the same version, as a live tensor it was built from) and no graph
        through it is being built: what depends on the kernel only (spectra, the
        preconditioners' weights and factors) is made once, not once per call or per
        solve.

        The store is shared with the shallow copies a prox takes of the operator (whose
        kernel is the same tensor, or a detached view of it), so what they build is kept
        for the next call too."""
        k = self.kernel
        if torch.is_grad_enabled() and k.requires_grad:
            return build()
        store = self.__dict__.get("_kept_store")
        if store is None:  # made in __init__; a module built otherwise gets its own
            store = self.__dict__["_kept_store"] = {}
        identity = (k.data_ptr(), k.storage_offset(), tuple(k.shape), k.stride(), k.dtype, k.device)
        entry = store.get("entry")
        built_from = entry[1]() if entry is not None else None
        if (
            built_from is None
            or entry[0] != identity
            or built_from._version != entry[2]
            or k._version != entry[2]
        ):
            entry = (identity, weakref.ref(k), k._version, {})
            store["entry"] = entry
        values = entry[3]
        if key not in values:
            if len(values) >= 16:  # many grids (varying image sizes): keep the latest
                values.clear()
            values[key] = build()
        return values[key]

    def _use_fft(self) -> bool:
        if self.fft == "auto":
            return self.kernel.shape[-2] * self.kernel.shape[-1] >= self.FFT_MIN_TAPS
        return bool(self.fft)

    def _spectrum_for(self, like: Tensor, image_hw) -> Tensor | None:
        """The spectrum the convolution functions need for images of ``image_hw``, or
        ``None`` for the direct path."""
        if not self._use_fft():
            return None
        grid, centred = fft_grid(self.padding, image_hw, self.kernel.shape[-2:])
        return self._spectrum(like, grid, centred=centred)

    #: CG's ``"auto"`` preconditioner per padding for a kernel that is not separable
    #: (or is trained), where it cuts the iterations by more than its cost, as measured
    #: by ``benchmarks.cg_floor`` (the table is in ``docs/performance.md``): the Fourier
    #: one is the exact inverse for circular padding; the boundary one (two FFTs and
    #: three products per iteration) cuts the iterations of "valid" by 2-3x and those of
    #: "zeros" by 1.5-2.5x at gamma >= 10 (more than the Fourier one), and costs no more
    #: at gamma = 1. For "reflect" it pays only at large gamma (31 vs 53 iterations at
    #: gamma 100, 6 vs 7 at 1) and for "replicate" nothing does: no preconditioner there.
    #: A separable kernel takes :meth:`separable_preconditioner` with every padding but
    #: circular: it is exact (one or two iterations).
    AUTO_PRECONDITIONER = {"circular": "fourier", "zeros": "boundary", "valid": "boundary"}

    #: exponent ``p`` of the boundary preconditioner's weight ``w = coverage^p``, measured
    #: on the seed problem (``benchmarks.cg_floor``): smaller ``p`` trusts the circulant
    #: model further into the border band.
    BOUNDARY_POWER = 0.25

    def preconditioner(self, gamma: Tensor):
        """CG's ``"auto"`` choice: :meth:`separable_preconditioner` where it applies (not
        for circular padding, nor above ``SEPARABLE_MAX_SIDE`` a side), otherwise per
        padding from ``AUTO_PRECONDITIONER``: :meth:`fourier_preconditioner`,
        :meth:`boundary_preconditioner` or ``None``."""
        choice = self.AUTO_PRECONDITIONER.get(self.padding)
        if choice == "fourier":
            others = self.fourier_preconditioner(gamma)
        elif choice == "boundary":
            others = self.boundary_preconditioner(gamma)
        else:
            others = None
        separable = None if self.padding == "circular" else self.separable_preconditioner(gamma)
        if separable is None:
            return others

        def apply(r: Tensor) -> Tensor:
            if max(r.shape[-2:]) <= SEPARABLE_MAX_SIDE:
                return separable(r)
            return r if others is None else others(r)

        return apply

    def separable_preconditioner(self, gamma: Tensor):
        """``r -> (A^H A + I / gamma)^-1 r`` exactly, for a kernel of rank one (a Gaussian,
        a box, any ``outer(u, v)``), any padding and image size: the Kronecker structure
        of the blur (:mod:`unrolled.physics.separable`). CG with it stops after one or two
        iterations, at any gamma.

        ``None`` where it does not apply: a kernel of rank above one (to
        ``SEPARABLE_RTOL``), a kernel that requires grad (the factors are constants, so
        a gradient through the solve to the kernel would miss their part), or a gamma
        that varies over pixels. A gamma that requires grad is differentiated through."""
        gamma = torch.as_tensor(gamma)
        if self.kernel.requires_grad or (gamma.ndim >= 2 and gamma.shape[-2:] != (1, 1)):
            return None
        if self._rank_one() is None:
            return None
        cache: dict = {}

        def apply(r: Tensor) -> Tensor:
            key = (tuple(r.shape[-2:]), r.dtype, r.device)
            if key not in cache:
                inverse = self._separable_inverse(r)
                cache.clear()
                cache[key] = (inverse, inverse.inverse_diagonal(gamma))
            inverse, diagonal = cache[key]
            return inverse.apply(r, diagonal)

        return apply

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
                inverse = 1 / (spectrum.abs() ** 2 + 1 / gamma.to(spectrum.real.dtype))
                # complex already: a real multiplier is converted on every product
                cache[key] = inverse.to(spectrum.dtype)
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

                def weights():
                    # floored at the dtype's tiniest positive number: a kernel with zero
                    # taps can leave pixels unseen, and under autograd ("unroll") w^power
                    # and its square root need a finite derivative there
                    coverage = self.coverage(r.shape[-2:], dtype=real, device=r.device)
                    w = coverage.clamp_min(torch.finfo(real).tiny) ** power
                    return w.sqrt(), 1 - w

                # the weights depend on the kernel only: kept between solves
                key_w = ("boundary", tuple(r.shape[-2:]), power, real, r.device)
                root, unseen = self._kept(key_w, weights)
                cache.clear()
                cache[key] = (root, gamma.to(real) * unseen)
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
            diag = valid_conv_adjoint(ones, squared)
        else:
            diag = pad_adjoint(valid_conv_adjoint(ones, squared), kernel_pads(kh, kw), self.padding)
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

    def extra_repr(self) -> str:
        return f"kernel={tuple(self.kernel.shape)}, padding={self.padding!r}"


def _check_fft(fft) -> None:
    expected = "True, False or 'auto'"
    check_instance("fft", fft, (bool, str), expected)
    if isinstance(fft, str) and fft != "auto":
        raise ValueError(f"fft: expected {expected}, got {fft!r}")


def _check_kernel(kernel) -> None:
    check_tensor("kernel", kernel, "a tensor")
    if kernel.ndim not in (2, 4) or kernel.shape[-1] < 1 or kernel.shape[-2] < 1:
        raise ValueError(
            f"kernel: expected shape (kh, kw) or (B, C, kh, kw), got {tuple(kernel.shape)}"
        )
    if not kernel.is_floating_point():
        raise ValueError(f"kernel: expected a real floating tensor, got dtype {kernel.dtype}")
