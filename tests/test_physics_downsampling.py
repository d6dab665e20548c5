"""Downsampling: adjoint, closed-form (circular) and iterative prox against a dense solve,
gradients for z, y, gamma and the filter kernel.

Tolerances: float64, normalised kernels (||A|| <= 1) and gamma in [0.5, 2], so the
normal system has condition number <= 3: dense and closed-form solves agree to ~1e-15,
CG at tol 1e-14 to ~1e-13. 1e-10 on values and 1e-8 on gradients catch any formula
error (a wrong alias fold or kernel centring shows at O(1)) with a wide margin.
"""

import pytest
import torch

from unrolled.linalg import CG, ProxInfo, prox_l2
from unrolled.physics.downsampling import Downsampling
from unrolled.testing import adjointness_error, dense_prox, prox_gradients, relative_error

TIGHT = CG(max_iter=1000, tol=1e-14)
DTYPES = [torch.float64, torch.complex128]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _kernel(shape, seed=0):
    k = torch.rand(shape, dtype=torch.float64, generator=_gen(seed)) + 0.1
    return k / k.sum(dim=(-2, -1), keepdim=True)


def _image_shape(op, side=8, batch=2, channels=2):
    """An input shape whose filtered size is ``side`` (divisible by the factor)."""
    if op.padding == "valid" and op.blur is not None:
        kh, kw = op.blur.kernel.shape[-2:]
        return (batch, channels, side + kh - 1, side + kw - 1)
    return (batch, channels, side, side)


KERNELS = {
    "gaussian": lambda: "gaussian",
    "none": lambda: None,
    "shared-even": lambda: _kernel((4, 3)),
    "per-sample": lambda: _kernel((2, 1, 3, 3)),
}


def _op(factor, kernel, padding):
    op = Downsampling(factor, KERNELS[kernel](), padding=padding)
    if op.blur is not None and op.blur.kernel.dtype != torch.float64:
        op.blur.kernel = op.blur.kernel.double()
    return op


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding", ["circular", "valid", "reflect", "replicate", "zeros"])
@pytest.mark.parametrize("kernel", list(KERNELS))
def test_adjoint(dtype, padding, kernel):
    op = _op(2, kernel, padding)
    assert adjointness_error(op, _image_shape(op), dtype=dtype, generator=_gen(1)) <= 1e-12


def test_shapes_and_decimation():
    x = torch.arange(64.0).reshape(1, 1, 8, 8)
    op = Downsampling(2, None)
    assert torch.equal(op(x), x[..., ::2, ::2])
    op = Downsampling(4, "gaussian", padding="valid")
    kh = op.blur.kernel.shape[-1]
    assert op.output_shape((3, 2, 8 + kh - 1, 16 + kh - 1)) == (3, 2, 2, 4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("factor", [2, 4])
@pytest.mark.parametrize("kernel", list(KERNELS))
def test_closed_form_prox(dtype, factor, kernel):
    """Circular padding: the FFT closed form equals the dense solve and the iterative prox."""
    op = _op(factor, kernel, "circular")
    g = _gen(2)
    shape = _image_shape(op)
    z = torch.randn(shape, dtype=dtype, generator=g)
    y = torch.randn(op.output_shape(shape), dtype=dtype, generator=g)
    gamma = torch.tensor([0.5, 2.0], dtype=torch.float64)
    ref = dense_prox(op, z, y, gamma)
    closed, info = op.prox_l2_with_info(z, y, gamma)
    iterative = prox_l2(op, z, y, gamma, solver=TIGHT)
    assert info.mode == "closed_form" and info.forward is None
    assert relative_error(closed, ref) <= 1e-10
    assert relative_error(iterative, ref) <= 1e-10
    assert relative_error(closed, iterative) <= 1e-8
    assert closed.dtype == z.dtype


@pytest.mark.parametrize("padding", ["valid", "reflect"])
def test_other_paddings_are_iterative(padding):
    op = _op(2, "shared-even", padding)
    g = _gen(4)
    shape = _image_shape(op)
    z = torch.randn(shape, dtype=torch.float64, generator=g)
    y = torch.randn(op.output_shape(shape), dtype=torch.float64, generator=g)
    h, info = op.prox_l2_with_info(z, y, 0.8, solver=TIGHT)
    assert isinstance(info, ProxInfo) and info.mode == "implicit" and info.forward is not None
    assert relative_error(h, dense_prox(op, z, y, 0.8)) <= 1e-10


def test_per_pixel_gamma_falls_back_to_iterative():
    op = _op(2, "gaussian", "circular")
    g = _gen(5)
    z = torch.randn(1, 1, 8, 8, dtype=torch.float64, generator=g)
    y = torch.randn(1, 1, 4, 4, dtype=torch.float64, generator=g)
    gamma = torch.rand(1, 1, 8, 8, dtype=torch.float64, generator=g) + 0.5
    h, info = op.prox_l2_with_info(z, y, gamma, solver=TIGHT)
    assert info.mode == "implicit"
    assert relative_error(h, dense_prox(op, z, y, gamma)) <= 1e-10


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding", ["circular", "valid"])
def test_gradients_against_dense(dtype, padding):
    """Gradients for z, y, gamma and a per-sample kernel made by softmax of logits."""
    g = _gen(6)
    logits = torch.randn(2, 1, 3, 3, dtype=torch.float64, generator=g)
    probe = Downsampling(2, _kernel((2, 1, 3, 3)), padding=padding)
    shape = _image_shape(probe)
    out = probe.output_shape(shape)
    z = torch.randn(shape, dtype=dtype, generator=g)
    y = torch.randn(out, dtype=dtype, generator=g)
    v = torch.randn(shape, dtype=dtype, generator=g)
    gamma = torch.tensor([0.6, 1.7], dtype=torch.float64)
    leaves = [t.clone().requires_grad_() for t in (z, y, gamma, logits)]

    def run(kind):
        def prox(z, y, gamma):
            kernel = torch.softmax(leaves[3].flatten(-2), -1).reshape(2, 1, 3, 3)
            op = Downsampling(2, kernel, padding=padding)
            if kind == "dense":
                return dense_prox(op, z, y, gamma)
            if kind == "implicit":
                return prox_l2(op, z, y, gamma, solver=TIGHT)
            return op.prox_l2(z, y, gamma, solver=TIGHT)

        return prox_gradients(prox, leaves, v)

    _, ref = run("dense")
    for kind in ("implicit", "closed"):
        _, grads = run(kind)
        for name, a, b in zip(("z", "y", "gamma", "kernel logits"), grads, ref, strict=True):
            assert relative_error(a, b) <= 1e-8, (kind, name)


def test_bad_inputs():
    with pytest.raises(ValueError, match="factor: expected an integer >= 1, got 0"):
        Downsampling(0)
    with pytest.raises(TypeError, match="factor: expected an integer >= 1, got 2.0"):
        Downsampling(2.0)
    with pytest.raises(TypeError, match="factor: expected an integer >= 1, got True"):
        Downsampling(True)
    with pytest.raises(ValueError, match="padding: expected one of"):
        Downsampling(2, padding="wrap")
    with pytest.raises(ValueError, match="kernel: expected 'gaussian'"):
        Downsampling(2, kernel="box")
    op = Downsampling(3, None)
    with pytest.raises(ValueError, match=r"x: expected a filtered image of sides divisible by "):
        op.A(torch.zeros(1, 1, 8, 9))
    with pytest.raises(ValueError, match=r"x: expected a tensor of shape \(B, C, H, W\)"):
        op.A(torch.zeros(9, 9))
