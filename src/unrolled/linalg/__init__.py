"""Matrix-free linear algebra: operators, batched CG, and the least-squares prox."""

from ._vectors import batch_inner, batch_norm
from .cg import CG, NonConvergenceError, NonConvergenceWarning, SolveInfo, cg
from .matrix import MatrixOperator
from .operator import ComposedOperator, LinearOperator, ScaledOperator, SumOperator
from .prox import BACKWARD_MODES, ProxInfo, ProxResult, prox_l2, prox_l2_with_info

__all__ = [
    "BACKWARD_MODES",
    "CG",
    "ComposedOperator",
    "LinearOperator",
    "MatrixOperator",
    "NonConvergenceError",
    "NonConvergenceWarning",
    "ProxInfo",
    "ProxResult",
    "ScaledOperator",
    "SolveInfo",
    "SumOperator",
    "batch_inner",
    "batch_norm",
    "cg",
    "prox_l2",
    "prox_l2_with_info",
]
