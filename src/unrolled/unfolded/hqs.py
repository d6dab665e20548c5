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

    Examples:
        Three layers with a small DnCNN, for a 7x7 blur without padding (``y`` is smaller
        than ``x``; the estimate has the size of ``x``):

        >>> import torch
        >>> import unrolled as ur
        >>> _ = torch.manual_seed(0)
        >>> physics = ur.physics.Blur(ur.physics.gaussian_kernel(1.0), padding="valid")
        >>> model = ur.unfolded.HQS(
        ...     layers=3,
        ...     denoiser=ur.models.DnCNN(1, 1, depth=3, features=8),
        ...     stepsize=[0.5, 1.0, 2.0],
        ...     sigma=0.05,
        ... )
        >>> x = torch.rand(2, 1, 16, 16)
        >>> y = physics(x)
        >>> y.shape, model(y, physics).shape
        (torch.Size([2, 1, 10, 10]), torch.Size([2, 1, 16, 16]))

        The scalars are per layer and trainable unless told otherwise:

        >>> model.stepsize
        tensor([0.5000, 1.0000, 2.0000], grad_fn=<...>)
        >>> sorted(name for name, _ in model.scalars.named_parameters())
        ['log_sigma', 'log_stepsize']
    """

    def layer(
        self, k: int, state: State, y: Tensor, physics: LinearOperator, values: dict
    ) -> State:
        (z,) = state
        x = self.fidelity.prox(z, y, physics, values["stepsize"])
        return (self.denoise(k, x, values["sigma"]),)
