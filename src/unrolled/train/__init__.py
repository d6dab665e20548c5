"""Training: trainer, metrics, checkpoints, logs, plots, memory and time meters."""

from . import distributed
from .checkpoint import (
    CHECKPOINT_VERSION,
    CheckpointError,
    CheckpointMismatch,
    CheckpointWarning,
    check_model_state,
    load_checkpoint,
    load_latest,
    numbered_checkpoints,
    save_checkpoint,
)
from .convergence import UnconvergedSolves, UnconvergedSolvesWarning, count_unconverged
from .files import RunWriteError
from .logs import RunLog, tensorboard_writer
from .memory import PeakMemoryMeter, SavedTensorMeter
from .metrics import mse, psnr
from .plots import plot_losses, plot_reconstructions
from .preflight import check_free_space, machine_memory
from .rss import RSSReport, peak_rss_subprocess
from .runlock import RunLock, RunLockedError
from .seeding import derive_seed, epoch_batches, make_loader, rng_state, seeded_noise, set_rng_state
from .settings import TrainerSettings
from .signals import StopSignals, TrainingInterrupted
from .statistics import StatisticsSource
from .timer import Timer, median
from .trainer import Trainer, first_tensor

__all__ = [
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "CheckpointMismatch",
    "CheckpointWarning",
    "PeakMemoryMeter",
    "RSSReport",
    "RunLock",
    "RunLockedError",
    "RunLog",
    "RunWriteError",
    "SavedTensorMeter",
    "StatisticsSource",
    "StopSignals",
    "Timer",
    "Trainer",
    "TrainerSettings",
    "TrainingInterrupted",
    "UnconvergedSolves",
    "UnconvergedSolvesWarning",
    "check_free_space",
    "check_model_state",
    "count_unconverged",
    "derive_seed",
    "distributed",
    "epoch_batches",
    "first_tensor",
    "load_checkpoint",
    "load_latest",
    "machine_memory",
    "make_loader",
    "median",
    "mse",
    "numbered_checkpoints",
    "peak_rss_subprocess",
    "plot_losses",
    "plot_reconstructions",
    "psnr",
    "rng_state",
    "save_checkpoint",
    "seeded_noise",
    "set_rng_state",
    "tensorboard_writer",
]
