"""Pretraining a denoiser on Gaussian noise before it is unrolled.

An unfolded network's denoiser has to learn what natural images look like; the data
steps around it only add what the measurement says. Learning the first part as plain
Gaussian denoising costs one pass of the denoiser per step instead of ``layers`` passes
plus the linear solves, so the same time buys several times more updates. Noise levels
are drawn per image in ``[sigma_min, sigma_max]`` (by default uniformly in ``[0,
sigma_max]``) and given to the denoiser as its level input, so it learns the whole range
the unrolled layers may ask for.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from .._validation import check_choice, check_int, check_real
from .seeding import derive_seed, epoch_batches

__all__ = ["pretrain_denoiser"]

STREAM_PRETRAIN = 6

#: How a level in ``[sigma_min, sigma_max]`` is drawn from ``u ~ U[0, 1)``.
LEVEL_DRAWS = {
    "uniform": lambda u, lo, hi: lo + (hi - lo) * u,
    "log-uniform": lambda u, lo, hi: lo * (hi / lo) ** u,
}


def pretrain_denoiser(
    denoiser: nn.Module,
    data: Iterable,
    *,
    steps: int,
    sigma_max: float,
    sigma_min: float = 0.0,
    levels: str = "uniform",
    lr: float = 1e-3,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> list[float]:
    """Train ``denoiser(x + sigma n, sigma) ~ x`` for ``steps`` steps with Adam (cosine
    decay of ``lr``); returns the loss per step. ``data`` yields batches ``(B, C, H, W)``
    (cycled as often as needed); the noise is drawn from ``seed`` and the step only, so
    the run is reproducible.

    Args:
        sigma_min, sigma_max: the range of the noise levels, ``0 <= sigma_min <
            sigma_max``.
        levels: how a level is drawn in that range: ``"uniform"`` or ``"log-uniform"``
            (uniform in ``log sigma``, ``sigma_min > 0``: as many draws between 0.01
            and 0.1 as between 0.1 and 1).
    """
    check_int("steps", steps, minimum=0)
    check_real("sigma_max", sigma_max, positive=True)
    check_real("sigma_min", sigma_min, minimum=0.0)
    check_choice("levels", levels, tuple(LEVEL_DRAWS))
    if not sigma_min < sigma_max:
        raise ValueError(f"sigma_min: expected below sigma_max={sigma_max}, got {sigma_min}")
    if levels == "log-uniform" and sigma_min == 0:
        raise ValueError("sigma_min: expected > 0 with levels='log-uniform', got 0")
    device = torch.device(device)
    denoiser.to(device)
    optimizer = torch.optim.Adam(denoiser.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, 1))
    losses: list[float] = []
    epoch = 0
    batches = epoch_batches(data, seed, epoch)
    denoiser.train()
    for step in range(steps):
        try:
            x = next(batches)
        except StopIteration:
            epoch += 1
            batches = epoch_batches(data, seed, epoch)
            x = next(batches)
        x = (x[0] if isinstance(x, (tuple, list)) else x).to(device)
        g = torch.Generator(device=device).manual_seed(derive_seed(seed, STREAM_PRETRAIN, step))
        u = torch.rand(x.shape[0], generator=g, device=device, dtype=x.dtype)
        sigma = LEVEL_DRAWS[levels](u, sigma_min, sigma_max)
        noisy = x + sigma.view(-1, *([1] * (x.ndim - 1))) * torch.randn(
            x.shape, generator=g, device=device, dtype=x.dtype
        )
        loss = (denoiser(noisy, sigma) - x).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    return losses
