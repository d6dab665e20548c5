"""MRI: single-coil (closed-form prox) and multi-coil (iterative prox) Cartesian operators.

Checks: adjoint, prox against a dense complex128 solve, implicit and closed-form
gradients for z, y, gamma, the mask logits (mask = sigmoid(logits)) and the coil maps
against a differentiable dense solve, memory of the implicit backward flat in CG
iterations, helpers, bad inputs.

Tolerances: F is unitary and the masks and normalised coil maps have norm <= 1, so
with gamma in [0.5, 2] the normal system's condition number is <= 3: dense, closed-form
and CG (tol 1e-14) solutions agree to ~1e-14; 1e-10 on values and 1e-8 on gradients.
"""

import pytest
import torch

from unrolled.linalg import CG, prox_l2
from unrolled.physics.mri import (
    MRI,
    MultiCoilMRI,
    cartesian_mask,
    fft2c,
    ifft2c,
    smooth_coil_maps,
)
from unrolled.testing import (
    adjointness_error,
    dense_prox,
    prox_gradients,
    relative_error,
    saved_bytes,
)

TIGHT = CG(max_iter=500, tol=1e-14)
C128 = torch.complex128


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _cplx(shape, seed):
    return torch.randn(shape, dtype=C128, generator=_gen(seed))


def test_fft2c_is_unitary_and_centred():
    x = _cplx((2, 1, 8, 6), 0)
    assert relative_error(ifft2c(fft2c(x)), x) <= 1e-14
    assert abs(float(fft2c(x).norm() / x.norm()) - 1) <= 1e-14
    ones = torch.ones(1, 1, 8, 6, dtype=C128)
    k = fft2c(ones)
    assert abs(k[0, 0, 4, 3] - (48**0.5)) < 1e-12  # DC at the centre (H // 2, W // 2)


# -- single coil ----------------------------------------------------------------------


@pytest.mark.parametrize("mask_shape", [(8, 8), (8,), (2, 8, 8), (3, 2, 8, 8), (3, 1, 8, 8)])
def test_single_coil_adjoint(mask_shape):
    mask = torch.rand(mask_shape, dtype=torch.float64, generator=_gen())
    op = MRI(mask)
    assert op.domain_dtype() == C128
    assert adjointness_error(op, (3, 2, 8, 8), generator=_gen(1)) <= 1e-12


@pytest.mark.parametrize("mask_shape", [(8, 8), (2, 1, 8, 8)])
def test_single_coil_prox(mask_shape):
    mask = (torch.rand(mask_shape, generator=_gen(2)) > 0.5).double()
    op = MRI(mask)
    z, y = _cplx((2, 1, 8, 8), 3), _cplx((2, 1, 8, 8), 4)
    gamma = torch.tensor([0.5, 2.0], dtype=torch.float64)
    ref = dense_prox(op, z, y, gamma)
    closed, info = op.prox_l2_with_info(z, y, gamma)
    iterative = prox_l2(op, z, y, gamma, solver=TIGHT)
    assert info.mode == "closed_form" and info.forward is None
    assert relative_error(closed, ref) <= 1e-10
    assert relative_error(iterative, ref) <= 1e-10
    assert relative_error(closed, iterative) <= 1e-8
    # a per-pixel gamma has no k-space closed form: iterative fallback, still exact
    gamma = torch.rand(2, 1, 8, 8, dtype=torch.float64, generator=_gen(5)) + 0.5
    h, info = op.prox_l2_with_info(z, y, gamma, solver=TIGHT)
    assert info.mode == "implicit"
    assert relative_error(h, dense_prox(op, z, y, gamma)) <= 1e-10


@pytest.mark.parametrize("line_mask", [False, True])
def test_single_coil_gradients_trainable_mask(line_mask):
    """Mask = sigmoid(logits) (per line or per k-space point): gradients for z, y, gamma and
    the logits, implicit (CG) and closed form, against the dense differentiable solve."""
    shape = (2, 1, 8, 8)
    logits = torch.randn((8,) if line_mask else (8, 8), dtype=torch.float64, generator=_gen(6))
    z, y, v = _cplx(shape, 7), _cplx(shape, 8), _cplx(shape, 9)
    gamma = torch.tensor([0.7, 1.6], dtype=torch.float64)
    leaves = [t.clone().requires_grad_() for t in (z, y, gamma, logits)]

    def run(kind):
        def prox(z, y, gamma):
            op = MRI(torch.sigmoid(leaves[3]))
            if kind == "dense":
                return dense_prox(op, z, y, gamma)
            if kind == "implicit":
                return prox_l2(op, z, y, gamma, solver=TIGHT)
            return op.prox_l2(z, y, gamma)

        return prox_gradients(prox, leaves, v)

    _, ref = run("dense")
    assert ref[3].abs().max() > 1e-3  # the logits' gradient is not trivially zero
    for kind in ("implicit", "closed"):
        _, grads = run(kind)
        for name, a, b in zip(("z", "y", "gamma", "logits"), grads, ref, strict=True):
            assert relative_error(a, b) <= 1e-8, (kind, name)


