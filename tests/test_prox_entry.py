"""One prox entry point for every operator: the same checks, whatever path it takes.

Each operator's ``prox_l2`` validates its arguments once, then takes its closed form
or the iterative solve. A closed-form path never skips a check: a bad ``backward`` or
``solver`` is refused by a circular blur exactly as by an operator that iterates.
Valid calls must succeed and agree with a dense float64 solve (condition numbers
below ~100, CG tol 1e-13: agreement to ~1e-11, checked at 1e-9).
"""

import pytest
import torch

from unrolled.linalg import CG, MatrixOperator, ProxResult
from unrolled.physics import (
    MRI,
    Blur,
    CompressedSensing,
    Downsampling,
    Inpainting,
    MultiCoilMRI,
    cartesian_mask,
    gaussian_kernel,
    smooth_coil_maps,
)
from unrolled.testing import dense_prox, relative_error

F64, C128 = torch.float64, torch.complex128
TIGHT = CG(max_iter=2000, tol=1e-13)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _rand(shape, seed, dtype=F64):
    return torch.randn(shape, dtype=dtype, generator=_gen(seed))


def _kernel(seed=0):
    return torch.rand(3, 3, dtype=F64, generator=_gen(seed)) + 0.1


#: name: (factory, input shape, dtype, whether the prox is closed-form here)
OPERATORS = {
    **{
        f"blur-{padding}-{'fft' if fft else 'direct'}": (
            lambda padding=padding, fft=fft: Blur(_kernel(), padding=padding, fft=fft),
            (2, 1, 8, 8),
            F64,
            padding == "circular",
        )
        for padding in ("circular", "valid", "reflect", "replicate", "zeros")
        for fft in (True, False)
    },
    "inpainting": (
        lambda: Inpainting(torch.rand(8, 8, dtype=F64, generator=_gen(1))),
        (2, 1, 8, 8),
        F64,
        True,
    ),
    "downsampling-circular": (
        lambda: Downsampling(2, gaussian_kernel(1.0, dtype=F64)),
        (2, 1, 8, 8),
        F64,
        True,
    ),
    "downsampling-valid": (
        lambda: Downsampling(2, _kernel(2), padding="valid"),
        (2, 1, 10, 10),
        F64,
        False,
    ),
    "compressed-sensing": (
        lambda: CompressedSensing(20, (1, 4, 8), dtype=F64),
        (2, 1, 4, 8),
        F64,
        True,
    ),
    "mri": (lambda: MRI(cartesian_mask((8, 8), dtype=F64)), (2, 1, 8, 8), C128, True),
    "multicoil-mri": (
        lambda: MultiCoilMRI(
            cartesian_mask((8, 8), dtype=F64), smooth_coil_maps(3, (8, 8), dtype=C128)
        ),
        (2, 1, 8, 8),
        C128,
        False,
    ),
    "matrix": (lambda: MatrixOperator(_rand((5, 7), 3)), (2, 7), F64, False),
    "composed": (
        lambda: Downsampling(2, None) @ Blur(_kernel(4), "reflect"),
        (2, 1, 8, 8),
        F64,
        False,
    ),
    "sum": (
        lambda: Blur(_kernel(5), "circular") + Inpainting(_rand((8, 8), 6)),
        (2, 1, 8, 8),
        F64,
        False,
    ),
    "scaled": (lambda: -1.5 * Blur(_kernel(7), "circular"), (2, 1, 8, 8), F64, True),
}


def _problem(name):
    make, shape, dtype, closed = OPERATORS[name]
    op = make()
    z = _rand(shape, 10, dtype)
    y = _rand(op.output_shape(shape), 11, dtype)
    return op, z, y, closed


@pytest.mark.parametrize("name", list(OPERATORS))
def test_valid_calls_succeed_and_agree_with_a_dense_solve(name):
    op, z, y, closed = _problem(name)
    gamma = torch.tensor([0.5, 2.0], dtype=F64)
    result = op.prox_l2_with_info(z, y, gamma, solver=TIGHT)
    assert isinstance(result, ProxResult)
    assert result.info.mode == ("closed_form" if closed else "implicit")
    assert (result.info.forward is None) == closed
    assert relative_error(result.value, dense_prox(op, z, y, gamma)) <= 1e-9
    h = op.prox_l2(z, y, gamma, solver=TIGHT)
    assert isinstance(h, torch.Tensor) and torch.equal(h, result.value)


@pytest.mark.parametrize("name", list(OPERATORS))
def test_every_operator_refuses_the_same_bad_arguments(name):
    op, z, y, _ = _problem(name)
    with pytest.raises(ValueError, match="backward: expected one of"):
        op.prox_l2(z, y, 1.0, backward="bogus")
    with pytest.raises(TypeError, match="solver: expected an unrolled.CG, got 'notacg'"):
        op.prox_l2(z, y, 1.0, solver="notacg")
    with pytest.raises(TypeError, match="solver: expected an unrolled.CG, got 'notacg'"):
        op.prox_l2(z, y, 1.0, backward="bogus", solver="notacg")
    with pytest.raises(TypeError, match="gamma: expected a positive number or tensor, got True"):
        op.prox_l2(z, y, True)
    with pytest.raises(TypeError, match="z: expected a torch.Tensor, got a list"):
        op.prox_l2(z.tolist(), y, 1.0)
    with pytest.raises(ValueError, match="gamma: expected finite values > 0"):
        op.prox_l2(z, y, 0.0)
    with pytest.raises(ValueError, match="gamma: expected finite values > 0"):
        op.prox_l2(z, y, torch.tensor([1.0, float("nan")], dtype=F64))
    with pytest.raises(ValueError, match="z: expected finite values"):
        op.prox_l2(torch.full_like(z, float("inf")), y, 1.0)
    with pytest.raises(ValueError, match="y: expected shape"):
        op.prox_l2(z, y[:1], 1.0)
    with pytest.raises(ValueError, match="y: expected dtype"):
        op.prox_l2(z, y.to(torch.complex64 if y.is_complex() else torch.float32), 1.0)


def test_the_circular_blur_refuses_like_the_rest():
    k = gaussian_kernel(1.0, dtype=F64)
    z = _rand((1, 1, 8, 8), 12)
    with pytest.raises(TypeError, match="solver: expected an unrolled.CG"):
        Blur(k, padding="circular").prox_l2(z, z, 1.0, backward="bogus", solver="notacg")


@pytest.mark.parametrize("padding", ["valid", "reflect"])
@pytest.mark.parametrize("fft", [True, False])
@pytest.mark.parametrize("backward", ["implicit", "unroll"])
def test_blur_checks_its_inputs_once_per_solve_not_per_iteration(
    padding, fft, backward, monkeypatch
):
    """A spy counts the real input check of Blur; a solve of many iterations runs it a
    fixed handful of times (A^H y, the normal operator, the implicit gradient's A)."""
    calls = []
    check = Blur._check_image

    def counted(self, x, name):
        calls.append(name)
        return check(self, x, name)

    monkeypatch.setattr(Blur, "_check_image", counted)
    kernel = _kernel(8).requires_grad_()
    op = Blur(kernel, padding=padding, fft=fft)
    z = _rand((1, 1, 12, 12), 13).requires_grad_()
    y = _rand(op.output_shape(z.shape), 14)
    solver = CG(max_iter=30, tol=0, stop_at_floor=False, on_failure="ignore", preconditioner=None)
    h, info = op.prox_l2_with_info(z, y, 50.0, solver=solver, backward=backward)
    h.sum().backward()
    assert int(info.forward.iterations.max()) == 30
    assert len(calls) <= 6, calls
