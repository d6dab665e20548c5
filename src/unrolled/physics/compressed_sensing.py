"""Compressed sensing: a dense random Gaussian matrix applied to flattened images."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .._validation import check_int, check_shape, check_tensor, is_integer
from . import _util
from .base import Physics

__all__ = ["CompressedSensing"]


class CompressedSensing(Physics):
    """``A x = M vec(x)`` for ``x`` of shape ``(B, *n)``; output ``(B, m)``.

    Args:
        m: number of measurements.
        n: the shape of one input: an integer (flat inputs ``(B, n)``) or an image shape
            such as ``(C, H, W)``.
        seed: seed of the matrix, drawn on the CPU in float64 so a seed gives the same
            matrix on every device and in every dtype: ``M_ij ~ N(0, 1/m)`` (complex
            dtypes: circular, same variance).
        dtype: dtype of the matrix (default: torch's default dtype).
        matrix: an explicit ``(m, prod(n))`` matrix instead of a random one (an
            ``nn.Parameter`` is trained, a tensor made by a network receives its gradient).
        max_factor_size: the closed-form prox factorises a ``k x k`` matrix with
            ``k = min(m, prod(n))``; above this size the prox is iterative (CG).
        noise: noise model applied by ``physics(x)``.

    Closed-form prox (Woodbury when ``m <= n``):
    ``h = z + gamma M^H (I + gamma M M^H)^-1 (y - M z)`` by a Cholesky factorisation,
    else ``h = (M^H M + I/gamma)^-1 (M^H y + z/gamma)``. The factor depends on gamma: it
    is cached per value when gamma is one number and neither it nor the matrix needs a
    gradient, otherwise factorised on every call (batched for a per-sample gamma), always
    by differentiable ``torch.linalg`` operations.
    """

    def __init__(
        self,
        m: int,
        n: int | Sequence[int],
        *,
        seed: int = 0,
        dtype: torch.dtype | None = None,
        matrix: Tensor | None = None,
        max_factor_size: int = 4096,
        noise=None,
    ):
        super().__init__(noise=noise)
        check_int("m", m, minimum=1)
        expected = "a positive integer or an input shape"
        shape = check_shape("n", (n,) if is_integer(n) else n, expected=expected)
        check_int("max_factor_size", max_factor_size, minimum=0)
        self.input_shape = shape
        self.max_factor_size = max_factor_size
        size = math.prod(shape)
        if matrix is None:
            dtype = dtype or torch.get_default_dtype()
            gen = torch.Generator().manual_seed(seed)
            # Drawn in float64 then cast: a seed gives the same matrix in every dtype.
            if dtype.is_complex:
                parts = torch.randn(2, m, size, generator=gen, dtype=torch.float64)
                matrix = torch.complex(parts[0], parts[1]) / math.sqrt(2 * m)
            else:
                matrix = torch.randn(m, size, generator=gen, dtype=torch.float64) / math.sqrt(m)
            matrix = matrix.to(dtype)
        else:
            check_tensor("matrix", matrix, f"a tensor of shape ({m}, {size}) = (m, prod(n))")
            if tuple(matrix.shape) != (m, size):
                raise ValueError(
                    f"matrix: expected shape ({m}, {size}) = (m, prod(n)), "
                    f"got {tuple(matrix.shape)}"
                )
        _util.keep_tensor(self, "matrix", matrix)
        self._factors: dict = {}  # not a tensor attribute: never in state_dict or the backward

    # -- the operator -----------------------------------------------------------------

    def _matrix_for(self, x: Tensor, name: str) -> Tensor:
        check_tensor(name, x, "a tensor")
        if self.matrix.is_complex() and not x.is_complex():
            raise ValueError(
                f"{name}: expected a complex tensor (the matrix is complex), got {x.dtype}"
            )
        return self.matrix.to(x.dtype)

    def output_shape(self, input_shape: Sequence[int]) -> torch.Size:
        if tuple(input_shape[1:]) != self.input_shape:
            raise ValueError(
                f"x: expected shape (B, {', '.join(map(str, self.input_shape))}), "
                f"got {tuple(input_shape)}"
            )
        return torch.Size((input_shape[0], self.matrix.shape[0]))

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        mat = self._matrix_for(x, "x")
        self.output_shape(x.shape)
        return x.reshape(x.shape[0], -1) @ mat.transpose(0, 1)

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        mat = self._matrix_for(y, "y")
        if y.ndim != 2 or y.shape[1] != mat.shape[0]:
            raise ValueError(f"y: expected shape (B, {mat.shape[0]}), got {tuple(y.shape)}")
        return (y @ mat.conj()).reshape(y.shape[0], *self.input_shape)

    # -- closed-form prox -------------------------------------------------------------

    def _closed_form_prox(self, z: Tensor, y: Tensor, gamma: Tensor) -> Tensor | None:
        """Closed form (Cholesky) for a gamma constant per sample when ``min(m, n)`` is at
        most ``max_factor_size``; otherwise ``None`` (the iterative solve)."""
        g = gamma
        mat = self._matrix_for(z, "z")
        m, size = mat.shape
        per_sample = g.numel() == 1 or (
            g.ndim == z.ndim and g.shape[0] == z.shape[0] and _util.constant_over(g, g.ndim - 1)
        )
        if not per_sample or min(m, size) > self.max_factor_size:
            return None
        batch = z.shape[0]
        gb = g.reshape(-1)  # (1,) or (B,)
        zf = z.reshape(batch, -1)
        factor = self._factor(mat, gamma, gb)
        if m <= size:
            # Woodbury, written as a correction of z: no cancellation for large gamma.
            rhs = y - zf @ mat.transpose(0, 1)
            w = torch.cholesky_solve(rhs.unsqueeze(-1), factor).squeeze(-1)
            h = zf + gb[:, None] * (w @ mat.conj())
        else:
            rhs = y @ mat.conj() + zf / gb[:, None]
            h = torch.cholesky_solve(rhs.unsqueeze(-1), factor).squeeze(-1)
        return h.reshape(z.shape)

    def _factor(self, mat: Tensor, gamma: Tensor, gb: Tensor) -> Tensor:
        """Cholesky factor of ``I + gamma M M^H`` (m <= n) or ``M^H M + I / gamma``,
        ``(k, k)`` or ``(B, k, k)``."""
        cacheable = gamma.numel() == 1 and not (gamma.requires_grad or mat.requires_grad)
        # The matrix's identity and version make a replaced or in-place modified matrix miss.
        key = (
            (float(gamma), mat.dtype, mat.device, id(self.matrix), self.matrix._version)
            if cacheable
            else None
        )
        if key is not None and key in self._factors:
            return self._factors[key]
        m, size = mat.shape
        if m <= size:
            gram = mat @ mat.conj().transpose(0, 1)
            system = torch.eye(m, dtype=mat.dtype, device=mat.device) + gb[:, None, None] * gram
        else:
            gram = mat.conj().transpose(0, 1) @ mat
            eye = torch.eye(size, dtype=mat.dtype, device=mat.device)
            system = gram + eye / gb[:, None, None]
        factor = torch.linalg.cholesky(system)
        if key is not None:
            if len(self._factors) >= 8:
                self._factors.clear()
            self._factors[key] = factor.detach()
        return factor

    def extra_repr(self) -> str:
        return f"m={self.matrix.shape[0]}, n={self.input_shape}"
