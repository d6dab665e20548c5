"""Per-sample reductions over batched tensors ``(B, ...)``."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["batch_inner", "batch_norm"]


def batch_inner(a: Tensor, b: Tensor) -> Tensor:
    """Real inner product ``Re <a_i, b_i>`` per sample, shape ``(B,)``."""
    prod = torch.linalg.vecdot(a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1))
    return prod.real if prod.is_complex() else prod


def batch_norm(a: Tensor) -> Tensor:
    """Euclidean norm per sample, shape ``(B,)`` (real)."""
    return torch.linalg.vector_norm(a.reshape(a.shape[0], -1), dim=1)
