"""Compressed sensing: adjoint, closed-form (Cholesky / Woodbury) and iterative prox against a
dense solve, gradients for z, y, gamma and the matrix, the factor cache.

Tolerances: float64; a Gaussian matrix with entries of variance 1/m has singular values
in about [1 - sqrt(n/m), 1 + sqrt(n/m)], so with gamma in [0.5, 2] the normal system's
condition number is below ~20: dense, Cholesky and CG (tol 1e-14) solutions agree to
~1e-13, far inside 1e-10 on values and 1e-8 on gradients.
"""

import pytest
import torch

from unrolled.linalg import CG, prox_l2
from unrolled.physics.compressed_sensing import CompressedSensing
from unrolled.testing import adjointness_error, dense_prox, prox_gradients, relative_error

TIGHT = CG(max_iter=1000, tol=1e-14)
DTYPES = [torch.float64, torch.complex128]
# (m, n): fewer measurements than unknowns (Woodbury) and more (direct factorisation)
SIZES = [(20, (1, 4, 8)), (40, (2, 4, 4)), (12, 30)]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,n", SIZES)
def test_adjoint_and_shapes(dtype, m, n):
    op = CompressedSensing(m, n, dtype=dtype)
    shape = (3, *((n,) if isinstance(n, int) else n))
    assert adjointness_error(op, shape, dtype=dtype, generator=_gen(1)) <= 1e-12
    assert op.output_shape(shape) == (3, m)
    assert op(torch.zeros(shape, dtype=dtype)).shape == (3, m)


def test_matrix_statistics_and_seed():
    op = CompressedSensing(200, (1, 10, 10), seed=3, dtype=torch.float64)
    # E[M^T M] = I for entries of variance 1/m; with m * n = 2e4 entries the empirical
    # variance is within a few percent of 1/m.
    assert abs(float(op.matrix.var()) * 200 - 1) < 0.05
    single = CompressedSensing(200, (1, 10, 10), seed=3, dtype=torch.float32).matrix
    torch.testing.assert_close(single, op.matrix.float(), rtol=0, atol=0)
    assert not torch.equal(op.matrix, CompressedSensing(200, (1, 10, 10), seed=4).matrix.double())


def _problem(op, dtype, batch=3, seed=2):
    g = _gen(seed)
    shape = (batch, *op.input_shape)
    z = torch.randn(shape, dtype=dtype, generator=g)
    y = torch.randn(batch, op.matrix.shape[0], dtype=dtype, generator=g)
    v = torch.randn(shape, dtype=dtype, generator=g)
    return z, y, v


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,n", SIZES)
@pytest.mark.parametrize("gamma", [0.7, "per-sample"])
def test_prox_values(dtype, m, n, gamma):
    op = CompressedSensing(m, n, dtype=dtype)
    z, y, _ = _problem(op, dtype)
    if gamma == "per-sample":
        gamma = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    ref = dense_prox(op, z, y, gamma)
    closed, info = op.prox_l2_with_info(z, y, gamma)
    iterative = prox_l2(op, z, y, gamma, solver=TIGHT)
    assert info.mode == "closed_form"
    assert relative_error(closed, ref) <= 1e-10
    assert relative_error(iterative, ref) <= 1e-10
    assert relative_error(closed, iterative) <= 1e-8


def test_iterative_fallbacks():
    """Above max_factor_size, or with a gamma varying inside a sample: CG."""
    op = CompressedSensing(20, (1, 4, 8), dtype=torch.float64, max_factor_size=10)
    z, y, _ = _problem(op, torch.float64)
    h, info = op.prox_l2_with_info(z, y, 0.7, solver=TIGHT)
    assert info.mode == "implicit" and info.forward is not None
    assert relative_error(h, dense_prox(op, z, y, 0.7)) <= 1e-10
    op = CompressedSensing(20, (1, 4, 8), dtype=torch.float64)
    gamma = torch.rand(1, 1, 4, 8, dtype=torch.float64, generator=_gen(9)) + 0.5
    h, info = op.prox_l2_with_info(z, y, gamma, solver=TIGHT)
    assert info.mode == "implicit"
    assert relative_error(h, dense_prox(op, z, y, gamma)) <= 1e-10


