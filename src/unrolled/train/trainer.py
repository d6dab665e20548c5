"""The Trainer: the parts of a training run put together, and its override points.

A :class:`Trainer` is made of parts with one job each: ``step.TrainStep`` (one update
under the non-finite policy, with the statistics of the step), ``evaluator.Evaluator``
(held-out scores next to classical baselines), ``checkpointer.Checkpointer`` (when and
where checkpoints go, what ``resume=`` names), ``recorder.RunRecorder`` (logs) and
``loop.FitLoop`` (epochs, evaluations, signals). The Trainer holds the model, the
optimiser and the run's position (epoch, iteration, step), draws the seeded
measurements and offers :meth:`Trainer.model_inference` and :meth:`Trainer.compute_loss`
to override. How a run is made reproducible, on one process or several, is told in the
training guide.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._validation import check_int
from ..evaluation import Baseline
from . import distributed
from .checkpoint import CheckpointMismatch
from .checkpointer import Checkpointer
from .convergence import UnconvergedSolves
from .evaluator import Evaluator
from .loop import FitLoop
from .measuring import first_tensor, measure_per_sample
from .metrics import mse
from .recorder import RunRecorder
from .runlock import RunLock
from .seeding import (
    STREAM_TRAIN_NOISE,
    derive_seed,
    epoch_batches,
    make_loader,
    rng_state,
    set_rng_state,
)
from .step import TrainStep, make_optimizer

__all__ = ["Trainer", "first_tensor"]


class Trainer:
    """Fits ``model(y, physics) -> x_hat`` to clean images ``x`` with ``y = physics(x)``.

    Args:
        model: any ``nn.Module`` called as ``model(y, physics)``.
        physics: an :class:`unrolled.physics.Physics` (``physics(x)`` adds noise).
        train_data: a ``DataLoader`` (or any re-iterable) of clean batches ``(B, C, H, W)``
            or of tuples whose first element is one.
        eval_data: the same, for evaluation (measurements drawn with a fixed seed, so
            every evaluation sees the same noise).
        optimizer: ``None`` (Adam over the trainable parameters, learning rate ``lr``),
            a ``torch.optim.Optimizer``, or a factory ``params -> Optimizer``.
        lr: learning rate of the default Adam.
        loss: ``loss(x_hat, x) -> scalar`` (default the mean squared error); for a loss
            that needs the measurement, override :meth:`compute_loss`.
        epochs: passes over ``train_data``.
        device: where the model, physics and batches go.
        seed: the one seed every random draw of the run derives from.
        out_dir: folder for logs, checkpoints and plots (``None``: nothing written).
        log_every: write a log row (files, TensorBoard, progress bar) every this many
            steps; the in-memory history keeps every step.
        checkpoint_every: ``"epoch"``, a number of steps, or ``None`` (only at the end).
        keep_last: also keep the newest ``keep_last`` numbered checkpoints.
        eval_every: evaluate every this many epochs (and before training, and at the end).
        max_steps: stop after this many steps in all (a checkpoint is written).
        callbacks: ``fn(trainer, record)`` called after each step (after its checkpoint).
        progress: show a tqdm progress bar.
        measure_memory: ``True`` (every step), an integer ``k`` (steps 1, k+1, 2k+1, ...)
            or ``False``: measured steps get ``peak_bytes``
            (:class:`~unrolled.train.PeakMemoryMeter`, forward and backward) and
            ``saved_peak_bytes`` (:class:`~unrolled.train.SavedTensorMeter`). On CPU this
            profiles the step, which slows it down and inflates ``time_s``.
        tensorboard: ``"auto"`` (scalars when tensorboard is installed), ``True`` or ``False``.
        scheduler: a factory ``optimizer -> LR scheduler``, stepped after every step.
        grad_clip: clip the gradient norm to this value (``None``: no clipping).
        nonfinite: a step whose loss or gradient is not finite ``"raise"``-s
            (``FloatingPointError``, parameters untouched, a checkpoint of the last good
            state written) or is ``"skip"``-ped (no update, the record has ``skipped=1``).
        max_val: peak intensity for PSNR.
        plots: write ``loss.png`` and ``reconstructions.png`` to ``out_dir`` at the end.
        handle_signals: during :meth:`fit`, turn SIGINT / SIGTERM into a checkpoint and
            :class:`~unrolled.train.TrainingInterrupted` (main thread only).
        ddp_options: keyword arguments for ``DistributedDataParallel`` (multi-process).
        baselines: the classical reconstructions every evaluation reports next to the
            model: ``"auto"`` (see :meth:`fit_baselines`), a sequence of fitted
            :class:`~unrolled.evaluation.Baseline`, or ``None``.
        eval_callbacks: ``fn(trainer, record)`` called after each evaluation.
        baseline_data: images the ``"auto"`` baselines' weights are picked on (default:
            the training batches); like the evaluation images, but not them.

    Each step and each evaluation adds a record to :attr:`history` (its columns are
    listed in the training guide); the step records include the counts the model's
    statistics sources report (:class:`~unrolled.train.StatisticsSource`), e.g. the CG
    iterations of an :class:`unrolled.L2` fidelity.

    Unconverged solves are counted in :attr:`unconverged` and reported once per epoch
    (:class:`~unrolled.train.UnconvergedSolvesWarning`). With ``out_dir``, :meth:`fit`
    holds the folder's :class:`~unrolled.train.RunLock`.

    Override points: :meth:`model_inference` (how the model makes ``x_hat``) and
    :meth:`compute_loss`. Example, a measurement-consistency loss::

        class ConsistentTrainer(Trainer):
            def compute_loss(self, x_hat, x, y, physics):
                return mse(x_hat, x) + 0.1 * mse(physics.A(x_hat), y)
    """

    def __init__(
        self,
        model: nn.Module,
        physics: nn.Module,
        train_data: Iterable,
        *,
        eval_data: Iterable | None = None,
        optimizer: torch.optim.Optimizer | Callable[..., torch.optim.Optimizer] | None = None,
        lr: float = 1e-3,
        loss: Callable[[Tensor, Tensor], Tensor] | None = None,
        epochs: int = 1,
        device: torch.device | str = "cpu",
        seed: int = 0,
        out_dir: str | os.PathLike | None = None,
        log_every: int = 1,
        checkpoint_every: int | str | None = "epoch",
        keep_last: int = 0,
        eval_every: int = 1,
        max_steps: int | None = None,
        callbacks: Sequence[Callable[[Trainer, dict], None]] = (),
        progress: bool = True,
        measure_memory: bool | int = False,
        tensorboard: bool | str = "auto",
        scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
        grad_clip: float | None = None,
        nonfinite: str = "raise",
        max_val: float = 1.0,
        plots: bool = True,
        handle_signals: bool = True,
        ddp_options: dict | None = None,
        baselines: str | Sequence[Baseline] | None = "auto",
        eval_callbacks: Sequence[Callable[[Trainer, dict], None]] = (),
        baseline_data: Iterable | None = None,
    ):
        _check_inputs(model, physics, train_data, eval_data, loss, [*callbacks, *eval_callbacks])
        self.epochs = check_int("epochs", epochs, minimum=1)
        self.seed = check_int("seed", seed, minimum=0)
        self.eval_every = check_int("eval_every", eval_every, minimum=1)
        self.max_steps = check_int("max_steps", max_steps, minimum=0, allow_none=True)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.checkpoints = Checkpointer(self.out_dir, checkpoint_every, keep_last)
        self.device = torch.device(device)
        self.module = model.to(self.device)
        self.model = distributed.wrap(self.module, self.device, ddp_options)
        distributed.check_sharded(train_data)
        self.world_size = distributed.world_size()
        self.physics = physics.to(self.device)
        self.train_data = train_data
        self.eval_data = eval_data
        self.loss_fn = loss if loss is not None else mse
        self.callbacks = list(callbacks)
        self.eval_callbacks = list(eval_callbacks)
        self.progress = progress
        self.plots = plots
        self.handle_signals = bool(handle_signals)
        self.optimizer = make_optimizer(optimizer, lr, self.module)
        self.scheduler = scheduler(self.optimizer) if scheduler is not None else None
        self.recorder = RunRecorder(self.out_dir, log_every, tensorboard)
        self.evaluator = Evaluator(
            self.physics,
            self.module,
            eval_data,
            inference=lambda y: self.model_inference(y, self.physics, training=False),
            loss=lambda x_hat, x, y: self.compute_loss(x_hat, x, y, self.physics),
            baseline_batches=lambda: (
                iter(baseline_data)
                if baseline_data is not None
                else epoch_batches(self.train_data, self.seed, 0)
            ),
            seed=self.seed,
            device=self.device,
            max_val=max_val,
            baselines=baselines,
        )
        self._train_step = TrainStep(
            self.module,
            self.optimizer,
            self.scheduler,
            inference=lambda y: self.model_inference(y, self.physics),
            loss=lambda x_hat, x, y: self.compute_loss(x_hat, x, y, self.physics),
            grad_clip=grad_clip,
            nonfinite=nonfinite,
            measure_memory=measure_memory,
            device=self.device,
        )
        # Where the run stands: ``iteration`` batches of ``epoch`` are done, ``step`` in all.
        self.epoch = self.iteration = self.step = 0
        self.history: dict[str, list[dict]] = {"train": [], "eval": []}
        #: CG solves of the run that stopped at max_iter (one warning per epoch)
        self.unconverged = UnconvergedSolves()

    # -- override points ----------------------------------------------------------------

    def model_inference(self, y: Tensor, physics: nn.Module, *, training: bool = True) -> Tensor:
        """The estimate ``x_hat`` of the model from ``y``. ``training``: in a training step
        (the DDP-wrapped model when distributed), else in an evaluation (the unwrapped
        model, in eval mode and without gradients: DDP's forward would wait for the
        other processes)."""
        return (self.model if training else self.module)(y, physics)

    def compute_loss(self, x_hat: Tensor, x: Tensor, y: Tensor, physics: nn.Module) -> Tensor:
        """The scalar loss of a batch: by default ``loss(x_hat, x)``."""
        return self.loss_fn(x_hat, x)

    # -- the run's context --------------------------------------------------------------

    @staticmethod
    def make_loader(dataset, batch_size: int, shuffle: bool = True, **kwargs):
        """A ``DataLoader`` whose order is reproducible across resume, sharded over the
        processes of a multi-process run; see :func:`unrolled.train.make_loader`."""
        return make_loader(dataset, batch_size, shuffle, **kwargs)

    @property
    def rank(self) -> int:
        """This process's rank (0 in a single-process run)."""
        return distributed.rank()

    @property
    def is_main(self) -> bool:
        """Whether this process writes checkpoints, logs and plots."""
        return self.rank == 0

    def measurement_seed(self, epoch: int, iteration: int, position: int) -> int:
        """The seed of the noise of sample ``position`` of the global batch of training
        step ``(epoch, iteration)`` (all 0-based)."""
        return derive_seed(self.seed, STREAM_TRAIN_NOISE, epoch, iteration, position)

    def measure(self, x: Tensor, epoch: int, iteration: int) -> Tensor:
        """The training measurements ``y = physics(x)`` of step ``(epoch, iteration)``.

        Sample ``i`` of this process's batch is sample ``rank * B + i`` of the global
        batch, and its noise is drawn from :meth:`measurement_seed` of that position
        alone (:func:`~unrolled.train.measuring.measure_per_sample`): it depends neither
        on how the batch is split over processes nor on what was drawn before. The
        global RNG is left as it was.
        """
        offset = self.rank * x.shape[0]
        seeds = [self.measurement_seed(epoch, iteration, offset + i) for i in range(len(x))]
        return measure_per_sample(self.physics, x, seeds, self.device)

    def eval_seed(self, batch_index: int) -> int:
        """The seed of the noise of evaluation batch ``batch_index``: the same every time."""
        return self.evaluator.seed_of(batch_index)

    # -- the loop -----------------------------------------------------------------------

    def fit(
        self, resume: str | os.PathLike | None = None, *, max_steps: int | None = None
    ) -> dict[str, list[dict]]:
        """Train until ``epochs`` are done (or ``max_steps`` steps in all); return the history.

        Args:
            resume: ``None`` (start from the current state), ``"latest"``, ``"auto"``
                or a checkpoint path (see :meth:`resolve_resume`). With ``"latest"`` and
                ``"auto"`` a truncated or corrupt ``latest.pt`` is reported (a
                :class:`~unrolled.train.CheckpointWarning` naming it) and the newest
                usable older checkpoint is used (see :func:`~unrolled.train.load_latest`).
            max_steps: overrides the constructor's ``max_steps`` for this call.

        Returns:
            ``{"train": [record per step], "eval": [record per evaluation]}``.

        Raises:
            TrainingInterrupted: SIGINT or SIGTERM arrived; the checkpoint was written.
            FloatingPointError: a non-finite loss or gradient with ``nonfinite="raise"``;
                the last good state was written as a checkpoint.
            NonConvergenceError: a CG solve stopped at ``max_iter`` with the solver's
                ``on_failure="raise"``; the last good state was written as a checkpoint.
            RunLockedError: another process is writing in ``out_dir``.
            RunWriteError: a checkpoint, log or figure could not be written (full disk,
                permission); the message names the file. The last good checkpoint and
                the logs up to it are intact.
        """
        check_int("max_steps", max_steps, minimum=0, allow_none=True)
        loop = FitLoop(self, self.max_steps if max_steps is None else max_steps)
        # One writer per run folder, for the whole call (see unrolled.train.runlock).
        locking = self.out_dir is not None and self.is_main
        with RunLock(self.out_dir) if locking else contextlib.nullcontext() as lock:
            if lock is not None and lock.message:
                warnings.warn(lock.message, RuntimeWarning, stacklevel=2)
            return loop.run(resume)

    # -- checkpoints --------------------------------------------------------------------

    def state_dict(self) -> dict:
        """What a checkpoint holds (plain types and tensors only)."""
        return {
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "physics": self.physics.state_dict(),
            "epoch": self.epoch,
            "iteration": self.iteration,
            "step": self.step,
            "seed": self.seed,
            "rng": rng_state(),
            "history": self.history,
            "torch_version": str(torch.__version__),
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("seed", self.seed) != self.seed:
            raise CheckpointMismatch(
                f"seed: the checkpoint was written with seed={state['seed']}, this trainer has "
                f"seed={self.seed}; resuming would not reproduce the run"
            )
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if state.get("physics") is not None:
            self.physics.load_state_dict(state["physics"])
        self.epoch = int(state["epoch"])
        self.iteration = int(state["iteration"])
        self.step = int(state["step"])
        self.history = {kind: list(state["history"][kind]) for kind in ("train", "eval")}
        set_rng_state(state["rng"])
        self.checkpoints.saved_at = self.position
        self.unconverged.reset()
        self.unconverged.add(self.history["train"])

    @property
    def position(self) -> tuple[int, int, int]:
        """Where the run stands: ``(epoch, iteration, step)``."""
        return (self.epoch, self.iteration, self.step)

    def save_checkpoint(self) -> Path | None:
        """Write ``out_dir/latest.pt`` (and a numbered copy with ``keep_last``)."""
        return self.checkpoints.save(self.state_dict(), self.position)

    def resolve_resume(self, resume: str | os.PathLike) -> Path | None:
        """The checkpoint ``resume`` names: ``"latest"`` (``out_dir/latest.pt``, must exist),
        ``"auto"`` (that file if it exists, else ``None``: a fresh start) or a path."""
        return self.checkpoints.resolve(resume)

    # -- evaluation ---------------------------------------------------------------------

    def evaluate(self, data: Iterable | None = None, *, max_batches: int | None = None) -> dict:
        """Scores over ``data`` (default ``eval_data``) of the model and of the best
        classical baseline: mean PSNR over the whole image and over the determined region
        (:func:`~unrolled.evaluation.determined_region`), and SSIM.

        The measurements of batch ``b`` are drawn with :meth:`eval_seed` ``(b)`` and the
        global RNG is left as it was. The baselines are scored once, on the first call
        over ``eval_data`` (:attr:`baseline_scores`). Returns ``{"psnr",
        "psnr_determined", "ssim", "n"}`` and, with baselines, ``"baseline"`` (the best by
        whole-image PSNR), ``"psnr_baseline"``, ``"psnr_determined_baseline"``,
        ``"ssim_baseline"``.
        """
        return self.evaluator.evaluate(data, max_batches=max_batches)

    def fit_baselines(self) -> list[Baseline]:
        """The classical baselines the model is compared with (the ``baselines`` argument;
        ``"auto"``: each of :data:`~unrolled.evaluation.BASELINES` with its weight picked
        on the first two batches of ``baseline_data``, else of the training data, measured
        with their own noise seed: never on the evaluation images). Fitted once; under DDP
        the weights of process 0 are used."""
        return self.evaluator.fit_baselines()

    baselines = property(lambda self: self.evaluator.baselines, doc="The fitted baselines.")
    baseline_scores = property(
        lambda self: self.evaluator.scores, doc="Per baseline, its scores on ``eval_data``."
    )
    baseline_loss = property(
        lambda self: self.evaluator.loss_level,
        doc="``(label, loss)`` of the best baseline on the training batches.",
    )

    def save_reconstructions(
        self, path: str | os.PathLike, data: Iterable | None = None, n: int = 4
    ) -> Path:
        """Plot measurement / estimate / truth for the first batch of ``data`` (default the
        evaluation data, else the training data), with the first evaluation noise."""
        if data is None:
            data = self.eval_data if self.eval_data is not None else self.train_data
        return self.evaluator.save_reconstructions(path, data, n)


def _check_inputs(model, physics, train_data, eval_data, loss, callbacks) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    if not isinstance(physics, nn.Module) or not callable(getattr(physics, "A_adjoint", None)):
        raise TypeError(
            f"physics: expected an unrolled Physics (an nn.Module with A and A_adjoint), "
            f"got {type(physics).__name__}"
        )
    if not isinstance(train_data, Iterable):
        raise TypeError(
            f"train_data: expected a DataLoader or an iterable of batches, "
            f"got {type(train_data).__name__}"
        )
    if eval_data is not None and not isinstance(eval_data, Iterable):
        raise TypeError(
            f"eval_data: expected a DataLoader, an iterable of batches or None, "
            f"got {type(eval_data).__name__}"
        )
    if loss is not None and not callable(loss):
        raise TypeError(f"loss: expected a callable (x_hat, x) -> scalar, got {loss!r}")
    if any(not callable(c) for c in callbacks):
        raise TypeError("callbacks, eval_callbacks: expected callables fn(trainer, record)")
