"""Graceful stop on SIGINT / SIGTERM: finish the step, write a checkpoint, then exit.

While :class:`StopSignals` is active, the first SIGINT or SIGTERM is only recorded; the
trainer checks it between steps, writes its checkpoint and raises
:class:`TrainingInterrupted`. A second SIGINT (Ctrl-C again) raises ``KeyboardInterrupt``
at once: the checkpoint files are written atomically, so even that loses no more than
the steps since the last checkpoint.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path

__all__ = ["StopSignals", "TrainingInterrupted"]


class TrainingInterrupted(Exception):
    """Training stopped on a signal after writing its checkpoint.

    Attributes:
        signum: the signal (``signal.SIGINT`` or ``signal.SIGTERM``).
        step: the steps done, all saved in ``checkpoint``.
        checkpoint: the checkpoint written (``None`` without an output folder or off the
            main process).
    """

    def __init__(self, signum: int, step: int, checkpoint: Path | None):
        self.signum = int(signum)
        self.step = step
        self.checkpoint = checkpoint
        name = signal.Signals(self.signum).name
        where = f"checkpoint written to {checkpoint}" if checkpoint else "no checkpoint written"
        super().__init__(f"training stopped by {name} after step {step}; {where}")

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by this signal: ``128 + signum``."""
        return 128 + self.signum


class StopSignals(contextlib.AbstractContextManager):
    """Record SIGINT / SIGTERM instead of dying, inside a ``with`` block.

    Off the main thread (where Python cannot install handlers) or with
    ``enabled=False`` it does nothing and ``received`` stays ``None``.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        if self.received is None:
            self.received = signum

    def __enter__(self) -> StopSignals:
        if self.enabled:
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
