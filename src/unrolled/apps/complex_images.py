"""Complex test images for MRI: a grey level times a smooth random phase."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..train import derive_seed

__all__ = ["ComplexImages", "smooth_phase"]


def smooth_phase(size: tuple[int, int], generator: torch.Generator) -> Tensor:
    """A smooth random phase map ``(H, W)`` in radians: a random linear ramp plus one random
    low-frequency (at most one period across the image) cosine bump, of total amplitude
    up to about pi, so the image is genuinely complex but without phase wraps inside an
    object edge."""
    h, w = size
    ys = torch.linspace(-1, 1, h)[:, None]
    xs = torch.linspace(-1, 1, w)[None, :]
    a, b, c, d, fy, fx, p = torch.rand(7, generator=generator).tolist()
    ramp = (a - 0.5) * math.pi * ys + (b - 0.5) * math.pi * xs
    bump = (c - 0.5) * math.pi * torch.cos(math.pi * (fy * ys + fx * xs) + 2 * math.pi * p)
    return ramp + bump + (d - 0.5) * 2 * math.pi


class ComplexImages(Dataset):
    """``(1, H, W)`` complex64 images ``|x| e^{i phi}`` made from a dataset of real images
    ``(C, H, W)`` in ``[0, 1]``: the magnitude is their grey level (channel mean), the phase a
    :func:`smooth_phase` drawn from ``(seed, index)``, so item ``i`` is always the same."""

    def __init__(self, images: Dataset, seed: int = 0):
        self.images = images
        self.seed = seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Tensor:
        x = self.images[index]
        magnitude = x.mean(dim=0, keepdim=True)
        g = torch.Generator().manual_seed(derive_seed(self.seed, int(index)))
        phase = smooth_phase(tuple(magnitude.shape[-2:]), g)
        return torch.polar(magnitude, phase.to(magnitude.dtype)).to(torch.complex64)
