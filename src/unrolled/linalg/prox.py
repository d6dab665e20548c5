"""The least-squares proximal operator solved by CG, with three backward modes.

``h = prox_{gamma f}(z) = argmin_x 1/2 ||A x - y||^2 + 1/(2 gamma) ||x - z||^2``
``  = M (A^H y + z / gamma)``, ``M = (A^H A + I / gamma)^-1``.

:func:`prox_l2` always solves iteratively; an operator's own
:meth:`~unrolled.linalg.LinearOperator.prox_l2` uses its closed form where it has one.

Backward modes:

* ``"unroll"``: autograd through every CG iteration. Exact gradient of the truncated
  solve; memory grows with the iteration count.
* ``"implicit"``: the implicit-function-theorem gradient at the solution. With
  ``u = M v`` for the upstream gradient ``v`` (one more solve):
  ``dz = u / gamma``, ``dy = A u``, ``dgamma = <u, h - z> / gamma^2`` (summed over the
  dimensions gamma broadcasts over) and ``dtheta = d/dtheta Re<A_theta u, y - A_theta h>``
  for every tensor ``theta`` of the operator (by autograd through two applications of
  ``A``, so a tensor made by another network passes its gradient on to it). Only
  ``h`` (and ``z``, ``y`` when needed) and the operator's tensors are kept: memory is
  independent of the iteration count.
* ``"checkpoint"``: keeps the inputs only and re-runs the same solve (same number of
  iterations per sample) under autograd during backward: the exact gradients of
  ``"unroll"`` at O(1) memory between forward and backward, about twice the compute.

The backward uses the operator as it was at the forward call: its tensors are
captured then, so reassigning them before ``backward()`` changes nothing (modifying
them in place is caught by autograd's version check).
"""

from __future__ import annotations

from torch import Tensor

from .._validation import check_instance
from ._iterative import iterative_prox
from ._prox_inputs import (
    BACKWARD_MODES,
    ProxInfo,
    ProxResult,
    check_prox_inputs,
    check_solve_settings,
)
from .cg import CG
from .operator import LinearOperator

__all__ = ["prox_l2", "prox_l2_with_info", "ProxInfo", "ProxResult", "BACKWARD_MODES"]


def prox_l2(
    op: LinearOperator,
    z: Tensor,
    y: Tensor,
    gamma,
    *,
    solver: CG | None = None,
    backward: str = "implicit",
) -> Tensor:
    """``argmin_x 1/2 ||A x - y||^2 + 1/(2 gamma) ||x - z||^2`` by CG, warm-started at ``z``.

    Args:
        op: the linear operator ``A``.
        z: ``(B, ...)`` point of the prox, real or complex.
        y: measurements, shaped like ``A(z)``, same dtype as ``z``.
        gamma: step ``> 0``: a number, a 0-d tensor, a ``(B,)`` tensor (one per sample)
            or any tensor that broadcasts against ``z``.
        solver: CG settings (default ``CG()``).
        backward: ``"implicit"`` (default), ``"unroll"`` or ``"checkpoint"``.

    Returns:
        ``h`` shaped like ``z``. :func:`prox_l2_with_info` also returns the solve's
        statistics.

    Example:
        >>> import torch, unrolled as ur
        >>> op = ur.linalg.MatrixOperator(torch.eye(3, dtype=torch.float64))
        >>> z = torch.zeros(1, 3, dtype=torch.float64)
        >>> y = torch.ones(1, 3, dtype=torch.float64)
        >>> ur.prox_l2(op, z, y, 1.0)  # (A^T A + I) h = A^T y + z: h = y / 2
        tensor([[0.5000, 0.5000, 0.5000]], dtype=torch.float64)
    """
    return prox_l2_with_info(op, z, y, gamma, solver=solver, backward=backward).value


def prox_l2_with_info(
    op: LinearOperator,
    z: Tensor,
    y: Tensor,
    gamma,
    *,
    solver: CG | None = None,
    backward: str = "implicit",
) -> ProxResult:
    """:func:`prox_l2` and the statistics of its solves: ``h, info = prox_l2_with_info(...)``.

    ``info.forward`` is the forward solve's :class:`~unrolled.linalg.SolveInfo`;
    ``info.backward`` is filled in when the backward pass runs.
    """
    solver = check_solve_settings(solver, backward)
    check_instance("op", op, LinearOperator, "a LinearOperator")
    gamma = check_prox_inputs(op, z, y, gamma)
    info = ProxInfo(mode=backward, forward=None)
    return ProxResult(iterative_prox(op, z, y, gamma, solver, backward, info), info)
