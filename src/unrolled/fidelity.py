"""The L2 data fidelity ``f(x) = 1/2 ||A x - y||^2`` and its proximal step."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from .linalg import LinearOperator, batch_norm
from .linalg.cg import CG, SolveInfo
from .linalg.prox import BACKWARD_MODES, ProxInfo

__all__ = ["L2", "SolveStats"]


@dataclass
class SolveStats:
    """Running totals of the CG work done by a fidelity's prox calls.

    ``forward_iterations`` / ``backward_iterations`` add up the mean (over the batch)
    iteration count of each solve; ``mean_forward`` and ``mean_backward`` are per solve.
    ``samples`` counts the samples solved (a batch of ``B`` counts ``B`` per solve) and
    ``unconverged`` those of them that stopped at ``max_iter``.
    """

    forward_solves: int = 0
    forward_iterations: float = 0.0
    backward_solves: int = 0
    backward_iterations: float = 0.0
    unconverged: int = 0
    samples: int = 0
    last: ProxInfo | None = field(default=None, repr=False)

    def add_forward(self, info: SolveInfo) -> None:
        self.forward_solves += 1
        self.forward_iterations += info.iterations.double().mean().item()
        self.unconverged += int((~info.converged).sum())
        self.samples += info.converged.numel()

    def add_backward(self, info: SolveInfo) -> None:
        self.backward_solves += 1
        self.backward_iterations += info.iterations.double().mean().item()
        self.unconverged += int((~info.converged).sum())
        self.samples += info.converged.numel()

    @property
    def mean_forward(self) -> float:
        return self.forward_iterations / max(self.forward_solves, 1)

    @property
    def mean_backward(self) -> float:
        return self.backward_iterations / max(self.backward_solves, 1)

    def reset(self) -> None:
        self.__init__()

    def as_statistics(self) -> dict[str, float | tuple[float, float]]:
        """The counts as per-step statistics (see :class:`unrolled.train.StatisticsSource`):
        ``cg_forward`` / ``cg_backward`` mean iterations per solve, ``cg_unconverged``
        samples stopped at ``max_iter`` out of ``cg_solves``."""
        return {
            "cg_forward": (self.forward_iterations, self.forward_solves),
            "cg_backward": (self.backward_iterations, self.backward_solves),
            "cg_unconverged": self.unconverged,
            "cg_solves": self.samples,
        }


class L2(nn.Module):
    """``f(x) = 1/2 ||A x - y||^2`` with a least-squares prox.

    Args:
        solver: CG settings for operators without a closed-form prox.
        backward: ``"implicit"`` (default), ``"unroll"`` or ``"checkpoint"``; see
            :func:`unrolled.linalg.prox_l2`.

    After each prox call ``fidelity.stats`` holds the running CG iteration counts
    (the backward count is added when the backward pass runs) and
    ``fidelity.stats.last`` the :class:`ProxInfo` of the last call. The trainer reads
    them per step through :meth:`statistics` and :meth:`reset_statistics`.
    """

    def __init__(self, solver: CG | None = None, backward: str = "implicit"):
        super().__init__()
        if solver is not None and not isinstance(solver, CG):
            raise ValueError(f"solver: expected an unrolled.CG, got {type(solver).__name__}")
        if backward not in BACKWARD_MODES:
            raise ValueError(f"backward: expected one of {BACKWARD_MODES}, got {backward!r}")
        self.solver = solver if solver is not None else CG()
        self.backward = backward
        self.stats = SolveStats()

    def value(self, x: Tensor, y: Tensor, physics: LinearOperator) -> Tensor:
        """``1/2 ||A x - y||^2`` per sample, shape ``(B,)``."""
        return 0.5 * batch_norm(physics.A(x) - y) ** 2

    def grad(self, x: Tensor, y: Tensor, physics: LinearOperator) -> Tensor:
        """``A^H (A x - y)``."""
        return physics.A_adjoint(physics.A(x) - y)

    def prox(self, z: Tensor, y: Tensor, physics: LinearOperator, gamma) -> Tensor:
        """``argmin_x f(x) + 1/(2 gamma) ||x - z||^2``: the operator's closed form where it
        has one, else CG with this fidelity's solver and backward mode."""
        h, info = physics.prox_l2_with_info(z, y, gamma, solver=self.solver, backward=self.backward)
        self.stats.last = info
        if info.forward is not None:
            self.stats.add_forward(info.forward)
            info.on_backward = self.stats.add_backward
        return h

    def statistics(self) -> dict[str, float | tuple[float, float]]:
        """The CG work since the last reset, as per-step statistics."""
        return self.stats.as_statistics()

    def reset_statistics(self) -> None:
        self.stats.reset()

    def extra_repr(self) -> str:
        return f"solver={self.solver}, backward={self.backward!r}"
