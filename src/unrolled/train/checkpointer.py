"""When and where a training run writes its checkpoints, and which one it resumes from.

The file format (atomic writes, safe loading, the fallback to an older good file) is
:mod:`unrolled.train.checkpoint`'s; this part says what of a Trainer a checkpoint holds,
schedules the writes and resolves ``resume=``. Only the main process writes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from . import distributed
from .checkpoint import (
    LATEST,
    CheckpointMismatch,
    check_model_state,
    load_checkpoint,
    load_latest,
    save_checkpoint,
)
from .seeding import rng_state, set_rng_state

if TYPE_CHECKING:
    from .trainer import Trainer

__all__ = ["Checkpointer"]

#: where a run stands: (epoch, iteration within it, step in all)
Position = tuple[int, int, int]


class Checkpointer:
    """Checkpoints of a run in ``out_dir`` (``None``: none are written).

    Args:
        out_dir: the run folder.
        every: ``"epoch"``, a number of steps, or ``None`` (only at the end).
        keep_last: also keep this many numbered ``checkpoint-<step>.pt`` files.

    Both are checked by :class:`~unrolled.train.TrainerSettings`.
    """

    def __init__(self, out_dir: Path | None, every: int | str | None = "epoch", keep_last: int = 0):
        self.out_dir = out_dir
        self.every = every
        self.keep_last = keep_last
        #: the position of the last checkpoint written or read (None: none yet)
        self.saved_at: Position | None = None

    @property
    def writes(self) -> bool:
        return self.out_dir is not None and distributed.rank() == 0

    def due_after_step(self, step: int) -> bool:
        return isinstance(self.every, int) and step % self.every == 0

    @property
    def due_after_epoch(self) -> bool:
        return self.every == "epoch"

    def state_of(self, trainer: Trainer) -> dict:
        """What a checkpoint of ``trainer`` holds: the weights and states of the model,
        optimiser, scheduler and physics, the position, the seed, the RNG states and the
        history (plain types and tensors only)."""
        t = trainer
        return {
            "model": t.module.state_dict(),
            "optimizer": t.optimizer.state_dict(),
            "scheduler": t.scheduler.state_dict() if t.scheduler is not None else None,
            "physics": t.physics.state_dict(),
            "epoch": t.epoch,
            "iteration": t.iteration,
            "step": t.step,
            "seed": t.settings.seed,
            "rng": rng_state(),
            "history": t.history,
            "torch_version": str(torch.__version__),
        }

    def restore(self, trainer: Trainer, state: dict) -> None:
        """Put ``trainer`` where ``state`` (from :meth:`state_of`) says, RNG included."""
        t, seed = trainer, trainer.settings.seed
        if state.get("seed", seed) != seed:
            raise CheckpointMismatch(
                f"seed: the checkpoint was written with seed={state['seed']}, this trainer has "
                f"seed={seed}; resuming would not reproduce the run"
            )
        t.module.load_state_dict(state["model"])
        t.optimizer.load_state_dict(state["optimizer"])
        if t.scheduler is not None and state.get("scheduler") is not None:
            t.scheduler.load_state_dict(state["scheduler"])
        if state.get("physics") is not None:
            t.physics.load_state_dict(state["physics"])
        t.epoch = int(state["epoch"])
        t.iteration = int(state["iteration"])
        t.step = int(state["step"])
        t.history = {kind: list(state["history"][kind]) for kind in ("train", "eval")}
        set_rng_state(state["rng"])
        self.saved_at = t.position
        t.unconverged.reset()
        t.unconverged.add(t.history["train"])

    def save(self, state: dict, position: Position) -> Path | None:
        """Write ``state`` as ``latest.pt`` (main process only); its path, else None."""
        if not self.writes:
            return None
        path = save_checkpoint(state, self.out_dir, step=position[2], keep_last=self.keep_last)
        self.saved_at = position
        return path

    def resolve(self, resume: str | os.PathLike) -> Path | None:
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

    def read(self, resume: str | os.PathLike, model_state: dict) -> dict | None:
        """The checkpoint to resume from, checked against the model's ``model_state``;
        ``None`` for a fresh start (``"auto"`` with no checkpoint)."""
        if resume in ("latest", "auto"):
            self.resolve(resume)  # argument checks; a missing latest.pt is handled below
            found = load_latest(self.out_dir)
            if found is None:
                if resume == "auto":
                    return None
                raise FileNotFoundError(f"resume='latest': no checkpoint in {self.out_dir}")
            state, path = found
        else:
            path = self.resolve(resume)
            if path is None:
                return None
            state = load_checkpoint(path)
        # Named errors before load_state_dict's (tensor, both shapes; NaN weights).
        check_model_state(model_state, state["model"], path)
        return state
