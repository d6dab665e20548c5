"""A registry of operators with independent references, for the contract tests.

Each :class:`Case` builds one operator through the public API and carries its forward
and adjoint written again from the mathematics in NumPy, in float64 / complex128:
explicit DFT matrices (never an FFT routine of the library, nor ``fftshift``),
explicit loops over kernel taps, explicit index extension at the borders. An error
made consistently in the library's ``A`` and ``A^H`` (a missing conjugate, a flipped
kernel, an off-centre spectrum) then shows up as a mismatch with the reference.

A new operator joins the contract tests with one line in ``CASES``.

Conventions, as the physics modules document them:

* centred orthonormal DFT: frequency index ``k`` and pixel index ``n`` are measured from
  the centre ``N // 2``, ``F[k, n] = exp(-2 pi i (k - N//2)(n - N//2) / N) / sqrt(N)``;
* blur is a true convolution with its centre at ``(kh // 2, kw // 2)``:
  ``y[i, j] = sum_{m, n} k[m, n] x[i - m + kh // 2, j - n + kw // 2]`` (``"valid"``:
  ``x[i - m + kh - 1, j - n + kw - 1]``), the image extended by the padding mode;
* a ``(W,)`` mask is a pattern of columns, the same on every row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

import unrolled as ur

SEED = 20240611


@dataclass(frozen=True)
class Case:
    """One operator: how to build it, its input, and its NumPy reference."""

    name: str
    make: Callable[[], object]  #: the operator, through the public API
    shape: tuple[int, ...]  #: the input shape
    dtype: torch.dtype  #: the input dtype (float64 or complex128)
    forward: Callable[[np.ndarray], np.ndarray]  #: A x, from the mathematics
    adjoint: Callable[[np.ndarray], np.ndarray]  #: A^H y, from the mathematics
    square: bool = False  #: A maps the input space onto itself (A @ A is defined)


def rng(tag: str) -> np.random.Generator:
    """A generator seeded by the case name: every case draws the same data on every run."""
    return np.random.default_rng([SEED, *tag.encode()])


def random_array(shape, complex_: bool, g: np.random.Generator) -> np.ndarray:
    if complex_:
        return g.standard_normal(shape) + 1j * g.standard_normal(shape)
    return g.standard_normal(shape)


def as_tensor(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)


def matrix_of(apply: Callable[[np.ndarray], np.ndarray], shape, complex_: bool) -> np.ndarray:
    """The dense matrix of a NumPy map, column by column from the unit vectors."""
    n = int(np.prod(shape))
    columns = []
    for j in range(n):
        e = np.zeros(n, dtype=complex if complex_ else float)
        e[j] = 1
        columns.append(np.asarray(apply(e.reshape(shape))).reshape(-1))
    return np.stack(columns, axis=1)


# -- centred DFT ----------------------------------------------------------------------


def centred_dft(n: int) -> np.ndarray:
    """``F[k, p] = exp(-2 pi i (k - n//2)(p - n//2) / n) / sqrt(n)``, by the definition."""
    idx = np.arange(n) - n // 2
    return np.exp(-2j * np.pi * np.outer(idx, idx) / n) / np.sqrt(n)


def dft2(x: np.ndarray) -> np.ndarray:
    """The centred 2-D DFT of each ``(H, W)`` plane: ``F_H x F_W^T``."""
    fh, fw = centred_dft(x.shape[-2]), centred_dft(x.shape[-1])
    return np.einsum("ka,...ab,lb->...kl", fh, x, fw)


def idft2(k: np.ndarray) -> np.ndarray:
    """Its inverse, the conjugate transpose: ``F_H^H k conj(F_W)``."""
    fh, fw = centred_dft(k.shape[-2]), centred_dft(k.shape[-1])
    return np.einsum("ak,...kl,bl->...ab", fh.conj(), k, fw.conj())


def mask_planes(mask: np.ndarray, shape) -> np.ndarray:
    """A mask of shape ``(W,)``, ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)`` on ``shape``."""
    if mask.ndim == 1:
        mask = np.tile(mask, (shape[-2], 1))
    return np.broadcast_to(mask, shape)


# -- blur -----------------------------------------------------------------------------


def extend(i: np.ndarray, n: int, padding: str) -> np.ndarray:
    """The pixel each index ``i`` of the extended line reads (-1: a zero)."""
    if padding == "circular":
        return i % n
    if padding == "replicate":
        return np.clip(i, 0, n - 1)
    if padding == "reflect":  # about the edge pixels, which are not repeated (one bounce)
        i = np.abs(i)
        return np.where(i > n - 1, 2 * (n - 1) - i, i)
    return np.where((i >= 0) & (i < n), i, -1)  # "zeros" (and "valid", always inside)


def blur_plane(x: np.ndarray, k: np.ndarray, padding: str, *, adjoint: bool) -> np.ndarray:
    """One plane of the blur (or its adjoint), one kernel tap at a time:
    ``y[i, j] += k[m, n] x[r(i - m + ch), c(j - n + cw)]``, ``r, c`` the extensions."""
    kh, kw = k.shape
    valid = padding == "valid"
    if adjoint:  # x is a measurement: the image is as large as the blur's input
        h, w = (x.shape[0] + kh - 1, x.shape[1] + kw - 1) if valid else x.shape
    else:
        h, w = x.shape
    oh, ow = (h - kh + 1, w - kw + 1) if valid else (h, w)
    ch, cw = (kh - 1, kw - 1) if valid else (kh // 2, kw // 2)
    out = np.zeros((h, w) if adjoint else (oh, ow), dtype=np.result_type(x, k))
    i, j = np.arange(oh)[:, None], np.arange(ow)[None, :]
    for m in range(kh):
        for n in range(kw):
            r = np.broadcast_to(extend(i - m + ch, h, padding), (oh, ow))
            c = np.broadcast_to(extend(j - n + cw, w, padding), (oh, ow))
            inside = (r >= 0) & (c >= 0)
            if adjoint:  # the transpose scatters what the forward gathers
                np.add.at(out, (r[inside], c[inside]), k[m, n] * x[inside])
            else:
                out[inside] += k[m, n] * x[r[inside], c[inside]]
    return out


def blur_reference(kernel: np.ndarray, padding: str, *, adjoint: bool):
    """Blur of ``(B, C, H, W)`` with a ``(kh, kw)`` or ``(Bk, Ck, kh, kw)`` real kernel."""
    k4 = kernel if kernel.ndim == 4 else kernel[None, None]

    def apply(x: np.ndarray) -> np.ndarray:
        b, c = x.shape[:2]
        # a kernel of batch or channel size 1 is shared along that axis
        kernels = np.broadcast_to(k4, (b, c, *k4.shape[-2:]))
        planes = [
            [blur_plane(x[i, j], kernels[i, j], padding, adjoint=adjoint) for j in range(c)]
            for i in range(b)
        ]
        return np.array(planes)

    return apply


def blur_case(padding: str, fft, *, complex_: bool = False, per_sample: bool = False) -> Case:
    name = (
        f"blur-{padding}-fft{fft}"
        + ("-complex" if complex_ else "")
        + ("-per-sample" if per_sample else "")
    )
    g = rng(name)
    shape = (2, 2, 7, 6)
    # Asymmetric kernels of odd and even sides: a flipped or off-centre kernel differs.
    kernel = g.random((2, 1, 4, 3) if per_sample else (3, 4)) + 0.1
    return Case(
        name=name,
        make=lambda: ur.physics.Blur(as_tensor(kernel, torch.float64), padding=padding, fft=fft),
        shape=shape,
        dtype=torch.complex128 if complex_ else torch.float64,
        forward=blur_reference(kernel, padding, adjoint=False),
        adjoint=blur_reference(kernel, padding, adjoint=True),
        square=padding != "valid",
    )


# -- MRI --------------------------------------------------------------------------------


def mri_case(mask_kind: str) -> Case:
    name = f"mri-{mask_kind}"
    g = rng(name)
    shape = (2, 1, 5, 6)  # odd and even sides: fftshift and ifftshift differ on odd ones
    mask = {
        "soft": g.random(shape[-2:]),
        "lines": (g.random(shape[-1]) > 0.4).astype(float),
        "per-sample": g.random((2, 1, *shape[-2:])),
    }[mask_kind]
    m = mask_planes(mask, shape)
    return Case(
        name=name,
        make=lambda: ur.physics.MRI(as_tensor(mask, torch.float64)),
        shape=shape,
        dtype=torch.complex128,
        forward=lambda x: m * dft2(x),
        adjoint=lambda y: idft2(m * y),
        square=True,
    )


def multicoil_case(mask_kind: str) -> Case:
    name = f"multicoil-mri-{mask_kind}"
    g = rng(name)
    b, coils, h, w = 2, 3, 5, 4
    # coil maps shared by the batch, or one set per sample
    maps = random_array((b if mask_kind == "per-sample" else 1, coils, h, w), True, g) / 2
    mask = {
        "shared": g.random((h, w)),
        "per-coil": g.random((coils, h, w)),
        "per-sample": g.random((b, coils, h, w)),
    }[mask_kind]
    m = mask_planes(mask, (b, coils, h, w))

    def forward(x):  # (A x)_c = m_c F (S_c x)
        return m * dft2(maps * x)

    def adjoint(y):  # A^H y = sum_c conj(S_c) F^H (m_c y_c)
        return (maps.conj() * idft2(m * y)).sum(axis=1, keepdims=True)

    return Case(
        name=name,
        make=lambda: ur.physics.MultiCoilMRI(
            as_tensor(mask, torch.float64), as_tensor(maps, torch.complex128)
        ),
        shape=(b, 1, h, w),
        dtype=torch.complex128,
        forward=forward,
        adjoint=adjoint,
    )


# -- compressed sensing, inpainting, downsampling ---------------------------------------


def compressed_sensing_case(m: int, complex_: bool) -> Case:
    name = f"compressed-sensing-{m}" + ("-complex" if complex_ else "")
    g = rng(name)
    shape = (2, 1, 3, 4)
    size = 12
    matrix = random_array((m, size), complex_, g) / np.sqrt(m)
    dtype = torch.complex128 if complex_ else torch.float64
    return Case(
        name=name,
        make=lambda: ur.physics.CompressedSensing(
            m, shape[1:], matrix=as_tensor(matrix, dtype), dtype=dtype
        ),
        shape=shape,
        dtype=dtype,
        forward=lambda x: x.reshape(x.shape[0], -1) @ matrix.T,
        adjoint=lambda y: (y @ matrix.conj()).reshape(y.shape[0], *shape[1:]),
    )


def inpainting_case(complex_: bool) -> Case:
    name = "inpainting" + ("-complex" if complex_ else "")
    g = rng(name)
    shape = (2, 2, 4, 5)
    mask = random_array((2, 4, 5), complex_, g) if complex_ else (g.random((2, 4, 5)) > 0.3) * 1.0
    dtype = torch.complex128 if complex_ else torch.float64
    return Case(
        name=name,
        make=lambda: ur.physics.Inpainting(as_tensor(mask, dtype)),
        shape=shape,
        dtype=dtype,
        forward=lambda x: mask * x,
        adjoint=lambda y: mask.conj() * y,
        square=True,
    )


def downsampling_case(padding: str, complex_: bool = False, *, filtered: bool = True) -> Case:
    name = f"downsampling-{padding}" + ("-complex" if complex_ else "")
    name += "" if filtered else "-no-filter"
    g = rng(name)
    factor, shape = 2, (2, 1, 6, 8)
    kernel = g.random((3, 4)) + 0.1 if filtered else np.ones((1, 1))  # no filter: a delta
    blur = blur_reference(kernel, padding, adjoint=False)
    blur_adjoint = blur_reference(kernel, padding, adjoint=True)

    def adjoint(y):  # zero-filling upsampling, then the blur's adjoint
        up = np.zeros((*y.shape[:-2], factor * y.shape[-2], factor * y.shape[-1]), y.dtype)
        up[..., ::factor, ::factor] = y
        return blur_adjoint(up)

    return Case(
        name=name,
        make=lambda: ur.physics.Downsampling(
            factor, kernel=as_tensor(kernel, torch.float64) if filtered else None, padding=padding
        ),
        shape=shape,
        dtype=torch.complex128 if complex_ else torch.float64,
        forward=lambda x: blur(x)[..., ::factor, ::factor],
        adjoint=adjoint,
    )


CASES: list[Case] = [
    *(blur_case(p, fft) for p in ("circular", "valid") for fft in (True, False)),
    *(blur_case(p, False) for p in ("reflect", "replicate", "zeros")),
    blur_case("circular", True, complex_=True),
    blur_case("valid", True, complex_=True),
    blur_case("reflect", False, complex_=True),
    blur_case("circular", True, per_sample=True),
    blur_case("zeros", False, per_sample=True),
    mri_case("soft"),
    mri_case("lines"),
    mri_case("per-sample"),
    multicoil_case("shared"),
    multicoil_case("per-coil"),
    multicoil_case("per-sample"),
    compressed_sensing_case(5, complex_=False),
    compressed_sensing_case(20, complex_=False),
    compressed_sensing_case(7, complex_=True),
    inpainting_case(complex_=False),
    inpainting_case(complex_=True),
    downsampling_case("circular"),
    downsampling_case("circular", complex_=True),
    downsampling_case("reflect"),
    downsampling_case("circular", complex_=True, filtered=False),
]
