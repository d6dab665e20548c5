"""Composition, sums and scaling of operators: adjoints, prox against a dense solve,
gradients reaching the tensors of every part, and the ``@``, ``+``, ``*`` operators.

Tolerances as for the parts: float64/complex128, normal systems with condition
number below ~10 (parts of norm <= ~2, gamma in [0.5, 2]), so dense and CG (tol 1e-14)
solutions agree to ~1e-13; 1e-10 on values, 1e-8 on gradients.
"""

import pytest
import torch

from unrolled.linalg import (
    CG,
    ComposedOperator,
    ScaledOperator,
    SumOperator,
    prox_l2,
)
from unrolled.physics import Blur, gaussian_kernel
from unrolled.physics.downsampling import Downsampling
from unrolled.physics.inpainting import Inpainting
from unrolled.physics.mri import MRI
from unrolled.testing import (
    adjointness_error,
    dense_matrix,
    dense_prox,
    prox_gradients,
    relative_error,
)

TIGHT = CG(max_iter=1000, tol=1e-14)
C128 = torch.complex128


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _rand(shape, seed, dtype=torch.float64):
    return torch.randn(shape, dtype=dtype, generator=_gen(seed))


def _blur(padding="circular"):
    return Blur(gaussian_kernel(1.0, size=3, dtype=torch.float64), padding=padding)


def _weights(seed=0, shape=(8, 8)):
    return torch.rand(shape, dtype=torch.float64, generator=_gen(seed))


