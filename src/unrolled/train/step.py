"""One optimisation step: forward, loss, backward, update, under a non-finite policy.

A step's loss and its finiteness are reduced over the processes before anything else:
DDP's backward is collective, so every process must take the same decision. A step
whose loss or gradient is not finite raises (``nonfinite="raise"``, parameters left as
they were) or is skipped (``"skip"``, no update, the record gets ``skipped=1``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..unfolded.scalars import LayerScalars
from . import distributed
from .memory import PeakMemoryMeter, SavedTensorMeter
from .statistics import StepStatistics
from .timer import Timer

__all__ = ["TrainStep", "make_optimizer"]


class TrainStep:
    """The update of ``module``'s parameters from one batch.

    Args:
        module: the model whose parameters are updated (unwrapped).
        optimizer, scheduler: the update and the learning-rate schedule (or ``None``).
        inference: ``y -> x_hat`` with the (possibly DDP-wrapped) model.
        loss: ``(x_hat, x, y) -> scalar tensor``.
        grad_clip, nonfinite, measure_memory, device: the run's settings, checked by
            :class:`~unrolled.train.TrainerSettings` (``measure_memory``: every
            this many steps, 0: never; see :class:`~unrolled.train.PeakMemoryMeter` and
            :class:`~unrolled.train.SavedTensorMeter`).
    """

    def __init__(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        *,
        inference: Callable[[Tensor], Tensor],
        loss: Callable[[Tensor, Tensor, Tensor], Tensor],
        grad_clip: float | None,
        nonfinite: str,
        measure_memory: int,
        device: torch.device,
    ):
        self.module = module
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.inference = inference
        self.loss = loss
        self.grad_clip = grad_clip
        self.nonfinite = nonfinite
        self.measure_memory = measure_memory
        self.device = device
        self.statistics = StepStatistics(module)

    def __call__(
        self, x: Tensor, measure: Callable[[], Tensor], *, done: int, where: str
    ) -> dict[str, Any]:
        """Take the step on clean images ``x`` whose measurements ``measure()`` makes;
        ``done`` steps came before it, ``where`` names it in errors. Returns the record:
        ``loss``, ``time_s``, ``lr``, the statistics' columns, and ``skipped`` or the
        memory columns when they apply."""
        self.statistics.reset()
        record: dict[str, Any] = {}
        # Steps 1, k+1, 2k+1, ... (the first step and every k-th after it).
        metered = self.measure_memory > 0 and done % self.measure_memory == 0
        with Timer(self.device) as timer:
            y = measure()
            self.optimizer.zero_grad(set_to_none=True)
            # The peak covers forward and backward (the optimizer's state is not in it).
            with PeakMemoryMeter(self.device) if metered else contextlib.nullcontext() as peak:
                with SavedTensorMeter() if metered else contextlib.nullcontext() as saved:
                    loss = self.loss(self.inference(y), x, y)
                value, finite = self._agree_on_loss(loss, x.shape[0], done, where)
                if finite:
                    loss.backward()
            if finite and not self._gradients_finite():
                if self.nonfinite == "raise":
                    self.optimizer.zero_grad(set_to_none=True)
                    raise FloatingPointError(
                        f"gradient: non-finite values at {where} (step {done + 1}, loss "
                        f"{value}); parameters left as after step {done} (nonfinite='skip' "
                        "skips such steps instead)"
                    )
                finite = False
            self._update(finite, record)
        record.update(
            loss=value, time_s=timer.seconds, lr=float(self.optimizer.param_groups[0]["lr"])
        )
        if metered:
            record["peak_bytes"] = int(peak.peak_bytes)
            record["saved_peak_bytes"] = int(saved.peak_saved_bytes)
        record.update(self.statistics.columns(self.device))
        return record

    def _agree_on_loss(self, loss: Any, batch: int, done: int, where: str) -> tuple[float, bool]:
        """The loss of the global batch and whether it is finite on every process."""
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise ValueError(
                f"loss: expected a scalar tensor from compute_loss(x_hat, x, y, physics), got "
                f"{loss.shape if isinstance(loss, Tensor) else type(loss).__name__}"
            )
        local = loss.detach().reshape(()).to(torch.float64)
        finite_here = bool(torch.isfinite(local))
        total, count, nonfinite = distributed.all_reduce_sum(
            torch.stack(
                [
                    local * batch if finite_here else local.new_zeros(()),
                    local.new_tensor(float(batch)),
                    local.new_tensor(0.0 if finite_here else 1.0),
                ]
            )
        ).tolist()
        finite = nonfinite == 0
        value = total / count if finite else float(local)
        if not finite and self.nonfinite == "raise":
            raise FloatingPointError(
                f"loss: non-finite value {value} at {where} (step {done + 1}); parameters "
                f"left as after step {done} (nonfinite='skip' skips such steps instead)"
            )
        return value, finite

    def _gradients_finite(self) -> bool:
        # After DDP's all-reduce the gradients are the same on every process.
        grads = [p.grad for p in self.module.parameters() if p.grad is not None]
        if not grads:
            return True
        return bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())

    def _update(self, finite: bool, record: dict[str, Any]) -> None:
        if not finite:
            self.optimizer.zero_grad(set_to_none=True)
            record["skipped"] = 1
            return
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.module.parameters(), self.grad_clip)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()


def make_optimizer(
    optimizer: Any, lr: float, module: nn.Module, scalar_lr: float | None = None
) -> torch.optim.Optimizer:
    """``optimizer`` itself, Adam with learning rate ``lr`` (``None``), or what a factory
    ``params -> Optimizer`` makes, over ``module``'s trainable parameters.

    ``scalar_lr``: the learning rate of the unfolded algorithms' per-layer scalars (step
    sizes, noise levels: the parameters of every :class:`~unrolled.unfolded.LayerScalars`
    in ``module``), which then form their own parameter group; the factory receives the
    two groups. ``None``: one group, every parameter at ``lr``.
    """
    if isinstance(optimizer, torch.optim.Optimizer):
        if scalar_lr is not None:
            raise ValueError(
                "scalar_lr: expected None with an optimizer instance (its parameter groups "
                f"are already fixed), got {scalar_lr!r}; pass a factory params -> Optimizer"
            )
        return optimizer
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model: expected at least one parameter with requires_grad, got none")
    groups: list = params
    if scalar_lr is not None:
        scalar_ids = {
            id(p)
            for m in module.modules()
            if isinstance(m, LayerScalars)
            for p in m.parameters()
            if p.requires_grad
        }
        scalars = [p for p in params if id(p) in scalar_ids]
        weights = [p for p in params if id(p) not in scalar_ids]
        groups = [
            group
            for group in ({"params": weights}, {"params": scalars, "lr": scalar_lr})
            if group["params"]
        ]
    if optimizer is None:
        return torch.optim.Adam(groups, lr=lr)  # lr checked by TrainerSettings
    if callable(optimizer):
        made = optimizer(groups)
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
