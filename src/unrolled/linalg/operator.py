"""Matrix-free linear operators: the interface, and the operators its algebra builds.

A :class:`LinearOperator` maps a batch ``x`` of shape ``(B, ...)`` to ``A x`` and
back through its adjoint. It is an ``nn.Module`` so its tensors move with
``.to()``, appear in ``state_dict()`` and can be trained.

Every tensor that ``A`` uses must be reachable from the operator as a parameter,
a buffer, a plain tensor attribute, or the same inside a sub-module. The
implicit backward of :func:`unrolled.linalg.prox_l2` relies on that to route
gradients to those tensors (and to whatever network produced them); a tensor
hidden elsewhere (a list, a closure) is detected and refused there.

``A2 @ A1``, ``A1 + A2`` and ``c * A`` build :class:`ComposedOperator`,
:class:`SumOperator` and :class:`ScaledOperator`. They live here, beside the
interface whose operators return them, so the algebra needs no import cycle.
Dense matrices and adjointness checks for testing an operator are in
:mod:`unrolled.testing`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from numbers import Number

import torch
from torch import Tensor, nn

from .._validation import check_instance, check_number_or_tensor
from ._capture import tensor_slots
from ._iterative import iterative_prox
from ._prox_inputs import ProxInfo, ProxResult, check_prox_inputs, check_solve_settings

__all__ = ["LinearOperator", "ComposedOperator", "SumOperator", "ScaledOperator"]


class LinearOperator(nn.Module, abc.ABC):
    """A linear map ``A`` on batched tensors, with its adjoint.

    Subclasses implement :meth:`A` and :meth:`A_adjoint` (a class missing either cannot
    be instantiated). They may override :meth:`normal` (``A^H A``) or
    :meth:`normal_map` when one fused operation is cheaper, :meth:`output_shape` to
    avoid a trial evaluation, and ``_closed_form_prox`` when the least-squares prox
    has a closed form. For complex data the adjoint is the conjugate transpose.
    """

    @abc.abstractmethod
    def A(self, x: Tensor) -> Tensor:  # noqa: N802 - the field's notation
        """``A x``."""

    @abc.abstractmethod
    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        """``A^H y``."""

    def normal(self, x: Tensor) -> Tensor:
        """``A^H A x``."""
        return self.A_adjoint(self.A(x))

    def normal_map(self, like: Tensor) -> Callable[[Tensor], Tensor]:
        """The function ``x -> A^H A x`` for inputs shaped and typed like ``like``.

        An iterative solve asks for it once and applies it every iteration, so an
        operator may check ``like`` here once and return a function that skips its
        per-call checks. The default is :meth:`normal`.
        """
        return self.normal

    def forward(self, x: Tensor) -> Tensor:
        return self.A(x)

    def output_shape(self, input_shape: Sequence[int]) -> torch.Size:
        """Shape of ``A(x)`` for ``x`` of shape ``input_shape`` (batch included).

        The default evaluates ``A`` once on zeros; operators override it with a formula.
        """
        dtype = self.domain_dtype()
        with torch.no_grad():
            out = self.A(torch.zeros(tuple(input_shape), dtype=dtype, device=self.device()))
        return out.shape

    def device(self) -> torch.device:
        """The device of the operator's first tensor (CPU if it holds none)."""
        for *_, t in tensor_slots(self):
            return t.device
        return torch.device("cpu")

    def domain_dtype(self) -> torch.dtype:
        """Default dtype of ``x`` for trial evaluations: that of the operator's first tensor."""
        for *_, t in tensor_slots(self):
            if t.is_floating_point() or t.is_complex():
                return t.dtype
        return torch.get_default_dtype()

    def preconditioner(self, gamma: Tensor):
        """A function ``r -> M r`` approximating ``(A^H A + I/gamma)^-1``, or ``None``.

        Used by CG when its ``preconditioner`` is ``"auto"``. Operators return ``None``
        where no preconditioner pays off. Build it from differentiable operations: under
        ``backward="unroll"`` (and the ``"checkpoint"`` replay) it is part of the
        differentiated computation.
        """
        return None

    # -- the least-squares prox: validated here, solved in closed form or by CG ---------

    def prox_l2(
        self, z: Tensor, y: Tensor, gamma, *, solver=None, backward: str = "implicit"
    ) -> Tensor:
        """``argmin_x 1/2 ||A x - y||^2 + 1/(2 gamma) ||x - z||^2``, shaped like ``z``.

        The value of :meth:`prox_l2_with_info` (same arguments).
        """
        return self.prox_l2_with_info(z, y, gamma, solver=solver, backward=backward).value

    def prox_l2_with_info(
        self, z: Tensor, y: Tensor, gamma, *, solver=None, backward: str = "implicit"
    ) -> ProxResult:
        """The prox and the statistics of its solve (:class:`~unrolled.linalg.ProxResult`).

        Every argument is checked once, as :func:`unrolled.linalg.prox_l2` checks it.
        Then the operator's closed form (``_closed_form_prox``) is used where it has
        one for these inputs, differentiated by plain autograd and reported as
        ``ProxInfo(mode="closed_form", forward=None)``; otherwise the normal equations
        are solved by ``solver`` (default ``CG()``) with the ``backward`` mode, and the
        info's ``backward`` field is filled in when the backward pass runs. Operators
        customise this through ``_closed_form_prox``, not by overriding it.
        """
        solver = check_solve_settings(solver, backward)
        gamma = check_prox_inputs(self, z, y, gamma)
        h = self._closed_form_prox(z, y, gamma)
        if h is not None:
            return ProxResult(h, ProxInfo(mode="closed_form", forward=None))
        info = ProxInfo(mode=backward, forward=None)
        return ProxResult(iterative_prox(self, z, y, gamma, solver, backward, info), info)

    def _closed_form_prox(self, z: Tensor, y: Tensor, gamma: Tensor) -> Tensor | None:
        """The prox in closed form for validated inputs, or ``None`` where there is none.

        ``gamma`` is a real tensor broadcasting to ``z`` (a per-sample gamma has shape
        ``(B, 1, ...)``). The default has none.
        """
        return None

    # -- the algebra: A2 @ A1, A1 + A2, c * A ---------------------------------------------

    def __matmul__(self, other):
        return (
            ComposedOperator(self, other) if isinstance(other, LinearOperator) else NotImplemented
        )

    def __add__(self, other):
        return SumOperator(self, other) if isinstance(other, LinearOperator) else NotImplemented

    def __mul__(self, scale):
        return NotImplemented if isinstance(scale, LinearOperator) else ScaledOperator(scale, self)

    __rmul__ = __mul__


