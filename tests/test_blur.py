"""Blur physics, Gaussian kernels, noise, and the operator base class."""

import numpy as np
import pytest
import torch

import unrolled as ur
from unrolled.linalg import LinearOperator, MatrixOperator
from unrolled.physics import PADDINGS, Blur, GaussianNoise, PoissonNoise, gaussian_kernel
from unrolled.testing import adjointness_error, dense_matrix
from unrolled.testing import relative_error as rel


@pytest.fixture(autouse=True)
def _seeded_global_rng():
    # Tests that draw from torch's global generator draw the same numbers on every run,
    # whichever tests ran before them.
    torch.manual_seed(0)


F64 = torch.float64


def reference_convolution(x, k, padding):
    """Direct, loop-based true convolution with numpy (independent of the operator):
    y[i, j] = sum_{m, n} k[m, n] x[i - m + cy, j - n + cx], out-of-range pixels taken by
    the boundary rule, kernel centre (cy, cx) = (kh // 2, kw // 2)."""
    x = x.numpy()
    kh, kw = k.shape
    h, w = x.shape
    mode = {"circular": "wrap", "reflect": "reflect", "replicate": "edge", "zeros": "constant"}
    if padding == "valid":
        out = np.zeros((h - kh + 1, w - kw + 1))
        for i in range(out.shape[0]):
            for j in range(out.shape[1]):
                # output (i, j) sees x[i : i + kh, j : j + kw] against the flipped kernel
                out[i, j] = (x[i : i + kh, j : j + kw] * k.numpy()[::-1, ::-1]).sum()
        return torch.from_numpy(out)
    cy, cx = kh // 2, kw // 2
    xp = np.pad(x, ((kh - 1 - cy, cy), (kw - 1 - cx, cx)), mode=mode[padding])
    out = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            for m in range(kh):
                for n in range(kw):
                    out[i, j] += k[m, n].item() * xp[i - m + kh - 1, j - n + kw - 1]
    return torch.from_numpy(out)


@pytest.mark.parametrize("padding", PADDINGS)
def test_blur_is_a_true_convolution(padding):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 1, 9, 8, dtype=F64, generator=g)
    k = torch.rand(4, 3, dtype=F64, generator=g)  # even and odd sizes, asymmetric
    y = Blur(k, padding=padding).A(x)
    assert rel(y[0, 0], reference_convolution(x[0, 0], k, padding)) < 1e-13


