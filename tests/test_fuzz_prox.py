"""Property-based tests of the least-squares prox (every backward mode), CG settings and
the L2 fidelity, against dense float64 / complex128 solves.

Each example either returns a prox that solves the normal equations
``M h = A^H y + z / gamma``, ``M = A^H A + diag(1 / gamma)``, to the accuracy the dtype
allows, with the right gradient, or raises ``ValueError`` / ``TypeError`` naming the
argument; never another exception, never NaN from finite input.

Tolerances. CG stops when its recursive residual is below ``tol ||b||`` or stagnates at
the rounding floor; the true residual then differs from the recursive one by rounding,
about ``eps`` times ``cond(M) = lambda_max / lambda_min`` in relative terms, so we check
``||M h - b|| / ||b|| <= tol + 64 eps cond(M)`` against the dense ``M`` (the factor
covers the operator's own rounding, 8 t eps for t kernel taps, see
test_fuzz_operators). The solution error then follows from
``||h - h*|| <= ||M^-1|| ||M h - b||`` and ``||b|| <= ||M|| ||h*||``: relative error at
most ``cond(M)`` times the relative residual. The gradient with respect to ``z`` is
``M^-1 v / gamma``: another solve (implicit) or the derivative of the same truncated
solve (unroll, checkpoint), both within ``cond(M)`` times the solve's accuracy.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import unrolled as ur
from unrolled.linalg import MatrixOperator
from unrolled.linalg.prox import BACKWARD_MODES
from unrolled.physics import Blur
from unrolled.physics.blur import PADDINGS
from unrolled.testing import dense_matrix

from .test_fuzz_operators import DTYPES, eps, expect_clean_error

OUTCOMES: Counter = Counter()
TOL = {torch.float64: 1e-11, torch.float32: 1e-4}
GAMMA_OK = ("float", "0-d", "per-sample", "per-entry")
GAMMA_FAULTS = ("zero", "negative", "nan", "inf", "bool", "string", "complex", "wrong-shape")
Y_FAULTS = ("y-shape", "y-dtype", "y-nan", "y-int")


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    print(f"\n[fuzz prox] {sum(OUTCOMES.values())} examples: {dict(OUTCOMES)}")


def real_of(dtype):
    return torch.float64 if dtype in (torch.float64, torch.complex128) else torch.float32


def wide_of(dtype):
    return torch.complex128 if dtype.is_complex else torch.float64


@st.composite
def prox_case(draw):
    kind = draw(st.sampled_from(["blur", "blur", "matrix"]))
    b = draw(st.integers(1, 2))
    dtype = draw(st.sampled_from(DTYPES))
    if kind == "blur":
        shape = (b, draw(st.integers(1, 2)), draw(st.integers(2, 5)), draw(st.integers(2, 5)))
        extra = dict(
            padding=draw(st.sampled_from(PADDINGS)),
            ksize=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
            per_sample=draw(st.booleans()),
        )
    else:
        n = draw(st.integers(1, 6))
        shape = (b, n)
        extra = dict(m=draw(st.integers(1, 6)), per_sample=draw(st.booleans()))
    # One fault at a time (or none, about half the time), so each refusal has one cause.
    fault = draw(st.sampled_from([None] * 14 + list(GAMMA_FAULTS) + list(Y_FAULTS)))
    gamma_kind = fault if fault in GAMMA_FAULTS else draw(st.sampled_from(GAMMA_OK))
    return dict(
        kind=kind,
        shape=shape,
        dtype=dtype,
        gamma_kind=gamma_kind,
        gamma=draw(st.floats(-2, 2)),  # log10 of the step
        backward=draw(st.sampled_from(BACKWARD_MODES)),
        via=draw(st.sampled_from(["method", "function"])),
        y_fault=fault if fault in Y_FAULTS else None,
        fault=fault,
        seed=draw(st.integers(0, 2**31 - 1)),
        **extra,
    )


def make_operator(case, g):
    b = case["shape"][0]
    if case["kind"] == "blur":
        kshape = ((b, 1) if case["per_sample"] else ()) + case["ksize"]
        k = torch.rand(kshape, dtype=torch.float64, generator=g) + 0.05
        k = k / k.sum(dim=(-2, -1), keepdim=True)
        return Blur(k.to(real_of(case["dtype"])), padding=case["padding"])
    mshape = ((b,) if case["per_sample"] else ()) + (case["m"], case["shape"][1])
    m = torch.randn(mshape, dtype=torch.float64, generator=g) / case["shape"][1] ** 0.5
    return MatrixOperator(m.to(case["dtype"]))


def make_gamma(case, g):
    value = 10.0 ** case["gamma"]
    shape, b = case["shape"], case["shape"][0]
    rdt = real_of(case["dtype"])
    return {
        "float": value,
        "0-d": torch.tensor(value, dtype=rdt),
        "per-sample": value * (0.5 + torch.rand(b, generator=g, dtype=torch.float64)).to(rdt),
        "per-entry": value * (0.5 + torch.rand(shape, generator=g, dtype=torch.float64)).to(rdt),
        "zero": 0.0,
        "negative": -value,
        "nan": float("nan"),
        "inf": torch.tensor(float("inf")),
        "bool": True,
        "string": "1.0",
        "complex": torch.tensor(value + 0j),
        "wrong-shape": torch.full((b + 1, 7), value),  # 7: no dim of z (<= 6) broadcasts
    }[case["gamma_kind"]]


def randn(shape, dtype, g):
    return torch.randn(shape, dtype=wide_of(dtype), generator=g).to(dtype)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=prox_case())
def test_prox_solves_the_normal_equations_or_refuses(case):
    g = torch.Generator().manual_seed(case["seed"])
    dtype = case["dtype"]
    tol = TOL[real_of(dtype)]
    solver = ur.CG(max_iter=400, tol=tol, on_failure="ignore")
    try:
        op = make_operator(case, g)
        z = randn(case["shape"], dtype, g).requires_grad_(
            dtype in (torch.float64, torch.complex128)
        )
        y_shape = tuple(op.output_shape(case["shape"]))
        y = randn(y_shape, dtype, g)
        if case["y_fault"] == "y-shape":
            y = randn((y_shape[0] + 1, *y_shape[1:]), dtype, g)
        elif case["y_fault"] == "y-dtype":
            other = {torch.float32: torch.float64, torch.complex64: torch.complex128}
            y = y.to(other.get(dtype, torch.complex64 if dtype.is_complex else torch.float32))
        elif case["y_fault"] == "y-nan":
            y = y.clone()
            y.view(-1)[0] = float("nan")
        elif case["y_fault"] == "y-int":
            y = torch.ones(y_shape, dtype=torch.int64)
        gamma = make_gamma(case, g)
        if case["via"] == "method":
            h = op.prox_l2(z, y, gamma, solver=solver, backward=case["backward"])
        else:
            h = ur.prox_l2(op, z, y, gamma, solver=solver, backward=case["backward"])
    except Exception as err:  # noqa: BLE001 - classified below
        # Without a planted fault, only the geometry may be refused (a kernel larger than
        # the image for padding 'valid' / 'reflect').
        assert case["fault"] is not None or str(err).startswith("kernel:"), err
        expect_clean_error(err, f"prox refused ({case['fault'] or 'kernel too large'})", OUTCOMES)
        return
    assert case["fault"] is None, case  # a fault that was not refused
    assert h.dtype == dtype and h.shape == z.shape
    assert torch.isfinite(h).all(), "NaN/inf from finite input"

    # The dense truth, in float64 / complex128, on the whole batch at once.
    wide = wide_of(dtype)
    # (the operator's own tensors, as rounded to dtype, widened: its exact matrix)
    exact_op = MatrixOperator(op.matrix.to(wide)) if case["kind"] == "matrix" else op
    a = dense_matrix(exact_op, case["shape"], dtype=wide).to(wide)
    n = z.numel()
    gamma_full = torch.as_tensor(gamma, dtype=torch.float64)
    if gamma_full.ndim == 1:
        gamma_full = gamma_full.reshape(-1, *([1] * (z.ndim - 1)))
    inv_gamma = (1 / gamma_full.expand(z.shape)).reshape(-1).to(torch.float64)
    m = a.conj().T @ a + torch.diag(inv_gamma).to(wide)
    rhs = a.conj().T @ y.detach().to(wide).reshape(-1) + inv_gamma * z.detach().to(wide).reshape(-1)
    exact = torch.linalg.solve(m, rhs)
    eig = torch.linalg.eigvalsh(m)
    cond = float(eig[-1] / eig[0])
    e = eps(dtype)
    residual = float((m @ h.detach().to(wide).reshape(-1) - rhs).norm() / rhs.norm())
    assert residual <= tol + 64 * e * cond, (residual, cond)
    error = float((h.detach().to(wide).reshape(-1) - exact).norm() / exact.norm())
    assert error <= cond * (tol + 64 * e * cond), (error, cond)

    if z.requires_grad:
        v = randn(z.shape, dtype, g)
        (grad_z,) = torch.autograd.grad(torch.real((h * v.conj()).sum()), z)
        # d Re<h, v> / dz = M^-1 v / gamma (M Hermitian), conjugated for complex z.
        exact_grad = inv_gamma * torch.linalg.solve(m, v.to(wide).reshape(-1))
        gerr = float((grad_z.to(wide).reshape(-1) - exact_grad).norm() / exact_grad.norm())
        assert gerr <= 4 * cond * (tol + 64 * e * cond), (gerr, cond, case["backward"])
        OUTCOMES[f"prox: ok + gradient ({case['backward']})"] += 1
    else:
        OUTCOMES["prox: ok"] += 1
    assert n == h.numel()


BAD_SETTINGS = {
    "max_iter": st.one_of(st.integers(-3, -1), st.booleans(), st.floats(0, 10), st.none()),
    "tol": st.one_of(
        st.floats(max_value=-1e-300), st.just(float("nan")), st.booleans(), st.just("1e-6")
    ),
    "on_failure": st.sampled_from(["stop", None, "WARN"]),
    "check_every": st.one_of(st.integers(-1, 0), st.floats(0, 2), st.booleans()),
}


@settings(max_examples=80, deadline=None)
@given(
    max_iter=st.integers(0, 500),
    tol=st.floats(0, 1),
    on_failure=st.sampled_from(["warn", "raise", "ignore"]),
    check_every=st.integers(1, 5),
    fault=st.sampled_from([None, None, *BAD_SETTINGS]),
    data=st.data(),
)
def test_cg_settings_are_validated(max_iter, tol, on_failure, check_every, fault, data):
    """Valid settings construct; one bad setting is refused with its name."""
    kwargs = dict(max_iter=max_iter, tol=tol, on_failure=on_failure, check_every=check_every)
    if fault is not None:
        kwargs[fault] = data.draw(BAD_SETTINGS[fault], label=fault)
    try:
        solver = ur.CG(**kwargs)
    except Exception as err:  # noqa: BLE001 - classified below
        assert fault is not None and str(err).startswith(f"{fault}:"), (fault, err)
        expect_clean_error(err, f"CG settings refused ({fault})", OUTCOMES)
        return
    assert fault is None, f"CG accepted {fault}={kwargs[fault]!r}"
    assert solver.max_iter == max_iter and solver.tol == tol
    OUTCOMES["CG settings: ok"] += 1


def test_cg_with_a_nonfinite_right_hand_side_returns_nan_not_zero():
    # Regression (found by test_faults' infinite-gradient case): the stopping test is never
    # true for b = inf or NaN, and CG used to return its starting point, zero, reported
    # "converged": the implicit backward turned an infinite gradient into a zero one.
    k = torch.eye(3, dtype=torch.float64).expand(2, 3, 3)

    def matvec(x):
        return (k @ x.unsqueeze(-1)).squeeze(-1)

    b = torch.tensor([[1.0, 2.0, 3.0], [float("inf"), 0.0, 1.0]], dtype=torch.float64)
    x, info = ur.CG(max_iter=10, tol=1e-12).solve(matvec, b)
    assert torch.equal(x[0], b[0])
    assert torch.isnan(x[1]).all()
    assert info.status == ["converged", "nonfinite"]
    assert info.converged.tolist() == [True, False]
    OUTCOMES["CG nonfinite regression: ok"] += 1


@settings(max_examples=60, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 3), st.integers(1, 2), st.integers(3, 6), st.integers(3, 6)),
    dtype=st.sampled_from(DTYPES),
    padding=st.sampled_from(PADDINGS),
    seed=st.integers(0, 2**31 - 1),
)
def test_l2_value_and_gradient_match_dense(shape, dtype, padding, seed):
    g = torch.Generator().manual_seed(seed)
    k = torch.rand(3, 3, dtype=torch.float64, generator=g) + 0.05
    op = Blur((k / k.sum()).to(real_of(dtype)), padding=padding)
    x = randn(shape, dtype, g)
    y = randn(tuple(op.output_shape(shape)), dtype, g)
    fidelity = ur.L2()
    value, grad = fidelity.value(x, y, op), fidelity.grad(x, y, op)
    wide = wide_of(dtype)
    a = dense_matrix(op, shape, dtype=wide).to(wide)
    r = a @ x.to(wide).reshape(-1) - y.to(wide).reshape(-1)
    per_sample = 0.5 * r.reshape(shape[0], -1).abs().square().sum(dim=1)
    assert value.shape == (shape[0],) and value.dtype == real_of(dtype)
    assert torch.isfinite(value).all() and torch.isfinite(grad).all()
    e = 8 * 12 * eps(dtype)  # 9 taps plus the norm's sum: a few dozen eps
    assert float((value.to(torch.float64) - per_sample).abs().max()) <= e * float(
        per_sample.max() + 1
    )
    exact_grad = a.conj().T @ r
    assert float((grad.to(wide).reshape(-1) - exact_grad).norm()) <= 2 * e * float(r.norm() + 1)
    OUTCOMES["L2: ok"] += 1