def test_factor_cache():
    op = CompressedSensing(20, (1, 4, 8), dtype=torch.float64)
    z, y, _ = _problem(op, torch.float64)
    op.prox_l2(z, y, 0.7)
    op.prox_l2(z, y, 0.7)
    assert len(op._factors) == 1
    op.prox_l2(z, y, torch.tensor(0.7, dtype=torch.float64))  # a tensor gamma: not cached
    assert len(op._factors) == 1
    before = op.prox_l2(z, y, 0.7)
    with torch.no_grad():
        op.matrix.mul_(2)  # in-place change: the cached factor must not be reused
    after = op.prox_l2(z, y, 0.7)
    assert relative_error(after, dense_prox(op, z, y, 0.7)) <= 1e-10
    assert relative_error(after, before) > 1e-3


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,n", SIZES[:2])
def test_gradients_against_dense(dtype, m, n):
    """Gradients for z, y, gamma (per sample) and a matrix that requires grad."""
    base = CompressedSensing(m, n, dtype=dtype)
    z, y, v = _problem(base, dtype, seed=5)
    gamma = torch.tensor([0.6, 1.1, 1.9], dtype=torch.float64)
    leaves = [t.clone().requires_grad_() for t in (z, y, gamma, base.matrix)]

    def run(kind):
        def prox(z, y, gamma):
            op = CompressedSensing(m, n, matrix=leaves[3])
            if kind == "dense":
                return dense_prox(op, z, y, gamma)
            if kind == "implicit":
                return prox_l2(op, z, y, gamma, solver=TIGHT)
            return op.prox_l2(z, y, gamma)

        return prox_gradients(prox, leaves, v)

    _, ref = run("dense")
    for kind in ("implicit", "closed"):
        _, grads = run(kind)
        for name, a, b in zip(("z", "y", "gamma", "matrix"), grads, ref, strict=True):
            assert relative_error(a, b) <= 1e-8, (kind, name)


def test_scalar_gamma_gradient_closed_form():
    base = CompressedSensing(20, (1, 4, 8), dtype=torch.float64)
    z, y, v = _problem(base, torch.float64)
    gamma = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    (g_closed,) = torch.autograd.grad((base.prox_l2(z, y, gamma) * v).sum(), gamma)
    (g_dense,) = torch.autograd.grad((dense_prox(base, z, y, gamma) * v).sum(), gamma)
    assert relative_error(g_closed, g_dense) <= 1e-8


def test_bad_inputs():
    with pytest.raises(ValueError, match="m: expected an integer >= 1, got 0"):
        CompressedSensing(0, 10)
    with pytest.raises(ValueError, match="n: expected a positive integer or an input shape"):
        CompressedSensing(5, (1, 0, 3))
    with pytest.raises(ValueError, match=r"matrix: expected shape \(5, 12\)"):
        CompressedSensing(5, (1, 3, 4), matrix=torch.zeros(5, 11))
    op = CompressedSensing(5, (1, 3, 4), dtype=torch.float64)
    with pytest.raises(ValueError, match=r"x: expected shape \(B, 1, 3, 4\), got \(2, 1, 4, 3\)"):
        op.A(torch.zeros(2, 1, 4, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"y: expected shape \(B, 5\)"):
        op.A_adjoint(torch.zeros(2, 6, dtype=torch.float64))
    cop = CompressedSensing(5, (1, 3, 4), dtype=torch.complex128)
    with pytest.raises(ValueError, match="x: expected a complex tensor"):
        cop.A(torch.zeros(2, 1, 3, 4, dtype=torch.float64))
