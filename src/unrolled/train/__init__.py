"""Training: trainer, metrics, checkpoints, logs, plots, memory and time meters."""

from .checkpoint import (
    CHECKPOINT_VERSION,
    CheckpointError,
    load_checkpoint,
    numbered_checkpoints,
    save_checkpoint,
)
from .logs import RunLog, tensorboard_writer
from .memory import (
    MemoryReport,
    PeakMemoryMeter,
    RSSReport,
    SavedTensorMeter,
    cuda_peak,
    peak_allocated,
    peak_rss_subprocess,
)
from .metrics import mse, psnr
from .plots import plot_losses, plot_reconstructions
from .seeding import derive_seed, epoch_batches, make_loader, rng_state, seeded_noise, set_rng_state
from .timer import Timer, median
from .trainer import Trainer, first_tensor

__all__ = [
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "MemoryReport",
    "PeakMemoryMeter",
    "RSSReport",
    "RunLog",
    "SavedTensorMeter",
    "Timer",
    "Trainer",
    "cuda_peak",
    "derive_seed",
    "epoch_batches",
    "first_tensor",
    "load_checkpoint",
    "make_loader",
    "median",
    "mse",
    "numbered_checkpoints",
    "peak_allocated",
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
