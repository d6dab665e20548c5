"""Douglas-Rachford splitting, unfolded."""

from __future__ import annotations

from torch import Tensor

from ..linalg.operator import LinearOperator
from .base import State, Unfolded
from .scalars import ScalarSpec

__all__ = ["DRS"]


class DRS(Unfolded):
    """Unfolded (relaxed) Douglas-Rachford splitting (plug-and-play).

    From ``z_0 = x0`` (default: the ``init`` estimate), for ``k = 1..K``::

        x_k = prox_{gamma_k f}(z_{k-1})
        w_k = D(2 x_k - z_{k-1}, sigma_k)
        z_k = z_{k-1} + lambda_k (w_k - x_k)

    and the output is ``w_K``. ``lambda_k = 1`` is plain Douglas-Rachford. Scalars (per
    layer, or shared): ``stepsize`` ``gamma_k > 0`` (default 1), ``sigma`` ``sigma_k > 0``
    (default 0.01) and ``relaxation`` ``lambda_k`` in ``(0, 2)`` (default 1, stored as
    ``logit(lambda / 2)``). The last layer's ``relaxation`` does not reach the output, so
    it gets no gradient. See :class:`Unfolded` for the other arguments.
    """

    SCALARS = (*Unfolded.SCALARS, ScalarSpec("relaxation", 1.0, constraint="relaxation"))

    @property
    def relaxation(self) -> Tensor:
        """``(layers,)`` relaxations ``lambda_k`` in ``(0, 2)``."""
        return self.scalars["relaxation"]

    def init_state(self, x0: Tensor) -> State:
        return (x0, x0)

    def estimate(self, state: State) -> Tensor:
        return state[1]

    def layer(
        self, k: int, state: State, y: Tensor, physics: LinearOperator, values: dict
    ) -> State:
        z, _ = state
        x = self.fidelity.prox(z, y, physics, values["stepsize"])
        w = self.denoise(k, 2 * x - z, values["sigma"])
        z = z + values["relaxation"] * (w - x)
        return (z, w)
