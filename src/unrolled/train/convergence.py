"""Counting the CG solves of a run that stopped at ``max_iter``, and saying so.

A solve that stops at ``max_iter`` gives an approximate data step, and with the
implicit backward an approximate gradient. Per solve that is too many messages (eight
per step is common), so the count is kept per epoch and reported once:
:class:`UnconvergedSolves` adds up the ``cg_unconverged`` / ``cg_solves`` columns of
the trainer's step records and makes the epoch's warning line and the run's summary.
The :class:`~unrolled.train.Trainer`, ``unrolled train`` and the demo all use it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..linalg.cg import NonConvergenceWarning

__all__ = ["UnconvergedSolves", "UnconvergedSolvesWarning", "count_unconverged"]


class UnconvergedSolvesWarning(NonConvergenceWarning):
    """Solves of an epoch stopped at ``max_iter`` (one warning per epoch, with the count)."""


def count_unconverged(records: Iterable[Mapping[str, Any]]) -> tuple[int, int]:
    """``(unconverged, solves)`` summed over step records (``cg_unconverged`` and
    ``cg_solves`` columns; records without them count 0). A solve is one sample of one
    CG call, forward or backward."""
    unconverged = solves = 0
    for r in records:
        unconverged += int(r.get("cg_unconverged", 0) or 0)
        solves += int(r.get("cg_solves", 0) or 0)
    return unconverged, solves


def _fraction(unconverged: int, solves: int) -> str:
    return f"{unconverged} of {solves}" if solves else f"{unconverged}"


class UnconvergedSolves:
    """Running count of unconverged CG solves, per epoch and for the whole run.

    Example (the demo's use)::

        tally = UnconvergedSolves()
        tally.add(history["train"])
        print(tally.summary())   # "all 240 CG solves converged" / "24 of 240 CG solves ..."

    Args:
        report: called with the epoch's line instead of issuing a warning (a command
            line prints it its own way); ``None``: :class:`UnconvergedSolvesWarning`.
    """

    def __init__(self, report: Callable[[str], None] | None = None) -> None:
        self.report = report
        self.reset()

    def reset(self) -> None:
        """Forget every count (``report`` is kept)."""
        self.unconverged = 0
        self.solves = 0
        self._by_epoch: dict[int, tuple[int, int]] = {}

    def add(self, records: Iterable[Mapping[str, Any]] | Mapping[str, Any]) -> None:
        """Count one step record, or several (a resumed run adds its history)."""
        if isinstance(records, Mapping):
            records = [records]
        for r in records:
            u, s = count_unconverged([r])
            self.unconverged += u
            self.solves += s
            epoch = int(r.get("epoch", 0))
            old = self._by_epoch.get(epoch, (0, 0))
            self._by_epoch[epoch] = (old[0] + u, old[1] + s)

    def end_epoch(self, epoch: int, *, warn: bool = True) -> str | None:
        """The line for ``epoch`` (0-based, printed 1-based) when some of its solves did not
        converge, else ``None``; when ``warn``, given to ``report`` or issued as an
        :class:`UnconvergedSolvesWarning`."""
        u, s = self._by_epoch.pop(epoch, (0, 0))
        if u == 0:
            return None
        line = (
            f"epoch {epoch + 1}: {_fraction(u, s)} CG solves stopped at max_iter before "
            "reaching their tolerance; data steps and implicit gradients are approximate "
            "(raise solver.max_iter or lower the step size; solver.on_failure = 'raise' "
            "makes this an error)"
        )
        if warn and self.report is not None:
            self.report(line)
        elif warn:
            warnings.warn(line, UnconvergedSolvesWarning, stacklevel=3)
        return line

    def summary(self) -> str:
        """One phrase for the run's summary line."""
        if self.unconverged == 0:
            return f"all {self.solves} CG solves converged" if self.solves else "no CG solves"
        return f"{_fraction(self.unconverged, self.solves)} CG solves did not converge"

    def as_dict(self) -> dict[str, int]:
        """For reports: ``{"cg_unconverged": ..., "cg_solves": ...}``."""
        return {"cg_unconverged": self.unconverged, "cg_solves": self.solves}
