"""Proximal gradient descent, unfolded."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from torch import Tensor, nn

from ..fidelity import L2
from ..linalg.operator import LinearOperator
from .base import State, Unfolded
from .scalars import ScalarSpec

__all__ = ["PGD"]


class PGD(Unfolded):
    """Unfolded proximal gradient descent (plug-and-play).

    From ``x_0 = x0`` (default: the ``init`` estimate), for ``k = 1..K``::

        x_k = D(x_{k-1} - gamma_k A^H (A x_{k-1} - y), sigma_k)

    and the output is ``x_K``. The data term enters through its gradient only (no
    solve); the iteration is stable for ``gamma_k < 2 / ||A||^2``. Scalars (per layer,
    or shared): ``stepsize`` ``gamma_k > 0``, ``sigma`` ``sigma_k > 0``. See
    :class:`Unfolded` for the other arguments.
    """

    SCALARS = (ScalarSpec("stepsize"), ScalarSpec("sigma"))

    def __init__(
        self,
        layers: int = 5,
        *,
        denoiser: nn.Module | None = None,
        prior: nn.Module | None = None,
        fidelity: L2 | None = None,
        stepsize: float | Sequence[float] = 1.0,
        sigma: float | Sequence[float] = 0.01,
        trainable: Iterable[str] | bool = ("stepsize", "sigma"),
        share_parameters: Iterable[str] | bool = False,
        share_denoiser: bool = True,
        checkpoint_layers: bool = False,
        init: str = "auto",
    ):
        super().__init__(
            layers,
            denoiser=denoiser,
            prior=prior,
            fidelity=fidelity,
            scalars={"stepsize": stepsize, "sigma": sigma},
            trainable=trainable,
            share_parameters=share_parameters,
            share_denoiser=share_denoiser,
            checkpoint_layers=checkpoint_layers,
            init=init,
        )

    def init_state(self, x0: Tensor) -> State:
        return (x0,)

    def layer(
        self, k: int, state: State, y: Tensor, physics: LinearOperator, values: dict
    ) -> State:
        (x,) = state
        x = x - values["stepsize"] * self.fidelity.grad(x, y, physics)
        return (self.denoise(k, x, values["sigma"]),)
