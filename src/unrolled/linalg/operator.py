"""Matrix-free linear operators.

A :class:`LinearOperator` maps a batch ``x`` of shape ``(B, ...)`` to ``A x`` and
back through its adjoint. It is an ``nn.Module`` so its tensors move with
``.to()``, appear in ``state_dict()`` and can be trained.

Every tensor that ``A`` uses must be reachable from the operator as a parameter,
a buffer, a plain tensor attribute, or the same inside a sub-module. The
implicit backward of :func:`unrolled.linalg.prox_l2` relies on that to route
gradients to those tensors (and to whatever network produced them); a tensor
hidden elsewhere (a list, a closure) is detected and refused there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["LinearOperator", "MatrixOperator", "inner", "batch_inner", "batch_norm"]


def batch_inner(a: Tensor, b: Tensor) -> Tensor:
    """Real inner product ``Re <a_i, b_i>`` per sample, shape ``(B,)``."""
    prod = torch.linalg.vecdot(a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1))
    return prod.real if prod.is_complex() else prod


def batch_norm(a: Tensor) -> Tensor:
    """Euclidean norm per sample, shape ``(B,)`` (real)."""
    return torch.linalg.vector_norm(a.reshape(a.shape[0], -1), dim=1)


def inner(a: Tensor, b: Tensor) -> Tensor:
    """Full (complex, conjugate-linear in ``a``) inner product ``<a, b>`` over all entries."""
    return torch.vdot(a.reshape(-1), b.reshape(-1))


class LinearOperator(nn.Module):
    """A linear map ``A`` on batched tensors, with its adjoint.

    Subclasses implement :meth:`A` and :meth:`A_adjoint`; they may override
    :meth:`normal` (``A^H A``) when one fused operation is cheaper, and
    :meth:`output_shape` to avoid a trial evaluation. For complex data the
    adjoint is the conjugate transpose.
    """

    def A(self, x: Tensor) -> Tensor:  # noqa: N802 - the field's notation
        raise NotImplementedError

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        raise NotImplementedError

    def normal(self, x: Tensor) -> Tensor:
        """``A^H A x``."""
        return self.A_adjoint(self.A(x))

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

    # -- small helpers -----------------------------------------------------------------

    def device(self) -> torch.device:
        for t in _registered_tensors(self):
            return t.device
        return torch.device("cpu")

    def domain_dtype(self) -> torch.dtype:
        """Default dtype of ``x`` for trial evaluations: that of the operator's first tensor."""
        for t in _registered_tensors(self):
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
        """``argmin_x 1/2 ||A x - y||^2 + 1/(2 gamma) ||x - z||^2``.

        The default solves the normal equations iteratively
        (:func:`unrolled.linalg.prox_l2`, same arguments). Operators with a closed form
        override it, differentiate it by plain autograd, and report
        ``ProxInfo(mode="closed_form", forward=None)`` when ``return_info`` is set.
        """
        from .prox import prox_l2

        return prox_l2(self, z, y, gamma, solver=solver, backward=backward, return_info=return_info)

    # -- composition: A2 @ A1, A1 + A2, c * A ---------------------------------------------

    def __matmul__(self, other):
        from .compose import ComposedOperator

        return (
            ComposedOperator(self, other) if isinstance(other, LinearOperator) else NotImplemented
        )

    def __add__(self, other):
        from .compose import SumOperator

        return SumOperator(self, other) if isinstance(other, LinearOperator) else NotImplemented

    def __mul__(self, scale):
        from .compose import ScaledOperator

        return NotImplemented if isinstance(scale, LinearOperator) else ScaledOperator(scale, self)

    __rmul__ = __mul__

    # -- testing aids ------------------------------------------------------------------

    def dense(self, input_shape: Sequence[int], *, dtype: torch.dtype | None = None) -> Tensor:
        """The matrix of ``A`` on inputs of shape ``input_shape`` (batch included).

        Columns are ``A e_j`` for the canonical basis of ``vec(x)``; for an operator
        with per-sample tensors pass the full batch shape and get a block-diagonal
        matrix. Meant for small sizes in tests.
        """
        input_shape = tuple(input_shape)
        dtype = dtype or self.domain_dtype()
        n = math.prod(input_shape)
        device = self.device()
        columns = []
        with torch.no_grad():
            if input_shape[0] == 1:
                # A one-sample operator acts on any batch: apply it to many basis vectors at once.
                eye = torch.eye(n, dtype=dtype, device=device)
                for chunk in eye.split(256):
                    out = self.A(chunk.reshape(chunk.shape[0], *input_shape[1:]))
                    columns.append(out.reshape(chunk.shape[0], -1))
            else:
                for j in range(n):
                    e = torch.zeros(n, dtype=dtype, device=device)
                    e[j] = 1
                    columns.append(self.A(e.reshape(input_shape)).reshape(1, -1))
        return torch.cat(columns).transpose(0, 1)

    def adjointness_error(
        self,
        input_shape: Sequence[int] | Tensor,
        *,
        dtype: torch.dtype | None = None,
        generator: torch.Generator | None = None,
    ) -> float:
        """Relative mismatch ``|<A x, y> - <x, A^H y>| / max(|Ax||y|, |x||A^H y|)``.

        ``input_shape`` is the shape of ``x`` (batch included), or a tensor whose shape
        and dtype are taken. ``x`` and ``y`` are random (complex when ``dtype`` is). The
        complex inner product is compared in full, so a wrong conjugation is caught too.
        A correct adjoint gives a few ulps of ``dtype``.
        """
        if isinstance(input_shape, Tensor):
            dtype = dtype or input_shape.dtype
            input_shape = input_shape.shape
        dtype = dtype or self.domain_dtype()
        device = self.device()
        with torch.no_grad():
            x = _randn(tuple(input_shape), dtype, device, generator)
            ax = self.A(x)
            y = _randn(ax.shape, ax.dtype, device, generator)
            aty = self.A_adjoint(y)
            lhs = inner(ax, y)
            rhs = inner(x, aty)
            scale = torch.maximum(ax.norm() * y.norm(), x.norm() * aty.norm())
        if scale == 0:
            return 0.0
        return float((lhs - rhs).abs() / scale)

    #: the name deepinv users know
    adjointness_test = adjointness_error


