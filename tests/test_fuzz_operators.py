"""Property-based tests of the operators: ``Blur`` in every padding (and FFT mode) and
``MatrixOperator``, over random shapes, dtypes, kernels and batch sizes.

Each example is valid or carries one planted fault, and the test knows which: a valid
one must compute ``A``, ``A^H`` and ``A^H A`` that match an independent float64 reference
(``tests/operators.py``: NumPy, tap by tap, or the matrix product), a faulty one must be
refused with the error for that fault (``ValueError`` for a wrong value, the argument at
fault named first); never another exception, never NaN from finite input.

Tolerances: the kernels are non-negative and sum to 1, so every output of ``A`` is a
convex combination of inputs and ``||A||_2 <= 1``. A sum of ``t`` products in precision
``eps`` is off by at most ``t * eps`` times the sum of the magnitudes (Higham, the
``gamma_t`` bound), so ``||A x - (A x)_exact|| <= t eps ||x||`` up to a factor sqrt of
the output size; FFTs add ``O(eps log N)``. We allow ``8 (t + log2 N) eps ||x||`` (real) and
twice that for complex data, whose real and imaginary parts are two such sums.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unrolled.linalg import MatrixOperator
from unrolled.physics import PADDINGS, Blur

from .operators import blur_reference

FLOATS = (torch.float32, torch.float64)
DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128)
REAL_OF = {
    torch.float32: torch.float32,
    torch.float64: torch.float64,
    torch.complex64: torch.float32,
    torch.complex128: torch.float64,
}
WIDE = {torch.float32: torch.float64, torch.complex64: torch.complex128}

#: outcomes of every fuzzed call in this module, reported at the end (run with -s)
OUTCOMES: Counter = Counter()


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    print(f"\n[fuzz operators] {sum(OUTCOMES.values())} examples: {dict(OUTCOMES)}")


#: The error for an argument of the wrong type (a non-tensor, a bool or a string where a
#: number or a tensor is asked for), by the convention of ``unrolled._validation``; a
#: tensor of the wrong dtype or shape is a wrong value, a ValueError.
TYPE_FAULT_ERROR = TypeError


def expect_refusal(call, error: type[Exception], argument: str, kind: str, outcomes=OUTCOMES):
    """``call()`` must raise exactly ``error`` with a message that starts with the argument."""
    try:
        call()
    except Exception as err:  # noqa: BLE001 - checked below
        assert type(err) is error, f"expected {error.__name__} naming {argument}, got {err!r}"
        assert str(err).startswith(f"{argument}:"), f"expected {argument!r} first: {err}"
        outcomes[f"{kind}: {error.__name__}"] += 1
        return
    raise AssertionError(f"{kind}: the fault was not refused (expected {error.__name__})")


def eps(dtype: torch.dtype) -> float:
    return torch.finfo(REAL_OF[dtype]).eps


def rel_to(err: torch.Tensor, scale: torch.Tensor) -> float:
    s = float(scale)
    return float(err) / s if s > 0 else float(err)


@st.composite
def blur_case(draw):
    b = draw(st.integers(1, 3))
    c = draw(st.integers(1, 2))
    h, w = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    kh, kw = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    form = draw(st.sampled_from(["2d", "4d-shared", "4d-per-sample", "4d-wrong-batch"]))
    kshape = {
        "2d": (kh, kw),
        "4d-shared": (1, draw(st.sampled_from([1, c])), kh, kw),
        "4d-per-sample": (b, draw(st.sampled_from([1, c])), kh, kw),
        "4d-wrong-batch": (b + 1, c + 1, kh, kw),
    }[form]
    return dict(
        shape=(b, c, h, w),
        kshape=kshape,
        kdtype=draw(st.sampled_from(FLOATS)),
        dtype=draw(st.sampled_from(DTYPES)),
        padding=draw(st.sampled_from(PADDINGS)),
        fft=draw(st.sampled_from([True, False, "auto"])),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def random_kernel(shape, dtype, g):
    k = torch.rand(shape, dtype=torch.float64, generator=g) + 0.05
    return (k / k.sum(dim=(-2, -1), keepdim=True)).to(dtype)


def random_tensor(shape, dtype, g):
    if dtype.is_complex:
        return torch.randn(shape, dtype=dtype, generator=g)
    return torch.randn(shape, dtype=dtype, generator=g)


def blur_fault(case) -> str | None:
    """What is wrong with a blur case, if anything (the library must refuse it)."""
    b, c, h, w = case["shape"]
    kshape = case["kshape"]
    kh, kw = kshape[-2:]
    if len(kshape) == 4 and (kshape[0] not in (1, b) or kshape[1] not in (1, c)):
        return "kernel batch or channels"
    if case["padding"] == "valid" and (kh > h or kw > w):
        return "kernel larger than the image"
    if case["padding"] == "reflect" and (kh // 2 > h - 1 or kw // 2 > w - 1):
        return "kernel too large to reflect"
    return None


@settings(max_examples=140, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=blur_case())
def test_blur_matches_its_reference_or_refuses_the_fault(case):
    g = torch.Generator().manual_seed(case["seed"])
    kernel = random_kernel(case["kshape"], case["kdtype"], g)
    dtype = case["dtype"]
    x = random_tensor(case["shape"], dtype, g)
    op = Blur(kernel, padding=case["padding"], fft=case["fft"])
    fault = blur_fault(case)
    if fault is not None:
        # Every geometry fault is the kernel's: it does not fit the image.
        expect_refusal(lambda: op.A(x), ValueError, "kernel", f"blur refused ({fault})")
        return
    ax = op.A(x)
    y = random_tensor(ax.shape, dtype, g)
    aty = op.A_adjoint(y)
    nx = op.normal(x)
    assert ax.dtype == aty.dtype == nx.dtype == dtype
    assert aty.shape == x.shape and nx.shape == x.shape
    assert ax.shape == op.output_shape(x.shape)
    for t in (ax, aty, nx):
        assert torch.isfinite(t).all(), "NaN/inf from finite input"

    # The truth: the kernel as rounded to its dtype, applied tap by tap in float64.
    k64 = kernel.double().numpy()
    forward = blur_reference(k64, case["padding"], adjoint=False)
    adjoint = blur_reference(k64, case["padding"], adjoint=True)
    wide = torch.complex128 if dtype.is_complex else torch.float64
    xv, yv = x.to(wide).numpy(), y.to(wide).numpy()
    taps = kernel.shape[-1] * kernel.shape[-2]
    # The kernel's own rounding to float32 moves A by up to taps * eps32 too.
    k_eps = torch.finfo(case["kdtype"]).eps
    bound = 8 * (taps + math.log2(x[0].numel() + 1)) * (eps(dtype) + k_eps)
    bound *= 2 if dtype.is_complex else 1

    def off(got, want, scale):
        return float(np.linalg.norm(got.to(wide).numpy() - want)) / max(
            float(np.linalg.norm(scale)), 1e-300
        )

    assert off(ax, forward(xv), xv) <= bound
    assert off(aty, adjoint(yv), yv) <= bound
    # A^H A: two applications, so twice the bound.
    assert off(nx, adjoint(forward(xv)), xv) <= 2 * bound
    OUTCOMES["blur: ok"] += 1


@st.composite
def matrix_case(draw):
    b = draw(st.integers(1, 3))
    m, n = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    batched = draw(st.sampled_from(["shared", "per-sample", "wrong-batch"]))
    mshape = {"shared": (m, n), "per-sample": (b, m, n), "wrong-batch": (b + 1, m, n)}[batched]
    x_cols = draw(st.sampled_from([n, n, n + 1]))
    mdtype = draw(st.sampled_from(DTYPES))
    return dict(
        b=b,
        mshape=mshape,
        mdtype=mdtype,
        dtype=draw(st.one_of(st.just(mdtype), st.sampled_from(DTYPES))),
        xshape=draw(st.sampled_from([(b, x_cols)] * 4 + [(b, 1, x_cols), (x_cols,)])),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


@settings(max_examples=120, deadline=None)
@given(case=matrix_case())
def test_matrix_operator_matches_dense_or_refuses_the_fault(case):
    g = torch.Generator().manual_seed(case["seed"])
    matrix = random_tensor(case["mshape"], case["mdtype"], g)
    x = random_tensor(case["xshape"], case["dtype"], g)
    op = MatrixOperator(matrix)
    m_dtype, x_dtype = case["mdtype"], case["dtype"]
    # x must be (B, n), B matching a per-sample matrix, in the matrix's dtype (or complex
    # of the same precision as a real matrix).
    same_kind = x_dtype == m_dtype or (
        not m_dtype.is_complex and x_dtype.is_complex and REAL_OF[x_dtype] == m_dtype
    )
    fits = (
        len(case["xshape"]) == 2
        and case["xshape"][1] == matrix.shape[-1]
        and (matrix.ndim == 2 or matrix.shape[0] == case["b"])
    )
    if not (same_kind and fits):
        expect_refusal(lambda: op.A(x), ValueError, "x", "matrix refused")
        return
    ax = op.A(x)
    y = random_tensor(ax.shape, ax.dtype, g)
    aty = op.A_adjoint(y)
    assert torch.isfinite(ax).all() and torch.isfinite(aty).all()
    assert ax.dtype == aty.dtype == x.dtype
    wide = torch.complex128
    mw = matrix.to(wide)
    if mw.ndim == 2:
        mw = mw.expand(case["b"], *mw.shape)
    exact_ax = (mw @ x.to(wide).unsqueeze(-1)).squeeze(-1)
    exact_aty = (mw.conj().transpose(-2, -1) @ y.to(wide).unsqueeze(-1)).squeeze(-1)
    n = matrix.shape[-1]
    # A dot product of n terms: n eps relative to ||M|| ||x|| (Frobenius bounds it).
    e = max(eps(case["dtype"]), eps(case["mdtype"]))
    bound = 4 * (n + matrix.shape[-2]) * e
    scale_x = float(mw.norm() * x.to(wide).norm())
    scale_y = float(mw.norm() * y.to(wide).norm())
    assert float((ax.to(wide) - exact_ax).norm()) <= bound * scale_x
    assert float((aty.to(wide) - exact_aty).norm()) <= bound * scale_y
    OUTCOMES["matrix: ok"] += 1


BAD_KERNELS = [
    ("a list", [[0.5, 0.5]]),
    ("integer", torch.ones(3, 3, dtype=torch.int64)),
    ("complex", torch.ones(3, 3, dtype=torch.complex64)),
    ("3-d", torch.ones(1, 3, 3)),
    ("empty", torch.ones(0, 3)),
    ("bool", torch.ones(3, 3, dtype=torch.bool)),
]


@pytest.mark.parametrize("what, kernel", BAD_KERNELS, ids=[b[0] for b in BAD_KERNELS])
def test_bad_kernels_are_refused_at_construction(what, kernel):
    # Not a tensor is the wrong type; a tensor of the wrong dtype or shape a wrong value.
    error = ValueError if isinstance(kernel, torch.Tensor) else TYPE_FAULT_ERROR
    expect_refusal(lambda: Blur(kernel), error, "kernel", "bad kernel")


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(padding="mirror"), ValueError, "^padding: expected one of"),
        (dict(padding=None), TYPE_FAULT_ERROR, "^padding: expected one of .*, got None$"),
        (dict(fft="yes"), ValueError, "^fft: expected True, False or 'auto', got 'yes'$"),
        (dict(fft=1), TYPE_FAULT_ERROR, "^fft: expected True, False or 'auto', got 1$"),
        (dict(noise="gaussian"), TYPE_FAULT_ERROR, "^noise: expected a noise module or None"),
    ],
)
def test_bad_blur_options_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match) as raised:
        Blur(torch.ones(3, 3) / 9, **kwargs)
    assert type(raised.value) is error  # not a subclass, e.g. not a ValueError for a type
    OUTCOMES[f"bad option: {error.__name__}"] += 1


@pytest.mark.parametrize(
    "x",
    [torch.ones(4, 4), torch.ones(1, 1, 4, 4, dtype=torch.int32), "image", torch.ones(2, 1, 1)],
    ids=["2-d", "integer", "string", "3-d"],
)
def test_bad_images_are_refused(x):
    op = Blur(torch.ones(3, 3) / 9, padding="circular")
    error = TYPE_FAULT_ERROR if isinstance(x, str) else ValueError
    expect_refusal(lambda: op.A(x), error, "x", "bad image")