CASES = {
    # name: (operator factory, input shape, dtype)
    "downsample-after-blur": (
        lambda: ComposedOperator(Downsampling(2, None), _blur("reflect")),
        (2, 1, 8, 8),
        torch.float64,
    ),
    "mri-after-inpainting": (
        lambda: ComposedOperator(MRI(_weights(1)), Inpainting(_weights(2))),
        (2, 1, 8, 8),
        C128,
    ),
    "sum": (lambda: SumOperator(_blur(), Inpainting(_weights(3))), (2, 2, 8, 8), torch.float64),
    "scaled-real": (lambda: ScaledOperator(-1.7, _blur("valid")), (2, 1, 8, 8), torch.float64),
    "scaled-complex": (lambda: ScaledOperator(0.6 - 1.2j, MRI(_weights(4))), (2, 1, 8, 8), C128),
    "scaled-tensor": (
        lambda: ScaledOperator(torch.tensor(0.8, dtype=torch.float64), Inpainting(_weights(5))),
        (2, 1, 8, 8),
        torch.float64,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_adjoint(case):
    make, shape, dtype = CASES[case]
    op = make()
    assert adjointness_error(op, shape, dtype=dtype, generator=_gen(7)) <= 1e-12
    if dtype == torch.float64:  # real operators act on complex data too
        assert adjointness_error(op, shape, dtype=C128, generator=_gen(8)) <= 1e-12


@pytest.mark.parametrize("case", list(CASES))
def test_prox_against_dense(case):
    make, shape, dtype = CASES[case]
    op = make()
    z = _rand(shape, 9, dtype)
    y = _rand(op.output_shape(shape), 10, dtype)
    gamma = torch.tensor([0.5, 2.0], dtype=torch.float64)
    ref = dense_prox(op, z, y, gamma)
    assert relative_error(prox_l2(op, z, y, gamma, solver=TIGHT), ref) <= 1e-10
    # the operator's own prox (closed form where a scaled part has one)
    assert relative_error(op.prox_l2(z, y, gamma, solver=TIGHT), ref) <= 1e-10


def test_composition_values():
    x = _rand((2, 1, 8, 8), 11)
    blur, down = _blur(), Downsampling(2, None)
    assert torch.equal(ComposedOperator(down, blur).A(x), down.A(blur.A(x)))
    w = _weights(12)
    torch.testing.assert_close(
        SumOperator(blur, Inpainting(w)).A(x), blur.A(x) + w * x, rtol=0, atol=0
    )
    torch.testing.assert_close(ScaledOperator(3.0, blur).A(x), 3 * blur.A(x), rtol=0, atol=0)
    assert ComposedOperator(down, blur).output_shape((2, 1, 8, 8)) == (2, 1, 4, 4)
    assert ComposedOperator(MRI(w), Inpainting(w)).domain_dtype() == C128


def test_scaled_prox_delegates_to_closed_form():
    op = ScaledOperator(2.5, Inpainting(_weights(13)))
    z, y = _rand((2, 1, 8, 8), 14), _rand((2, 1, 8, 8), 15)
    h, info = op.prox_l2_with_info(z, y, 0.7)
    assert info.mode == "closed_form"
    assert relative_error(h, dense_prox(op, z, y, 0.7)) <= 1e-10


def test_gradients_reach_every_part():
    """A scaled composite with a trainable scale, mask logits and inpainting weights:
    implicit CG and (for the scale) closed-form gradients against the dense solve."""
    shape = (2, 1, 8, 8)
    z, y, v = _rand(shape, 16, C128), _rand(shape, 17, C128), _rand(shape, 18, C128)
    gamma = torch.tensor([0.7, 1.4], dtype=torch.float64)
    logits, weights = _rand((8, 8), 19), _weights(20)
    scale = torch.tensor(1.3, dtype=torch.float64)
    leaves = [t.clone().requires_grad_() for t in (z, y, gamma, logits, weights, scale)]
    names = ("z", "y", "gamma", "logits", "weights", "scale")

    def run(kind):
        def prox(z, y, gamma):
            parts = ComposedOperator(MRI(torch.sigmoid(leaves[3])), Inpainting(leaves[4]))
            op = ScaledOperator(leaves[5], parts)
            if kind == "dense":
                return dense_prox(op, z, y, gamma)
            return prox_l2(op, z, y, gamma, solver=TIGHT, backward=kind)

        return prox_gradients(prox, leaves, v)

    _, ref = run("dense")
    for kind in ("implicit", "unroll"):
        _, grads = run(kind)
        for name, a, b in zip(names, grads, ref, strict=True):
            assert relative_error(a, b) <= 1e-8, (kind, name)

    # the scale's gradient through the delegated closed form (y / c, gamma c^2)
    leaves2 = [t.detach().clone().requires_grad_() for t in (z, y, gamma, weights, scale)]

    def closed(kind):
        def prox(z, y, gamma):
            op = ScaledOperator(leaves2[4], Inpainting(leaves2[3]))
            return dense_prox(op, z, y, gamma) if kind == "dense" else op.prox_l2(z, y, gamma)

        return prox_gradients(prox, leaves2, v)

    _, ref = closed("dense")
    _, grads = closed("closed")
    for a, b in zip(grads, ref, strict=True):
        assert relative_error(a, b) <= 1e-8


# -- the algebra's dunders, against matrices built here without the library's operators --

H = W = 8
N = H * W


def _circular_blur_matrix(kernel: torch.Tensor) -> torch.Tensor:
    """``y[i, j] = sum k[m, n] x[(i - m + kh // 2) % H, (j - n + kw // 2) % W]`` by loops."""
    kh, kw = kernel.shape
    matrix = torch.zeros(N, N, dtype=torch.float64)
    for i in range(H):
        for j in range(W):
            for m in range(kh):
                for n in range(kw):
                    src = ((i - m + kh // 2) % H) * W + (j - n + kw // 2) % W
                    matrix[i * W + j, src] += kernel[m, n]
    return matrix


def _decimation_matrix(factor: int) -> torch.Tensor:
    rows = [(factor * i) * W + factor * j for i in range(H // factor) for j in range(W // factor)]
    return torch.eye(N, dtype=torch.float64)[rows]


def _adjoint_matrix(op, out_shape, dtype) -> torch.Tensor:
    """The matrix of ``op.A_adjoint``, column by column."""
    m = torch.Size(out_shape).numel()
    eye = torch.eye(m, dtype=dtype)
    return torch.stack([op.A_adjoint(e.reshape(out_shape)).reshape(-1) for e in eye], dim=1)


@pytest.fixture
def parts():
    kernel = torch.rand(3, 3, dtype=torch.float64, generator=_gen(21))
    w = _weights(22)
    blur = Blur(kernel, padding="circular", fft=False)
    return {
        "blur": (blur, _circular_blur_matrix(kernel)),
        "mask": (Inpainting(w), torch.diag(w.reshape(-1))),
        "down": (Downsampling(2, None), _decimation_matrix(2)),
    }


def _check(op, expected, dtype=torch.float64):
    """``op``'s matrix and its adjoint's against ``expected`` (float64: exact sums of
    a few products, so agreement to a few ulps)."""
    got = dense_matrix(op, (1, 1, H, W), dtype)
    torch.testing.assert_close(got, expected.to(dtype), rtol=0, atol=1e-14)
    out_shape = op.output_shape((1, 1, H, W))
    adjoint = _adjoint_matrix(op, out_shape, dtype)
    torch.testing.assert_close(adjoint, expected.to(dtype).conj().T, rtol=0, atol=1e-14)


def test_scaling_by_a_number_on_either_side(parts):
    blur, b = parts["blur"]
    for op in (2.0 * blur, blur * 2.0, -3 * blur):
        assert isinstance(op, ScaledOperator) and op.op is blur
    _check(2.0 * blur, 2.0 * b)
    _check(blur * 2.0, 2.0 * b)
    _check(-3 * blur, -3.0 * b)


def test_complex_scaling_conjugates_in_the_adjoint(parts):
    mask, m = parts["mask"]
    c = 0.6 - 1.2j
    _check(c * mask, c * m.to(C128), dtype=C128)


def test_composition_is_matmul(parts):
    (blur, b), (down, d) = parts["blur"], parts["down"]
    op = down @ blur
    assert isinstance(op, ComposedOperator) and (op.outer, op.inner) == (down, blur)
    _check(op, d @ b)


def test_sum_is_add(parts):
    (blur, b), (mask, m) = parts["blur"], parts["mask"]
    op = blur + mask
    assert isinstance(op, SumOperator) and (op.first, op.second) == (blur, mask)
    _check(op, b + m)


def test_expression_of_all_three(parts):
    (blur, b), (mask, m), (down, d) = parts["blur"], parts["mask"], parts["down"]
    op = 2.0 * (down @ (blur + mask)) * 0.5
    _check(op, d @ (b + m))
    z, y = _rand((2, 1, H, W), 24), _rand((2, 1, H // 2, W // 2), 25)
    assert relative_error(op.prox_l2(z, y, 0.7, solver=TIGHT), dense_prox(op, z, y, 0.7)) <= 1e-10


def test_the_algebra_refuses_what_is_not_an_operator(parts):
    blur, _ = parts["blur"]
    for bad in (lambda: blur @ 3, lambda: blur + 1.0, lambda: 1.0 + blur, lambda: blur * blur):
        with pytest.raises(TypeError):
            bad()


def test_bad_inputs():
    with pytest.raises(TypeError, match="outer: expected a LinearOperator, got 3"):
        ComposedOperator(3, _blur())
    with pytest.raises(TypeError, match="op: expected a LinearOperator"):
        ScaledOperator(2.0, torch.zeros(3))
    with pytest.raises(ValueError, match="scale: expected a number or a 0-d"):
        ScaledOperator(torch.ones(3), _blur())
    with pytest.raises(TypeError, match="scale: expected a number or a 0-d tensor, got '2'"):
        ScaledOperator("2", _blur())
    with pytest.raises(TypeError, match="scale: expected a number or a 0-d tensor, got True"):
        ScaledOperator(True, _blur())
    assert ScaledOperator(2j, _blur()).scale == 2j  # a complex scale is a number too
    op = SumOperator(_blur("valid"), _blur("circular"))
    with pytest.raises(ValueError, match=r"second: expected an output shape \(1, 1, 6, 6\)"):
        op.A(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="gamma: expected finite values > 0"):
        ScaledOperator(2.0, _blur()).prox_l2(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8), 0.0)
