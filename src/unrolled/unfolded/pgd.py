"""Proximal gradient descent, unfolded."""

from __future__ import annotations

from torch import Tensor

from ..linalg.operator import LinearOperator
from .base import State, Unfolded

__all__ = ["PGD"]


class PGD(Unfolded):
    """Unfolded proximal gradient descent (plug-and-play).

    From ``x_0 = x0`` (default: the ``init`` estimate), for ``k = 1..K``::

        x_k = D(x_{k-1} - gamma_k A^H (A x_{k-1} - y), sigma_k)

    and the output is ``x_K``. The data term enters through its gradient only (no
    solve); the iteration is stable for ``gamma_k < 2 / ||A||^2``. Scalars (per layer,
    or shared): ``stepsize`` ``gamma_k > 0`` (default 1), ``sigma`` ``sigma_k > 0``
    (default 0.01). See :class:`Unfolded` for the other arguments.
    """

    def layer(
        self, k: int, state: State, y: Tensor, physics: LinearOperator, values: dict
    ) -> State:
        (x,) = state
        x = x - values["stepsize"] * self.fidelity.grad(x, y, physics)
        return (self.denoise(k, x, values["sigma"]),)
