"""Training: trainer, metrics, checkpoints, memory and time meters."""

from .memory import MemoryReport, SavedTensorMeter, cuda_peak

__all__ = ["MemoryReport", "SavedTensorMeter", "cuda_peak"]
