"""Batches and their measurements, seeded so that a run can be reproduced.

The noise of each sample is drawn from a seed of its own (see
:func:`~unrolled.train.seeding.seeded_noise`), so that it depends neither on how the
batch is split over processes nor on what was drawn before (a resumed run).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..physics.base import Physics
from .seeding import seeded_noise

__all__ = ["first_tensor", "measure", "measure_per_sample"]


def first_tensor(batch: Any, what: str = "train_data") -> Tensor:
    """The clean images of a batch: the batch itself, or the first element of a tuple/list."""
    if isinstance(batch, (tuple, list)) and batch:
        batch = batch[0]
    if not isinstance(batch, Tensor):
        raise TypeError(
            f"{what}: expected batches of image tensors (B, C, H, W) or tuples whose first "
            f"element is one, got {type(batch).__name__}"
        )
    return batch


def measure(physics: nn.Module, x: Tensor, seed: int, device: torch.device) -> Tensor:
    """``physics(x)`` with the noise of the whole batch drawn from ``seed``."""
    with torch.no_grad(), seeded_noise(physics, seed, device):
        return physics(x)


def measure_per_sample(
    physics: nn.Module, x: Tensor, seeds: Sequence[int], device: torch.device
) -> Tensor:
    """``physics(x)`` with the noise of sample ``i`` drawn from ``seeds[i]`` alone.

    When ``physics`` is a :class:`~unrolled.physics.Physics` whose ``forward`` is the
    standard ``noise(A(x))``, the noiseless ``A x`` is computed once for the batch and
    only the noise is drawn per sample; any other physics is called per sample.
    """
    with torch.no_grad():
        standard = isinstance(physics, Physics) and type(physics).forward is Physics.forward
        if standard and physics.noise is None:
            return physics.A(x)
        clean = physics.A(x) if standard else None
        parts = []
        for i, seed in enumerate(seeds):
            with seeded_noise(physics, seed, device):
                parts.append(physics.noise(clean[i : i + 1]) if standard else physics(x[i : i + 1]))
        return torch.cat(parts)
