"""Wall-clock timing of a block, synchronised with the GPU when there is one."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable

import torch

__all__ = ["Timer", "median"]


class Timer:
    """Context manager timing its block in seconds (``timer.seconds``).

    On a CUDA device the stream is synchronised at entry and exit, so the time covers
    the kernels the block launched, not just their launch.

    Example::

        with Timer(device) as t:
            step()
        print(t.seconds)
    """

    def __init__(self, device: torch.device | str | None = None):
        self.device = torch.device(device) if device is not None else None
        self.seconds: float = float("nan")
        self._start = 0.0

    def _sync(self) -> None:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __enter__(self) -> Timer:
        self._sync()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self._sync()
        self.seconds = time.perf_counter() - self._start


def median(values: Iterable[float], *, skip_first: int = 0) -> float:
    """Median of ``values`` after dropping the first ``skip_first`` (warm-up) ones.

    The median, not the mean, because one slow outlier (a page fault, another process)
    should not move a per-iteration time. ``nan`` if nothing is left.
    """
    if not isinstance(skip_first, int) or skip_first < 0:
        raise ValueError(f"skip_first: expected an integer >= 0, got {skip_first!r}")
    kept = [float(v) for v in values][skip_first:]
    return statistics.median(kept) if kept else float("nan")
