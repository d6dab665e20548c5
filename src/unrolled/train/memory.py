"""Memory meters: bytes held for backward, and the CUDA peak.

:class:`SavedTensorMeter` counts the tensors autograd saves for backward while it is
active (via ``torch.autograd.graph.saved_tensors_hooks``), by unique storage, so a
tensor saved by several operations counts once. It also follows their lifetime: a
saved tensor is released when autograd frees it (after ``backward()``, or when the
graph is dropped), which gives the peak of bytes held for backward.

Tensors saved by code that installs its own hooks inside the meter (e.g. activation
checkpointing recomputing a segment during backward) are not seen by this meter; use
:func:`peak_allocated` for a figure that includes them.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["SavedTensorMeter", "MemoryReport", "cuda_peak"]


def _storage_key(t: Tensor) -> tuple[str, int]:
    storage = t.untyped_storage()
    return (str(t.device), storage.data_ptr())


class _Saved:
    """What the pack hook hands to autograd: the tensor, plus a release callback."""

    __slots__ = ("tensor", "meter", "key", "__weakref__")

    def __init__(self, tensor: Tensor, meter: SavedTensorMeter, key):
        self.tensor = tensor
        self.meter = meter
        self.key = key

    def __del__(self):
        self.meter._release(self.key)


@dataclass
class MemoryReport:
    saved_bytes: int
    peak_saved_bytes: int
    cuda_peak_bytes: int | None


class SavedTensorMeter:
    """Context manager measuring the bytes of tensors saved for backward.

    Attributes (after or during the context):
        saved_bytes: bytes of the unique storages saved while the meter was active.
        current_bytes: bytes of those storages autograd still holds now.
        peak_saved_bytes: the maximum of ``current_bytes`` over time.
        cuda_peak_bytes: ``torch.cuda.max_memory_allocated`` over the context when
            ``device`` is a CUDA device (reset on entry), else ``None``.

    Example::

        with SavedTensorMeter() as meter:
            loss = model(y).sum()
        loss.backward()
        print(meter.saved_bytes)
    """

    def __init__(self, device: torch.device | str | None = None):
        self.device = torch.device(device) if device is not None else None
        self.saved_bytes = 0
        self.current_bytes = 0
        self.peak_saved_bytes = 0
        self.cuda_peak_bytes: int | None = None
        self._refs: dict = {}
        self._sizes: dict = {}
        self._hooks = None

    # -- hooks --------------------------------------------------------------------------

    def _pack(self, tensor: Tensor):
        key = _storage_key(tensor)
        if key not in self._refs:
            nbytes = tensor.untyped_storage().nbytes()
            self._refs[key] = 0
            self._sizes[key] = nbytes
            self.saved_bytes += nbytes
            self.current_bytes += nbytes
            self.peak_saved_bytes = max(self.peak_saved_bytes, self.current_bytes)
        self._refs[key] += 1
        return _Saved(tensor, self, key)

    @staticmethod
    def _unpack(saved: _Saved) -> Tensor:
        return saved.tensor

    def _release(self, key) -> None:
        self._refs[key] -= 1
        if self._refs[key] == 0:
            del self._refs[key]
            self.current_bytes -= self._sizes.pop(key)

    # -- context ------------------------------------------------------------------------

    def __enter__(self) -> SavedTensorMeter:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)
        self._hooks = None
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.cuda_peak_bytes = torch.cuda.max_memory_allocated(self.device)

    def report(self) -> MemoryReport:
        return MemoryReport(self.saved_bytes, self.peak_saved_bytes, self.cuda_peak_bytes)


@contextlib.contextmanager
def cuda_peak(device: torch.device | str):
    """Yield a dict whose ``"peak_bytes"`` is the CUDA peak allocated inside the block."""
    out: dict = {"peak_bytes": None}
    device = torch.device(device)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    try:
        yield out
    finally:
        torch.cuda.synchronize(device)
        out["peak_bytes"] = torch.cuda.max_memory_allocated(device)
