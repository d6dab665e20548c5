"""What a least-squares prox call accepts and what it reports.

Shared by the operator's ``prox_l2`` (closed form or iterative) and by
:func:`unrolled.linalg.prox_l2`, so every operator refuses the same inputs with the
same message, once per call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor

from .._validation import check_choice, check_instance, check_number_or_tensor, check_tensor
from .cg import CG, SolveInfo

__all__ = [
    "BACKWARD_MODES",
    "ProxInfo",
    "ProxResult",
    "check_prox_inputs",
    "check_solve_settings",
]

BACKWARD_MODES = ("implicit", "unroll", "checkpoint")


@dataclass
class ProxInfo:
    """Statistics of one prox call: the forward solve, and the backward one once run.

    ``mode`` is the backward mode, or ``"closed_form"`` for a prox solved without
    iterations (then ``forward`` and ``backward`` stay ``None``).
    """

    mode: str
    forward: SolveInfo | None
    backward: SolveInfo | None = None
    on_backward: Callable[[SolveInfo], None] | None = field(default=None, repr=False)

    def _set_backward(self, info: SolveInfo) -> None:
        self.backward = info
        if self.on_backward is not None:
            self.on_backward(info)


class ProxResult(NamedTuple):
    """The prox ``value`` (shaped like ``z``) and the call's :class:`ProxInfo`; unpacks as
    ``h, info = ...``."""

    value: Tensor
    info: ProxInfo


def check_solve_settings(solver, backward) -> CG:
    """``solver`` (default ``CG()``) and ``backward`` checked; the solver returned."""
    solver = CG() if solver is None else solver
    check_instance("solver", solver, CG, "an unrolled.CG")
    check_choice("backward", backward, BACKWARD_MODES)
    return solver


def check_prox_inputs(op, z, y, gamma) -> Tensor:
    """Validate ``z``, ``y`` and ``gamma`` against the operator ``op``; return gamma as a
    real tensor broadcastable to ``z``."""
    for name, t in (("z", z), ("y", y)):
        check_tensor(name, t)
        if not (t.is_floating_point() or t.is_complex()):
            raise ValueError(f"{name}: expected a floating or complex tensor, got dtype {t.dtype}")
        if t.ndim < 1:
            raise ValueError(f"{name}: expected a batched tensor (B, ...), got a 0-d tensor")
    if not z.is_complex() and op.domain_dtype().is_complex:
        raise ValueError(
            f"z: expected a complex tensor (the operator acts on complex data), got dtype {z.dtype}"
        )
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
    check_number_or_tensor("gamma", gamma, "a positive number or tensor")
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
