"""Inpainting: adjoint, closed-form and iterative prox against a dense solve, gradients.

Tolerances: float64 with a system ``A^H A + I/gamma`` of condition number <= 1 + gamma
max|m|^2 (about 3 here), so a dense solve is exact to ~1e-15 and CG at tol 1e-14 to
~1e-13: 1e-10 on values and 1e-8 on gradients leave orders of magnitude of margin
while still catching any formula error (which shows at O(1)).
"""

import pytest
import torch

from unrolled.linalg import CG, ProxInfo, prox_l2
from unrolled.physics.inpainting import Inpainting
from unrolled.testing import adjointness_error, dense_prox, prox_gradients, relative_error

TIGHT = CG(max_iter=500, tol=1e-14)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("mask_shape", [(8, 8), (2, 8, 8), (1, 2, 8, 8), (3, 1, 8, 8)])
def test_adjoint(dtype, mask_shape):
    mask = torch.rand(mask_shape, generator=_gen(), dtype=torch.float64)
    op = Inpainting(mask)
    assert adjointness_error(op, (3, 2, 8, 8), dtype=dtype, generator=_gen(1)) <= 1e-12


def test_complex_weights_adjoint():
    g = _gen()
    mask = torch.randn(8, 8, dtype=torch.complex128, generator=g)
    assert adjointness_error(Inpainting(mask), (2, 1, 8, 8), dtype=torch.complex128) <= 1e-12


def _problem(dtype, batch=2, per_sample=False, seed=0):
    g = _gen(seed)
    shape = (batch, 2, 6, 6)
    mshape = shape if per_sample else (6, 6)
    logits = torch.randn(mshape, dtype=torch.float64, generator=g)
    z = torch.randn(shape, dtype=dtype, generator=g)
    y = torch.randn(shape, dtype=dtype, generator=g)
    v = torch.randn(shape, dtype=dtype, generator=g)
    gamma = torch.rand(batch, dtype=torch.float64, generator=g) + 0.5
    return logits, z, y, gamma, v


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("per_sample", [False, True])
def test_prox_values(dtype, per_sample):
    logits, z, y, gamma, _ = _problem(dtype, per_sample=per_sample)
    op = Inpainting((logits > 0).double())  # a 0/1 mask
    ref = dense_prox(op, z, y, gamma)
    iterative = prox_l2(op, z, y, gamma, solver=TIGHT)
    closed, info = op.prox_l2_with_info(z, y, gamma)
    assert relative_error(iterative, ref) <= 1e-10
    assert relative_error(closed, ref) <= 1e-10
    assert relative_error(closed, iterative) <= 1e-8
    assert isinstance(info, ProxInfo) and info.mode == "closed_form" and info.forward is None
    # Unobserved pixels keep z (up to the rounding of (z / gamma) / (1 / gamma)).
    keep = op.A(torch.ones_like(z)) == 0
    torch.testing.assert_close(closed[keep], z[keep], rtol=1e-14, atol=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("per_sample", [False, True])
def test_gradients_against_dense(dtype, per_sample):
    """Gradients for z, y, gamma and the mask logits (mask = sigmoid(logits), a non-leaf
    buffer): implicit iterative prox and closed form against a dense differentiable solve."""
    logits, z, y, gamma, v = _problem(dtype, per_sample=per_sample, seed=3)
    leaves = [t.clone().requires_grad_() for t in (z, y, gamma, logits)]

    def run(kind):
        def prox(z, y, gamma):
            op = Inpainting(torch.sigmoid(leaves[3]))
            if kind == "dense":
                return dense_prox(op, z, y, gamma)
            if kind == "implicit":
                return prox_l2(op, z, y, gamma, solver=TIGHT, backward="implicit")
            return op.prox_l2(z, y, gamma)

        return prox_gradients(prox, leaves, v)

    h_ref, g_ref = run("dense")
    for kind in ("implicit", "closed"):
        h, grads = run(kind)
        assert relative_error(h, h_ref) <= 1e-10, kind
        for name, g, r in zip(("z", "y", "gamma", "logits"), grads, g_ref, strict=True):
            assert relative_error(g, r) <= 1e-8, (kind, name)


def test_gamma_per_pixel_and_scalar():
    logits, z, y, _, _ = _problem(torch.float64)
    op = Inpainting(torch.sigmoid(logits))
    for gamma in (0.7, torch.tensor(0.7), torch.rand(2, 1, 6, 6, dtype=torch.float64) + 0.2):
        assert relative_error(op.prox_l2(z, y, gamma), dense_prox(op, z, y, gamma)) <= 1e-10


def test_bad_inputs():
    op = Inpainting(torch.ones(8, 8))
    with pytest.raises(ValueError, match=r"mask: expected shape .*\(2, 1, 7, 8\).*got \(8, 8\)"):
        op.A(torch.zeros(2, 1, 7, 8))
    with pytest.raises(ValueError, match="mask: expected shape"):
        Inpainting(torch.ones(3, 8, 8)).A(torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match=r"mask: .*batch 1 or 2"):
        Inpainting(torch.ones(3, 1, 8, 8)).A(torch.zeros(2, 1, 8, 8))
    with pytest.raises(TypeError, match="mask: expected a tensor"):
        Inpainting([[1, 0]])
    with pytest.raises(ValueError, match="mask: expected a floating or bool tensor"):
        Inpainting(torch.ones(8, 8, dtype=torch.int64))
    z = torch.zeros(1, 1, 8, 8)
    # gamma errors are the core's, word for word
    for gamma in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="gamma: expected finite values > 0"):
            op.prox_l2(z, z, gamma)
    with pytest.raises(TypeError, match="gamma: expected a positive number or tensor, got '1'"):
        op.prox_l2(z, z, "1")
    with pytest.raises(ValueError, match="y: expected shape"):
        op.prox_l2(z, torch.zeros(1, 1, 4, 4), 1.0)
    with pytest.raises(ValueError, match="backward: expected one of"):
        op.prox_l2(z, z, 1.0, backward="magic")


def test_bool_mask_and_parameter():
    mask = torch.rand(8, 8) > 0.5
    op = Inpainting(mask)
    assert op.mask.dtype == torch.get_default_dtype() and "mask" in dict(op.named_buffers())
    op = Inpainting(torch.nn.Parameter(torch.ones(8, 8)))
    assert "mask" in dict(op.named_parameters())
