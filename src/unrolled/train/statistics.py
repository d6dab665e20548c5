"""Per-step statistics that parts of a model report to the trainer.

Any sub-module of the model may report counts about its own work (the L2 fidelity
reports its CG iterations and unconverged solves) by offering two methods; the trainer
needs to know nothing else about it::

    def reset_statistics(self) -> None: ...            # forget the counts (each step)
    def statistics(self) -> dict[str, float | tuple[float, float]]: ...

Each value of :meth:`~StatisticsSource.statistics` is additive: a count (summed over
the sources and over the processes, e.g. ``"cg_solves"``) or a pair
``(total, count)`` reported as the mean ``total / count`` of the sums (0 when the count
is 0, e.g. ``"cg_forward"``: iterations per solve). An integer count stays an integer
in the step's record.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from . import distributed

__all__ = ["StatisticsSource", "StepStatistics"]


@runtime_checkable
class StatisticsSource(Protocol):
    """A sub-module of a model that reports per-step counts to the trainer.

    The trainer calls ``reset_statistics()`` before each step and ``statistics()`` after
    it. Each value is additive: a count (summed over the sources and the processes) or
    a pair ``(total, count)``, reported as ``total / count`` of the sums (0 when the
    count is 0). An integer count stays an integer in the record. The
    :class:`unrolled.L2` fidelity is one: its CG iterations and unconverged solves.
    """

    def reset_statistics(self) -> None: ...

    def statistics(self) -> Mapping[str, float | tuple[float, float]]: ...


class StepStatistics:
    """The statistics sources of ``model``, reset before a step and read after it."""

    def __init__(self, model: nn.Module):
        self.sources = [m for m in model.modules() if isinstance(m, StatisticsSource)]

    def reset(self) -> None:
        for source in self.sources:
            source.reset_statistics()

    def columns(self, device: torch.device) -> dict[str, float | int]:
        """The step record's columns: sums over the sources and the processes."""
        if not self.sources:
            return {}
        totals: dict[str, list[float]] = {}
        integral: dict[str, bool] = {}
        for source in self.sources:
            for key, value in source.statistics().items():
                pair = value if isinstance(value, tuple) else (value,)
                old = totals.setdefault(key, [0.0] * len(pair))
                totals[key] = [a + float(b) for a, b in zip(old, pair, strict=True)]
                integral[key] = integral.get(key, True) and all(isinstance(v, int) for v in pair)
        keys = list(totals)  # the same order on every process: the same model
        flat = torch.tensor([v for k in keys for v in totals[k]], dtype=torch.float64)
        reduced = iter(distributed.all_reduce_sum(flat.to(device)).tolist())
        record: dict[str, float | int] = {}
        for key in keys:
            if len(totals[key]) == 2:
                total, count = next(reduced), next(reduced)
                record[key] = total / count if count else 0.0
            else:
                value = next(reduced)
                record[key] = int(value) if integral[key] else value
        return record