def _check_operator(op, name: str) -> LinearOperator:
    return check_instance(name, op, LinearOperator, "a LinearOperator")


class ComposedOperator(LinearOperator):
    """``A x = outer(inner(x))``: ``outer @ inner``. Only the operators, not their noise.

    The parts are sub-modules: their tensors are found by the implicit backward
    (gradients reach every part) and move with ``.to()``. ``A^H = inner^H outer^H``.
    """

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
    """``A x = first(x) + second(x)``; both map the same inputs to the same shape.
    ``A^H = first^H + second^H``."""

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

    For a real nonzero scale the prox uses ``op``'s closed form where it has one:
    ``prox`` of ``c A`` with data ``y`` and step ``gamma`` is that of ``A`` with data
    ``y / c`` and step ``gamma c^2``.
    """

    def __init__(self, scale: Number | Tensor, op: LinearOperator):
        super().__init__()
        self.op = _check_operator(op, "op")
        check_number_or_tensor("scale", scale, "a number or a 0-d tensor", complex_allowed=True)
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
        else:
            self.scale = scale

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

    def _closed_form_prox(self, z: Tensor, y: Tensor, gamma: Tensor) -> Tensor | None:
        c = self.scale
        if self._is_complex() or not bool(c != 0):
            return None
        if isinstance(c, Tensor):
            c = c.to(gamma.dtype)
        return self.op._closed_form_prox(z, y / c, gamma * c * c)

    def extra_repr(self) -> str:
        s = self.scale
        return f"scale={tuple(s.shape) if isinstance(s, Tensor) else s}"
