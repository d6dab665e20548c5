"""Initial estimates ``x0`` for an unfolded network or a classical solve, from ``y`` alone.

``A^H y`` is the natural start where ``A^H A`` is close to a multiple of the identity
(single- and multi-coil Cartesian MRI: the zero-filled image). For a blur with valid
padding it is not: pixels near the border are covered by few measurements, so
``A^H y`` darkens towards the edges and a network must first undo that. Dividing by
``A^H 1`` (the adjoint of a measurement of ones) turns ``A^H y`` into a weighted average
of the measurements near each pixel, with weights summing to one: the right brightness
everywhere, noise no larger than the measurement's.

Where the measurement leaves part of the image undetermined (the band along a valid
blur's border), ``"smooth"`` starts from least squares with a smoothness penalty
instead: it fills that band by smooth continuation and suppresses the noise the
normalised adjoint keeps, at the price of one more linear solve.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .._validation import check_choice, check_real
from ..linalg.cg import CG, cg
from ..linalg.operator import LinearOperator
from .blur import Blur
from .downsampling import Downsampling
from .inpainting import Inpainting

__all__ = [
    "INITIAL_ESTIMATES",
    "SMOOTH_SOLVER",
    "check_initial_estimate",
    "initial_estimate",
    "normalized_adjoint",
    "smooth_least_squares",
]

#: the methods :func:`initial_estimate` knows
INITIAL_ESTIMATES = ("auto", "adjoint", "normalized_adjoint", "smooth")

#: CG settings of the smoothness-penalised solve: accurate enough that a PSNR moves < 0.01 dB
SMOOTH_SOLVER = CG(max_iter=300, tol=1e-4, on_failure="ignore")

# A^H 1 below this fraction of its largest value counts as "not measured".
_UNMEASURED = 1e-12


def _has_nonnegative_weights(physics: LinearOperator) -> bool:
    """Whether ``A`` averages pixels with weights >= 0 (so ``A^H y / A^H 1`` is an average)."""
    if isinstance(physics, Downsampling):
        if physics.blur is None:
            return True  # plain decimation
        physics = physics.blur
    if isinstance(physics, Blur):
        k = physics.kernel
        return not k.is_complex() and bool((k >= 0).all())
    if isinstance(physics, Inpainting):
        m = physics.mask
        return not m.is_complex() and bool((m >= 0).all())
    return False


def normalized_adjoint(physics: LinearOperator, y: Tensor) -> Tensor:
    """``A^H y / A^H 1`` where ``A^H 1`` is positive; elsewhere (pixels no measurement
    sees, e.g. the holes of an inpainting mask) the mean of the measured pixels of that
    sample and channel. Shaped like ``A^H y``, in ``y``'s dtype.

    Near a valid blur's corners both sums hold only the kernel's smallest taps (1e-6 of
    the largest for a Gaussian of std 2.5), and an FFT convolution's error is relative
    to the largest values: the ratio is computed in float64 for the operators this
    library knows, so float32 data get a float32-accurate estimate there too."""
    dtype = y.dtype
    if dtype in (torch.float16, torch.bfloat16, torch.float32) and _has_nonnegative_weights(
        physics
    ):
        y = y.to(torch.float64)
    num = physics.A_adjoint(y)
    weight = physics.A_adjoint(torch.ones_like(y))
    if num.is_complex() or weight.is_complex():
        raise ValueError(
            f"physics: the normalised adjoint needs a real operator with nonnegative "
            f"weights, got {type(physics).__name__} with complex values; use 'adjoint'"
        )
    weight = weight.expand_as(num)
    floor = _UNMEASURED * weight.flatten(1).amax(1).clamp_min(torch.finfo(weight.dtype).tiny)
    measured = weight > floor.view(-1, *([1] * (weight.ndim - 1)))
    x0 = torch.where(measured, num / torch.where(measured, weight, 1), 0)
    if not bool(measured.all()):
        # Fill the unmeasured pixels with the mean of the measured ones (per sample, channel).
        dims = tuple(range(2, x0.ndim))
        count = measured.sum(dims, keepdim=True).clamp_min(1)
        mean = (x0 * measured).sum(dims, keepdim=True) / count
        x0 = torch.where(measured, x0, mean)
    return x0.to(dtype)


def _differences(x: Tensor) -> tuple[Tensor, Tensor]:
    return x[..., 1:, :] - x[..., :-1, :], x[..., :, 1:] - x[..., :, :-1]


def _differences_adjoint(dy: Tensor, dx: Tensor) -> Tensor:
    # D^T d for forward differences without wrap-around: [-d_0, d_0 - d_1, ..., d_{n-2}].
    rows = F.pad(dy, (0, 0, 1, 0)) - F.pad(dy, (0, 0, 0, 1))
    cols = F.pad(dx, (1, 0)) - F.pad(dx, (0, 1))
    return rows + cols


def _smooth_solve(
    physics: LinearOperator, b: Tensor, lam: float, solver: CG, x0: Tensor | None = None
) -> Tensor:
    """``(A^H A + lam D^T D)^-1 b`` by CG, without autograd."""
    # the operator's own normal map: checked once, with its fast paths (kept spectra,
    # fused or separable products), as in the prox's solves
    normal = physics.normal_map(b)

    def matvec(x: Tensor) -> Tensor:
        return normal(x) + lam * _differences_adjoint(*_differences(x))

    with torch.no_grad():
        x, _ = cg(
            matvec,
            b,
            x0=x0,
            max_iter=solver.max_iter,
            tol=solver.tol,
            on_failure=solver.on_failure,
            what="smooth least squares",
        )
    return x


class _SmoothLeastSquares(torch.autograd.Function):
    """``x = M^-1 A^H y`` with ``M = A^H A + lam D^T D`` Hermitian: linear in ``y``, so its
    vector-Jacobian product is ``A M^-1 g``, one more solve with the same matrix."""

    @staticmethod
    def forward(ctx, y, physics, lam, solver):
        ctx.physics, ctx.lam, ctx.solver = physics, lam, solver
        b = physics.A_adjoint(y)
        return _smooth_solve(physics, b, lam, solver, x0=initial_estimate(physics, y))

    @staticmethod
    def backward(ctx, grad):
        u = _smooth_solve(ctx.physics, grad, ctx.lam, ctx.solver)
        with torch.no_grad():
            return ctx.physics.A(u), None, None, None


def smooth_least_squares(
    physics: LinearOperator, y: Tensor, lam: float, *, solver: CG = SMOOTH_SOLVER
) -> Tensor:
    """``argmin_x 1/2 ||A x - y||^2 + lam/2 ||D x||^2`` (``D``: forward differences along
    rows and columns, no wrap-around) by CG, started from the ``"auto"`` initial estimate.
    ``A^H A + lam D^T D`` is positive definite as long as ``A`` does not vanish on
    constant images.

    Differentiable with respect to ``y`` by one more solve (to ``solver.tol``, as the
    forward one); the operator's own tensors are taken as constants."""
    lam = check_real("lam", lam, minimum=0)
    return _SmoothLeastSquares.apply(y, physics, lam, solver)


