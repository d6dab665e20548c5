"""Half-quadratic splitting, unfolded."""

from __future__ import annotations

from torch import Tensor

from ..linalg.operator import LinearOperator
from .base import State, Unfolded

__all__ = ["HQS"]


class HQS(Unfolded):
    """Unfolded half-quadratic splitting (plug-and-play).

    From ``z_0 = x0`` (default: the ``init`` estimate), for ``k = 1..K``::

        x_k = prox_{gamma_k f}(z_{k-1})
            = argmin_x 1/2 ||A x - y||^2 + 1/(2 gamma_k) ||x - z_{k-1}||^2
        z_k = D(x_k, sigma_k)

    and the output is ``z_K``. Scalars (per layer, or shared): ``stepsize`` ``gamma_k > 0``
    (default 1), ``sigma`` ``sigma_k > 0`` (default 0.01). See :class:`Unfolded` for the
    other arguments.
    """

    def layer(
        self, k: int, state: State, y: Tensor, physics: LinearOperator, values: dict
    ) -> State:
        (z,) = state
        x = self.fidelity.prox(z, y, physics, values["stepsize"])
        return (self.denoise(k, x, values["sigma"]),)
