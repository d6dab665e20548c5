"""The alternating direction method of multipliers, unfolded."""

from __future__ import annotations

import torch
from torch import Tensor

from ..linalg.operator import LinearOperator
from .base import State, Unfolded
from .scalars import ScalarSpec

__all__ = ["ADMM"]


class ADMM(Unfolded):
    """Unfolded ADMM in scaled form (plug-and-play) for ``min f(x) + g(z)``, ``x = z``.

    From ``z_0 = x0`` (default: the ``init`` estimate) and ``u_0 = 0``, for ``k = 1..K``::

        x_k = prox_{gamma_k f}(z_{k-1} - u_{k-1})
        z_k = D(x_k + u_{k-1}, sigma_k)
        u_k = u_{k-1} + beta_k (x_k - z_k)

    and the output is ``z_K``. ``gamma_k = 1 / rho_k`` is the inverse of the usual
    penalty ``rho``; ``beta_k`` is the step of the (scaled) dual update, 1 for standard
    ADMM. Scalars (per layer, or shared): ``stepsize`` ``gamma_k > 0`` (default 1),
    ``sigma`` ``sigma_k > 0`` (default 0.01), ``beta`` ``beta_k > 0`` (default 1). The
    last layer's ``beta`` does not reach the output (its dual update comes after
    ``z_K``), so it gets no gradient. See :class:`Unfolded` for the other arguments.
    """

    SCALARS = (*Unfolded.SCALARS, ScalarSpec("beta", 1.0))

    @property
    def beta(self) -> Tensor:
        """``(layers,)`` dual steps ``beta_k``."""
        return self.scalars["beta"]

    def init_state(self, x0: Tensor) -> State:
        return (x0, torch.zeros_like(x0))

    def layer(
        self, k: int, state: State, y: Tensor, physics: LinearOperator, values: dict
    ) -> State:
        z, u = state
        x = self.fidelity.prox(z - u, y, physics, values["stepsize"])
        z = self.denoise(k, x + u, values["sigma"])
        u = u + values["beta"] * (x - z)
        return (z, u)