def _randn(shape, dtype, device, generator: torch.Generator | None) -> Tensor:
    # drawn on the generator's device, then moved: a CPU generator serves a GPU operator
    where = generator.device if generator is not None else device
    return torch.randn(shape, dtype=dtype, device=where, generator=generator).to(device)


class MatrixOperator(LinearOperator):
    """``A x = x @ M^T`` for ``x`` of shape ``(B, n)`` and a dense ``M`` of shape ``(m, n)``.

    Real or complex. ``M`` may also be ``(B, m, n)``, one matrix per sample. ``x`` has
    the matrix's dtype, or is complex of the same precision as a real matrix.
    """

    def __init__(self, matrix: Tensor):
        super().__init__()
        if not isinstance(matrix, Tensor) or matrix.ndim not in (2, 3):
            got = type(matrix).__name__ if not isinstance(matrix, Tensor) else tuple(matrix.shape)
            raise ValueError(f"matrix: expected a tensor of shape (m, n) or (B, m, n), got {got}")
        if not (matrix.is_floating_point() or matrix.is_complex()):
            raise ValueError(f"matrix: expected a floating or complex tensor, got {matrix.dtype}")
        self.matrix = matrix

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        m = self._check(x, self.matrix.shape[-1], "x")
        if m.ndim == 2:
            return x @ m.transpose(-2, -1)
        return (m @ x.unsqueeze(-1)).squeeze(-1)

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        mh = self._check(y, self.matrix.shape[-2], "y").conj()
        if mh.ndim == 2:
            return y @ mh
        return (mh.transpose(-2, -1) @ y.unsqueeze(-1)).squeeze(-1)

    def output_shape(self, input_shape: Sequence[int]) -> torch.Size:
        return torch.Size((input_shape[0], self.matrix.shape[-2]))

    def _check(self, t: Tensor, size: int, name: str) -> Tensor:
        """Validate ``t`` against the matrix; return the matrix in ``t``'s dtype."""
        if not isinstance(t, Tensor):
            raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if t.ndim != 2 or t.shape[-1] != size:
            raise ValueError(f"{name}: expected shape (B, {size}), got {tuple(t.shape)}")
        m = self.matrix
        if m.ndim == 3 and m.shape[0] not in (1, t.shape[0]):
            raise ValueError(
                f"{name}: expected batch size {m.shape[0]} (one per matrix), got {t.shape[0]}"
            )
        if t.dtype != m.dtype:
            if m.is_complex() or not t.is_complex() or t.real.dtype != m.dtype:
                raise ValueError(
                    f"{name}: expected dtype {m.dtype} (the matrix's"
                    + ("" if m.is_complex() else ", or its complex counterpart")
                    + f"), got {t.dtype}"
                )
            m = m.to(t.dtype)  # a real matrix acting on complex vectors
        return m


# -- tensor slots: what an operator's A depends on, and a copy that uses other tensors ----


def _registered_tensors(module: nn.Module):
    for _, _, _, tensor in tensor_slots(module):
        yield tensor


def tensor_slots(module: nn.Module, prefix: tuple[str, ...] = ()):
    """Every tensor a module holds: ``(module_path, kind, name, tensor)``.

    ``kind`` is ``"_parameters"``, ``"_buffers"`` or ``"__dict__"`` (a plain tensor
    attribute); sub-modules are walked recursively.
    """
    for kind in ("_parameters", "_buffers"):
        for name, tensor in module.__dict__[kind].items():
            if tensor is not None:
                yield prefix, kind, name, tensor
    for name, value in module.__dict__.items():
        if isinstance(value, Tensor):
            yield prefix, "__dict__", name, value
    for name, child in module._modules.items():
        if child is not None:
            yield from tensor_slots(child, prefix + (name,))


def _shallow_clone(module: nn.Module) -> nn.Module:
    clone = module.__class__.__new__(module.__class__)
    clone.__dict__.update(module.__dict__)
    for key in ("_parameters", "_buffers", "_modules"):
        clone.__dict__[key] = module.__dict__[key].copy()
    return clone


def with_tensors(module: nn.Module, slots, tensors: Sequence[Tensor]) -> nn.Module:
    """A copy of ``module`` in which each slot holds the matching tensor.

    Every module of the tree is copied shallowly (their attributes are shared, their
    parameter, buffer and sub-module tables are not), so a copy taken at forward time
    keeps the operator as it was, also if the user reassigns its tensors or settings
    before backward. The original is untouched.
    """
    root = _clone_tree(module)
    for (path, kind, name, _), tensor in zip(slots, tensors, strict=True):
        target = root
        for step in path:
            target = target._modules[step]
        if kind == "__dict__":
            target.__dict__[name] = tensor
        else:
            # A plain tensor in _parameters is what torch.func.functional_call does too:
            # attribute access returns it, and this private copy is never trained.
            target.__dict__[kind][name] = tensor
    return root


def _clone_tree(module: nn.Module) -> nn.Module:
    clone = _shallow_clone(module)
    for name, child in module._modules.items():
        if child is not None:
            clone._modules[name] = _clone_tree(child)
    return clone
