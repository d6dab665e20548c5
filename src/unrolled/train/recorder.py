"""What a training run writes as it goes: the step and evaluation logs, TensorBoard.

The history itself (every record, in memory) belongs to the trainer; the recorder
writes the rows to ``train_log.csv/jsonl`` and ``eval_log.csv/jsonl`` (training rows
every ``log_every`` steps) and the numeric columns to TensorBoard. Only the main
process writes.
"""

from __future__ import annotations

from pathlib import Path

from .checkpoint import remove_stale_temporaries
from .logs import RunLog, logged, tensorboard_writer

__all__ = ["RunRecorder"]

#: record columns that are positions, not values to plot
_POSITION = ("step", "epoch", "iteration")


class RunRecorder:
    """Logs of a run in ``out_dir`` (``None``: in memory only).

    Args:
        out_dir: the run folder.
        log_every: write a training row every this many steps.
        tensorboard: ``"auto"`` (when the package is installed), ``True`` (required) or
            ``False``. Both are checked by :class:`~unrolled.train.TrainerSettings`.
    """

    def __init__(self, out_dir: Path | None, log_every: int = 1, tensorboard: bool | str = "auto"):
        self.log_every = log_every
        self.out_dir = out_dir
        self.tensorboard = tensorboard
        self._log: RunLog | None = None
        self._tb = None

    def open(self, history: dict[str, list[dict]], writing: bool) -> None:
        """Start writing (``writing``: this process writes to ``out_dir``): fresh files,
        or, on resume, files cut back to ``history``."""
        if writing:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.out_dir)  # what a killed run left half-written
            self._log = RunLog(self.out_dir)
            self._log.reset(
                {"train": logged(history["train"], self.log_every), "eval": history["eval"]}
            )
            self._tb = tensorboard_writer(self.out_dir / "tensorboard", self.tensorboard)
        elif self.tensorboard is True:
            tensorboard_writer(".", True)  # fail early if it is required and missing

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def due(self, step: int) -> bool:
        """Whether training step ``step`` gets a row."""
        return step % self.log_every == 0

    def write(self, kind: str, record: dict, history: list[dict]) -> None:
        """One row of ``kind`` (``"train"`` or ``"eval"``); ``history`` is that kind's."""
        if self._log is not None:
            self._log.append(kind, record, history)
        if self._tb is not None:
            for key, value in record.items():
                if key not in _POSITION and isinstance(value, (int, float)):
                    self._tb.add_scalar(f"{kind}/{key}", value, global_step=record["step"])
