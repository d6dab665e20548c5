"""Classical reconstructions a trained network must beat, with their weights validated.

- ``normalised adjoint`` (or ``adjoint`` where ``A`` is not an average): the initial
  estimate of :func:`~unrolled.physics.initial_estimate`, no parameter.
- ``Tikhonov``: ``argmin_x 1/2 ||A x - y||^2 + lam/2 ||x - x0||^2`` with ``x0`` that initial
  estimate: the least-squares prox at ``gamma = 1 / lam``.
- ``smooth LS``: ``argmin_x 1/2 ||A x - y||^2 + lam/2 ||D x||^2`` with ``D`` the forward
  differences along rows and columns (no wrap-around): least squares with a smoothness
  penalty, the classical linear deconvolution.

The weight ``lam`` of each is picked from a logarithmic grid by the mean PSNR on a
validation set (:func:`fit_baselines`), never on the images reported.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .._validation import check_bool, check_choice, check_real
from ..linalg.cg import CG
from ..linalg.operator import LinearOperator
from ..linalg.prox import prox_l2
from ..physics.initial import (
    SMOOTH_SOLVER,
    _has_nonnegative_weights,
    initial_estimate,
    smooth_least_squares,
)
from .metrics import psnr

__all__ = [
    "BASELINES",
    "Baseline",
    "LAMBDA_GRID",
    "fit_baselines",
    "smooth_least_squares",
    "tikhonov",
]

#: the baselines :func:`fit_baselines` knows
BASELINES = ("initial", "tikhonov", "smooth_ls")

#: the default coarse grid of regularisation weights: 1e-4 .. 100, one per decade
LAMBDA_GRID = tuple(10.0**k for k in range(-4, 3))

#: refinement around the best weight: steps of half, a quarter, an eighth of a decade
REFINE_STEPS = (0.5, 0.25, 0.125)

#: CG settings of the baselines' solves: accurate enough that a PSNR moves < 0.01 dB
BASELINE_SOLVER = SMOOTH_SOLVER


def tikhonov(
    physics: LinearOperator, y: Tensor, lam: float, *, solver: CG = BASELINE_SOLVER
) -> Tensor:
    """``argmin_x 1/2 ||A x - y||^2 + lam/2 ||x - x0||^2``, ``x0`` the initial estimate."""
    lam = check_real("lam", lam, positive=True)
    x0 = initial_estimate(physics, y)
    with torch.no_grad():
        return prox_l2(physics, x0, y, 1.0 / lam, solver=solver)


@dataclass(frozen=True)
class Baseline:
    """A classical reconstruction with its weight fixed: ``baseline(physics, y) -> x``.

    Attributes:
        kind: one of :data:`BASELINES`.
        lam: the regularisation weight (``None`` for the initial estimate).
        normalised: whether the physics' initial estimate is the normalised adjoint.
    """

    kind: str
    lam: float | None = None
    normalised: bool = True  # whether the initial estimate divides by A^H 1 (for the label)

    def __post_init__(self):
        check_choice("kind", self.kind, BASELINES)
        if self.kind == "initial":
            if self.lam is not None:
                raise ValueError(f"lam: expected None for the initial estimate, got {self.lam!r}")
        else:
            check_real("lam", self.lam, positive=True)
        check_bool("normalised", self.normalised)

    @property
    def label(self) -> str:
        if self.kind == "initial":
            return "normalised adjoint" if self.normalised else "adjoint"
        name = "Tikhonov" if self.kind == "tikhonov" else "smooth LS"
        return f"{name} (lam={self.lam:.2g})"

    def __call__(self, physics: LinearOperator, y: Tensor) -> Tensor:
        if self.kind == "initial":
            with torch.no_grad():
                return initial_estimate(physics, y)
        if self.kind == "tikhonov":
            return tikhonov(physics, y, self.lam)
        return smooth_least_squares(physics, y, self.lam)


def _mean_psnr(method: Callable[[Tensor], Tensor], pairs, max_val: float) -> float:
    values = [psnr(method(y), x, max_val) for x, y in pairs]
    return float(torch.cat(values).double().mean())


def fit_baselines(
    physics: LinearOperator,
    validation: Sequence[tuple[Tensor, Tensor]],
    *,
    kinds: Sequence[str] = BASELINES,
    grid: Sequence[float] = LAMBDA_GRID,
    max_val: float = 1.0,
) -> list[Baseline]:
    """Each baseline of ``kinds`` with its weight picked on ``validation``.

    Args:
        physics: the measurement operator.
        validation: ``(x, y)`` pairs (batches of images and their measurements), not the
            images the baselines will be reported on.
        kinds: which baselines (see :data:`BASELINES`).
        grid: the coarse candidate weights; the best by mean PSNR over ``validation`` is
            then refined by steps of :data:`REFINE_STEPS` decades either side (the PSNR is
            unimodal in ``log lam`` for these problems), to within 1/8 of a decade.
        max_val: peak value for the PSNR.
    """
    if isinstance(kinds, str) or not all(isinstance(k, str) for k in kinds):
        raise TypeError(f"kinds: expected a sequence of names among {BASELINES}, got {kinds!r}")
    unknown = [k for k in kinds if k not in BASELINES]
    if unknown:
        raise ValueError(f"kinds: expected names among {BASELINES}, got {unknown}")
    for lam in grid:
        check_real("grid", lam, positive=True)
    check_real("max_val", max_val, positive=True)
    if not validation:
        raise ValueError("validation: expected at least one (x, y) pair, got none")
    normalised = _has_nonnegative_weights(physics)
    fitted = []
    for kind in kinds:
        if kind == "initial":
            fitted.append(Baseline("initial", None, normalised))
            continue

        def score(lam: float, kind=kind) -> float:
            return _mean_psnr(lambda y: Baseline(kind, lam)(physics, y), validation, max_val)

        scores = {lam: score(lam) for lam in grid}
        best = max(scores, key=scores.get)
        for step in REFINE_STEPS:
            for lam in (best * 10**-step, best * 10**step):
                scores[lam] = score(lam)
            best = max(scores, key=scores.get)
        if not math.isfinite(scores[best]):
            raise ValueError(
                f"validation: expected a weight in the grid with a finite PSNR for {kind}, got none"
            )
        fitted.append(Baseline(kind, float(best), normalised))
    return fitted
