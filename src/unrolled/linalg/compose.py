"""Operators built from parts: composition ``A2 @ A1``, sum ``A1 + A2``, scaling ``c * A``.

Each holds its parts as sub-modules, so their tensors are found by the implicit
backward of :func:`unrolled.linalg.prox_l2` (gradients reach every part) and move with
``.to()``. Adjoints follow from the parts': ``(A2 A1)^H = A1^H A2^H``,
``(A1 + A2)^H = A1^H + A2^H``, ``(c A)^H = conj(c) A^H``.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Number

import torch
from torch import Tensor, nn

from .operator import LinearOperator
from .prox import check_prox_inputs

__all__ = ["ComposedOperator", "SumOperator", "ScaledOperator"]


def _check_operator(op, name: str) -> LinearOperator:
    if not isinstance(op, LinearOperator):
        raise ValueError(f"{name}: expected a LinearOperator, got {type(op).__name__}")
    return op


class ComposedOperator(LinearOperator):
    """``A x = outer(inner(x))``: ``outer @ inner``. Only the operators, not their noise."""

    def __init__(self, outer: LinearOperator, inner: LinearOperator):
        super().__init__()
        self.inner = _check_operator(inner, "inner")
        self.outer = _check_operator(outer, "outer")

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        return self.outer.A(self.inner.A(x))

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        return self.inner.A_adjoint(self.outer.A_adjoint(y))

    def output_shape(self, input_shape: Sequence[int]) -> torch.Size:
        return self.outer.output_shape(self.inner.output_shape(input_shape))

    def domain_dtype(self) -> torch.dtype:
        return torch.promote_types(self.inner.domain_dtype(), self.outer.domain_dtype())


class SumOperator(LinearOperator):
    """``A x = first(x) + second(x)``; both map the same inputs to the same shape."""

    def __init__(self, first: LinearOperator, second: LinearOperator):
        super().__init__()
        self.first = _check_operator(first, "first")
        self.second = _check_operator(second, "second")

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        self.output_shape(x.shape)
        return self.first.A(x) + self.second.A(x)

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        return self.first.A_adjoint(y) + self.second.A_adjoint(y)

    def output_shape(self, input_shape: Sequence[int]) -> torch.Size:
        a, b = self.first.output_shape(input_shape), self.second.output_shape(input_shape)
        if a != b:
            raise ValueError(
                f"second: expected an output shape {tuple(a)} (that of first) for inputs of "
                f"shape {tuple(input_shape)}, got {tuple(b)}"
            )
        return a

    def domain_dtype(self) -> torch.dtype:
        return torch.promote_types(self.first.domain_dtype(), self.second.domain_dtype())


class ScaledOperator(LinearOperator):
    """``A x = scale * op(x)``; ``A^H y = conj(scale) op^H(y)``.

    Args:
        scale: a real or complex number, or a 0-d tensor (an ``nn.Parameter`` is trained,
            a tensor made by a network receives its gradient).
        op: the operator.

    For a real nonzero scale the prox delegates to ``op``'s (closed form where it has
    one): ``prox`` of ``c A`` with data ``y`` and step ``gamma`` is that of ``A`` with data
    ``y / c`` and step ``gamma c^2``.
    """

    def __init__(self, scale: Number | Tensor, op: LinearOperator):
        super().__init__()
        self.op = _check_operator(op, "op")
        if isinstance(scale, Tensor):
            if scale.ndim != 0 or not (scale.is_floating_point() or scale.is_complex()):
                raise ValueError(
                    f"scale: expected a number or a 0-d floating tensor, got a {scale.dtype} "
                    f"tensor of shape {tuple(scale.shape)}"
                )
            if isinstance(scale, nn.Parameter):
                self.scale = scale
            else:
                self.register_buffer("scale", scale)
        elif isinstance(scale, Number) and not isinstance(scale, bool):
            self.scale = scale
        else:
            raise ValueError(
                f"scale: expected a number or a 0-d tensor, got {type(scale).__name__}"
            )

    def _is_complex(self) -> bool:
        s = self.scale
        return s.is_complex() if isinstance(s, Tensor) else isinstance(s, complex)

    def _conj(self):
        s = self.scale
        return s.conj() if isinstance(s, Tensor) else s.conjugate()

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        return self.scale * self.op.A(x)

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        return self._conj() * self.op.A_adjoint(y)

    def output_shape(self, input_shape: Sequence[int]) -> torch.Size:
        return self.op.output_shape(input_shape)

    def domain_dtype(self) -> torch.dtype:
        return self.op.domain_dtype()

    def prox_l2(
        self,
        z: Tensor,
        y: Tensor,
        gamma,
        *,
        solver=None,
        backward: str = "implicit",
        return_info: bool = False,
    ):
        """Delegates to ``op.prox_l2(z, y / c, gamma c^2)`` for a real nonzero scale ``c``,
        else the iterative default."""
        c = self.scale
        if self._is_complex() or not bool(c != 0):
            return super().prox_l2(
                z, y, gamma, solver=solver, backward=backward, return_info=return_info
            )
        g = check_prox_inputs(self, z, y, gamma)  # the core's errors; a tensor broadcasting to z
        if isinstance(c, Tensor):
            c = c.to(g.dtype)
        return self.op.prox_l2(
            z, y / c, g * c * c, solver=solver, backward=backward, return_info=return_info
        )

    def extra_repr(self) -> str:
        s = self.scale
        return f"scale={tuple(s.shape) if isinstance(s, Tensor) else s}"
