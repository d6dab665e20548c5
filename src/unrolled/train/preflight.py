"""Checks made before a run allocates or writes anything: memory and disk space.

A size the machine cannot hold (``--img-size 20000``, ``--layers 100000``) should be
refused in a line at start-up, not after minutes of set-up by an allocation failure
or the kernel's out-of-memory killer; a folder with too little free space for a few
checkpoints should be announced before the first one fails to be written.

The memory estimate is a lower bound on what one training step keeps for its backward
pass (the feature maps of the denoiser in every unfolded layer, plus weights, gradients
and the optimiser's moments), so it refuses only runs that cannot fit.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["StepMemory", "check_free_space", "format_bytes", "machine_memory"]


def format_bytes(n: float) -> str:
    """``n`` bytes in words: ``"512 B"``, ``"1.5 MB"``, ``"2.3 TB"`` (powers of 1000)."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def machine_memory(device: torch.device | str = "cpu") -> int | None:
    """The memory a run on ``device`` can use at most, in bytes: the GPU's total memory,
    or the machine's physical memory (lowered to the control group's limit where one is
    set); ``None`` where it cannot be found out."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return int(total)


@dataclass(frozen=True)
class StepMemory:
    """A lower bound on the memory of one training step of an unfolded network.

    Args:
        batch, channels, height, width: the images of one step (per process).
        layers: unfolded layers.
        feature_maps: denoiser feature maps of ``features`` channels at full resolution
            kept for backward per layer (DnCNN: its ``depth - 1`` hidden convolutions).
        features: channels of those feature maps.
        dtype_bytes: bytes per value (4 for float32).
        parameters: trainable values of the model.
        checkpoint_layers: layers recomputed in backward: only one layer's feature maps
            are held at a time, plus each layer's input.
    """

    batch: int
    channels: int
    height: int
    width: int
    layers: int
    feature_maps: int
    features: int
    dtype_bytes: int
    parameters: int
    checkpoint_layers: bool = False

    @property
    def image_bytes(self) -> int:
        return self.batch * self.channels * self.height * self.width * self.dtype_bytes

    @property
    def layer_bytes(self) -> int:
        pixels = self.batch * self.height * self.width
        return self.feature_maps * self.features * pixels * self.dtype_bytes

    @property
    def total(self) -> int:
        held_layers = 1 if self.checkpoint_layers else self.layers
        # weights, their gradients, Adam's two moments
        weights = 4 * self.parameters * self.dtype_bytes
        states = self.layers * self.image_bytes  # each layer's estimate
        return held_layers * self.layer_bytes + states + weights

    def describe(self) -> str:
        held = "1 (checkpointed)" if self.checkpoint_layers else str(self.layers)
        return (
            f"{held} layer(s) x {self.feature_maps} feature maps x {self.features} channels x "
            f"batch {self.batch} x {self.height}x{self.width} pixels x {self.dtype_bytes} "
            f"bytes, plus {self.parameters:,} weights"
        )


def check_free_space(folder: str | os.PathLike, checkpoint_bytes: int, copies: int) -> str | None:
    """A warning line when ``folder`` (or the nearest existing folder above it) has less
    free space than ``copies`` checkpoints of ``checkpoint_bytes``; else ``None``."""
    path = Path(folder).resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return None
    need = checkpoint_bytes * copies
    if free >= need:
        return None
    return (
        f"{path} has {format_bytes(free)} free; a checkpoint takes about "
        f"{format_bytes(checkpoint_bytes)} and the run holds up to {copies} at once while "
        "writing: writes may fail (no space left on device)"
    )
