"""The fit loop of a :class:`~unrolled.train.Trainer`: epochs of steps, evaluations,
checkpoints on schedule, stop requests, and what a run leaves when it stops.

A stop is never silent and never loses work: SIGINT / SIGTERM finish the current step,
write a checkpoint and raise :class:`~unrolled.train.TrainingInterrupted` (all processes
stop after the same step); a non-finite step (``nonfinite="raise"``) or an unconverged
solve under ``on_failure="raise"`` writes the last good state before the error goes on.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import TYPE_CHECKING, Any

from ..linalg.cg import NonConvergenceError
from . import distributed
from .checkpoint import LATEST
from .measuring import first_tensor
from .plots import plot_losses
from .runlock import RunLock
from .seeding import epoch_batches
from .signals import StopSignals, TrainingInterrupted
from .timer import Timer

if TYPE_CHECKING:
    from .trainer import Trainer

__all__ = ["FitLoop"]


class FitLoop:
    """One call of :meth:`Trainer.fit <unrolled.train.Trainer.fit>`: runs ``trainer``
    from where it stands until its epochs are done or ``max_steps`` steps in all."""

    def __init__(self, trainer: Trainer, max_steps: int | None):
        self.trainer = trainer
        self.max_steps = max_steps
        self.signals: StopSignals | None = None

    def run(self, resume: Any) -> dict[str, list[dict]]:
        """Resume from ``resume`` (if not ``None``), train, and return the history."""
        # One writer per run folder, for the whole call (see unrolled.train.runlock).
        out_dir = self.trainer.settings.out_dir
        locking = out_dir is not None and self.trainer.is_main
        with RunLock(out_dir) if locking else contextlib.nullcontext() as lock:
            if lock is not None and lock.message:
                warnings.warn(lock.message, RuntimeWarning, stacklevel=3)
            return self._run(resume)

    def _run(self, resume: Any) -> dict[str, list[dict]]:
        t = self.trainer
        if resume is not None:
            state = t.checkpoints.read(resume, t.module.state_dict())
            if state is not None:
                t.load_state_dict(state)
        writing = t.checkpoints.writes
        t.recorder.open(t.history, writing)
        try:
            with StopSignals(t.settings.handle_signals) as self.signals:
                self._epochs()
        except (FloatingPointError, NonConvergenceError):
            # The parameters are those after the last good step: keep them.
            self._save_unless_saved()
            raise
        finally:
            self.signals = None
            t.recorder.close()
        if writing:
            self._save_unless_saved()
            if t.settings.plots:
                losses = [r["loss"] for r in t.history["train"]]
                if losses:
                    plot_losses(
                        {"train": losses},
                        t.settings.out_dir / "loss.png",
                        reference=t.baseline_loss,
                    )
                t.save_reconstructions(t.settings.out_dir / "reconstructions.png")
        distributed.barrier()  # the files are complete before any process returns
        return t.history

    def _done(self) -> bool:
        return self.max_steps is not None and self.trainer.step >= self.max_steps

    def _epochs(self) -> None:
        from tqdm.auto import tqdm

        t = self.trainer
        if t.eval_data is not None and not t.history["eval"]:
            self._evaluate()
        try:
            total = len(t.train_data) * t.settings.epochs  # type: ignore[arg-type]
        except TypeError:
            total = None
        if self.max_steps is not None and total is not None:
            total = min(total, self.max_steps)
        bar = tqdm(
            total=total,
            initial=t.step,
            disable=not (t.settings.progress and t.is_main),
            unit="step",
            dynamic_ncols=True,
            leave=False,
        )
        try:
            while t.epoch < t.settings.epochs and not self._done():
                bar.set_description(f"epoch {t.epoch + 1}/{t.settings.epochs}")
                if not self._steps(bar):
                    return
                self._end_epoch()
        finally:
            bar.close()

    def _steps(self, bar) -> bool:
        """The remaining steps of the current epoch; False when ``max_steps`` stopped it."""
        t = self.trainer
        epoch = t.epoch
        batches = epoch_batches(t.train_data, t.settings.seed, epoch, skip=t.iteration)
        while True:
            if self._done():
                return False
            with Timer() as data_timer:
                try:
                    batch = next(batches)
                except StopIteration:
                    return True
            record = self._step(batch, epoch, t.iteration)
            t.iteration += 1
            t.step += 1
            record = {
                "step": t.step,
                "epoch": epoch,
                "iteration": t.iteration,
                **record,
                "data_time_s": data_timer.seconds,
            }
            t.history["train"].append(record)
            t.unconverged.add(record)
            if t.recorder.due(t.step):
                t.recorder.write("train", record, t.history["train"])
                bar.set_postfix(loss=f"{record['loss']:.4g}")
            bar.update(1)
            if t.checkpoints.due_after_step(t.step):
                t.save_checkpoint()
            for callback in t.callbacks:
                callback(t, record)
            self._stop_if_asked()

    def _step(self, batch: Any, epoch: int, iteration: int) -> dict:
        t = self.trainer
        x = first_tensor(batch).to(t.settings.device, non_blocking=True)
        return t._train_step(
            x,
            lambda: t.measure(x, epoch, iteration),
            done=t.step,
            where=f"epoch {epoch}, iteration {iteration}",
        )

    def _end_epoch(self) -> None:
        t = self.trainer
        if t.iteration == 0:
            warnings.warn(
                f"train_data: epoch {t.epoch} yielded no batch", RuntimeWarning, stacklevel=2
            )
        # One warning line per epoch, with the count (from the main process only).
        t.unconverged.end_epoch(t.epoch, warn=t.is_main)
        t.epoch += 1
        t.iteration = 0
        if t.eval_data is not None and (
            t.epoch % t.settings.eval_every == 0 or t.epoch == t.settings.epochs
        ):
            self._evaluate()
        if t.checkpoints.due_after_epoch:
            t.save_checkpoint()

    def _evaluate(self) -> None:
        t = self.trainer
        record = {"step": t.step, "epoch": t.epoch, **t.evaluate()}
        t.history["eval"].append(record)
        t.recorder.write("eval", record, t.history["eval"])
        for callback in t.eval_callbacks:
            callback(t, record)

    def _save_unless_saved(self) -> None:
        t = self.trainer
        if t.checkpoints.writes and t.checkpoints.saved_at != t.position:
            t.save_checkpoint()

    def _stop_if_asked(self) -> None:
        t = self.trainer
        received = self.signals.received if self.signals is not None else None
        signum = distributed.agreed_signal(received, t.settings.device)
        if signum is None:
            return
        self._save_unless_saved()
        path = t.settings.out_dir / LATEST if t.checkpoints.writes else None
        distributed.barrier()
        raise TrainingInterrupted(signum, t.step, path)
