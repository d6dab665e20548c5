"""deepinv 0.5.0's least-squares data step, for the comparison (optional).

The reference network is the *same* unfolded HQS (same denoiser, weights, scalars and
data) whose data step calls deepinv's ``L2().prox`` on deepinv's
``Blur(filter, padding="valid")``, with ``implicit_backward_solver=True`` (deepinv's
implicit backward) or ``False`` (autograd through its CG). deepinv's prox is
``argmin_u gamma/2 ||A u - y||^2 + 1/2 ||u - z||^2``, the same minimiser as
``unrolled``'s ``argmin_u 1/2 ||A u - y||^2 + 1/(2 gamma) ||u - z||^2``; its CG runs on
``A^T A + I/gamma`` warm-started at ``z``, as ``unrolled``'s does. Only the data step
differs, so the time ratio measures the data steps.

deepinv is imported by :func:`unrolled.interop._imports.import_deepinv`, which also
handles a torchvision wheel built for another torch than the one installed.
"""

from __future__ import annotations

import sys
import warnings

from torch import Tensor, nn

from unrolled.interop._imports import import_deepinv

__all__ = ["load_deepinv", "DeepinvL2", "CallStats"]

_loaded: tuple = ()


def load_deepinv(path: str | None = None):
    """Import deepinv; returns ``(module, None)`` or ``(None, why_not)``.

    Args:
        path: a folder to put first on ``sys.path`` (e.g. a ``pip install --target``
            folder); child processes of the benchmark inherit it.
    """
    global _loaded
    if _loaded:
        return _loaded
    if path and path not in sys.path:
        sys.path.insert(0, path)
    try:
        with warnings.catch_warnings():
            # the torchvision mismatch it works around is reported in the results instead
            warnings.simplefilter("ignore", RuntimeWarning)
            _loaded = (import_deepinv(), None)
    except Exception as err:  # noqa: BLE001 - reported, the benchmark goes on
        _loaded = (None, f"deepinv not importable: {err}")
    return _loaded


class CallStats:
    """CG iteration counts of deepinv's solves, from the calls to ``A^T A``.

    deepinv's CG applies its system once for the initial residual and once per
    iteration (and once more every 100 iterations, at ``i = 100, 200, ...``, to
    refresh the residual), so a solve of ``n`` calls made ``n - 1`` iterations
    (exact for ``max_iter <= 100``). Same fields as ``unrolled.fidelity.SolveStats``
    where they apply.
    """

    def __init__(self, implicit: bool):
        self.implicit = implicit
        self.reset()

    def reset(self) -> None:
        self.calls = 0
        self.forward_calls = 0
        self.forward_solves = 0
        self.unconverged = 0

    @property
    def mean_forward(self) -> float:
        return self.forward_calls / max(self.forward_solves, 1) - 1

    @property
    def mean_backward(self) -> float:
        """Per backward solve; 0 for the autograd (unroll) backward, which solves nothing.
        Read it after ``backward()``."""
        if not self.implicit or not self.forward_solves:
            return 0.0
        return (self.calls - self.forward_calls) / self.forward_solves - 1


def _counting_blur(deepinv):
    class CountingBlur(deepinv.physics.Blur):
        """deepinv's Blur, counting the applications of ``A^T A`` (one per CG iteration)."""

        stats: CallStats

        def A_adjoint_A(self, x, **kwargs):  # noqa: N802 - deepinv's name
            self.stats.calls += 1
            return super().A_adjoint_A(x, **kwargs)

    return CountingBlur


class DeepinvL2(nn.Module):
    """A data step for :class:`unrolled.unfolded.HQS` that calls deepinv's L2 prox.

    ``prox(z, y, physics, gamma)`` ignores ``physics`` (unrolled's operator, which
    the network still uses for ``x0 = A^T y``) and solves with deepinv's own Blur of the
    same kernel and padding.

    Args:
        deepinv: the imported module (see :func:`load_deepinv`).
        kernel: ``(kh, kw)`` blur kernel.
        padding: deepinv's padding name (``"valid"`` is the seed configuration).
        implicit: deepinv's ``implicit_backward_solver``.
        max_iter, tol: deepinv's CG settings (its ``tol`` is relative, on ``||r||``).
    """

    def __init__(self, deepinv, kernel: Tensor, *, padding, implicit, max_iter, tol, device):
        super().__init__()
        self.stats = CallStats(implicit)
        with warnings.catch_warnings():
            # deepinv warns that implicit gradients need >= 20 iterations: the max_iter
            # sweep goes below on purpose.
            warnings.simplefilter("ignore", UserWarning)
            self.physics = _counting_blur(deepinv)(
                filter=kernel[None, None].clone(),
                padding=padding,
                max_iter=max_iter,
                tol=tol,
                implicit_backward_solver=implicit,
                device=device,
            )
        self.physics.stats = self.stats
        self.fidelity = deepinv.optim.L2()

    def prox(self, z: Tensor, y: Tensor, physics, gamma) -> Tensor:
        before = self.stats.calls
        h = self.fidelity.prox(z, y, self.physics, gamma=gamma)
        self.stats.forward_calls += self.stats.calls - before
        self.stats.forward_solves += 1
        return h

    def extra_repr(self) -> str:
        return f"implicit={self.stats.implicit}"
