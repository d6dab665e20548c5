"""The iterative least-squares prox and its three backward modes.

``h = M (A^H y + z / gamma)``, ``M = (A^H A + I / gamma)^-1``, solved by CG warm-started
at ``z``. The inputs arrive validated (:mod:`._prox_inputs`); this module only solves.

The backward modes are described in :mod:`unrolled.linalg.prox`.

The backward uses the operator as it was at the forward call: its tensors are
captured then (:mod:`._capture`), so reassigning them before ``backward()`` changes
nothing (modifying them in place is caught by autograd's version check).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._capture import Capture
from ._prox_inputs import ProxInfo
from .cg import CG

__all__ = ["iterative_prox"]

_DOUBLE_BACKWARD = (
    "prox_l2(backward={mode!r}) does not support differentiating its gradient "
    "(create_graph=True / higher-order gradients); use backward='unroll' for that"
)


def iterative_prox(
    op, z: Tensor, y: Tensor, gamma: Tensor, solver: CG, backward: str, info: ProxInfo
) -> Tensor:
    """The prox of ``op`` by CG, for validated inputs (``gamma`` a tensor broadcasting to
    ``z``); fills ``info.forward`` now and ``info.backward`` when the backward runs."""
    capture = Capture.of(op)
    grad_mode = torch.is_grad_enabled()
    anything_requires_grad = grad_mode and (
        z.requires_grad
        or y.requires_grad
        or gamma.requires_grad
        or any(t.requires_grad for t in capture.tensors)
    )

    if backward == "unroll" or not anything_requires_grad:
        if grad_mode and backward != "unroll":
            # Nothing registered needs a gradient; a hidden tensor that does is refused.
            aty = _refuse_hidden_tensors(op, capture, y)
            grad_mode = False
        else:
            aty = op.A_adjoint(y)
        # Under autograd ("unroll") the preconditioner is built under it too: the unrolled
        # gradient is the exact derivative of the computation done, preconditioner included.
        with torch.set_grad_enabled(grad_mode):
            h, info.forward = solver.solve(
                _system(op, gamma, z),
                aty + z / gamma,
                x0=z,
                precond=_preconditioner(solver, op, gamma),
                what=f"prox_l2({backward}) forward solve",
            )
        return h

    # The snapshot keeps the operator's structure (settings, sub-modules) as it is now;
    # the Function's inputs carry its tensors, so autograd routes their gradients and
    # checks their versions.
    aty = _refuse_hidden_tensors(op, capture, y)
    snapshot = capture.rebuild(op, capture.tensors)
    with torch.no_grad():
        precond = _preconditioner(solver, snapshot, gamma)
    setup = _Setup(snapshot, capture, solver, precond, info, aty)
    function = _ImplicitProx if backward == "implicit" else _CheckpointProx
    return function.apply(setup, z, y, gamma, *capture.tensors)


def _system(op, gamma: Tensor, like: Tensor):
    """``x -> (A^H A + I / gamma) x``, added in place into the fresh ``A^H A x`` where no
    graph is built (one temporary and one call less per CG iteration, the same rounding)."""
    normal = op.normal_map(like)

    def matvec(x: Tensor) -> Tensor:
        out = normal(x)
        # An operator may hand back its input or a view of it (an identity): never
        # write into the solver's iterate.
        shared = out.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
        if torch.is_grad_enabled() or shared or out.shape != x.shape:
            return out + x / gamma
        return out.addcdiv_(x, gamma)

    return matvec


def _preconditioner(solver: CG, op, gamma: Tensor):
    choice = solver.preconditioner
    if choice is None:
        return None
    if choice == "auto":
        return op.preconditioner(gamma)
    return choice(op, gamma)


def _refuse_hidden_tensors(op, capture: Capture, y: Tensor) -> Tensor:
    """``A^H y`` with every registered tensor detached; it needs no gradient unless ``A``
    uses a tensor that requires grad and is not registered (its gradient would be lost)."""
    detached = capture.rebuild(op, [t.detach() for t in capture.tensors])
    with torch.enable_grad():
        aty = detached.A_adjoint(y.detach())
    if aty.requires_grad:
        raise ValueError(
            f"op: {type(op).__name__} uses a tensor that requires grad but is not one of its "
            "parameters, buffers, tensor attributes or sub-modules' tensors; register it so "
            "that the implicit backward can pass its gradient on (or use backward='unroll')"
        )
    return aty


class _Setup:
    """Non-tensor state shared by forward and backward of one prox call."""

    def __init__(self, op, capture: Capture, solver: CG, precond, info: ProxInfo, aty):
        self.op = op
        self.capture = capture
        self.solver = solver
        self.precond = precond
        self.info = info
        self.aty = aty
        self.iterations = None

    def rebuild(self, tensors):
        return self.capture.rebuild(self.op, tensors)

    def solve_forward(self, z, y, gamma, tensors):
        op = self.rebuild(tensors)
        h, info = self.solver.solve(
            _system(op, gamma, z),
            self.aty + z / gamma,
            x0=z,
            precond=self.precond,
            what=f"implicit prox_l2({self.info.mode}) forward solve",
        )
        self.aty = None  # not needed any more; do not keep an image-sized tensor alive
        self.info.forward = info
        self.iterations = info.iterations
        return h


class _ImplicitProx(torch.autograd.Function):
    @staticmethod
    def forward(ctx, setup: _Setup, z, y, gamma, *tensors):
        h = setup.solve_forward(z, y, gamma, tensors)
        needs = ctx.needs_input_grad
        theta_needed = any(needs[4:])
        ctx.setup = setup
        ctx.save_for_backward(
            h if (needs[3] or theta_needed) else None,
            z if needs[3] else None,
            y if theta_needed else None,
            gamma,
            *tensors,
        )
        return h

    @staticmethod
    def backward(ctx, v):
        setup: _Setup = ctx.setup
        if torch.is_grad_enabled():
            raise RuntimeError(_DOUBLE_BACKWARD.format(mode="implicit"))
        h, z, y, gamma, *tensors = ctx.saved_tensors
        needs = ctx.needs_input_grad
        op = setup.rebuild(tensors)
        u, info = setup.solver.solve(
            _system(op, gamma, v),
            v,
            precond=setup.precond,
            what="implicit prox_l2 backward solve",
        )
        setup.info._set_backward(info)

        grad_z = u / gamma if needs[1] else None
        grad_gamma = None
        if needs[3]:
            grad_gamma = ((u.conj() * (h - z)).real / gamma**2).sum_to_size(gamma.shape)
        grad_y = None
        grad_tensors = [None] * len(tensors)
        wanted = [i for i, t in enumerate(tensors) if needs[4 + i]]
        if wanted:
            # dtheta = d/dtheta Re<A_theta u, y - A_theta h>, with u, h, y held fixed.
            with torch.enable_grad():
                leaves = [t.detach().requires_grad_(needs[4 + i]) for i, t in enumerate(tensors)]
                op_g = setup.rebuild(leaves)
                au = op_g.A(u)
                objective = torch.vdot(au.reshape(-1), (y - op_g.A(h)).reshape(-1)).real
                grads = torch.autograd.grad(
                    objective, [leaves[i] for i in wanted], allow_unused=True
                )
            for i, g in zip(wanted, grads, strict=True):
                grad_tensors[i] = g
            if needs[2]:
                grad_y = au.detach()
        if needs[2] and grad_y is None:
            grad_y = op.A(u)
        return (None, grad_z, grad_y, grad_gamma, *grad_tensors)


class _CheckpointProx(torch.autograd.Function):
    @staticmethod
    def forward(ctx, setup: _Setup, z, y, gamma, *tensors):
        h = setup.solve_forward(z, y, gamma, tensors)
        ctx.setup = setup
        ctx.save_for_backward(z, y, gamma, *tensors)
        return h

    @staticmethod
    def backward(ctx, v):
        setup: _Setup = ctx.setup
        if torch.is_grad_enabled():
            raise RuntimeError(_DOUBLE_BACKWARD.format(mode="checkpoint"))
        needs = ctx.needs_input_grad
        inputs = [t.detach().requires_grad_(needs[1 + i]) for i, t in enumerate(ctx.saved_tensors)]
        z, y, gamma, *tensors = inputs
        with torch.enable_grad():
            op = setup.rebuild(tensors)
            # Replay exactly the forward's iterations per sample, preconditioner included:
            # the gradient of the same truncated solve that "unroll" differentiates.
            h, info = setup.solver.solve(
                _system(op, gamma, z),
                op.A_adjoint(y) + z / gamma,
                x0=z,
                precond=_preconditioner(setup.solver, op, gamma),
                iterations=setup.iterations,
            )
            setup.info._set_backward(info)
            wanted = [i for i in range(len(inputs)) if needs[1 + i]]
            grads = torch.autograd.grad(h, [inputs[i] for i in wanted], v, allow_unused=True)
        result = [None] * len(inputs)
        for i, g in zip(wanted, grads, strict=True):
            result[i] = g
        return (None, *result)
