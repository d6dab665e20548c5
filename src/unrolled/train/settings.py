"""The plain settings of a training run, checked once when the run is made.

A :class:`~unrolled.train.Trainer` takes two kinds of arguments: objects with behaviour
(the model, the data, an optimiser or loss of one's own, callbacks) and plain values
(how many epochs, where to write, how often). The plain values are the fields of
:class:`TrainerSettings`, passed to the Trainer as keywords; they are checked here, so
the parts of the Trainer receive values that are known to be valid. What each one
means is told in the training guide.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._validation import check_bool, check_choice, check_int, check_real

__all__ = ["NONFINITE", "SETTING_NAMES", "TrainerSettings", "check_parts"]

#: what a step with a non-finite loss or gradient does
NONFINITE = ("raise", "skip")


@dataclasses.dataclass(frozen=True)
class TrainerSettings:
    """The plain settings of a :class:`~unrolled.train.Trainer` (its keywords other than
    the objects it is given), checked and normalised when made: ``out_dir`` becomes a
    ``Path``, ``device`` a ``torch.device``, ``measure_memory=True`` the integer 1.

    Each field is described in the training guide, section "Arguments".
    """

    lr: float = 1e-3
    scalar_lr: float | None = None
    epochs: int = 1
    device: torch.device | str = "cpu"
    seed: int = 0
    out_dir: str | os.PathLike | None = None
    log_every: int = 1
    checkpoint_every: int | str | None = "epoch"
    keep_last: int = 0
    eval_every: int = 1
    max_steps: int | None = None
    progress: bool = True
    measure_memory: bool | int = False
    tensorboard: bool | str = "auto"
    grad_clip: float | None = None
    nonfinite: str = "raise"
    max_val: float = 1.0
    plots: bool = True
    handle_signals: bool = True

    def __post_init__(self) -> None:
        every = self.checkpoint_every
        if not (every in ("epoch", None) or _positive_int(every)):
            raise ValueError(
                f"checkpoint_every: expected 'epoch', an integer >= 1 or None, got {every!r}"
            )
        if self.tensorboard not in ("auto", True, False):
            raise ValueError(
                f"tensorboard: expected 'auto', True or False, got {self.tensorboard!r}"
            )
        memory = self.measure_memory
        checked = {
            "lr": check_real("lr", self.lr, positive=True),
            "scalar_lr": check_real("scalar_lr", self.scalar_lr, positive=True, allow_none=True),
            "epochs": check_int("epochs", self.epochs, minimum=1),
            "device": torch.device(self.device),
            "seed": check_int("seed", self.seed, minimum=0),
            "out_dir": Path(self.out_dir) if self.out_dir is not None else None,
            "log_every": check_int("log_every", self.log_every, minimum=1),
            "keep_last": check_int("keep_last", self.keep_last, minimum=0),
            "eval_every": check_int("eval_every", self.eval_every, minimum=1),
            "max_steps": check_int("max_steps", self.max_steps, minimum=0, allow_none=True),
            # True: every step; an integer k: steps 1, k+1, 2k+1, ...; False: never.
            "measure_memory": check_int(
                "measure_memory", int(memory) if isinstance(memory, bool) else memory, minimum=0
            ),
            "grad_clip": check_real("grad_clip", self.grad_clip, positive=True, allow_none=True),
            "nonfinite": check_choice("nonfinite", self.nonfinite, NONFINITE),
            "max_val": check_real("max_val", self.max_val, positive=True),
            "handle_signals": check_bool("handle_signals", self.handle_signals),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    @classmethod
    def from_keywords(cls, keywords: dict[str, Any]) -> TrainerSettings:
        """The settings from a Trainer's keywords, naming any keyword that is not one."""
        fields = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in keywords if k not in fields]
        if unknown:
            raise TypeError(
                f"Trainer: unexpected keyword argument {unknown[0]!r}; the objects are "
                "eval_data, optimizer, loss, scheduler, callbacks, eval_callbacks, "
                f"baselines, baseline_data, ddp_options, and the settings {', '.join(fields)}"
            )
        return cls(**keywords)


#: the Trainer keywords that are settings
SETTING_NAMES = tuple(f.name for f in dataclasses.fields(TrainerSettings))


def check_parts(model, physics, train_data, eval_data, loss, callbacks) -> None:
    """Refuse, naming the argument, objects the Trainer cannot use."""
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


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
