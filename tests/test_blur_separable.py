"""The separable blur's exact inverse of the prox system, against dense float64 truth."""

from __future__ import annotations

import pytest
import torch

import unrolled as ur
from unrolled.physics import PADDINGS, Blur, gaussian_kernel
from unrolled.physics import separable as separable_module
from unrolled.physics.separable import rank_one_factors
from unrolled.testing import dense_matrix

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _dense_system(op: Blur, shape, gamma: float) -> torch.Tensor:
    """``A^T A + I / gamma`` as a dense float64 matrix, from the operator's ``A`` alone."""
    a = dense_matrix(op, shape, dtype=F64)
    return a.T @ a + torch.eye(a.shape[1], dtype=F64) / gamma


def _apply_dense(matrix: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    flat = images.reshape(images.shape[0], -1)
    return (flat @ matrix.T).reshape(images.shape)


# an uneven product (a ramp times a bump): separable, neither symmetric nor centred
_RAMP = torch.outer(
    torch.tensor([0.1, 0.5, 0.2, 0.9], dtype=F64), torch.tensor([0.3, 1.0, 0.1], dtype=F64)
)


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize(
    "kernel", [gaussian_kernel((1.3, 0.8), (5, 3), dtype=F64), _RAMP], ids=["gauss", "ramp"]
)
def test_separable_preconditioner_is_the_exact_inverse(padding, kernel):
    op = Blur(kernel, padding=padding)
    h, w = 9, 7  # non-square, and not a multiple of the kernel
    gamma = 3.5
    inverse = torch.linalg.inv(_dense_system(op, (1, 1, h, w), gamma))
    apply = op.separable_preconditioner(torch.tensor(gamma, dtype=F64))
    r = torch.randn(3, 2, h, w, dtype=F64, generator=_gen(1))
    expected = _apply_dense(inverse, r.reshape(6, 1, h, w)).reshape(r.shape)
    torch.testing.assert_close(apply(r), expected, rtol=1e-11, atol=1e-12)


def test_per_sample_kernels_and_gammas():
    kernels = torch.stack(
        [gaussian_kernel(0.9, 5, dtype=F64), gaussian_kernel((2.0, 0.7), 5, dtype=F64)]
    )[:, None]  # (2, 1, 5, 5): one kernel per sample
    op = Blur(kernels, padding="valid")
    gammas = torch.tensor([0.5, 40.0], dtype=F64).view(2, 1, 1, 1)
    apply = op.separable_preconditioner(gammas)
    r = torch.randn(2, 3, 10, 8, dtype=F64, generator=_gen(2))
    for i in range(2):
        single = Blur(kernels[i, 0], padding="valid")
        inverse = torch.linalg.inv(_dense_system(single, (1, 1, 10, 8), float(gammas[i])))
        expected = _apply_dense(inverse, r[i].reshape(3, 1, 10, 8)).reshape(3, 10, 8)
        torch.testing.assert_close(apply(r)[i], expected, rtol=1e-11, atol=1e-12)


def test_complex_images_are_inverted_per_part():
    op = Blur(gaussian_kernel(1.1, 5, dtype=F64), padding="reflect")
    apply = op.separable_preconditioner(torch.tensor(2.0, dtype=F64))
    re = torch.randn(2, 1, 8, 8, dtype=F64, generator=_gen(3))
    im = torch.randn(2, 1, 8, 8, dtype=F64, generator=_gen(4))
    out = apply(torch.complex(re, im))
    torch.testing.assert_close(out.real, apply(re), rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(out.imag, apply(im), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("shape", [(1, 5), (4, 1)])
def test_single_row_or_column_kernels(shape):
    kernel = torch.rand(shape, dtype=F64, generator=_gen(5)) + 0.1
    op = Blur(kernel, padding="replicate")
    inverse = torch.linalg.inv(_dense_system(op, (1, 1, 6, 7), 2.0))
    r = torch.randn(1, 1, 6, 7, dtype=F64, generator=_gen(6))
    apply = op.separable_preconditioner(torch.tensor(2.0, dtype=F64))
    torch.testing.assert_close(apply(r), _apply_dense(inverse, r), rtol=1e-11, atol=1e-12)


def test_where_it_does_not_apply():
    rough = torch.rand(5, 5, dtype=F64, generator=_gen(7))
    assert rank_one_factors(rough[None, None]) is None
    gamma = torch.tensor(1.0, dtype=F64)
    assert Blur(rough, padding="valid").separable_preconditioner(gamma) is None
    smooth = gaussian_kernel(1.0, 5, dtype=F64)
    pixelwise = torch.full((1, 1, 8, 8), 2.0, dtype=F64)
    assert Blur(smooth, padding="valid").separable_preconditioner(pixelwise) is None
    # a trained kernel: the factors would be constants in a gradient through the solve
    trained = Blur(torch.nn.Parameter(smooth.clone()), padding="valid")
    assert trained.separable_preconditioner(gamma) is None
    # a per-sample stack with one plane of rank two is not separable either
    mixed = torch.stack([smooth, rough])[:, None]
    assert rank_one_factors(mixed) is None


def test_auto_takes_it_except_for_circular_and_rough_kernels():
    gamma = torch.tensor(10.0, dtype=F64)
    r = torch.randn(2, 1, 12, 12, dtype=F64, generator=_gen(8))
    for padding in PADDINGS:
        op = Blur(gaussian_kernel(1.2, dtype=F64), padding=padding)
        auto = op.preconditioner(gamma)
        expected = (
            op.fourier_preconditioner(gamma)
            if padding == "circular"
            else op.separable_preconditioner(gamma)
        )
        assert torch.equal(auto(r), expected(r)), padding


@pytest.mark.parametrize("padding", ["valid", "reflect", "replicate", "zeros"])
@pytest.mark.parametrize("gamma", [1.0, 100.0])
def test_prox_with_it_matches_a_dense_solve_in_two_iterations(padding, gamma):
    op = Blur(gaussian_kernel(1.5, 7, dtype=F64), padding=padding)
    x = torch.rand(2, 1, 11, 10, dtype=F64, generator=_gen(9))
    y = op.A(x) + 0.05 * torch.randn(op.A(x).shape, dtype=F64, generator=_gen(10))
    z = torch.rand(x.shape, dtype=F64, generator=_gen(11), requires_grad=True)
    h, info = ur.linalg.prox_l2_with_info(op, z, y, gamma, solver=ur.CG(tol=1e-12))
    v = torch.randn(x.shape, dtype=F64, generator=_gen(12))
    h.backward(v)
    system = _dense_system(op, (1, 1, 11, 10), gamma)
    rhs = op.A_adjoint(y) + z.detach() / gamma
    expected = torch.linalg.solve(system, rhs.reshape(2, -1).T).T.reshape(x.shape)
    torch.testing.assert_close(h.detach(), expected, rtol=1e-10, atol=1e-12)
    grad = torch.linalg.solve(system, v.reshape(2, -1).T).T.reshape(x.shape) / gamma
    torch.testing.assert_close(z.grad, grad, rtol=1e-10, atol=1e-12)
    assert max(info.forward.iterations.tolist()) <= 2
    assert max(info.backward.iterations.tolist()) <= 2


def test_unrolled_gradient_in_gamma_through_it():
    # The exact inverse depends on gamma: "unroll" differentiates through it. Truth: the
    # derivative of the dense solution, dh/dgamma = M (h - z) / gamma^2 with M the inverse
    # of the system.
    op = Blur(gaussian_kernel(1.0, 5, dtype=F64), padding="valid")
    x = torch.rand(1, 1, 9, 9, dtype=F64, generator=_gen(13))
    y = op.A(x)
    z = torch.rand(x.shape, dtype=F64, generator=_gen(14))
    gamma = torch.tensor(4.0, dtype=F64, requires_grad=True)
    h = ur.prox_l2(op, z, y, gamma, solver=ur.CG(tol=1e-13), backward="unroll")
    v = torch.randn(x.shape, dtype=F64, generator=_gen(15))
    (grad,) = torch.autograd.grad((h * v).sum(), gamma)
    system = _dense_system(op, (1, 1, 9, 9), 4.0)
    dh = torch.linalg.solve(system, (h.detach() - z).reshape(-1)) / 16.0
    torch.testing.assert_close(grad, (dh * v.reshape(-1)).sum(), rtol=1e-9, atol=1e-12)


def test_factors_and_eigendecompositions_are_made_once(monkeypatch):
    built = []
    real_init = separable_module.SeparableInverse.__init__

    def counting_init(self, *args, **kwargs):
        built.append(1)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(separable_module.SeparableInverse, "__init__", counting_init)
    op = Blur(gaussian_kernel(1.0, 5, dtype=F64), padding="valid")
    z = torch.rand(2, 1, 12, 12, dtype=F64, generator=_gen(16), requires_grad=True)
    y = torch.rand(2, 1, 8, 8, dtype=F64, generator=_gen(17))
    for _ in range(3):  # each call solves through a shallow copy of op: the store is shared
        ur.prox_l2(op, z, y, 2.0).sum().backward()
    assert len(built) == 1
    op.kernel.mul_(1.5)  # a changed kernel is a new system
    ur.prox_l2(op, z, y, 2.0).sum().backward()
    assert len(built) == 2


@pytest.mark.parametrize("padding", ["valid", "reflect", "replicate", "zeros"])
def test_normal_map_of_a_separable_kernel_is_exact(padding):
    # the rank-one route of normal_map (two matrix products) against the dense A^T A
    op = Blur(gaussian_kernel((1.4, 0.9), (7, 5), dtype=F64), padding=padding)
    x = torch.randn(2, 3, 10, 13, dtype=F64, generator=_gen(18))
    a = dense_matrix(op, (1, 1, 10, 13), dtype=F64)
    expected = _apply_dense(a.T @ a, x.reshape(6, 1, 10, 13)).reshape(x.shape)
    torch.testing.assert_close(op.normal_map(x)(x), expected, rtol=1e-12, atol=1e-13)


def test_normal_map_keeps_the_exact_operator_for_kernels_rank_one_only_in_float32():
    # A Gaussian made in float32 is rank one to 1e-8, far above float64's rounding: the
    # float64 normal map must not use its factors.
    kernel = gaussian_kernel(1.3, 7, dtype=torch.float32).to(F64)
    op = Blur(kernel, padding="valid")
    x = torch.randn(2, 1, 12, 12, dtype=F64, generator=_gen(19))
    torch.testing.assert_close(op.normal_map(x)(x), op.A_adjoint(op.A(x)), rtol=1e-14, atol=1e-15)


def test_auto_uses_the_other_preconditioners_above_the_size_limit(monkeypatch):
    import unrolled.physics.blur as blur_module

    monkeypatch.setattr(blur_module, "SEPARABLE_MAX_SIDE", 10)
    op = Blur(gaussian_kernel(1.0, 5, dtype=F64), padding="valid")
    gamma = torch.tensor(5.0, dtype=F64)
    auto = op.preconditioner(gamma)
    small = torch.randn(1, 1, 10, 10, dtype=F64, generator=_gen(20))
    large = torch.randn(1, 1, 11, 10, dtype=F64, generator=_gen(21))
    assert torch.equal(auto(small), op.separable_preconditioner(gamma)(small))
    assert torch.equal(auto(large), op.boundary_preconditioner(gamma)(large))
    replicate = Blur(gaussian_kernel(1.0, 5, dtype=F64), padding="replicate")
    assert torch.equal(replicate.preconditioner(gamma)(large), large)  # none there
