"""Property-based tests of the least-squares prox (every backward mode), CG settings and
the L2 fidelity, against dense float64 / complex128 solves.

Each example is valid or carries one planted fault, and the test knows which: a valid
one must return a prox that solves the normal equations ``M h = A^H y + z / gamma``,
``M = A^H A + diag(1 / gamma)``, to the accuracy the dtype allows, with the right
gradient; a faulty one must be refused with the error for that fault, naming the
argument; never another exception, never NaN from finite input. ``M`` is built from the
NumPy references of ``tests/operators.py``, not from the library's operators.

Tolerances. CG stops when its recursive residual is below ``tol ||b||`` or stagnates at
the rounding floor; the true residual then differs from the recursive one by rounding,
about ``eps`` times ``cond(M) = lambda_max / lambda_min`` in relative terms, so we check
``||M h - b|| / ||b|| <= tol + 64 eps cond(M)`` against the dense ``M`` (the factor
covers the operator's own rounding, 8 t eps for t kernel taps, see
test_fuzz_operators). The solution error then follows from
``||h - h*|| <= ||M^-1|| ||M h - b||`` and ``||b|| <= ||M|| ||h*||``: relative error at
most ``cond(M)`` times the relative residual. The gradient with respect to ``z`` is
``M^-1 v / gamma``. The implicit backward computes it by another solve to the same
tolerance: within ``cond(M)`` times the solve's accuracy (times 4 for the two solves
and the products around them). The unroll and checkpoint backwards instead
differentiate the ``k`` iterations the forward solve ran: the derivative of a truncated
iteration is not the derivative of the exact solution, and it converges more slowly
than the iterates themselves, lagging by a factor that grows linearly in ``k``
(Griewank and Walther, Evaluating Derivatives, 2nd ed., ch. 15, on derivatives of
fixed-point iterations). Their bound is therefore ``k + 1`` times the implicit one; a
closed-form prox (no iterations) keeps the implicit bound.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import unrolled as ur
from unrolled.linalg import BACKWARD_MODES, MatrixOperator, prox_l2_with_info
from unrolled.physics import PADDINGS, Blur

from .operators import blur_reference, matrix_of
from .test_fuzz_operators import DTYPES, TYPE_FAULT_ERROR, eps, expect_refusal

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
    """The operator, and its exact float64 / complex128 matrix on the whole batch (from the
    operator's tensors as rounded to the case's dtype, built by NumPy)."""
    b = case["shape"][0]
    complex_ = case["dtype"].is_complex
    if case["kind"] == "blur":
        kshape = ((b, 1) if case["per_sample"] else ()) + case["ksize"]
        k = torch.rand(kshape, dtype=torch.float64, generator=g) + 0.05
        k = (k / k.sum(dim=(-2, -1), keepdim=True)).to(real_of(case["dtype"]))
        forward = blur_reference(k.double().numpy(), case["padding"], adjoint=False)
        return Blur(k, padding=case["padding"]), lambda: matrix_of(forward, case["shape"], complex_)
    mshape = ((b,) if case["per_sample"] else ()) + (case["m"], case["shape"][1])
    m = (torch.randn(mshape, dtype=torch.float64, generator=g) / case["shape"][1] ** 0.5).to(
        case["dtype"]
    )
    blocks = np.broadcast_to(m.to(wide_of(case["dtype"])).numpy(), (b, *mshape[-2:]))
    # one block per sample: x (B, n) -> (B, m)
    return MatrixOperator(m), lambda: _block_diag(blocks)


def _block_diag(blocks: np.ndarray) -> np.ndarray:
    b, m, n = blocks.shape
    out = np.zeros((b * m, b * n), dtype=blocks.dtype)
    for i in range(b):
        out[i * m : (i + 1) * m, i * n : (i + 1) * n] = blocks[i]
    return out


def geometry_fault(case) -> bool:
    """A kernel the image cannot take: larger than it ('valid'), or too large to reflect."""
    if case["kind"] != "blur":
        return False
    (kh, kw), (h, w) = case["ksize"], case["shape"][-2:]
    if case["padding"] == "valid":
        return kh > h or kw > w
    return case["padding"] == "reflect" and (kh // 2 > h - 1 or kw // 2 > w - 1)


#: the error and argument each planted fault must be refused with
FAULT_ERRORS = {
    **{f: (ValueError, "gamma") for f in GAMMA_FAULTS},
    "bool": (TYPE_FAULT_ERROR, "gamma"),
    "string": (TYPE_FAULT_ERROR, "gamma"),
    **{f: (ValueError, "y") for f in Y_FAULTS},
}


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


def planted_inputs(case, op, g):
    """z, y and gamma for the case, with its planted fault (if any)."""
    dtype = case["dtype"]
    z = randn(case["shape"], dtype, g).requires_grad_(dtype in (torch.float64, torch.complex128))
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
    return z, y, make_gamma(case, g)


def truncated_cg_gradient(m, atb, inv_gamma, z, v, iterations):
    """``d Re<x_k, v> / dz`` for ``x_k`` the ``k``-th iterate of textbook CG on each sample's
    block of ``m x = atb + z / gamma``, started at ``x_0 = z``, ``k = iterations[sample]``."""
    batch, n = z.shape[0], z[0].numel()
    zw = z.detach().to(m.dtype).reshape(-1).requires_grad_()
    rhs = atb + inv_gamma * zw
    parts = []
    for i, k in enumerate(iterations):
        block = slice(i * n, (i + 1) * n)
        mb = m[block, block]
        x = zw[block]
        r = rhs[block] - mb @ x
        p, rr = r, torch.vdot(r, r).real
        for _ in range(k):
            mp = mb @ p
            alpha = rr / torch.vdot(p, mp).real
            x, r = x + alpha * p, r - alpha * mp
            rr_new = torch.vdot(r, r).real
            p, rr = r + (rr_new / rr) * p, rr_new
        parts.append(x)
    x = torch.cat(parts)
    (grad,) = torch.autograd.grad(torch.real((x * v.to(m.dtype).reshape(-1).conj()).sum()), zw)
    assert batch * n == grad.numel()
    return grad


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=prox_case())
def test_prox_solves_the_normal_equations_or_refuses(case):
    g = torch.Generator().manual_seed(case["seed"])
    dtype = case["dtype"]
    tol = TOL[real_of(dtype)]
    truncated = case["backward"] in ("unroll", "checkpoint")
    # Unroll and checkpoint are compared with the derivative of a textbook CG of the same
    # length, so their solves run without a preconditioner (the implicit ones keep it).
    solver = ur.CG(
        max_iter=400, tol=tol, on_failure="ignore", preconditioner=None if truncated else "auto"
    )
    op, reference = make_operator(case, g)
    if geometry_fault(case):
        shape = case["shape"]
        refused = "prox refused (kernel too large)"
        expect_refusal(lambda: op.output_shape(shape), ValueError, "kernel", refused, OUTCOMES)
        return
    z, y, gamma = planted_inputs(case, op, g)

    def prox():
        kwargs = dict(solver=solver, backward=case["backward"])
        if case["via"] == "method":
            return op.prox_l2_with_info(z, y, gamma, **kwargs)
        return prox_l2_with_info(op, z, y, gamma, **kwargs)

    if case["fault"] is not None:
        error, argument = FAULT_ERRORS[case["fault"]]
        expect_refusal(prox, error, argument, f"prox refused ({case['fault']})", OUTCOMES)
        return
    h, info = prox()
    assert h.dtype == dtype and h.shape == z.shape
    assert torch.isfinite(h).all(), "NaN/inf from finite input"

    # The dense truth, in float64 / complex128, on the whole batch at once.
    wide = wide_of(dtype)
    a = torch.from_numpy(reference()).to(wide)
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
        if truncated and info.mode != "closed_form":
            # The derivative of the truncated solve, by a textbook CG of the same length.
            atb = a.conj().T @ y.to(wide).reshape(-1)
            its = info.forward.iterations.tolist()
            want = truncated_cg_gradient(m, atb, inv_gamma, z, v, its)
            # Two float64 runs of the same k steps differ by rounding: eps per step in the
            # step sizes <r, r> / <p, M p>, amplified by cond in their value and by cond
            # again in their derivative, relative to the terms summed, as large as v
            # (x_0 = z passes v on whole), while the gradient can be as small as
            # |v| / (gamma lambda_max).
            terms = float(v.to(wide).norm() / want.norm())
            bound = 64 * (max(its) + 1) * cond**2 * e * max(1.0, terms)
        else:
            # d Re<h, v> / dz = M^-1 v / gamma (M Hermitian), conjugated for complex z.
            want = inv_gamma * torch.linalg.solve(m, v.to(wide).reshape(-1))
            bound = 4 * cond * (tol + 64 * e * cond)
        gerr = float((grad_z.to(wide).reshape(-1) - want).norm() / want.norm())
        assert gerr <= bound, (gerr, bound, cond, case["backward"], info.mode)
        OUTCOMES[f"prox: ok + gradient ({case['backward']})"] += 1
    else:
        OUTCOMES["prox: ok"] += 1


@pytest.mark.parametrize("padding", PADDINGS)
def test_unroll_gradient_of_a_small_blur_with_per_entry_gamma(padding):
    # The shape of a failure of the former bound (the exact gradient's, applied to the
    # derivative of a truncated solve): a 1x1x2x4 blur, per-entry gamma, float64.
    for seed in range(12):
        g = torch.Generator().manual_seed(seed)
        case = dict(
            kind="blur", shape=(1, 1, 2, 4), dtype=torch.float64, gamma_kind="per-entry",
            gamma=float(seed % 5) - 2, y_fault=None, padding=padding, ksize=(1 + seed % 2, 3),
            per_sample=False,
        )  # fmt: skip
        if geometry_fault(case):
            continue
        op, reference = make_operator(case, g)
        z, y, gamma = planted_inputs(case, op, g)
        solver = ur.CG(max_iter=400, tol=TOL[torch.float64], preconditioner=None)
        v = randn(z.shape, torch.float64, g)
        grads = {}
        for mode in ("unroll", "checkpoint"):
            h, info = prox_l2_with_info(op, z, y, gamma, solver=solver, backward=mode)
            (grads[mode],) = torch.autograd.grad((h * v).sum(), z)
        # checkpoint replays the same iterations: the same gradient, bit for bit
        assert torch.equal(grads["unroll"], grads["checkpoint"])
        a = torch.from_numpy(reference())
        inv_gamma = (1 / gamma).reshape(-1)
        m = a.T @ a + torch.diag(inv_gamma)
        its = info.forward.iterations.tolist()
        want = truncated_cg_gradient(m, a.T @ y.reshape(-1), inv_gamma, z, v, its)
        eig = torch.linalg.eigvalsh(m)
        cond = float(eig[-1] / eig[0])
        terms = float(v.norm() / want.norm())
        bound = 64 * (max(its) + 1) * cond**2 * eps(torch.float64) * max(1.0, terms)
        assert float((grads["unroll"].reshape(-1) - want).norm() / want.norm()) <= bound


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
        value = kwargs[fault] = data.draw(BAD_SETTINGS[fault], label=fault)
        expected = {"max_iter": int, "tol": (int, float), "on_failure": str, "check_every": int}
        wrong_type = isinstance(value, bool) or not isinstance(value, expected[fault])
        error = TYPE_FAULT_ERROR if wrong_type else ValueError
        expect_refusal(lambda: ur.CG(**kwargs), error, fault, f"CG refused ({fault})", OUTCOMES)
        return
    solver = ur.CG(**kwargs)
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
    k = (k / k.sum()).to(real_of(dtype))
    op = Blur(k, padding=padding)
    x = randn(shape, dtype, g)
    y = randn(tuple(op.output_shape(shape)), dtype, g)
    fidelity = ur.L2()
    value, grad = fidelity.value(x, y, op), fidelity.grad(x, y, op)
    wide = wide_of(dtype)
    forward = blur_reference(k.double().numpy(), padding, adjoint=False)
    a = torch.from_numpy(matrix_of(forward, shape, dtype.is_complex)).to(wide)
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