def test_single_coil_logit_gradient_by_finite_differences():
    """An independent check of the mask-logit gradient of the closed form: central
    differences (error O(eps^2) ~ 1e-10 relative, cancellation ~1e-16/eps ~ 1e-11)."""
    logits = torch.randn(8, 8, dtype=torch.float64, generator=_gen(10))
    z, y, v = _cplx((1, 1, 8, 8), 11), _cplx((1, 1, 8, 8), 12), _cplx((1, 1, 8, 8), 13)

    def loss(lg):
        return (v.conj() * MRI(torch.sigmoid(lg)).prox_l2(z, y, 0.9)).real.sum()

    lg = logits.clone().requires_grad_()
    (grad,) = torch.autograd.grad(loss(lg), lg)
    eps = 1e-5
    for idx in [(0, 0), (3, 4), (7, 2)]:
        e = torch.zeros_like(logits)
        e[idx] = eps
        fd = (loss(logits + e) - loss(logits - e)) / (2 * eps)
        assert abs(float(fd - grad[idx])) <= 1e-7 * max(1.0, abs(float(fd)))


# -- multi coil -----------------------------------------------------------------------


def _maps(ncoils=3, batch=1, seed=0, side=8):
    maps = smooth_coil_maps(ncoils, (side, side), seed=seed, dtype=C128)
    return maps.expand(batch, -1, -1, -1).clone() if batch > 1 else maps


@pytest.mark.parametrize(
    "mask_shape,batch_maps",
    [((8, 8), 1), ((8,), 2), ((3, 8, 8), 1), ((2, 1, 8, 8), 2), ((2, 3, 8, 8), 1)],
)
def test_multi_coil_adjoint(mask_shape, batch_maps):
    mask = torch.rand(mask_shape, dtype=torch.float64, generator=_gen(1))
    maps = _maps(batch=batch_maps) * (1 + 0.1 * _cplx((batch_maps, 3, 8, 8), 2))
    op = MultiCoilMRI(mask, maps)
    assert op.output_shape((2, 1, 8, 8)) == (2, 3, 8, 8)
    assert adjointness_error(op, (2, 1, 8, 8), generator=_gen(3)) <= 1e-12


def test_multi_coil_prox():
    op = MultiCoilMRI(cartesian_mask((8, 8), 4, 0.25, dtype=torch.float64), _maps(4))
    z, y = _cplx((2, 1, 8, 8), 4), _cplx((2, 4, 8, 8), 5)
    gamma = torch.tensor([0.5, 2.0], dtype=torch.float64)
    h, info = op.prox_l2_with_info(z, y, gamma, solver=TIGHT)
    assert info.mode == "implicit" and info.forward.all_converged
    assert relative_error(h, dense_prox(op, z, y, gamma)) <= 1e-10


def test_multi_coil_gradients():
    """Gradients for z, y, gamma, the mask logits and (per-sample) coil maps."""
    logits = torch.randn(8, 8, dtype=torch.float64, generator=_gen(14))
    maps = _maps(3, batch=2) * (1 + 0.2 * _cplx((2, 3, 8, 8), 15))
    z, y, v = _cplx((2, 1, 8, 8), 16), _cplx((2, 3, 8, 8), 17), _cplx((2, 1, 8, 8), 18)
    gamma = torch.tensor([0.8, 1.3], dtype=torch.float64)
    leaves = [t.clone().requires_grad_() for t in (z, y, gamma, logits, maps)]

    def run(kind):
        def prox(z, y, gamma):
            op = MultiCoilMRI(torch.sigmoid(leaves[3]), leaves[4])
            if kind == "dense":
                return dense_prox(op, z, y, gamma)
            return op.prox_l2(z, y, gamma, solver=TIGHT, backward=kind)

        return prox_gradients(prox, leaves, v)

    _, ref = run("dense")
    for kind in ("implicit", "unroll"):
        _, grads = run(kind)
        for name, a, b in zip(("z", "y", "gamma", "logits", "maps"), grads, ref, strict=True):
            assert relative_error(a, b) <= 1e-8, (kind, name)


def test_multi_coil_memory_flat_in_iterations():
    """Bytes autograd saves for backward: flat in CG iterations for the implicit prox,
    growing with them for backward='unroll' (tol=0, no floor stop: exactly max_iter)."""
    maps = _maps(4, side=16).requires_grad_()
    op = MultiCoilMRI(cartesian_mask((16, 16), 4, 0.1, dtype=torch.float64), maps)
    z = _cplx((2, 1, 16, 16), 19).requires_grad_()
    y = _cplx((2, 4, 16, 16), 20)

    def measure(backward, iters):
        solver = CG(max_iter=iters, tol=0.0, stop_at_floor=False, on_failure="ignore")
        return saved_bytes(lambda: op.prox_l2(z, y, 1.0, solver=solver, backward=backward))

    implicit = [measure("implicit", k) for k in (5, 50)]
    unroll = [measure("unroll", k) for k in (5, 50)]
    assert implicit[0] == implicit[1]
    # what the implicit prox keeps is O(image + operator): h, z, y, gamma, mask, maps
    image = z.numel() * z.element_size()
    assert implicit[1] <= 16 * image
    assert unroll[1] > 5 * unroll[0] and unroll[1] > 20 * implicit[1]


