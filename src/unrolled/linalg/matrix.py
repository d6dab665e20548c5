"""A dense matrix as an operator: small problems, tests, and users' own matrices."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .._validation import check_tensor
from .operator import LinearOperator

__all__ = ["MatrixOperator"]


class MatrixOperator(LinearOperator):
    """``A x = x @ M^T`` for ``x`` of shape ``(B, n)`` and a dense ``M`` of shape ``(m, n)``.

    Real or complex. ``M`` may also be ``(B, m, n)``, one matrix per sample. ``x`` has
    the matrix's dtype, or is complex of the same precision as a real matrix.
    """

    def __init__(self, matrix: Tensor):
        super().__init__()
        check_tensor("matrix", matrix, "a tensor of shape (m, n) or (B, m, n)")
        if matrix.ndim not in (2, 3):
            raise ValueError(
                f"matrix: expected a tensor of shape (m, n) or (B, m, n), got {tuple(matrix.shape)}"
            )
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
        check_tensor(name, t)
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
