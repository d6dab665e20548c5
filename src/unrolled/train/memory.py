"""Memory meters: bytes held for backward, and the CUDA peak.

:class:`SavedTensorMeter` counts the tensors autograd saves for backward while it is
active (via ``torch.autograd.graph.saved_tensors_hooks``), by unique storage, so a
tensor saved by several operations counts once. It also follows their lifetime: a
saved tensor is released when autograd frees it (after ``backward()``, or when the
graph is dropped), which gives the peak of bytes held for backward.

Tensors saved by code that installs its own hooks inside the meter (e.g. activation
checkpointing recomputing a segment during backward) are not seen by this meter; use
:class:`PeakMemoryMeter` (or :func:`peak_allocated`) for a figure that includes them.

:class:`PeakMemoryMeter` is the honest peak: every allocation and free made inside
the block, forward and backward alike (on CUDA ``torch.cuda.max_memory_allocated``;
on CPU the allocator events recorded by ``torch.profiler``). :func:`peak_rss_subprocess`
cross-checks it from outside: the peak resident set size of a separate process.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import resource
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "SavedTensorMeter",
    "MemoryReport",
    "cuda_peak",
    "PeakMemoryMeter",
    "peak_allocated",
    "RSSReport",
    "peak_rss_subprocess",
]


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

    Its attributes can be read after or during the context.

    Attributes:
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
    * CPU: the allocation events of ``torch.profiler.profile(profile_memory=True)``,
      summed in time order. Profiling slows the block down (several times for
      small ops); use it to measure, not in every training step of a long run.

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
            self._profiler = _AllocationRecorder()
            self._profiler.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._start_bytes
            return
        recorder, self._profiler = self._profiler, None
        self.peak_bytes = _running_peak(recorder.stop("cpu"))


class _AllocationRecorder:
    """The allocator events of the kineto profiler, without building its op table.

    ``torch.profiler.profile`` imports the compiler stack on first use (seconds) and
    ``torch.autograd.profiler.profile`` parses every op on exit; only the raw
    allocation events are needed here, so this drives the profiler's own entry points.
    """

    def start(self) -> None:
        try:
            from torch._C._profiler import _ExperimentalConfig
            from torch.autograd import (
                ProfilerActivity,
                ProfilerConfig,
                ProfilerState,
                _enable_profiler,
                _prepare_profiler,
            )
        except ImportError as err:  # pragma: no cover - torch internals moved
            raise RuntimeError(
                "PeakMemoryMeter: this torch build does not expose the profiler's allocation "
                f"events ({err}); measure on CUDA or with peak_rss_subprocess instead"
            ) from err
        config = ProfilerConfig(
            ProfilerState.KINETO,
            False,  # record_input_shapes
            True,  # profile_memory
            False,  # with_stack
            False,  # with_flops
            False,  # with_modules
            _ExperimentalConfig(),
        )
        activities = {ProfilerActivity.CPU}
        _prepare_profiler(config, activities)
        _enable_profiler(config, activities)

    @staticmethod
    def stop(device_type: str) -> list[tuple[int, int]]:
        """Stop profiling; return ``(time_ns, bytes)`` per allocation (frees negative)."""
        from torch._C._profiler import _EventType
        from torch.autograd import _disable_profiler

        result = _disable_profiler()
        events = []
        stack = list(result.experimental_event_tree())
        while stack:
            event = stack.pop()
            stack.extend(event.children)
            if event.tag == _EventType.Allocation:
                fields = event.extra_fields
                if fields.device.type == device_type:
                    events.append((event.start_time_ns, int(fields.alloc_size)))
        return events


def _running_peak(events: list[tuple[int, int]]) -> int:
    """Peak of the running sum of allocation sizes (frees are negative), in time order."""
    level = peak = 0
    for _, size in sorted(events, key=lambda e: e[0]):
        level += size
        peak = max(peak, level)
    return peak


def peak_allocated(fn: Callable[[], Any], device: torch.device | str = "cpu") -> int:
    """Run ``fn()`` under a :class:`PeakMemoryMeter` and return its peak in bytes."""
    with PeakMemoryMeter(device) as meter:
        fn()
    return int(meter.peak_bytes)


# -- peak RSS of a separate process -------------------------------------------------------


@dataclass
class RSSReport:
    """Resident memory of a child process that ran one measured call.

    ``baseline_bytes``: resident set after imports and ``setup``, before the call.
    ``peak_bytes``: the high-water mark of the resident set during the call
    (``VmHWM``, reset before the call where the kernel allows it).
    ``peak_above_baseline_bytes``: ``peak_bytes - baseline_bytes``, the figure to compare.
    ``hwm_reset``: whether the high-water mark could be reset before the call; when not
    (no ``/proc/self/clear_refs``), the peak may date from the imports and
    ``ru_maxrss`` is used, which can only over-estimate.
    ``result``: what the call returned (it must be picklable).
    """

    baseline_bytes: int
    peak_bytes: int
    peak_above_baseline_bytes: int
    hwm_reset: bool
    result: Any = None


def _proc_status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    # Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0).
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _split_path(fn: str, what: str = "fn") -> tuple[str, str]:
    module, sep, name = fn.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"{what}: expected 'package.module:function', got {fn!r}")
    return module, name


def _resolve(fn):
    if isinstance(fn, str):
        module, name = _split_path(fn)
        obj = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
        return obj
    return fn


def _rss_child(conn, fn, setup, args, kwargs, sys_path) -> None:
    try:
        sys.path[:0] = [p for p in sys_path if p not in sys.path]
        fn = _resolve(fn)
        setup = _resolve(setup) if setup is not None else None
        state = setup() if setup is not None else None
        baseline = _proc_status_bytes("VmRSS")
        reset = _reset_hwm()
        result = fn(state, *args, **kwargs) if setup is not None else fn(*args, **kwargs)
        peak = _proc_status_bytes("VmHWM") if reset else None
        if peak is None or baseline is None:
            # ru_maxrss is in kB on Linux (bytes on macOS) and never reset.
            scale = 1 if sys.platform == "darwin" else 1024
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
            baseline = baseline or 0
            reset = False
        conn.send(("ok", RSSReport(baseline, peak, max(peak - baseline, 0), reset, result)))
    except BaseException:  # noqa: BLE001 - reported to the parent
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def peak_rss_subprocess(
    fn: Callable[..., Any] | str,
    *args: Any,
    setup: Callable[[], Any] | str | None = None,
    timeout: float | None = None,
    **kwargs: Any,
) -> RSSReport:
    """Peak resident memory of ``fn(*args, **kwargs)`` run in a fresh (spawned) process.

    Args:
        fn: a module-level function, or its path ``"package.module:function"``; with
            ``setup`` it is called as ``fn(setup(), *args, **kwargs)``.
        setup: run in the child before the baseline is taken (build the model, the
            data...), so only the call itself is measured.
        timeout: seconds to wait for the child (``None``: no limit).

    Returns:
        an :class:`RSSReport`. Resident memory counts everything the process touches
        (allocator caches, libraries' buffers), so it bounds the tensor peak of
        :class:`PeakMemoryMeter` from above; the two should agree in order of magnitude
        and in the ordering of the configurations compared.

    Raises:
        RuntimeError: the child failed (its traceback is in the message) or timed out.
    """
    if not (callable(fn) or isinstance(fn, str)):
        raise TypeError(f"fn: expected a callable or 'module:function', got {type(fn).__name__}")
    if isinstance(fn, str):
        _split_path(fn)
    if setup is not None and not (callable(setup) or isinstance(setup, str)):
        raise TypeError(
            f"setup: expected a callable, 'module:function' or None, got {type(setup).__name__}"
        )
    if isinstance(setup, str):
        _split_path(setup, "setup")
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    process = ctx.Process(
        target=_rss_child, args=(child, fn, setup, args, kwargs, list(sys.path)), daemon=True
    )
    process.start()
    child.close()
    try:
        if not parent.poll(timeout):
            raise RuntimeError(f"peak_rss_subprocess: the child did not finish in {timeout} s")
        status, payload = parent.recv()
    except EOFError as err:
        raise RuntimeError(
            f"peak_rss_subprocess: the child died without a result (exit code "
            f"{process.exitcode}; killed for memory?)"
        ) from err
    finally:
        parent.close()
        process.join(timeout=5)
        if process.is_alive():
            process.kill()
            process.join()
    if status != "ok":
        raise RuntimeError(f"peak_rss_subprocess: {fn!r} failed in the child:\n{payload}")
    return payload
