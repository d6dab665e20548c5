"""The CPU allocator events of a block of code, in time order, from torch's profiler.

Two ways to get them. On the torch releases whose profiler layout they follow
(:data:`PRIVATE_RANGE`), the profiler's own entry points (``torch.autograd._enable_profiler``
and the event tree of ``_disable_profiler``): every allocation and free, without the op
table that ``torch.profiler.profile`` builds on exit nor the compiler stack it imports on
first use (seconds). On any other release, the public ``torch.profiler.profile``: each
op's own allocations net of its own frees, which loses a temporary freed inside the op
that made it, so its peak can be lower.
"""

from __future__ import annotations

import torch

__all__ = ["PRIVATE_RANGE", "AllocationRecorder", "running_peak", "uses_private_profiler"]

#: the torch releases (major, minor), both ends included, whose private profiler entry
#: points the fast path calls; newer releases take the public path until checked
PRIVATE_RANGE = ((2, 2), (2, 13))


def _torch_release() -> tuple[int, int]:
    major, minor = torch.__version__.split("+")[0].split(".")[:2]
    return int(major), int(minor)


def uses_private_profiler() -> bool:
    """Whether this torch release takes the fast path of :class:`AllocationRecorder`."""
    return PRIVATE_RANGE[0] <= _torch_release() <= PRIVATE_RANGE[1]


class AllocationRecorder:
    """Records CPU allocations between :meth:`start` and :meth:`stop`."""

    def __init__(self) -> None:
        self._private = uses_private_profiler()
        self._public = None

    def start(self) -> None:
        if self._private:
            _start_private()
        else:
            from torch.profiler import ProfilerActivity, profile

            self._public = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
            self._public.__enter__()

    def stop(self) -> list[tuple[float, int]]:
        """Stop recording; ``(time, bytes)`` per allocation (frees negative)."""
        if self._private:
            return _stop_private()
        profiler, self._public = self._public, None
        profiler.__exit__(None, None, None)
        return [
            (event.time_range.start, int(event.self_cpu_memory_usage))
            for event in profiler.events()
            if event.self_cpu_memory_usage
        ]


def _start_private() -> None:
    from torch._C._profiler import _ExperimentalConfig
    from torch.autograd import (
        ProfilerActivity,
        ProfilerConfig,
        ProfilerState,
        _enable_profiler,
        _prepare_profiler,
    )

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


def _stop_private() -> list[tuple[float, int]]:
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
            if fields.device.type == "cpu":
                events.append((event.start_time_ns, int(fields.alloc_size)))
    return events


def running_peak(events: list[tuple[float, int]]) -> int:
    """Peak of the running sum of allocation sizes (frees are negative), in time order."""
    level = peak = 0
    for _, size in sorted(events, key=lambda e: e[0]):
        level += size
        peak = max(peak, level)
    return peak
