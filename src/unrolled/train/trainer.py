"""The training loop: measurements made on the fly, logs, checkpoints, resume, plots.

Reproducibility contract (CPU, fixed seed): a run stopped after any step and resumed
from its checkpoint ends with exactly the parameters of an uninterrupted run. This
holds because every random draw is pinned down:

* measurement noise of sample ``j`` of step ``(epoch, iteration)``: seeded from
  ``(seed, epoch, iteration, j)`` (see :meth:`Trainer.measure`);
* data order of ``epoch``: the loader's shuffling generator is reseeded from
  ``(seed, epoch)``; on resume the batches already done in the current epoch are
  skipped (see :func:`~unrolled.train.seeding.epoch_batches`);
* everything else on the global generators (dropout, main-process augmentations):
  restored from the checkpoint's RNG snapshot.

A ``DataLoader`` of your own works if its shuffling goes through a
``RandomSampler`` (the default of ``shuffle=True``; the trainer gives it a generator
if it has none and reseeds it per epoch) or a sampler with ``set_epoch`` (e.g.
``DistributedSampler``). Random augmentations drawn in worker processes are
reproducible when they use the worker's torch seed. :meth:`Trainer.make_loader` builds
a loader that needs nothing more.

Multi-process training (``torchrun``, or ``unrolled train --nproc N``; see
:mod:`unrolled.train.distributed`): when a process group with more than one member is
initialised, the model is wrapped in ``DistributedDataParallel`` (``self.model``; the
unwrapped one, which is saved, is ``self.module``), each process reads its own shard of
the data (a ``DistributedSampler``: :meth:`Trainer.make_loader` makes one), only rank 0
writes checkpoints, logs and plots, and the logged loss, CG counts and evaluation PSNR
are reduced over all processes. With ``P`` processes of local batch ``b``, a step
equals a single-process step on the global batch made of the ``P`` local batches
concatenated in rank order (same update, to rounding): DDP averages the ``P`` local
mean-loss gradients, which is the gradient of the global mean loss, and the
measurement noise of each sample is seeded by its position ``rank * b + i`` in that
global batch, not by the process that draws it, so the union of the processes' noise
is exactly the noise of the single-process run.

Signals: SIGINT / SIGTERM during :meth:`Trainer.fit` finish the current step, write a
checkpoint and raise :class:`~unrolled.train.TrainingInterrupted` (all processes stop
at the same step).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..evaluation import Baseline, determined_region, fit_baselines, image_scores
from ..fidelity import SolveStats
from ..linalg.cg import NonConvergenceError
from ..physics.base import Physics
from . import distributed
from .checkpoint import (
    LATEST,
    CheckpointMismatch,
    check_model_state,
    load_checkpoint,
    load_latest,
    remove_stale_temporaries,
    save_checkpoint,
)
from .convergence import UnconvergedSolves
from .logs import RunLog, logged, tensorboard_writer
from .memory import PeakMemoryMeter, SavedTensorMeter
from .metrics import mse
from .plots import plot_losses, plot_reconstructions
from .runlock import RunLock
from .seeding import (
    STREAM_BASELINE_NOISE,
    STREAM_EVAL_NOISE,
    STREAM_TRAIN_NOISE,
    derive_seed,
    epoch_batches,
    make_loader,
    rng_state,
    seeded_noise,
    set_rng_state,
)
from .signals import StopSignals, TrainingInterrupted
from .timer import Timer

__all__ = ["Trainer", "first_tensor"]

NONFINITE = ("raise", "skip")

#: what an evaluation measures per method (see :func:`~unrolled.evaluation.image_scores`)
METRIC_NAMES = ("psnr", "psnr_determined", "ssim")
#: training batches on which the classical baselines' weights are picked
BASELINE_BATCHES = 2


def first_tensor(batch: Any, what: str = "train_data") -> Tensor:
    """The clean images of a batch: the batch itself, or the first element of a tuple/list."""
    if isinstance(batch, (tuple, list)) and batch:
        batch = batch[0]
    if not isinstance(batch, Tensor):
        raise TypeError(
            f"{what}: expected batches of image tensors (B, C, H, W) or tuples whose first "
            f"element is one, got {type(batch).__name__}"
        )
    return batch


def _check_sharded(train_data: Any) -> None:
    """Warn when a multi-process run would give every process the whole data."""
    sampler = getattr(train_data, "sampler", None)
    batch_sampler = getattr(train_data, "batch_sampler", None)
    inner = getattr(batch_sampler, "sampler", None)
    if not any(hasattr(s, "set_epoch") for s in (sampler, batch_sampler, inner)):
        warnings.warn(
            "train_data: in a multi-process run each process should read its own shard "
            "(a DistributedSampler, e.g. Trainer.make_loader(...) makes one); this loader "
            "has none, so every process reads all the data",
            RuntimeWarning,
            stacklevel=3,
        )


def _check_int(name: str, value: Any, minimum: int, *, allow_none: bool = False) -> None:
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")


class Trainer:
    """Fits ``model(y, physics) -> x_hat`` to clean images ``x`` with ``y = physics(x)``.

    Args:
        model: any ``nn.Module`` called as ``model(y, physics)``.
        physics: an :class:`unrolled.physics.Physics` (``physics(x)`` adds noise).
        train_data: a ``DataLoader`` (or any re-iterable) of clean batches ``(B, C, H, W)``
            or of tuples whose first element is one.
        eval_data: the same, for PSNR evaluation (measurements drawn with a fixed seed,
            so every evaluation sees the same noise).
        optimizer: ``None`` (Adam over the model's trainable parameters, learning rate
            ``lr``), a ``torch.optim.Optimizer``, or a factory ``params -> Optimizer``.
        lr: learning rate of the default Adam.
        loss: ``loss(x_hat, x) -> scalar``; default the mean squared error.
        epochs: passes over ``train_data``.
        device: where the model, physics and batches go.
        seed: the one seed every random draw of the run derives from.
        out_dir: folder for logs, checkpoints and plots (``None``: nothing written).
        log_every: write a log row (files, TensorBoard, progress bar) every this many
            steps; the in-memory history keeps every step.
        checkpoint_every: ``"epoch"``, a number of steps, or ``None`` (only at the end).
        keep_last: also keep the newest ``keep_last`` numbered checkpoints
            ``checkpoint-<step>.pt`` beside ``latest.pt`` (0: ``latest.pt`` only).
        eval_every: evaluate every this many epochs (and before training, and at the end).
        max_steps: stop after this many steps in all (a checkpoint is written).
        callbacks: ``fn(trainer, record)`` called after each step (after its checkpoint).
        progress: show a tqdm progress bar.
        measure_memory: ``True`` (every step), an integer ``k`` (steps 1, k+1, 2k+1, ...:
            the first step and every k-th after it) or ``False``. Measured steps' records
            get ``peak_bytes`` (every allocation over
            forward and backward, :class:`~unrolled.train.PeakMemoryMeter`) and
            ``saved_peak_bytes`` (bytes held for backward,
            :class:`~unrolled.train.SavedTensorMeter`). On CPU this profiles each step,
            which slows it down and inflates ``time_s``.
        tensorboard: ``"auto"`` (scalars when the tensorboard package is installed),
            ``True`` (required) or ``False``.
        scheduler: a factory ``optimizer -> LR scheduler``, stepped after every step.
        grad_clip: clip the gradient norm to this value (``None``: no clipping).
        nonfinite: a step whose loss or gradient is not finite ``"raise"``-s
            (``FloatingPointError``, parameters untouched, a checkpoint of the last good
            state written) or is ``"skip"``-ped (no update, the record has ``skipped=1``).
        max_val: peak intensity for PSNR.
        plots: write ``loss.png`` and ``reconstructions.png`` to ``out_dir`` at the end.
        handle_signals: during :meth:`fit`, turn SIGINT / SIGTERM into a checkpoint and
            :class:`~unrolled.train.TrainingInterrupted` (main thread only).
        ddp_options: keyword arguments for ``DistributedDataParallel`` (multi-process
            runs only), e.g. ``{"find_unused_parameters": True}``.
        baselines: the classical reconstructions every evaluation reports next to the
            model: ``"auto"`` (fitted on training images, see :meth:`fit_baselines`), a
            sequence of fitted :class:`~unrolled.evaluation.Baseline`, or ``None``.
        eval_callbacks: ``fn(trainer, record)`` called after each evaluation.
        baseline_data: images the ``"auto"`` baselines' weights are picked on (default:
            the training batches). Give images like the evaluation ones but not them: a
            weight that suits small training crops does not suit larger images.

    Each step's record (``history["train"]`` and ``train_log.csv/jsonl``) has ``step``
    (1-based, in all), ``epoch`` (0-based), ``iteration`` (1-based, within the epoch),
    ``loss``, ``time_s`` (the step: measurement, forward, backward, update),
    ``data_time_s``, ``lr``; ``cg_forward`` / ``cg_backward`` (mean CG iterations per
    solve in the step), ``cg_unconverged`` (samples that stopped at ``max_iter``,
    forward and backward solves together) and ``cg_solves`` (samples solved) when the
    model holds fidelities with a ``stats`` attribute (:class:`unrolled.SolveStats`);
    ``peak_bytes`` and ``saved_peak_bytes`` on measured steps; ``skipped`` on skipped
    steps. Evaluation records (``history["eval"]``) have ``step``, ``epoch`` (epochs
    done), ``psnr`` (whole image), ``psnr_determined`` (the region the measurement
    determines), ``ssim``, the same three of the best classical baseline
    (``psnr_baseline``, ``psnr_determined_baseline``, ``ssim_baseline``, and its name in
    ``baseline``; see ``baselines``) and ``n``; the first is made before training.

    Unconverged solves are counted in :attr:`unconverged` (an
    :class:`~unrolled.train.UnconvergedSolves`) and reported once per epoch, with the
    count, as an :class:`~unrolled.train.UnconvergedSolvesWarning` (or through
    ``trainer.unconverged.report``). With ``out_dir``, :meth:`fit` holds the folder's
    :class:`~unrolled.train.RunLock`: one writer per run folder.
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
        _check_int("epochs", epochs, 1)
        _check_int("seed", seed, 0)
        _check_int("log_every", log_every, 1)
        _check_int("keep_last", keep_last, 0)
        _check_int("eval_every", eval_every, 1)
        _check_int("max_steps", max_steps, 0, allow_none=True)
        if not (
            checkpoint_every in ("epoch", None)
            or (
                isinstance(checkpoint_every, int)
                and not isinstance(checkpoint_every, bool)
                and checkpoint_every >= 1
            )
        ):
            raise ValueError(
                f"checkpoint_every: expected 'epoch', an integer >= 1 or None, "
                f"got {checkpoint_every!r}"
            )
        if nonfinite not in NONFINITE:
            raise ValueError(f"nonfinite: expected one of {NONFINITE}, got {nonfinite!r}")
        if grad_clip is not None and not (
            isinstance(grad_clip, (int, float))
            and not isinstance(grad_clip, bool)
            and grad_clip > 0
        ):
            raise ValueError(f"grad_clip: expected a number > 0 or None, got {grad_clip!r}")
        if loss is not None and not callable(loss):
            raise TypeError(f"loss: expected a callable (x_hat, x) -> scalar, got {loss!r}")
        if tensorboard not in ("auto", True, False):
            raise ValueError(f"tensorboard: expected 'auto', True or False, got {tensorboard!r}")
        if any(not callable(c) for c in [*callbacks, *eval_callbacks]):
            raise TypeError("callbacks, eval_callbacks: expected callables fn(trainer, record)")
        if not (
            baselines is None
            or (isinstance(baselines, str) and baselines == "auto")
            or (
                isinstance(baselines, Sequence)
                and not isinstance(baselines, str)
                and all(isinstance(b, Baseline) for b in baselines)
            )
        ):
            raise TypeError(
                f"baselines: expected 'auto', None or a sequence of "
                f"unrolled.evaluation.Baseline, got {baselines!r}"
            )

        self.device = torch.device(device)
        self.module = model.to(self.device)
        self.model = self.module
        self.world_size = distributed.world_size()
        if distributed.is_distributed():
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.device] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(
                self.module, device_ids=device_ids, **(ddp_options or {})
            )
            _check_sharded(train_data)
        self.physics = physics.to(self.device)
        self.train_data = train_data
        self.eval_data = eval_data
        self.loss_fn = loss if loss is not None else mse
        self.epochs = epochs
        self.seed = seed
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.log_every = log_every
        self.checkpoint_every = checkpoint_every
        self.keep_last = keep_last
        self.eval_every = eval_every
        self.max_steps = max_steps
        self.callbacks = list(callbacks)
        self.eval_callbacks = list(eval_callbacks)
        self.progress = progress
        self.measure_memory = int(measure_memory)
        self.tensorboard = tensorboard
        self.grad_clip = grad_clip
        self.nonfinite = nonfinite
        self.max_val = max_val
        self.plots = plots
        self.handle_signals = bool(handle_signals)
        self.baselines = None if baselines == "auto" else list(baselines or [])
        self.baseline_data = baseline_data
        self.baseline_scores: dict[str, dict] | None = None
        self.baseline_loss: tuple[str, float] | None = None
        self.optimizer = self._make_optimizer(optimizer, lr)
        self.scheduler = scheduler(self.optimizer) if scheduler is not None else None

        # Where the run stands: ``iteration`` batches of ``epoch`` are done, ``step`` in all.
        self.epoch = 0
        self.iteration = 0
        self.step = 0
        self.history: dict[str, list[dict]] = {"train": [], "eval": []}
        self._saved_at: tuple[int, int, int] | None = None
        self._log: RunLog | None = None
        self._signals: StopSignals | None = None
        self._tb = None
        self._stats = [
            m.stats
            for m in self.module.modules()
            if isinstance(getattr(m, "stats", None), SolveStats)
        ]
        #: CG solves of the run that stopped at max_iter (one warning per epoch)
        self.unconverged = UnconvergedSolves()

    # -- set-up ---------------------------------------------------------------------------

    def _make_optimizer(self, optimizer, lr: float) -> torch.optim.Optimizer:
        if isinstance(optimizer, torch.optim.Optimizer):
            return optimizer
        params = [p for p in self.module.parameters() if p.requires_grad]
        if not params:
            raise ValueError("model: expected at least one parameter with requires_grad, got none")
        if optimizer is None:
            if not (isinstance(lr, (int, float)) and not isinstance(lr, bool) and lr > 0):
                raise ValueError(f"lr: expected a number > 0, got {lr!r}")
            return torch.optim.Adam(params, lr=lr)
        if callable(optimizer):
            made = optimizer(params)
            if not isinstance(made, torch.optim.Optimizer):
                raise TypeError(
                    f"optimizer: the factory returned {type(made).__name__}, "
                    "expected a torch.optim.Optimizer"
                )
            return made
        raise TypeError(
            f"optimizer: expected None, a torch.optim.Optimizer or a factory params -> "
            f"Optimizer, got {type(optimizer).__name__}"
        )

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
        alone: the noise does not depend on how the global batch is split over
        processes, nor on what was drawn before (resume). For a :class:`Physics` with
        the standard ``forward`` the noiseless ``A x`` is computed once for the batch and
        the noise model is applied per sample; any other physics is called per sample.
        The global RNG is left as it was.
        """
        offset = self.rank * x.shape[0]
        seeds = [self.measurement_seed(epoch, iteration, offset + i) for i in range(len(x))]
        physics = self.physics
        with torch.no_grad():
            standard = isinstance(physics, Physics) and type(physics).forward is Physics.forward
            if standard and physics.noise is None:
                return physics.A(x)
            clean = physics.A(x) if standard else None
            parts = []
            for i, seed in enumerate(seeds):
                with seeded_noise(physics, seed, self.device):
                    parts.append(
                        physics.noise(clean[i : i + 1]) if standard else physics(x[i : i + 1])
                    )
            return torch.cat(parts)

    def eval_seed(self, batch_index: int) -> int:
        """The seed of the noise of evaluation batch ``batch_index``: the same every time."""
        return derive_seed(self.seed, STREAM_EVAL_NOISE, batch_index)

    # -- checkpoints ----------------------------------------------------------------------

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
        self.history = {
            "train": list(state["history"]["train"]),
            "eval": list(state["history"]["eval"]),
        }
        set_rng_state(state["rng"])
        self._saved_at = (self.epoch, self.iteration, self.step)
        self.unconverged.reset()
        self.unconverged.add(self.history["train"])

    def save_checkpoint(self) -> Path | None:
        """Write ``out_dir/latest.pt`` (and a numbered copy with ``keep_last``)."""
        if self.out_dir is None or not self.is_main:
            return None
        path = save_checkpoint(
            self.state_dict(), self.out_dir, step=self.step, keep_last=self.keep_last
        )
        self._saved_at = (self.epoch, self.iteration, self.step)
        return path

    def resolve_resume(self, resume: str | os.PathLike) -> Path | None:
        """The checkpoint ``resume`` names: ``"latest"`` (``out_dir/latest.pt``, must exist),
        ``"auto"`` (that file if it exists, else ``None``: a fresh start) or a path."""
        if resume in ("latest", "auto"):
            if self.out_dir is None:
                raise ValueError(f"resume={resume!r} needs out_dir, got out_dir=None")
            path = self.out_dir / LATEST
            if not path.is_file():
                if resume == "auto":
                    return None
                raise FileNotFoundError(f"resume='latest': no checkpoint at {path}")
            return path
        if isinstance(resume, (str, os.PathLike)):
            return Path(resume)
        raise TypeError(
            f"resume: expected None, 'latest', 'auto' or a path, got {type(resume).__name__}"
        )

    # -- evaluation -----------------------------------------------------------------------

    def _measure(self, x: Tensor, seed: int) -> Tensor:
        with torch.no_grad(), seeded_noise(self.physics, seed, self.device):
            return self.physics(x)

    def evaluate(self, data: Iterable | None = None, *, max_batches: int | None = None) -> dict:
        """Scores over ``data`` (default ``eval_data``) of the model and of the best
        classical baseline: mean PSNR over the whole image and over the determined region
        (:func:`~unrolled.evaluation.determined_region`), and SSIM.

        The measurements of batch ``b`` are drawn with :meth:`eval_seed` ``(b)`` and the
        global RNG is left as it was, so evaluating does not change the training run. The
        baselines (:meth:`fit_baselines`) are scored once, on the first call over
        ``eval_data``, and kept in :attr:`baseline_scores`. Returns ``{"psnr",
        "psnr_determined", "ssim", "n"}`` and, with baselines, ``"baseline"`` (the best by
        whole-image PSNR), ``"psnr_baseline"``, ``"psnr_determined_baseline"``,
        ``"ssim_baseline"``.
        """
        default = data is None
        data = self.eval_data if data is None else data
        if data is None:
            raise ValueError("data: expected evaluation data (eval_data is None)")
        _check_int("max_batches", max_batches, 1, allow_none=True)
        score_baselines = not default or self.baseline_scores is None
        baselines = self.fit_baselines() if score_baselines else []
        was_training = self.module.training
        self.module.eval()
        # per method (the model, then each baseline): sums of the three metrics; then n
        sums = torch.zeros(3 * (1 + len(baselines)) + 1, dtype=torch.float64, device=self.device)
        try:
            with torch.random.fork_rng(devices=self._cuda_devices()), torch.no_grad():
                torch.manual_seed(derive_seed(self.seed, STREAM_EVAL_NOISE))
                for b, batch in enumerate(data):
                    if max_batches is not None and b >= max_batches:
                        break
                    if b % self.world_size != self.rank:
                        continue  # batches are shared out over the processes
                    x = first_tensor(batch, "eval_data").to(self.device)
                    y = self._measure(x, self.eval_seed(b))
                    region = determined_region(self.physics, x.shape).to(self.device)
                    # The unwrapped model: DDP's forward would wait for the other processes.
                    estimates = [self.module(y, self.physics)]
                    estimates += [baseline(self.physics, y) for baseline in baselines]
                    for i, x_hat in enumerate(estimates):
                        sums[3 * i : 3 * i + 3] += image_scores(x_hat, x, region, self.max_val).sum(
                            1
                        )
                    sums[-1] += x.shape[0]
        finally:
            self.module.train(was_training)
        sums = distributed.all_reduce_sum(sums)
        n = int(sums[-1].item())
        if n == 0:
            raise ValueError("data: the evaluation data yielded no batch")
        means = (sums[:-1] / n).view(-1, 3).tolist()
        result = dict(zip(METRIC_NAMES, means[0], strict=True), n=n)
        scores = {
            b.label: dict(zip(METRIC_NAMES, m, strict=True))
            for b, m in zip(baselines, means[1:], strict=True)
        }
        if default and score_baselines:
            self.baseline_scores = scores
        if not score_baselines:
            scores = self.baseline_scores
        if scores:
            label = max(scores, key=lambda k: scores[k]["psnr"])
            result["baseline"] = label
            result.update({f"{k}_baseline": v for k, v in scores[label].items()})
        return result

    def fit_baselines(self) -> list[Baseline]:
        """The classical baselines the model is compared with (the ``baselines`` argument;
        ``"auto"``: each of :data:`~unrolled.evaluation.BASELINES` with its weight picked
        on the first two batches of ``baseline_data``, else of the training data, measured
        with their own noise seed: never on the evaluation images). Fitted once; under DDP
        the weights of process 0 are used."""
        if self.baselines is not None:
            return self.baselines
        pairs = []
        with torch.random.fork_rng(devices=self._cuda_devices()), torch.no_grad():
            batches = (
                iter(self.baseline_data)
                if self.baseline_data is not None
                else epoch_batches(self.train_data, self.seed, 0)
            )
            for i, batch in zip(range(BASELINE_BATCHES), batches, strict=False):
                x = first_tensor(batch).to(self.device)
                pairs.append(
                    (x, self._measure(x, derive_seed(self.seed, STREAM_BASELINE_NOISE, i)))
                )
        fitted = fit_baselines(self.physics, pairs, max_val=self.max_val)
        # The level a trained network must get below: the best baseline's training loss.
        losses = {
            b.label: sum(float(self.loss_fn(b(self.physics, y), x)) for x, y in pairs) / len(pairs)
            for b in fitted
        }
        best = min(losses, key=losses.get)
        self.baseline_loss = (f"best baseline: {best}", losses[best])
        if distributed.is_distributed():
            lams = torch.tensor(
                [b.lam if b.lam is not None else 0.0 for b in fitted],
                dtype=torch.float64,
                device=self.device,
            )
            torch.distributed.broadcast(lams, 0)
            fitted = [
                dataclasses.replace(b, lam=float(v)) if b.lam is not None else b
                for b, v in zip(fitted, lams.tolist(), strict=True)
            ]
        self.baselines = fitted
        return fitted

    def _cuda_devices(self) -> list[int]:
        if self.device.type != "cuda":
            return []
        return [self.device.index if self.device.index is not None else torch.cuda.current_device()]

    def save_reconstructions(
        self, path: str | os.PathLike, data: Iterable | None = None, n: int = 4
    ) -> Path:
        """Plot measurement / estimate / truth for the first batch of ``data`` (default the
        evaluation data, else the training data), with the first evaluation noise."""
        data = (
            data
            if data is not None
            else (self.eval_data if self.eval_data is not None else self.train_data)
        )
        was_training = self.module.training
        self.module.eval()
        try:
            with torch.random.fork_rng(devices=self._cuda_devices()), torch.no_grad():
                x = first_tensor(next(iter(data)), "data").to(self.device)
                y = self._measure(x, self.eval_seed(0))
                x_hat = self.module(y, self.physics)
                best = self._best_baseline()
                baseline = (best.label, best(self.physics, y)) if best is not None else None
        finally:
            self.module.train(was_training)
        return plot_reconstructions(y, x_hat, x, path, n=n, max_val=self.max_val, baseline=baseline)

    def _best_baseline(self) -> Baseline | None:
        """The baseline with the best held-out PSNR so far (None before any evaluation)."""
        if not self.baseline_scores or not self.baselines:
            return None
        label = max(self.baseline_scores, key=lambda k: self.baseline_scores[k]["psnr"])
        return next((b for b in self.baselines if b.label == label), None)

    # -- one step -------------------------------------------------------------------------

    def _train_step(self, batch: Any, epoch: int, iteration: int) -> dict:
        x = first_tensor(batch).to(self.device, non_blocking=True)
        for s in self._stats:
            s.reset()
        record: dict[str, Any] = {}
        # Steps 1, k+1, 2k+1, ... (self.step counts the steps done before this one).
        measure = self.measure_memory > 0 and self.step % self.measure_memory == 0
        with Timer(self.device) as timer:
            y = self.measure(x, epoch, iteration)
            self.optimizer.zero_grad(set_to_none=True)
            with contextlib.ExitStack() as stack:
                # The peak covers forward and backward (the optimizer's state is not in it).
                peak = stack.enter_context(PeakMemoryMeter(self.device)) if measure else None
                with SavedTensorMeter() if measure else contextlib.nullcontext() as saved:
                    x_hat = self.model(y, self.physics)
                    loss = self.loss_fn(x_hat, x)
                if not isinstance(loss, Tensor) or loss.numel() != 1:
                    raise ValueError(
                        f"loss: expected a scalar tensor from loss(x_hat, x), got "
                        f"{loss.shape if isinstance(loss, Tensor) else type(loss).__name__}"
                    )
                # Every process must take the same decision (DDP's backward is collective),
                # so the loss and its finiteness are reduced first.
                local = loss.detach().reshape(()).to(torch.float64)
                finite_here = bool(torch.isfinite(local))
                reduced = distributed.all_reduce_sum(
                    torch.stack(
                        [
                            local * x.shape[0] if finite_here else local.new_zeros(()),
                            local.new_tensor(float(x.shape[0])),
                            local.new_tensor(0.0 if finite_here else 1.0),
                        ]
                    )
                ).tolist()
                finite = reduced[2] == 0
                value = reduced[0] / reduced[1] if finite else float(local)
                if not finite and self.nonfinite == "raise":
                    raise FloatingPointError(
                        f"loss: non-finite value {value} at epoch {epoch}, iteration "
                        f"{iteration} (step {self.step + 1}); parameters left as after step "
                        f"{self.step} (nonfinite='skip' skips such steps instead)"
                    )
                if finite:
                    loss.backward()
            if finite and not self._gradients_finite():
                # After DDP's all-reduce the gradients are the same on every process.
                if self.nonfinite == "raise":
                    self.optimizer.zero_grad(set_to_none=True)
                    raise FloatingPointError(
                        f"gradient: non-finite values at epoch {epoch}, iteration {iteration} "
                        f"(step {self.step + 1}, loss {value}); parameters left as after step "
                        f"{self.step} (nonfinite='skip' skips such steps instead)"
                    )
                finite = False
            if finite:
                if self.grad_clip is not None:
                    nn.utils.clip_grad_norm_(self.module.parameters(), self.grad_clip)
                self.optimizer.step()
                if self.scheduler is not None:
                    self.scheduler.step()
            else:
                self.optimizer.zero_grad(set_to_none=True)
                record["skipped"] = 1
        record.update(
            loss=value,
            time_s=timer.seconds,
            lr=float(self.optimizer.param_groups[0]["lr"]),
        )
        if measure:
            record["peak_bytes"] = int(peak.peak_bytes)
            record["saved_peak_bytes"] = int(saved.peak_saved_bytes)
        if self._stats:
            counts = torch.tensor(
                [
                    sum(s.forward_iterations for s in self._stats),
                    sum(s.forward_solves for s in self._stats),
                    sum(s.backward_iterations for s in self._stats),
                    sum(s.backward_solves for s in self._stats),
                    sum(s.unconverged for s in self._stats),
                    sum(s.samples for s in self._stats),
                ],
                dtype=torch.float64,
                device=self.device,
            )
            fwd_its, fwd_solves, bwd_its, bwd_solves, unconverged, samples = (
                distributed.all_reduce_sum(counts).tolist()
            )
            record["cg_forward"] = fwd_its / fwd_solves if fwd_solves else 0.0
            record["cg_backward"] = bwd_its / bwd_solves if bwd_solves else 0.0
            record["cg_unconverged"] = int(unconverged)
            record["cg_solves"] = int(samples)
        return record

    def _gradients_finite(self) -> bool:
        grads = [p.grad for p in self.module.parameters() if p.grad is not None]
        if not grads:
            return True
        return bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())

    # -- the loop -------------------------------------------------------------------------

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
        _check_int("max_steps", max_steps, 0, allow_none=True)
        # One writer per run folder, for the whole call (see unrolled.train.runlock).
        locking = self.out_dir is not None and self.is_main
        with RunLock(self.out_dir) if locking else contextlib.nullcontext() as lock:
            if lock is not None and lock.message:
                warnings.warn(lock.message, RuntimeWarning, stacklevel=2)
            return self._fit(resume, max_steps)

    def _fit(self, resume, max_steps: int | None) -> dict[str, list[dict]]:
        max_steps = self.max_steps if max_steps is None else max_steps
        if resume is not None:
            state = self._read_resume(resume)
            if state is not None:
                self.load_state_dict(state)
        writing = self.out_dir is not None and self.is_main
        if writing:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.out_dir)  # what a killed run left half-written
            self._log = RunLog(self.out_dir)
            # Fresh: empty files. Resumed: cut back to the checkpoint's steps.
            self._log.reset(
                {
                    "train": logged(self.history["train"], self.log_every),
                    "eval": self.history["eval"],
                }
            )
            self._tb = tensorboard_writer(self.out_dir / "tensorboard", self.tensorboard)
        elif self.tensorboard is True:
            tensorboard_writer(".", True)  # fail early if it is required and missing
        try:
            with StopSignals(self.handle_signals) as signals:
                self._signals = signals
                self._loop(max_steps)
        except (FloatingPointError, NonConvergenceError):
            # The parameters are those after the last good step: keep them.
            if writing and self._saved_at != (self.epoch, self.iteration, self.step):
                self.save_checkpoint()
            raise
        finally:
            self._signals = None
            if self._tb is not None:
                self._tb.close()
                self._tb = None
        if writing:
            if self._saved_at != (self.epoch, self.iteration, self.step):
                self.save_checkpoint()
            if self.plots:
                self._write_plots()
        distributed.barrier()  # the files are complete before any process returns
        return self.history

    def _read_resume(self, resume) -> dict | None:
        if resume in ("latest", "auto"):
            self.resolve_resume(resume)  # argument checks; a missing latest.pt is handled below
            found = load_latest(self.out_dir)
            if found is None:
                if resume == "auto":
                    return None
                raise FileNotFoundError(f"resume='latest': no checkpoint in {self.out_dir}")
            state, path = found
        else:
            path = self.resolve_resume(resume)
            if path is None:
                return None
            state = load_checkpoint(path)
        # Named errors before load_state_dict's (tensor, both shapes; NaN weights).
        check_model_state(self.module.state_dict(), state["model"], path)
        return state

    def _stop_requested(self) -> int | None:
        """The signal that asks every process to stop (agreed over processes), or None."""
        received = self._signals.received if self._signals is not None else None
        if not distributed.is_distributed():
            return received
        flag = torch.tensor([float(received or 0)], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return int(flag.item()) or None

    def _interrupt(self, signum: int) -> None:
        path = None
        if self.out_dir is not None and self.is_main:
            if self._saved_at != (self.epoch, self.iteration, self.step):
                self.save_checkpoint()
            path = self.out_dir / LATEST
        distributed.barrier()
        raise TrainingInterrupted(signum, self.step, path)

    def _loop(self, max_steps: int | None) -> None:
        from tqdm.auto import tqdm

        if self.eval_data is not None and not self.history["eval"]:
            self._record_eval()
        try:
            per_epoch = len(self.train_data)  # type: ignore[arg-type]
        except TypeError:
            per_epoch = None
        total = per_epoch * self.epochs if per_epoch is not None else None
        if max_steps is not None and total is not None:
            total = min(total, max_steps)
        bar = tqdm(
            total=total,
            initial=self.step,
            disable=not (self.progress and self.is_main),
            unit="step",
            dynamic_ncols=True,
            leave=False,
        )
        try:
            while self.epoch < self.epochs:
                if max_steps is not None and self.step >= max_steps:
                    return
                epoch = self.epoch
                bar.set_description(f"epoch {epoch + 1}/{self.epochs}")
                batches = epoch_batches(self.train_data, self.seed, epoch, skip=self.iteration)
                while True:
                    if max_steps is not None and self.step >= max_steps:
                        return
                    with Timer() as data_timer:
                        try:
                            batch = next(batches)
                        except StopIteration:
                            break
                    record = self._train_step(batch, epoch, self.iteration)
                    self.iteration += 1
                    self.step += 1
                    record = {
                        "step": self.step,
                        "epoch": epoch,
                        "iteration": self.iteration,
                        **record,
                        "data_time_s": data_timer.seconds,
                    }
                    self.history["train"].append(record)
                    self.unconverged.add(record)
                    if self.step % self.log_every == 0:
                        self._write("train", record)
                        bar.set_postfix(loss=f"{record['loss']:.4g}")
                    bar.update(1)
                    if isinstance(self.checkpoint_every, int) and (
                        self.step % self.checkpoint_every == 0
                    ):
                        self.save_checkpoint()
                    for callback in self.callbacks:
                        callback(self, record)
                    signum = self._stop_requested()
                    if signum is not None:
                        self._interrupt(signum)
                if self.iteration == 0:
                    warnings.warn(
                        f"train_data: epoch {epoch} yielded no batch",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                # One warning line per epoch, with the count (from the main process only).
                self.unconverged.end_epoch(epoch, warn=self.is_main)
                self.epoch += 1
                self.iteration = 0
                if self.eval_data is not None and (
                    self.epoch % self.eval_every == 0 or self.epoch == self.epochs
                ):
                    self._record_eval()
                if self.checkpoint_every == "epoch":
                    self.save_checkpoint()
        finally:
            bar.close()

    def _record_eval(self) -> None:
        result = self.evaluate()
        record = {"step": self.step, "epoch": self.epoch, **result}
        self.history["eval"].append(record)
        self._write("eval", record)
        for callback in self.eval_callbacks:
            callback(self, record)

    def _write(self, kind: str, record: dict) -> None:
        if self._log is not None:
            self._log.append(kind, record, self.history[kind])
        if self._tb is not None:
            for key, value in record.items():
                if key not in ("step", "epoch", "iteration") and isinstance(value, (int, float)):
                    self._tb.add_scalar(f"{kind}/{key}", value, global_step=record["step"])

    def _write_plots(self) -> None:
        losses = [r["loss"] for r in self.history["train"]]
        if losses:
            plot_losses({"train": losses}, self.out_dir / "loss.png", reference=self.baseline_loss)
        self.save_reconstructions(self.out_dir / "reconstructions.png")