# -- helpers ----------------------------------------------------------------------------


def test_cartesian_mask():
    mask = cartesian_mask((16, 32), acceleration=4, center_fraction=0.125, seed=1)
    assert mask.shape == (16, 32)
    lines = mask[0]
    assert torch.equal(mask, lines.expand(16, 32))  # whole columns
    assert int(lines.sum()) == 8  # round(32 / 4)
    assert bool(lines[14:18].all())  # the 4 centre lines around DC (column 16)
    assert torch.equal(mask, cartesian_mask((16, 32), 4, 0.125, seed=1))
    assert not torch.equal(mask, cartesian_mask((16, 32), 4, 0.125, seed=2))
    with pytest.raises(ValueError, match="^acceleration: expected a finite number >= 1, got 0.5$"):
        cartesian_mask((8, 8), acceleration=0.5)
    with pytest.raises(TypeError, match="^acceleration: expected a finite number >= 1, got '4'$"):
        cartesian_mask((8, 8), acceleration="4")
    with pytest.raises(
        ValueError, match=r"^shape: expected \(H, W\) with positive sides, got \(0, 8\)$"
    ):
        cartesian_mask((0, 8))
    with pytest.raises(
        TypeError, match=r"^shape: expected \(H, W\) with positive sides, got \(8.0, 8\)$"
    ):
        cartesian_mask((8.0, 8))


def test_smooth_coil_maps():
    maps = smooth_coil_maps(4, (16, 16), dtype=C128)
    assert maps.shape == (1, 4, 16, 16) and maps.dtype == C128
    power = (maps.abs() ** 2).sum(dim=1)
    assert torch.allclose(power, torch.ones_like(power), atol=1e-12)
    # smooth: neighbouring pixels differ by a small fraction of the map's magnitude
    step = (maps[..., 1:, :] - maps[..., :-1, :]).abs().max()
    assert step < 0.3
    # distinct coils see different parts of the image
    assert (maps[0, 0].abs() - maps[0, 2].abs()).abs().max() > 0.3
    raw = smooth_coil_maps(4, (16, 16), normalize=False)
    assert raw.dtype == torch.complex64


# -- bad inputs ---------------------------------------------------------------------------


def test_bad_inputs_single_coil():
    op = MRI(torch.ones(8, 8))
    with pytest.raises(ValueError, match="x: expected a complex tensor, got dtype torch.float32"):
        op.A(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="y: expected a complex tensor"):
        op.A_adjoint(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="z: expected a complex tensor"):
        op.prox_l2(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8, dtype=torch.complex64), 1.0)
    with pytest.raises(ValueError, match=r"mask: expected shape .*\(1, 1, 8, 6\).*got \(8, 8\)"):
        op.A(torch.zeros(1, 1, 8, 6, dtype=torch.complex64))
    with pytest.raises(ValueError, match="mask: expected a real tensor"):
        MRI(torch.ones(8, 8, dtype=torch.complex64))
    with pytest.raises(ValueError, match=r"mask: .*\(8, 6\).*got \(8, 8\)"):
        MRI(torch.ones(8, 8), img_size=(8, 6))
    assert MRI(torch.ones(2, 8, 8), img_size=(8, 8)).output_shape((3, 2, 8, 8)) == (3, 2, 8, 8)
    with pytest.raises(ValueError, match=r"img_size: expected \(H, W\)"):
        MRI(torch.ones(8, 8), img_size=(8,))


def test_bad_inputs_multi_coil():
    maps = smooth_coil_maps(3, (8, 8))
    with pytest.raises(ValueError, match="coil_maps: expected a complex tensor"):
        MultiCoilMRI(torch.ones(8, 8), maps.real)
    with pytest.raises(ValueError, match=r"coil_maps: expected a tensor of shape"):
        MultiCoilMRI(torch.ones(8, 8), maps[0])
    with pytest.raises(ValueError, match=r"mask: expected shape .*got \(4, 8, 8\)"):
        MultiCoilMRI(torch.ones(4, 8, 8), maps)
    op = MultiCoilMRI(torch.ones(8, 8), maps)
    with pytest.raises(ValueError, match=r"coil_maps: expected shape \(1 or 2, Ncoils, 8, 6\)"):
        op.A(torch.zeros(2, 1, 8, 6, dtype=torch.complex64))
    with pytest.raises(ValueError, match=r"x: expected an image of shape \(B, 1, H, W\)"):
        op.A(torch.zeros(2, 3, 8, 8, dtype=torch.complex64))
    with pytest.raises(ValueError, match="x: expected a complex tensor"):
        op.A(torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match=r"y: expected 3 coils"):
        op.A_adjoint(torch.zeros(2, 4, 8, 8, dtype=torch.complex64))
    per_sample = MultiCoilMRI(torch.ones(8, 8), maps.expand(3, -1, -1, -1))
    with pytest.raises(ValueError, match=r"coil_maps: expected shape \(1 or 2"):
        per_sample.A(torch.zeros(2, 1, 8, 8, dtype=torch.complex64))
