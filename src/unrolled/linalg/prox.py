"""The least-squares proximal operator and its three backward modes.

``h = prox_{gamma f}(z) = argmin_x 1/2 ||A x - y||^2 + 1/(2 gamma) ||x - z||^2``
``  = M (A^H y + z / gamma)``, ``M = (A^H A + I / gamma)^-1``, solved by CG.

Backward modes:

* ``"unroll"``: autograd through every CG iteration. Exact gradient of the truncated
  solve; memory grows with the iteration count.
* ``"implicit"``: the implicit-function-theorem gradient at the solution. With
  ``u = M v`` for the upstream gradient ``v`` (one more solve):
  ``dz = u / gamma``, ``dy = A u``, ``dgamma = <u, h - z> / gamma^2`` (summed over the
  dimensions gamma broadcasts over) and ``dtheta = d/dtheta Re<A_theta u, y - A_theta h>``
  for every tensor ``theta`` of the operator (by autograd through two applications of
  ``A``, so a tensor made by another network passes its gradient on to it). Only
  ``h`` (and ``z``, ``y`` when needed) and the operator's tensors are kept: memory is
  independent of the iteration count.
* ``"checkpoint"``: keeps the inputs only and re-runs the same solve (same number of
  iterations per sample) under autograd during backward: the exact gradients of
  ``"unroll"`` at O(1) memory between forward and backward, about twice the compute.

The backward uses the operator as it was at the forward call: its tensors are
captured then, so reassigning them before ``backward()`` changes nothing (modifying
them in place is caught by autograd's version check).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from numbers import Real

import torch
from torch import Tensor

from .cg import CG, SolveInfo
from .operator import LinearOperator, tensor_slots, with_tensors

__all__ = ["prox_l2", "ProxInfo", "BACKWARD_MODES", "check_prox_inputs"]

BACKWARD_MODES = ("implicit", "unroll", "checkpoint")

_DOUBLE_BACKWARD = (
    "prox_l2(backward={mode!r}) does not support differentiating its gradient "
    "(create_graph=True / higher-order gradients); use backward='unroll' for that"
)


@dataclass
class ProxInfo:
    """Statistics of one prox call: the forward solve, and the backward one once run."""

    mode: str
    forward: SolveInfo | None
    backward: SolveInfo | None = None
    on_backward: Callable[[SolveInfo], None] | None = field(default=None, repr=False)

    def _set_backward(self, info: SolveInfo) -> None:
        self.backward = info
        if self.on_backward is not None:
            self.on_backward(info)


def prox_l2(
    op: LinearOperator,
    z: Tensor,
    y: Tensor,
    gamma,
    *,
    solver: CG | None = None,
    backward: str = "implicit",
    return_info: bool = False,
):
    """``argmin_x 1/2 ||A x - y||^2 + 1/(2 gamma) ||x - z||^2`` by CG, warm-started at ``z``.

    Args:
        op: the linear operator ``A``.
        z: ``(B, ...)`` point of the prox, real or complex.
        y: measurements, shaped like ``A(z)``, same dtype as ``z``.
        gamma: step ``> 0``: a number, a 0-d tensor, a ``(B,)`` tensor (one per sample)
            or any tensor that broadcasts against ``z``.
        solver: CG settings (default ``CG()``).
        backward: ``"implicit"`` (default), ``"unroll"`` or ``"checkpoint"``.
        return_info: also return a :class:`ProxInfo`; its ``backward`` field is filled
            in when the backward pass runs.

    Returns:
        ``h`` shaped like ``z`` (and the ``ProxInfo`` if asked).
    """
    solver = CG() if solver is None else solver
    if not isinstance(solver, CG):
        raise ValueError(f"solver: expected an unrolled.CG, got {type(solver).__name__}")
    if backward not in BACKWARD_MODES:
        raise ValueError(f"backward: expected one of {BACKWARD_MODES}, got {backward!r}")
    if not isinstance(op, LinearOperator):
        raise ValueError(f"op: expected a LinearOperator, got {type(op).__name__}")
    gamma = check_prox_inputs(op, z, y, gamma)
    info = ProxInfo(mode=backward, forward=None)

    tensors, slot_index, slots = _unique_tensors(op)
    grad_mode = torch.is_grad_enabled()
    anything_requires_grad = grad_mode and (
        z.requires_grad
        or y.requires_grad
        or gamma.requires_grad
        or any(t.requires_grad for t in tensors)
    )

    if backward == "unroll" or not anything_requires_grad:
        if grad_mode and backward != "unroll":
            # Nothing registered needs a gradient; a hidden tensor that does is refused.
            aty = _refuse_hidden_tensors(op, slots, slot_index, tensors, y)
            grad_mode = False
        else:
            aty = op.A_adjoint(y)
        # Under autograd ("unroll") the preconditioner is built under it too: the unrolled
        # gradient is the exact derivative of the computation done, preconditioner included.
        with torch.set_grad_enabled(grad_mode):
            h, info.forward = solver.solve(
                _system(op, gamma),
                aty + z / gamma,
                x0=z,
                precond=_preconditioner(solver, op, gamma),
                what=f"prox_l2({backward}) forward solve",
            )
        return (h, info) if return_info else h

    # The snapshot keeps the operator's structure (settings, sub-modules) as it is now;
    # the Function's inputs carry its tensors, so autograd routes their gradients and
    # checks their versions.
    aty = _refuse_hidden_tensors(op, slots, slot_index, tensors, y)
    snapshot = _rebuild(op, slots, slot_index, tensors)
    with torch.no_grad():
        precond = _preconditioner(solver, snapshot, gamma)
    setup = _Setup(snapshot, slots, slot_index, solver, precond, info, aty)
    function = _ImplicitProx if backward == "implicit" else _CheckpointProx
    h = function.apply(setup, z, y, gamma, *tensors)
    return (h, info) if return_info else h


# -- inputs ---------------------------------------------------------------------------


def check_prox_inputs(op: LinearOperator, z, y, gamma) -> Tensor:
    """Validate the inputs of a least-squares prox; return gamma as a tensor broadcastable
    to ``z``. Closed-form ``prox_l2`` overrides call it so their errors match."""
    for name, t in (("z", z), ("y", y)):
        if not isinstance(t, Tensor):
            raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if not (t.is_floating_point() or t.is_complex()):
            raise ValueError(f"{name}: expected a floating or complex tensor, got dtype {t.dtype}")
        if t.ndim < 1:
            raise ValueError(f"{name}: expected a batched tensor (B, ...), got a 0-d tensor")
    if y.dtype != z.dtype:
        raise ValueError(f"y: expected dtype {z.dtype} (the dtype of z), got {y.dtype}")
    if y.device != z.device:
        raise ValueError(f"y: expected device {z.device} (the device of z), got {y.device}")
    expected = tuple(op.output_shape(z.shape))
    if tuple(y.shape) != expected:
        raise ValueError(
            f"y: expected shape {expected} (the shape of A(z) for z of shape "
            f"{tuple(z.shape)}), got {tuple(y.shape)}"
        )
    gamma = _gamma_tensor(gamma, z)
    # One host synchronisation for all value checks (outside autograd: they save nothing).
    with torch.no_grad():
        flags = torch.stack(
            [
                ~torch.isfinite(z).all(),
                ~torch.isfinite(y).all(),
                ~torch.isfinite(gamma).all(),
                (gamma <= 0).any(),
            ]
        ).tolist()
    if flags[0]:
        raise ValueError("z: expected finite values, got NaN or Inf")
    if flags[1]:
        raise ValueError("y: expected finite values, got NaN or Inf")
    if flags[2] or flags[3]:
        raise ValueError(
            f"gamma: expected finite values > 0, got min {gamma.detach().min().item():g}"
        )
    return gamma


def _gamma_tensor(gamma, z: Tensor) -> Tensor:
    real_dtype = z.real.dtype if z.is_complex() else z.dtype
    if isinstance(gamma, bool) or not isinstance(gamma, (Real, Tensor)):
        raise ValueError(f"gamma: expected a positive number or tensor, got {type(gamma).__name__}")
    if not isinstance(gamma, Tensor):
        return torch.tensor(float(gamma), dtype=real_dtype, device=z.device)
    if gamma.is_complex() or gamma.dtype == torch.bool:
        raise ValueError(f"gamma: expected a real tensor, got dtype {gamma.dtype}")
    gamma = gamma.to(device=z.device, dtype=real_dtype)
    if gamma.ndim == 1 and gamma.shape[0] == z.shape[0] and z.ndim > 1:
        # A (B,) tensor is one step per sample.
        return gamma.reshape((-1,) + (1,) * (z.ndim - 1))
    try:
        shape = torch.broadcast_shapes(gamma.shape, z.shape)
    except RuntimeError:
        shape = None
    if shape != z.shape:
        raise ValueError(
            f"gamma: expected a number, a ({z.shape[0]},) tensor or a shape that broadcasts "
            f"to z's {tuple(z.shape)}, got shape {tuple(gamma.shape)}"
        )
    return gamma


def _system(op: LinearOperator, gamma: Tensor):
    """``x -> (A^H A + I / gamma) x``, added in place into the fresh ``A^H A x`` where no
    graph is built (one temporary less per CG iteration, the same rounding)."""

    def matvec(x: Tensor) -> Tensor:
        normal = op.normal(x)
        # An operator may hand back its input or a view of it (an identity): never
        # write into the solver's iterate.
        shared = normal.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
        if torch.is_grad_enabled() or shared or normal.shape != x.shape:
            return normal + x / gamma
        return normal.add_(x / gamma)

    return matvec


def _preconditioner(solver: CG, op: LinearOperator, gamma: Tensor):
    choice = solver.preconditioner
    if choice is None:
        return None
    if choice == "auto":
        return op.preconditioner(gamma)
    return choice(op, gamma)


# -- the operator's tensors -----------------------------------------------------------


def _unique_tensors(op: LinearOperator):
    """The distinct tensors of ``op`` (a tensor held twice is one input) and a slot map."""
    slots = list(tensor_slots(op))
    tensors: list[Tensor] = []
    position: dict[int, int] = {}
    slot_index = []
    for *_, t in slots:
        if id(t) not in position:
            position[id(t)] = len(tensors)
            tensors.append(t)
        slot_index.append(position[id(t)])
    return tensors, slot_index, slots


def _rebuild(op, slots, slot_index, tensors):
    return with_tensors(op, slots, [tensors[i] for i in slot_index])


def _refuse_hidden_tensors(op, slots, slot_index, tensors, y) -> Tensor:
    """``A^H y`` with every registered tensor detached; it needs no gradient unless ``A``
    uses a tensor that requires grad and is not registered (its gradient would be lost)."""
    detached = _rebuild(op, slots, slot_index, [t.detach() for t in tensors])
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

    def __init__(self, op, slots, slot_index, solver, precond, info, aty):
        self.op = op
        self.slots = slots
        self.slot_index = slot_index
        self.solver = solver
        self.precond = precond
        self.info = info
        self.aty = aty
        self.iterations = None

    def solve_forward(self, z, y, gamma, tensors):
        op = _rebuild(self.op, self.slots, self.slot_index, tensors)
        h, info = self.solver.solve(
            _system(op, gamma),
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
        op = _rebuild(setup.op, setup.slots, setup.slot_index, tensors)
        u, info = setup.solver.solve(
            _system(op, gamma),
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
                op_g = _rebuild(setup.op, setup.slots, setup.slot_index, leaves)
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
            op = _rebuild(setup.op, setup.slots, setup.slot_index, tensors)
            # Replay exactly the forward's iterations per sample, preconditioner included:
            # the gradient of the same truncated solve that "unroll" differentiates.
            h, info = setup.solver.solve(
                _system(op, gamma),
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
