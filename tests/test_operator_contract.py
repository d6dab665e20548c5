"""The contract every operator in ``tests/operators.py`` keeps, checked against NumPy.

For each registered operator: the output shape and dtype; ``A`` and ``A^H`` against the
independent NumPy reference; ``<A x, y> = <x, A^H y>``; the prox (the operator's own
and ``ur.prox_l2``) against a dense float64 / complex128 solve with the reference
matrix; and the operator algebra (``c * A``, ``A + A``, ``A @ A``) against the same
reference, so the library's own ``__mul__`` / ``__add__`` / ``__matmul__`` are tested.

Tolerances. Every output of ``A`` is a sum of at most ``N`` products (``N`` the input
size of one sample: a dense DFT over a plane, a row of a matrix), so in float64 it is
off by at most ``N eps`` times the sum of magnitudes (Higham's ``gamma_N``), which
Cauchy-Schwarz bounds by ``N eps ||A||_2 ||x||`` up to the factor 8 we allow for the
FFT's ``O(log N)`` and the reshapes. Inner products add one more sum. The prox solves
``M h = A^H y + z / gamma``, ``M = A^H A + diag(1 / gamma)``: CG stops at a relative
residual ``tol``, rounding adds ``eps cond(M)``, and the solution error is at most
``cond(M)`` times the relative residual; the closed forms are direct solves, within
the same bound.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

import unrolled as ur

from .operators import CASES, Case, as_tensor, matrix_of, random_array, rng

EPS = float(np.finfo(np.float64).eps)
CG_TOL = 1e-13
SOLVER = ur.CG(max_iter=2000, tol=CG_TOL, on_failure="raise")
BY_NAME = {case.name: case for case in CASES}
NAMES = list(BY_NAME)


@functools.cache
def reference_matrix(name: str) -> np.ndarray:
    case = BY_NAME[name]
    return matrix_of(case.forward, case.shape, case.dtype.is_complex)


def data(case: Case, tag: str):
    """Seeded input ``x`` and measurement-shaped ``y`` (as NumPy arrays and tensors)."""
    g = rng(case.name + tag)
    x = random_array(case.shape, case.dtype.is_complex, g)
    y = random_array(np.shape(case.forward(x)), case.dtype.is_complex, g)
    return x, y, as_tensor(x, case.dtype), as_tensor(y, case.dtype)


def bound(case: Case) -> float:
    """``8 N eps ||A||_2``: the absolute error of ``A x`` per unit ``||x||``."""
    n = int(np.prod(case.shape[1:]))
    return 8 * n * EPS * np.linalg.norm(reference_matrix(case.name), 2)


def distance(got: torch.Tensor, want: np.ndarray) -> float:
    return float(np.linalg.norm(got.detach().numpy() - want))


@pytest.mark.parametrize("name", NAMES)
def test_the_reference_adjoint_is_the_conjugate_transpose_of_the_reference(name):
    # The two NumPy references are written separately: this checks the test itself.
    case = BY_NAME[name]
    adjoint = matrix_of(case.adjoint, np.shape(case.forward(np.zeros(case.shape))), True)
    a = reference_matrix(name)
    assert np.linalg.norm(adjoint - a.conj().T) <= 64 * EPS * np.linalg.norm(a)


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_dtypes(name):
    case = BY_NAME[name]
    op = case.make()
    x, y, xt, yt = data(case, "shapes")
    ax, aty = op.A(xt), op.A_adjoint(yt)
    assert tuple(ax.shape) == np.shape(case.forward(x)) == tuple(op.output_shape(case.shape))
    assert tuple(aty.shape) == case.shape
    assert ax.dtype == aty.dtype == case.dtype


@pytest.mark.parametrize("name", NAMES)
def test_forward_and_adjoint_match_the_numpy_reference(name):
    case = BY_NAME[name]
    op = case.make()
    x, y, xt, yt = data(case, "apply")
    e = bound(case)
    assert distance(op.A(xt), case.forward(x)) <= e * np.linalg.norm(x)
    assert distance(op.A_adjoint(yt), case.adjoint(y)) <= e * np.linalg.norm(y)


@pytest.mark.parametrize("name", NAMES)
def test_adjointness(name):
    case = BY_NAME[name]
    op = case.make()
    _, _, xt, yt = data(case, "inner")
    left = complex(torch.vdot(op.A(xt).reshape(-1), yt.reshape(-1)))
    right = complex(torch.vdot(xt.reshape(-1), op.A_adjoint(yt).reshape(-1)))
    scale = float(xt.norm() * yt.norm())
    assert abs(left - right) <= 2 * bound(case) * scale


def gammas(case: Case):
    b = case.shape[0]
    g = rng(case.name + "gamma")
    return {
        "float": 0.7,
        "per-sample": torch.from_numpy(0.3 + g.random(b)),
        "per-entry": torch.from_numpy(0.3 + g.random(case.shape)),
    }


def dense_prox(a: np.ndarray, z: np.ndarray, y: np.ndarray, gamma, shape):
    """``(A^H A + diag(1/gamma))^-1 (A^H y + z / gamma)`` and the system's condition number."""
    g = np.asarray(gamma, dtype=float)
    if g.ndim == 1:
        g = g.reshape(-1, *[1] * (len(shape) - 1))
    inv = 1 / np.broadcast_to(g, shape).reshape(-1)
    m = a.conj().T @ a + np.diag(inv)
    h = np.linalg.solve(m, a.conj().T @ y.reshape(-1) + inv * z.reshape(-1))
    return h.reshape(shape), np.linalg.cond(m)


