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

from ._iterative import iterative_prox
from ._prox_inputs import BACKWARD_MODES, ProxInfo, check_prox_inputs, check_solve_settings
from .cg import CG
from .operator import LinearOperator

__all__ = ["prox_l2", "ProxInfo", "BACKWARD_MODES"]


def prox_l2(
    op: LinearOperator,
    z: Tensor,
    y: Tensor,
    gamma,
    *,
    solver: CG | None = None,
    backward: str = "implicit",
    return_info: bool = False,
):
    """``argmin_x 1/2 ||A x - y||^2 + 1/(2 gamma) ||x - z||^2`` by CG, warm-started at ``z``.

    Args:
        op: the linear operator ``A``.
        z: ``(B, ...)`` point of the prox, real or complex.
        y: measurements, shaped like ``A(z)``, same dtype as ``z``.
        gamma: step ``> 0``: a number, a 0-d tensor, a ``(B,)`` tensor (one per sample)
            or any tensor that broadcasts against ``z``.
        solver: CG settings (default ``CG()``).
        backward: ``"implicit"`` (default), ``"unroll"`` or ``"checkpoint"``.
        return_info: also return a :class:`ProxInfo`; its ``backward`` field is filled
            in when the backward pass runs.

    Returns:
        ``h`` shaped like ``z`` (and the ``ProxInfo`` if asked).
    """
    solver = check_solve_settings(solver, backward)
    if not isinstance(op, LinearOperator):
        raise ValueError(f"op: expected a LinearOperator, got {type(op).__name__}")
    gamma = check_prox_inputs(op, z, y, gamma)
    info = ProxInfo(mode=backward, forward=None)
    h = iterative_prox(op, z, y, gamma, solver, backward, info)
    return (h, info) if return_info else h
