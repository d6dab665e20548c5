"""The Trainer: the parts of a training run put together, and its override points.

The parts have one job each: ``step`` (one update), ``evaluator`` (held-out scores and
baselines), ``checkpointer`` (when and where checkpoints go), ``recorder`` (logs) and
``loop`` (epochs, evaluations, signals); ``settings`` checks the plain settings once.
The Trainer holds the model, the optimiser and the run's position, draws the seeded
measurements and offers :meth:`Trainer.model_inference` and :meth:`Trainer.compute_loss`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._validation import check_int
from ..evaluation import Baseline
from . import distributed
from .checkpointer import Checkpointer
from .convergence import UnconvergedSolves
from .evaluator import Evaluator
from .loop import FitLoop
from .measuring import first_tensor, measure_per_sample
from .metrics import mse
from .recorder import RunRecorder
from .seeding import (
    STREAM_TRAIN_NOISE,
    derive_seed,
    epoch_batches,
    make_loader,
)
from .settings import SETTING_NAMES, TrainerSettings, check_parts
from .step import TrainStep, make_optimizer

__all__ = ["Trainer", "first_tensor"]


class Trainer:
    """Fits ``model(y, physics) -> x_hat`` to clean images ``x`` with ``y = physics(x)``.

    Args:
        model: any ``nn.Module`` called as ``model(y, physics)``.
        physics: an :class:`unrolled.physics.Physics` (``physics(x)`` adds noise).
        train_data: a ``DataLoader`` (or any re-iterable) of clean batches ``(B, C, H, W)``
            or of tuples whose first element is one.
        eval_data: batches like ``train_data``, for evaluation (fixed-seed noise).
        optimizer: ``None`` (Adam at ``lr``), an optimiser, or a factory
            ``params -> Optimizer``.
        loss: ``loss(x_hat, x) -> scalar`` (default: mean squared error).
        scheduler: a factory ``optimizer -> LR scheduler``, stepped after every step.
        callbacks: ``fn(trainer, record)`` called after each step.
        eval_callbacks: ``fn(trainer, record)`` called after each evaluation.
        baselines: the classical reconstructions reported beside the model (``"auto"``,
            a sequence of fitted baselines, or ``None``).
        baseline_data: images the ``"auto"`` baselines' weights are picked on.
        ddp_options: keyword arguments for ``DistributedDataParallel``.
        **settings: the plain settings (``epochs``, ``lr``, ``device``, ``seed``,
            ``out_dir``...), fields of :class:`~unrolled.train.TrainerSettings`.

    Every argument, the records of :attr:`history` and the files a run writes are
    described in the training guide (``docs/guide/training.md``). The settings read as
    attributes too (``trainer.epochs``). Override points: :meth:`model_inference` and
    :meth:`compute_loss`.

    Examples:
        Two steps of a small unrolled network on a blur, on the CPU:

        >>> import torch, unrolled as ur
        >>> physics = ur.physics.Blur(ur.physics.gaussian_kernel(1.0), padding="circular",
        ...                           noise=ur.physics.GaussianNoise(0.05))
        >>> model = ur.unfolded.HQS(layers=1, denoiser=ur.models.DnCNN(1, 1, depth=2, features=4))
        >>> data = torch.utils.data.DataLoader(ur.data.DeadLeaves(8, 1, length=4, seed=0),
        ...                                    batch_size=2)
        >>> trainer = ur.train.Trainer(model, physics, data, max_steps=2, progress=False,
        ...                            baselines=None)
        >>> history = trainer.fit()
        >>> [record["step"] for record in history["train"]]
        [1, 2]
        >>> trainer.position  # (epoch, iteration within it, step in all)
        (0, 2, 2)
        >>> trainer.epochs  # a setting, read as an attribute
        1
    """

    def __init__(
        self,
        model: nn.Module,
        physics: nn.Module,
        train_data: Iterable,
        *,
        eval_data: Iterable | None = None,
        optimizer: torch.optim.Optimizer | Callable[..., torch.optim.Optimizer] | None = None,
        loss: Callable[[Tensor, Tensor], Tensor] | None = None,
        scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
        callbacks: Sequence[Callable[[Trainer, dict], None]] = (),
        eval_callbacks: Sequence[Callable[[Trainer, dict], None]] = (),
        baselines: str | Sequence[Baseline] | None = "auto",
        baseline_data: Iterable | None = None,
        ddp_options: dict | None = None,
        **settings: Any,
    ):
        check_parts(model, physics, train_data, eval_data, loss, [*callbacks, *eval_callbacks])
        self.settings = s = TrainerSettings.from_keywords(settings)
        self.checkpoints = Checkpointer(s.out_dir, s.checkpoint_every, s.keep_last)
        self.module = model.to(s.device)
        self.model = distributed.wrap(self.module, s.device, ddp_options)
        distributed.check_sharded(train_data)
        self.world_size = distributed.world_size()
        self.physics = physics.to(s.device)
        self.train_data = train_data
        self.eval_data = eval_data
        self.loss_fn = loss if loss is not None else mse
        self.callbacks = list(callbacks)
        self.eval_callbacks = list(eval_callbacks)
        self.optimizer = make_optimizer(optimizer, s.lr, self.module, s.scalar_lr)
        self.scheduler = scheduler(self.optimizer) if scheduler is not None else None
        self.recorder = RunRecorder(s.out_dir, s.log_every, s.tensorboard)
        self.evaluator = Evaluator(
            self.physics,
            self.module,
            eval_data,
            inference=lambda y: self.model_inference(y, self.physics, training=False),
            loss=lambda x_hat, x, y: self.compute_loss(x_hat, x, y, self.physics),
            baseline_batches=lambda: (
                iter(baseline_data)
                if baseline_data is not None
                else epoch_batches(self.train_data, s.seed, 0)
            ),
            seed=s.seed,
            device=s.device,
            max_val=s.max_val,
            baselines=baselines,
        )
        self._train_step = TrainStep(
            self.module,
            self.optimizer,
            self.scheduler,
            inference=lambda y: self.model_inference(y, self.physics),
            loss=lambda x_hat, x, y: self.compute_loss(x_hat, x, y, self.physics),
            grad_clip=s.grad_clip,
            nonfinite=s.nonfinite,
            measure_memory=s.measure_memory,
            device=s.device,
        )
        # Where the run stands: ``iteration`` batches of ``epoch`` are done, ``step`` in all.
        self.epoch = self.iteration = self.step = 0
        self.history: dict[str, list[dict]] = {"train": [], "eval": []}
        #: CG solves of the run that stopped at max_iter (one warning per epoch)
        self.unconverged = UnconvergedSolves()

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: the settings read as attributes.
        settings = self.__dict__.get("settings")
        if settings is not None and name in SETTING_NAMES:
            return getattr(settings, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

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
        return derive_seed(self.settings.seed, STREAM_TRAIN_NOISE, epoch, iteration, position)

    def measure(self, x: Tensor, epoch: int, iteration: int) -> Tensor:
        """The training measurements ``y = physics(x)`` of step ``(epoch, iteration)``:
        sample ``i`` of this process's batch is sample ``rank * B + i`` of the global batch
        and its noise is drawn from :meth:`measurement_seed` of that position alone. The
        global RNG is left as it was."""
        offset = self.rank * x.shape[0]
        seeds = [self.measurement_seed(epoch, iteration, offset + i) for i in range(len(x))]
        return measure_per_sample(self.physics, x, seeds, self.settings.device)

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
                or a checkpoint path (see :meth:`resolve_resume`); a corrupt ``latest.pt``
                is reported (:class:`~unrolled.train.CheckpointWarning`) and the newest
                usable older checkpoint is used (:func:`~unrolled.train.load_latest`).
            max_steps: overrides the constructor's ``max_steps`` for this call.

        Returns ``{"train": [record per step], "eval": [record per evaluation]}``.

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
        max_steps = self.settings.max_steps if max_steps is None else max_steps
        return FitLoop(self, max_steps).run(resume)

    # -- checkpoints --------------------------------------------------------------------

    def state_dict(self) -> dict:
        """What a checkpoint holds (plain types and tensors only); see
        :meth:`Checkpointer.state_of <unrolled.train.checkpointer.Checkpointer.state_of>`."""
        return self.checkpoints.state_of(self)

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state`` (a checkpoint written with the same ``seed``)."""
        self.checkpoints.restore(self, state)

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

    # -- evaluation (the evaluator's; see unrolled.train.evaluator) -------------------------

    def evaluate(self, data: Iterable | None = None, *, max_batches: int | None = None) -> dict:
        """Scores of the model and of the best baseline over ``data`` (default
        ``eval_data``), measured with :meth:`eval_seed`; see
        :meth:`Evaluator.evaluate <unrolled.train.evaluator.Evaluator.evaluate>`."""
        return self.evaluator.evaluate(data, max_batches=max_batches)

    def fit_baselines(self) -> list[Baseline]:
        """The classical baselines the model is compared with, fitted once on
        ``baseline_data`` (default: the training batches), never on the evaluation images;
        see :meth:`Evaluator.fit_baselines <unrolled.train.evaluator.Evaluator.fit_baselines>`."""
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