def check_initial_estimate(
    method: str, weight: float | None, *, names: tuple[str, str] = ("method", "weight")
) -> float | None:
    """Check an initial estimate's ``method`` and ``weight`` together (named ``names`` in
    errors); return the weight: a float for ``"smooth"``, ``None`` for the others."""
    method_name, weight_name = names
    check_choice(method_name, method, INITIAL_ESTIMATES)
    if method == "smooth":
        return check_real(weight_name, weight, positive=True)
    if weight is not None:
        raise ValueError(
            f"{weight_name}: expected None with {method_name}={method!r} (it weighs "
            f"{method_name}='smooth'), got {weight!r}"
        )
    return None


def initial_estimate(
    physics: LinearOperator, y: Tensor, method: str = "auto", weight: float | None = None
) -> Tensor:
    """The initial estimate of ``x`` from ``y``.

    Args:
        physics: the measurement operator.
        y: the measurement.
        method: ``"adjoint"`` (``A^H y``), ``"normalized_adjoint"`` (``A^H y / A^H 1``,
            see :func:`normalized_adjoint`), ``"smooth"`` (:func:`smooth_least_squares`
            with the smoothness weight ``weight``) or ``"auto"``: the normalised adjoint
            for operators that average pixels with nonnegative weights (blur,
            downsampling, inpainting), ``A^H y`` otherwise (MRI, compressed sensing).
        weight: the smoothness weight of ``"smooth"`` (a number > 0); ``None`` otherwise.
    """
    weight = check_initial_estimate(method, weight)
    if method == "smooth":
        return smooth_least_squares(physics, y, weight)
    if method == "auto":
        method = "normalized_adjoint" if _has_nonnegative_weights(physics) else "adjoint"
    if method == "adjoint":
        return physics.A_adjoint(y)
    return normalized_adjoint(physics, y)