@pytest.mark.parametrize("gamma_kind", ["float", "per-sample", "per-entry"])
@pytest.mark.parametrize("name", NAMES)
def test_prox_matches_a_dense_solve_with_the_reference(name, gamma_kind):
    case = BY_NAME[name]
    op = case.make()
    z, y, zt, yt = data(case, "prox")
    gamma = gammas(case)[gamma_kind]
    exact, cond = dense_prox(reference_matrix(name), z, y, gamma, case.shape)
    limit = cond * (CG_TOL + 64 * EPS * cond) * np.linalg.norm(exact)
    for h in (
        op.prox_l2(zt, yt, gamma, solver=SOLVER),
        ur.prox_l2(op, zt, yt, gamma, solver=SOLVER),
    ):
        assert h.dtype == case.dtype and tuple(h.shape) == case.shape
        assert distance(h, exact) <= limit, (distance(h, exact), limit)


def scale_for(case: Case):
    # A complex scale where the data is complex: a missing conjugate in (c A)^H shows.
    return 0.5 - 2j if case.dtype.is_complex else -1.5


@pytest.mark.parametrize("name", NAMES)
def test_operator_algebra_matches_the_reference(name):
    case = BY_NAME[name]
    op = case.make()
    x, y, xt, yt = data(case, "algebra")
    c = scale_for(case)
    e = 2 * bound(case) * max(1.0, abs(c))
    for scaled in (c * op, op * c):
        assert distance(scaled.A(xt), c * case.forward(x)) <= e * np.linalg.norm(x)
        assert distance(scaled.A_adjoint(yt), np.conj(c) * case.adjoint(y)) <= e * np.linalg.norm(y)
    total = op + case.make()
    assert distance(total.A(xt), 2 * case.forward(x)) <= e * np.linalg.norm(x)
    assert distance(total.A_adjoint(yt), 2 * case.adjoint(y)) <= e * np.linalg.norm(y)
    if case.square:
        twice = op @ case.make()
        norm = np.linalg.norm(reference_matrix(name), 2)
        assert distance(twice.A(xt), case.forward(case.forward(x))) <= e * norm * np.linalg.norm(x)
        got = twice.A_adjoint(xt)
        assert distance(got, case.adjoint(case.adjoint(x))) <= e * norm * np.linalg.norm(x)


@pytest.mark.parametrize("name", NAMES)
def test_prox_of_a_scaled_operator_matches_a_dense_solve(name):
    case = BY_NAME[name]
    c = scale_for(case)
    op = c * case.make()
    z, y, zt, yt = data(case, "scaled prox")
    exact, cond = dense_prox(c * reference_matrix(name), z, y, 0.7, case.shape)
    limit = cond * (CG_TOL + 64 * EPS * cond) * np.linalg.norm(exact)
    assert distance(op.prox_l2(zt, yt, 0.7, solver=SOLVER), exact) <= limit
