"""Pretraining a denoiser on Gaussian noise before it is unrolled.

An unfolded network's denoiser has to learn what natural images look like; the data
steps around it only add what the measurement says. Learning the first part as plain
Gaussian denoising costs one pass of the denoiser per step instead of ``layers`` passes
plus the linear solves, so the same time buys several times more updates. Noise levels
are drawn per image, uniformly in ``[0, sigma_max]``, and given to the denoiser as its
level input, so it learns the whole range the unrolled layers may ask for.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from .._validation import check_int, check_real
from .seeding import derive_seed, epoch_batches

__all__ = ["pretrain_denoiser"]

STREAM_PRETRAIN = 6


def pretrain_denoiser(
    denoiser: nn.Module,
    data: Iterable,
    *,
    steps: int,
    sigma_max: float,
    lr: float = 1e-3,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> list[float]:
    """Train ``denoiser(x + sigma n, sigma) ~ x`` for ``steps`` steps with Adam (cosine
    decay of ``lr``); returns the loss per step. ``data`` yields batches ``(B, C, H, W)``
    (cycled as often as needed); the noise is drawn from ``seed`` and the step only, so
    the run is reproducible."""
    check_int("steps", steps, minimum=0)
    check_real("sigma_max", sigma_max, positive=True)
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
        sigma = sigma_max * torch.rand(x.shape[0], generator=g, device=device, dtype=x.dtype)
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