@pytest.mark.parametrize("padding", ["circular", "reflect", "replicate", "zeros"])
def test_centred_delta_kernel_is_the_identity(padding):
    for kh, kw in ((3, 3), (4, 6), (5, 2)):
        delta = torch.zeros(kh, kw, dtype=F64)
        delta[kh // 2, kw // 2] = 1
        x = torch.randn(2, 3, 7, 9, dtype=F64)
        assert torch.equal(Blur(delta, padding=padding, fft=False).A(x), x)
        assert rel(Blur(delta, padding=padding, fft=True).A(x), x) < 1e-15


@pytest.mark.parametrize("padding", PADDINGS)
def test_adjoint_every_padding(padding):
    g = torch.Generator().manual_seed(1)
    k = torch.rand(5, 4, dtype=F64, generator=g)
    assert adjointness_error(Blur(k, padding=padding), (2, 3, 11, 10), generator=g) <= 1e-12
    # one kernel per sample and per channel
    k4 = torch.rand(2, 3, 3, 5, dtype=F64, generator=g)
    assert adjointness_error(Blur(k4, padding=padding), (2, 3, 11, 10), generator=g) <= 1e-12


def test_adjoint_matches_dense_transpose():
    k = gaussian_kernel(1.0, dtype=F64)
    for padding in PADDINGS:
        op = Blur(k, padding=padding)
        a = dense_matrix(op, (1, 1, 8, 9))
        at = torch.stack(
            [
                op.A_adjoint(e.reshape(1, 1, *op.output_shape((1, 1, 8, 9))[-2:])).reshape(-1)
                for e in torch.eye(a.shape[0], dtype=F64)
            ]
        ).T
        assert rel(at, a.T) < 1e-14


def test_dense_complex_operator_adjoint():
    g = torch.Generator().manual_seed(2)
    m = torch.randn(7, 5, dtype=torch.complex128, generator=g)
    op = MatrixOperator(m)
    assert adjointness_error(op, (3, 5), generator=g) <= 1e-12
    assert rel(dense_matrix(op, (1, 5)), m) < 1e-15

    class WrongAdjoint(MatrixOperator):
        def A_adjoint(self, y):  # transpose without conjugation: not the adjoint
            return y @ self.matrix

    assert adjointness_error(WrongAdjoint(m), (3, 5), generator=g) > 1e-3
    # a tensor gives the shape and dtype; deepinv's name works too
    assert adjointness_error(op, torch.zeros(3, 5, dtype=torch.complex128), generator=g) <= 1e-12
    assert adjointness_error(WrongAdjoint(m), torch.zeros(3, 5, dtype=torch.complex128)) > 1e-3


def test_per_sample_kernels_blur_each_sample_with_its_own():
    k = torch.stack([gaussian_kernel(0.8, 5, dtype=F64), gaussian_kernel(2.0, 5, dtype=F64)])
    op = Blur(k[:, None], padding="circular")
    x = torch.randn(2, 3, 10, 10, dtype=F64)
    y = op.A(x)
    for i in range(2):
        yi = Blur(k[i], padding="circular").A(x[i : i + 1])
        assert rel(y[i : i + 1], yi) < 1e-14


def test_gaussian_kernel():
    k = gaussian_kernel(2.5)
    assert k.shape == (17, 17) and abs(k.sum().item() - 1) < 1e-6
    assert torch.allclose(k, k.T) and torch.allclose(k, k.flip(0))
    ka = gaussian_kernel((1.0, 3.0), dtype=F64)
    assert ka.shape == (7, 19)
    # separable Gaussian: ratio of neighbours along x is exp(-(2t+1)/(2 s^2))
    c = ka[3]
    assert abs((c[10] / c[9]).item() - np.exp(-0.5 / 9.0)) < 1e-12
    sigma = torch.tensor(1.5, dtype=F64, requires_grad=True)
    gaussian_kernel(sigma, 7)[3, 4].backward()
    assert sigma.grad is not None and sigma.grad.abs() > 0
    with pytest.raises(ValueError, match="sigma"):
        gaussian_kernel(-1.0)


def test_physics_call_adds_reproducible_noise():
    k = gaussian_kernel(1.0)
    x = torch.rand(2, 3, 16, 16)
    y1 = Blur(k, noise=GaussianNoise(0.1, generator=7))(x)
    y2 = Blur(k, noise=GaussianNoise(0.1, generator=7))(x)
    y3 = Blur(k, noise=GaussianNoise(0.1, generator=8))(x)
    clean = Blur(k).A(x)
    assert torch.equal(y1, y2) and not torch.equal(y1, y3)
    # the noise has the requested standard deviation (3 * 2 * 10 * 10 samples: +-3%)
    assert abs((y1 - clean).std().item() - 0.1) < 0.01
    counts = PoissonNoise(gain=0.01, generator=1)(clean.clamp_min(0))
    assert torch.equal(counts, PoissonNoise(gain=0.01, generator=1)(clean.clamp_min(0)))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Blur(gaussian_kernel(1.0), padding="same"), r"padding: expected one of .*'same'"),
        (lambda: Blur(torch.ones(3)), r"kernel: expected shape \(kh, kw\).*\(3,\)"),
        (lambda: Blur(torch.ones(3, 3, dtype=torch.int64)), r"kernel: expected a real floating"),
        (lambda: GaussianNoise(-0.1), r"sigma: expected a finite number >= 0, got -0.1"),
    ],
)
def test_bad_construction(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_images():
    op = Blur(gaussian_kernel(2.5))  # 17 x 17, valid
    with pytest.raises(
        ValueError, match=r"kernel: expected at most the image size \(10, 10\).*\(17, 17\)"
    ):
        op.A(torch.rand(1, 1, 10, 10))
    with pytest.raises(
        ValueError, match=r"x: expected a tensor of shape \(B, C, H, W\), got \(10, 10\)"
    ):
        op.A(torch.rand(10, 10))
    per_sample = Blur(torch.rand(3, 1, 3, 3))
    with pytest.raises(ValueError, match="kernel: expected batch size 1 or 2"):
        per_sample.A(torch.rand(2, 1, 8, 8))


def test_operator_is_a_module():
    k = torch.nn.Parameter(gaussian_kernel(1.0, dtype=F64))
    op = Blur(k)
    assert [n for n, _ in op.named_parameters()] == ["kernel"]
    op2 = Blur(gaussian_kernel(1.0, dtype=F64))
    assert "kernel" in op2.state_dict()
    assert isinstance(op2, LinearOperator) and issubclass(ur.physics.Physics, torch.nn.Module)


@pytest.mark.parametrize("padding", PADDINGS)
def test_fft_and_direct_convolutions_agree(padding):
    g = torch.Generator().manual_seed(3)
    for shape in ((5, 5), (4, 7), (9, 9)):
        k = torch.rand(2, 1, *shape, dtype=F64, generator=g)
        fft, direct = Blur(k, padding=padding, fft=True), Blur(k, padding=padding, fft=False)
        assert adjointness_error(fft, (2, 3, 12, 13), generator=g) <= 1e-12
        for dtype in (F64, torch.complex128):
            x = torch.randn(2, 3, 12, 13, dtype=dtype, generator=g)
            y = torch.randn(direct.A(x).shape, dtype=dtype, generator=g)
            assert rel(fft.A(x), direct.A(x)) < 1e-13
            assert rel(fft.A_adjoint(y), direct.A_adjoint(y)) < 1e-13
            assert rel(fft.normal(x), direct.normal(x)) < 1e-13
    # float32 images with a float64 kernel stay float32 on both paths
    x32 = torch.rand(1, 1, 12, 13)
    assert Blur(k[:1], padding=padding, fft=True).A(x32).dtype == torch.float32


def test_circular_closed_form_prox_equals_iterative_and_dense():
    from unrolled.linalg import CG, prox_l2
    from unrolled.testing import dense_prox

    g = torch.Generator().manual_seed(4)
    k = torch.rand(5, 4, dtype=F64, generator=g).requires_grad_()
    z = torch.randn(2, 3, 9, 10, dtype=F64, generator=g).requires_grad_()
    y = torch.randn(2, 3, 9, 10, dtype=F64, generator=g).requires_grad_()
    gamma = torch.tensor([0.5, 4.0], dtype=F64, requires_grad=True)
    op = Blur(k, padding="circular")
    h, info = op.prox_l2_with_info(z, y, gamma)
    assert info.mode == "closed_form"
    iterative = prox_l2(op, z, y, gamma, solver=CG(tol=1e-14, max_iter=2000))
    assert rel(h, iterative) < 1e-10
    truth = dense_prox(Blur(k, padding="circular"), z, y, gamma)
    v = torch.randn(h.shape, dtype=F64, generator=g)
    grads = torch.autograd.grad((h * v).sum(), [z, y, gamma, k])
    truth_grads = torch.autograd.grad((truth * v).sum(), [z, y, gamma, k])
    for a, b in zip(grads, truth_grads, strict=True):
        assert rel(a, b) < 1e-10


@pytest.mark.parametrize("padding", PADDINGS)
def test_fourier_preconditioned_solve_agrees_with_plain(padding):
    from unrolled.linalg import CG, prox_l2_with_info

    g = torch.Generator().manual_seed(5)
    op = Blur(gaussian_kernel(1.5, dtype=F64), padding=padding)
    z = torch.randn(2, 2, 16, 16, dtype=F64, generator=g)
    y = op.A(torch.rand(2, 2, 16, 16, dtype=F64, generator=g))
    gamma = torch.tensor([3.0, 50.0], dtype=F64)
    plain, i_plain = prox_l2_with_info(
        op, z, y, gamma, solver=CG(tol=1e-12, max_iter=2000, preconditioner=None)
    )
    fourier = CG(
        tol=1e-12, max_iter=2000, preconditioner=lambda o, gm: o.fourier_preconditioner(gm)
    )
    pre, i_pre = prox_l2_with_info(op, z, y, gamma, solver=fourier)
    assert i_pre.forward.all_converged and i_plain.forward.all_converged
    assert rel(pre, plain) < 1e-9  # both within cond * tol of the solution
    if padding == "circular":  # exact inverse: one step
        assert i_pre.forward.iterations.max() <= 2


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: gaussian_kernel(True), TypeError, "sigma: expected a number, .*got True$"),
        (lambda: gaussian_kernel((1.0, False)), TypeError, "sigma: expected .*got False$"),
        (lambda: gaussian_kernel("1"), TypeError, "sigma: expected .*got '1'$"),
        (lambda: gaussian_kernel(-1.0), ValueError, r"sigma: expected finite values > 0"),
        (lambda: gaussian_kernel(1.0, size=True), TypeError, "size: expected an integer"),
        (lambda: gaussian_kernel(1.0, size=(3, 0)), ValueError, "size: expected an integer"),
        (lambda: GaussianNoise(True), TypeError, "sigma: expected a finite number >= 0, got True"),
        (lambda: GaussianNoise("0.1"), TypeError, "sigma: expected a finite number >= 0"),
        (lambda: GaussianNoise(-0.1), ValueError, "sigma: expected a finite number >= 0"),
        (lambda: PoissonNoise(gain=None), TypeError, "gain: expected a finite number >= 0"),
        (lambda: GaussianNoise(0.1, generator=1.5), TypeError, "generator: expected a torch"),
        (lambda: GaussianNoise(0.1)([1.0]), TypeError, r"y: expected a torch.Tensor, got \[1.0\]"),
        (lambda: Blur(torch.ones(3, 3) / 9).A("x"), TypeError, "x: expected a tensor of shape"),
    ],
)
def test_wrong_types_raise_type_errors_and_wrong_values_value_errors(call, error, match):
    with pytest.raises(error, match="^" + match) as raised:
        call()
    assert type(raised.value) is error
