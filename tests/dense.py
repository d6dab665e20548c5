"""Independent truth for the tests: dense float64 matrices and solves."""

from __future__ import annotations

import torch


def dense_matrix(apply, input_shape, dtype=torch.float64):
    """Matrix of a linear map on one sample, built under autograd (differentiable in the
    map's tensors) by applying it to the identity basis as a batch."""
    n = 1
    for s in input_shape:
        n *= s
    eye = torch.eye(n, dtype=dtype).reshape(n, *input_shape)
    return apply(eye).reshape(n, -1).transpose(0, 1)


def dense_prox(matrices, z, y, gamma):
    """``argmin_x 1/2||A_i x - y_i||^2 + 1/2 ||x - z_i||^2_{1/gamma}`` per sample by
    ``torch.linalg.solve`` of the normal equations; ``gamma`` broadcasts against z
    (a per-entry step becomes a diagonal). Differentiable in every argument."""
    b = z.shape[0]
    gamma = torch.as_tensor(gamma, dtype=z.real.dtype)
    if gamma.ndim == 1 and gamma.shape[0] == b and z.ndim > 1:
        gamma = gamma.reshape(-1, *([1] * (z.ndim - 1)))
    gamma = gamma.expand(z.shape)
    out = []
    for i in range(b):
        a = matrices[i] if isinstance(matrices, (list, tuple)) else matrices
        inv_g = 1 / gamma[i].reshape(-1)
        m = a.conj().transpose(0, 1) @ a + torch.diag(inv_g).to(a.dtype)
        rhs = a.conj().transpose(0, 1) @ y[i].reshape(-1) + z[i].reshape(-1) * inv_g
        out.append(torch.linalg.solve(m, rhs).reshape(z.shape[1:]))
    return torch.stack(out)


def rel(a, b):
    """Relative difference ``||a - b|| / ||b||``."""
    return ((a - b).norm() / b.norm()).item()
