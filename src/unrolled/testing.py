"""Checks for any linear operator at small sizes: for the tests, and for your own operators.

``dense_matrix`` builds the matrix of ``A`` by applying it to the canonical basis,
differentiably in the operator's tensors, so ``dense_prox`` is a closed-form prox whose
gradients with respect to ``z``, ``y``, ``gamma`` and every tensor the operator is made
from are plain autograd through ``torch.linalg.solve``: an independent truth for the
implicit and closed-form backward passes. ``adjointness_error`` checks ``A^H`` against
``A``; ``saved_bytes`` measures what autograd keeps for backward.

Example::

    from unrolled.testing import adjointness_error, dense_prox, relative_error

    assert adjointness_error(op, (2, 1, 8, 8), dtype=torch.float64) < 1e-12
    assert relative_error(op.prox_l2(z, y, 0.5), dense_prox(op, z, y, 0.5)) < 1e-8
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .linalg.operator import LinearOperator

__all__ = [
    "adjointness_error",
    "dense_matrix",
    "dense_prox",
    "prox_gradients",
    "relative_error",
    "saved_bytes",
]

#: basis vectors per call of ``A`` when building a dense matrix
_CHUNK = 256


def dense_matrix(
    op: LinearOperator, input_shape: Sequence[int], dtype: torch.dtype | None = None
) -> Tensor:
    """The matrix of ``op.A`` on ``vec(x)`` for ``x`` of ``input_shape`` (batch included).

    ``dtype`` defaults to the operator's :meth:`~unrolled.linalg.LinearOperator.domain_dtype`.
    Differentiable with respect to the operator's tensors (wrap the call in
    ``torch.no_grad()`` where that is not wanted). For a batch larger than one the matrix
    is block-diagonal (operators act sample by sample): column ``j`` of every sample's
    block comes from one call of ``A`` on a batch holding ``e_j`` in each sample.
    """
    batch, *rest = tuple(input_shape)
    dtype = dtype or op.domain_dtype()
    n = math.prod(rest)
    eye = torch.eye(n, dtype=dtype, device=op.device())
    if batch == 1:
        # A one-sample operator acts on any batch: many basis vectors per call.
        columns = [
            op.A(chunk.reshape(-1, *rest)).reshape(chunk.shape[0], -1)
            for chunk in eye.split(_CHUNK)
        ]
        return torch.cat(columns).transpose(0, 1)
    columns = torch.stack([op.A(e.reshape(1, *rest).expand(batch, *rest)) for e in eye])
    blocks = columns.reshape(n, batch, -1).permute(1, 2, 0)  # (B, m, n)
    return torch.block_diag(*blocks)


def adjointness_error(
    op: LinearOperator,
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
    dtype = dtype or op.domain_dtype()
    device = op.device()
    with torch.no_grad():
        x = _randn(tuple(input_shape), dtype, device, generator)
        ax = op.A(x)
        y = _randn(ax.shape, ax.dtype, device, generator)
        aty = op.A_adjoint(y)
        lhs = torch.vdot(ax.reshape(-1), y.reshape(-1))
        rhs = torch.vdot(x.reshape(-1), aty.reshape(-1))
        scale = torch.maximum(ax.norm() * y.norm(), x.norm() * aty.norm())
    if scale == 0:
        return 0.0
    return float((lhs - rhs).abs() / scale)


def _randn(shape, dtype, device, generator: torch.Generator | None) -> Tensor:
    # drawn on the generator's device, then moved: a CPU generator serves a GPU operator
    where = generator.device if generator is not None else device
    return torch.randn(shape, dtype=dtype, device=where, generator=generator).to(device)


def _gamma_full(gamma, z: Tensor) -> Tensor:
    real = z.real.dtype if z.is_complex() else z.dtype
    g = torch.as_tensor(gamma, dtype=real, device=z.device)
    if g.ndim == 1 and z.ndim > 1 and g.shape[0] == z.shape[0]:
        g = g.reshape((-1,) + (1,) * (z.ndim - 1))
    return g.broadcast_to(z.shape).reshape(-1)


def dense_prox(op: LinearOperator, z: Tensor, y: Tensor, gamma) -> Tensor:
    """``argmin_x 1/2 ||A x - y||^2 + 1/(2 gamma) ||x - z||^2`` by a dense solve of
    ``(A^H A + diag(1/gamma)) h = A^H y + z / gamma`` over the whole batch."""
    a = dense_matrix(op, z.shape, z.dtype)
    g = _gamma_full(gamma, z)
    ah = a.conj().transpose(0, 1)
    system = ah @ a + torch.diag(1 / g).to(a.dtype)
    rhs = ah @ y.reshape(-1) + z.reshape(-1) / g
    return torch.linalg.solve(system, rhs).reshape(z.shape)


def prox_gradients(
    prox: Callable[[Tensor, Tensor, Tensor], Tensor],
    inputs: Sequence[Tensor],
    v: Tensor,
) -> tuple[Tensor, list[Tensor | None]]:
    """``h = prox(*inputs[:3])`` and the gradients of ``Re <v, h>`` with respect to every
    tensor of ``inputs`` (``z``, ``y``, ``gamma``, then the leaves the operator is made
    from; ``prox`` builds the operator from them itself). Uses PyTorch's convention for
    complex leaves (the gradient of a real loss is ``dL/d(re) + i dL/d(im)``)."""
    h = prox(*inputs[:3])
    loss = (v.conj() * h).real.sum()
    grads = torch.autograd.grad(loss, list(inputs), allow_unused=True)
    return h.detach(), list(grads)


def relative_error(a: Tensor, b: Tensor) -> float:
    """``||a - b|| / ||b||`` (``||a - b||`` when ``b`` is zero)."""
    a, b = a.detach(), b.detach()
    diff = torch.linalg.vector_norm((a - b).reshape(-1))
    ref = torch.linalg.vector_norm(b.reshape(-1))
    return float(diff / ref) if ref > 0 else float(diff)


def saved_bytes(fn: Callable[[], object]) -> int:
    """Bytes of the distinct storages autograd saves for backward while ``fn()`` runs."""
    storages: dict[int, int] = {}
    alive: list[Tensor] = []  # so a freed storage's address is not reused and miscounted

    def pack(t: Tensor) -> Tensor:
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        alive.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        result = fn()
    alive.clear()
    del result
    return sum(storages.values())
