"""Per-sample reductions over batched tensors ``(B, ...)``."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["batch_inner", "batch_norm"]


def batch_inner(a: Tensor, b: Tensor) -> Tensor:
    """Real inner product ``Re <a_i, b_i>`` per sample, shape ``(B,)``."""
    if a.is_complex() or b.is_complex():
        prod = torch.linalg.vecdot(a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1))
        return prod.real if prod.is_complex() else prod
    # Two calls and no reshapes: CG takes two of these per iteration, and at small images
    # each call costs about as much as its arithmetic.
    return (a * b).sum(_sample_dims(a)) if a.ndim > 1 else a * b


def batch_norm(a: Tensor) -> Tensor:
    """Euclidean norm per sample, shape ``(B,)`` (real)."""
    if a.ndim == 1:
        return a.abs()
    return torch.linalg.vector_norm(a, dim=_sample_dims(a))


def _sample_dims(a: Tensor) -> tuple[int, ...]:
    # never empty: sum over dim=() would reduce over every dimension, the batch too
    return tuple(range(1, a.ndim))
