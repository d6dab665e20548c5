"""Self-ensembles: a denoiser averaged over rotations and mirror images of its input.

A denoiser learned from photographs is nearly, not exactly, indifferent to turning its
input by 90 degrees: each turn gives a slightly different estimate with its own errors.
Averaging ``T^-1 D(T x)`` over a group of such transforms ``T`` keeps what they agree on
and cancels part of the rest, for a few times the denoiser's cost and no training. The
transforms act on the last two dimensions only, so any image-shaped input (real or
complex, any channels) and any fully convolutional denoiser can be averaged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["ENSEMBLES", "ensemble_average"]

#: group name -> its transforms, as ``(quarter turns, mirrored)`` pairs; the identity first
ENSEMBLES: dict[str, tuple[tuple[int, bool], ...]] = {
    "rotations": tuple((turns, False) for turns in range(4)),
    "dihedral": tuple((turns, mirrored) for mirrored in (False, True) for turns in range(4)),
}

_DIMS = (-2, -1)


def _apply(x: Tensor, turns: int, mirrored: bool) -> Tensor:
    x = torch.rot90(x, turns, _DIMS)
    return x.flip(-1) if mirrored else x


def _undo(x: Tensor, turns: int, mirrored: bool) -> Tensor:
    x = x.flip(-1) if mirrored else x
    return torch.rot90(x, -turns, _DIMS)


def ensemble_average(denoise: Callable[[Tensor], Tensor], x: Tensor, group: str) -> Tensor:
    """``mean over T in group of T^-1 denoise(T x)`` for ``x`` shaped ``(..., H, W)``.

    Args:
        denoise: ``x -> D(x)``, shape-preserving (a quarter turn swaps ``H`` and ``W``).
        x: the input.
        group: ``"rotations"`` (the four quarter turns) or ``"dihedral"`` (those and their
            mirror images: eight transforms).
    """
    transforms = ENSEMBLES[group]
    total = None
    for turns, mirrored in transforms:
        out = _undo(denoise(_apply(x, turns, mirrored)), turns, mirrored)
        total = out if total is None else total + out
    return total / len(transforms)
