"""The demo's memory measurements: one training step's peak and saved bytes in this
process, and the peak resident memory of a fresh process running a few steps."""

from __future__ import annotations

import functools
import os

import torch
from torch import Tensor, nn

from ...train import (
    PeakMemoryMeter,
    SavedTensorMeter,
    Trainer,
    epoch_batches,
    make_loader,
    mse,
    peak_rss_subprocess,
)
from .config import DemoConfig, Mode, parse_modes
from .experiment import build_data, build_model, build_physics, fidelity_of

__all__ = ["first_batch", "measure_step", "rss_of_mode"]


# -- memory ---------------------------------------------------------------------------------

#: kineto's log level: its profiler prints a start and a stop notice (level 5, above its
#: errors) each time PeakMemoryMeter records CPU allocations; 6 keeps the demo's output to
#: the demo. Kineto reads the level when the profiler first starts in a process.
KINETO_QUIET = "6"


def _forward_backward(model: nn.Module, physics: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    loss = mse(model(y, physics), x)
    loss.backward()
    return loss


def measure_step(
    model: nn.Module, physics: nn.Module, x: Tensor, y: Tensor, device: torch.device | str
) -> dict:
    """Memory of one training step's forward and backward, after one unmeasured warm-up step
    (so one-off allocations, e.g. FFT plans and thread pools, are left out).

    Returns ``peak_bytes`` (every allocation and free over forward and backward, tensors
    recomputed by checkpointing included: :class:`~unrolled.train.PeakMemoryMeter`),
    ``saved_bytes`` (peak of bytes held for backward, :class:`SavedTensorMeter`; it does not
    see what checkpointing recomputes), ``meter`` and the CG iterations of the step. The
    gradients are cleared afterwards; the parameters are not changed.
    """
    device = torch.device(device)
    model.zero_grad(set_to_none=True)
    _forward_backward(model, physics, x, y)
    model.zero_grad(set_to_none=True)
    stats = fidelity_of(model).stats
    stats.reset()
    os.environ.setdefault("KINETO_LOG_LEVEL", KINETO_QUIET)  # a level set by the user wins
    with PeakMemoryMeter(device) as peak:
        with SavedTensorMeter() as saved:
            loss = mse(model(y, physics), x)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return {
        "peak_bytes": int(peak.peak_bytes),
        "saved_bytes": int(saved.peak_saved_bytes),
        "meter": (
            "torch.cuda.max_memory_allocated"
            if device.type == "cuda"
            else "CPU allocator events (torch profiler)"
        ),
        "cg_forward": stats.mean_forward,
        "cg_backward": stats.mean_backward,
    }


def first_batch(cfg: DemoConfig, loader, trainer: Trainer):
    """The first training batch and its measurement, exactly as the trainer's step 1."""
    x = next(epoch_batches(loader, cfg.seed, 0))
    x = (x[0] if isinstance(x, (tuple, list)) else x).to(trainer.device)
    return x, trainer.measure(x, 0, 0)


# -- RSS of a separate process ----------------------------------------------------------------


def _rss_setup(config: dict, mode_name: str, state: dict, threads: int):
    """In the child: build everything a training step needs (not measured)."""
    torch.set_num_threads(threads)
    cfg = DemoConfig.from_dict(config)
    (mode,) = parse_modes(mode_name)
    physics = build_physics(cfg)
    model = build_model(cfg, mode)
    model.load_state_dict(state)
    train, _, _ = build_data(cfg)
    loader = make_loader(train, cfg.batch_size)
    trainer = Trainer(model, physics, loader, lr=cfg.lr, progress=False, seed=cfg.seed)
    x, y = first_batch(cfg, loader, trainer)
    # Touch the libraries' one-off buffers (thread pools, conv kernels) on a tiny input.
    small = torch.randn(1, 2, 8, 8, requires_grad=True)
    nn.functional.conv2d(small, torch.randn(2, 2, 3, 3)).sum().backward()
    return model, physics, trainer.optimizer, x, y


def _rss_steps(state, steps: int) -> float:
    """In the child: ``steps`` training steps (forward, backward, Adam update)."""
    model, physics, optimizer, x, y = state
    loss = torch.zeros(())
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = _forward_backward(model, physics, x, y)
        optimizer.step()
    return float(loss.detach())


def rss_of_mode(cfg: DemoConfig, mode: Mode, state: dict) -> dict:
    """Peak resident memory above the baseline (imports, data, model built) of a fresh
    process running ``cfg.rss_steps`` training steps of ``mode`` on the first batch (CPU)."""
    cpu_cfg = DemoConfig.from_dict({**cfg.to_dict(), "device": "cpu"})
    setup = functools.partial(
        _rss_setup, cpu_cfg.to_dict(), mode.name, state, torch.get_num_threads()
    )
    report = peak_rss_subprocess(_rss_steps, cfg.rss_steps, setup=setup, timeout=600)
    return {
        "peak_above_baseline_bytes": int(report.peak_above_baseline_bytes),
        "baseline_bytes": int(report.baseline_bytes),
        "peak_bytes": int(report.peak_bytes),
        "hwm_reset": bool(report.hwm_reset),
        "steps": cfg.rss_steps,
    }
