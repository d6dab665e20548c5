"""Memory meters for a training step: bytes held for backward, and the allocation peak.

:class:`SavedTensorMeter` counts the tensors autograd saves for backward while it is
active (via ``torch.autograd.graph.saved_tensors_hooks``), by unique storage, so a
tensor saved by several operations counts once. It also follows their lifetime: a
saved tensor is released when autograd frees it (after ``backward()``, or when the
graph is dropped), which gives the peak of bytes held for backward.

Tensors saved by code that installs its own hooks inside the meter (e.g. activation
checkpointing recomputing a segment during backward) are not seen by this meter; use
:class:`PeakMemoryMeter` for a figure that includes them.

:class:`PeakMemoryMeter` is the honest peak: every allocation and free made inside
the block, forward and backward alike (on CUDA ``torch.cuda.max_memory_allocated``;
on CPU the allocator events recorded by torch's profiler, see
:mod:`unrolled.train._profiler`). :func:`~unrolled.train.peak_rss_subprocess`
cross-checks it from outside: the peak resident set size of a separate process.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._profiler import AllocationRecorder, running_peak

__all__ = ["PeakMemoryMeter", "SavedTensorMeter"]


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


class SavedTensorMeter:
    """Context manager measuring the bytes of tensors saved for backward.

    Its attributes can be read after or during the context.

    Attributes:
        saved_bytes: bytes of the unique storages saved while the meter was active.
        current_bytes: bytes of those storages autograd still holds now.
        peak_saved_bytes: the maximum of ``current_bytes`` over time.

    Example::

        with SavedTensorMeter() as meter:
            loss = model(y).sum()
        loss.backward()
        print(meter.saved_bytes)
    """

    def __init__(self):
        self.saved_bytes = 0
        self.current_bytes = 0
        self.peak_saved_bytes = 0
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
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)
        self._hooks = None


# -- peak allocated: every allocation, forward and backward -------------------------------


class PeakMemoryMeter:
    """Context manager measuring the peak of bytes allocated inside the block.

    The figure is the maximum, over the block, of (bytes allocated) - (bytes freed) since
    entry: memory held before entry is the zero level, and freeing such memory lowers
    the level. It sees every allocation on the device, including tensors that
    activation checkpointing recomputes during ``backward()`` and temporaries freed
    at once, so run forward *and* backward inside the block to get a training peak.

    * CUDA: ``torch.cuda.max_memory_allocated`` minus the allocation at entry (the
      peak statistics are reset on entry).
    * CPU: the allocation events of torch's profiler, summed in time order. Profiling
      slows the block down (several times for small ops); use it to measure, not in
      every training step of a long run.

    Attributes (after the block): ``peak_bytes`` (int), ``device``.

    Example::

        with PeakMemoryMeter("cpu") as meter:
            loss = model(y, physics).square().mean()
            loss.backward()
        print(meter.peak_bytes)
    """

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        if self.device.type not in ("cpu", "cuda"):
            raise ValueError(f"device: expected a cpu or cuda device, got {self.device}")
        self.peak_bytes: int | None = None
        self._profiler = None
        self._start_bytes = 0

    def __enter__(self) -> PeakMemoryMeter:
        self.peak_bytes = None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start_bytes = torch.cuda.memory_allocated(self.device)
        else:
            self._profiler = AllocationRecorder()
            self._profiler.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._start_bytes
            return
        recorder, self._profiler = self._profiler, None
        self.peak_bytes = running_peak(recorder.stop())
