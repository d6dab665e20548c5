"""``unrolled train``: train an unfolded network from a config file and/or flags.

Examples::

    unrolled train --config examples/configs/hqs_blur.toml
    unrolled train --algorithm admm --layers 3 --epochs 5 --out runs/admm
    unrolled train --operator multicoil_mri --acceleration 4 --coils 4 --out runs/mri
    unrolled train --config run.toml --resume            # continue runs/.../latest.pt
    unrolled train --config run.toml --nproc 2           # 2 processes, DDP (gloo / nccl)
    torchrun --standalone --nproc-per-node 2 -m unrolled train --config run.toml

Values are taken from the defaults, then the config file, then the flags (``--set
section.key=value`` reaches every key). The effective configuration is written to
``<out>/config.toml``; ``--resume`` refuses a configuration that differs from it in a key
that changes the steps already taken.

One run per folder: a second ``unrolled train`` on the same ``--out`` stops at once,
naming the process that holds it. Solves that stop at ``solver.max_iter`` are counted
and reported once per epoch (``--on-failure raise``: the run stops at the first).

Exit status: 0 done; 1 stopped by a non-finite loss or (``--on-failure raise``) an
unconverged solve, the last good state saved; 2 bad configuration, data or checkpoint,
a folder in use, a size this machine cannot hold, or a file that cannot be written (the
message names it and why); ``128 + signal`` when stopped by SIGINT / SIGTERM (a
checkpoint is written first once training has started).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Any

import torch

from ..linalg.cg import NonConvergenceError
from ..train import Trainer, distributed
from ..train.checkpoint import LATEST, CheckpointError
from ..train.files import RunWriteError, atomic_write_bytes
from ..train.preflight import check_free_space
from ..train.pretrain import pretrain_denoiser
from ..train.runlock import RunLock, RunLockedError
from ..train.signals import TrainingInterrupted
from .train_checks import check_memory, check_resumable, check_run_folder, checkpoint_bytes
from .train_config import (
    SCHEMA,
    ConfigError,
    Key,
    default_config,
    dump_toml,
    load_config_file,
    merge,
    parse_value,
    set_key,
    validate_config,
)
from .train_models import BEST_MODEL, LAST_MODEL, KeepBest, eval_summary, save_model
from .train_setup import build_experiment

__all__ = ["add_arguments", "build_experiment", "resolve_config", "run", "train"]

# flag -> dotted key (the flag's help comes from the schema)
FLAGS = {
    "--seed": "seed",
    "--device": "device",
    "--out": "out",
    "--nproc": "nproc",
    "--operator": "physics.operator",
    "--blur-sigma": "physics.kernel_sigma",
    "--kernel-size": "physics.kernel_size",
    "--padding": "physics.padding",
    "--keep": "physics.keep",
    "--factor": "physics.factor",
    "--ratio": "physics.ratio",
    "--acceleration": "physics.acceleration",
    "--coils": "physics.coils",
    "--noise": "physics.noise",
    "--noise-sigma": "physics.noise_sigma",
    "--algorithm": "model.algorithm",
    "--layers": "model.layers",
    "--denoiser": "model.denoiser",
    "--depth": "model.depth",
    "--features": "model.features",
    "--trainable": "model.trainable",
    "--checkpoint-layers": "model.checkpoint_layers",
    "--max-iter": "solver.max_iter",
    "--tol": "solver.tol",
    "--backward": "solver.backward",
    "--data": "data.source",
    "--data-path": "data.path",
    "--img-size": "data.size",
    "--channels": "data.channels",
    "--num-images": "data.train_images",
    "--eval-images": "data.eval_images",
    "--epochs": "train.epochs",
    "--batch-size": "train.batch_size",
    "--lr": "train.lr",
    "--dtype": "train.dtype",
    "--max-steps": "train.max_steps",
    "--checkpoint-every": "train.checkpoint_every",
    "--nonfinite": "train.nonfinite",
    "--on-failure": "solver.on_failure",
}


def _schema_key(dotted: str) -> Key:
    section, _, name = dotted.rpartition(".")
    return SCHEMA[section][name] if section else SCHEMA[name]  # type: ignore[index]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``unrolled train``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n\n", 1)[1]
    parser.add_argument(
        "--config", metavar="FILE", help="a .toml, .json or .yaml file (sections as in --set)"
    )
    for flag, dotted in FLAGS.items():
        key = _schema_key(dotted)
        parser.add_argument(
            flag,
            dest=f"opt:{dotted}",
            metavar="VALUE" if key.choices is None else "{" + ",".join(map(str, key.choices)) + "}",
            help=f"{dotted}: {key.expected} (default {key.default!r})",
        )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="set any key, e.g. --set solver.preconditioner=auto (repeatable)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from <out>/latest.pt (an unreadable one is reported and the previous "
        "good checkpoint used)",
    )
    parser.add_argument(
        "--skip-bad-images",
        action="store_true",
        help="data.skip_bad_images: leave out image files that cannot be read or are smaller "
        "than the crop, listing them in a warning (default: refuse the folder, naming them)",
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the effective config as TOML and exit"
    )


def _flag_value(dotted: str, text: str) -> Any:
    if dotted == "model.trainable":  # a comma-separated list on the command line
        return [] if text.strip() in ("", "none") else [s.strip() for s in text.split(",")]
    if dotted in ("out", "data.path", "data.eval_path", "device"):
        return text  # paths and names stay strings ("1" is a folder name too)
    return parse_value(text)


def resolve_config(args: argparse.Namespace) -> dict:
    """Defaults, then the config file, then the flags; checked. Raises ConfigError."""
    config = default_config()
    if args.config:
        merge(config, load_config_file(args.config), where=f"config file {args.config}")
    for name, text in vars(args).items():
        if name.startswith("opt:") and text is not None:
            dotted = name[4:]
            set_key(config, dotted, _flag_value(dotted, text))
    for item in args.set:
        dotted, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"--set: expected SECTION.KEY=VALUE, got {item!r}")
        set_key(config, dotted.strip(), _flag_value(dotted.strip(), text.strip()))
    if getattr(args, "skip_bad_images", False):
        set_key(config, "data.skip_bad_images", True)
    return validate_config(config)


# -- running ----------------------------------------------------------------------------------


def _say(message: str) -> None:
    if distributed.rank() == 0:
        print(f"unrolled train: {message}", flush=True)


def train(config: dict, *, resume: bool = False, device: torch.device | str = "cpu") -> int:
    """Build the experiment of ``config`` and fit it; the exit status of the command."""

    out = Path(config["out"]).resolve()
    try:
        parts = build_experiment(config, device)
    except ConfigError as err:
        _say_error(err)
        return 2
    steps = config["train"]["pretrain_steps"]
    if steps and not resume:
        # Before the Trainer, whose DDP wrapper then gives every process rank 0's weights.
        # Not resumable by itself: a run killed while pretraining starts it again.
        _say(f"pretraining the denoiser: {steps} steps of Gaussian denoising")
        losses = pretrain_denoiser(
            parts["model"].priors[0].denoiser,
            parts["pretrain_data"],
            steps=steps,
            sigma_max=2 * max(config["physics"]["noise_sigma"], 0.01),
            lr=config["train"]["pretrain_lr"],
            seed=config["seed"],
            device=device,
        )
        _say(f"pretraining done, loss {losses[0]:.4g} -> {losses[-1]:.4g}")
    if config["train"]["freeze_denoiser"]:
        # Fixed in the optimiser's eyes only: the data steps and the scalars still
        # backpropagate through the denoiser.
        parts["model"].priors.requires_grad_(False)
        _say("the denoiser's weights stay fixed: training the per-layer scalars only")
    trainer = Trainer(
        parts["model"],
        parts["physics"],
        parts["train_data"],
        eval_data=parts["eval_data"],
        eval_callbacks=[KeepBest(config, out / BEST_MODEL)],
        **parts["trainer_kwargs"],
    )
    policy = config["solver"]["on_failure"]
    # The count of unconverged solves: one line per epoch ('warn'), or none ('ignore').
    trainer.unconverged.report = (
        _ignore if policy == "ignore" else (lambda line: _say_error(f"warning: {line}"))
    )
    with contextlib.ExitStack() as stack:
        try:
            if trainer.is_main:
                # Held already by `unrolled train` (re-entrant); under torchrun rank 0 takes
                # it here, for the whole run.
                lock = stack.enter_context(RunLock(out))
                if lock.message:
                    _say(lock.message)
                check_run_folder(config, resume)
                if resume:
                    check_resumable(config)
                atomic_write_bytes(dump_toml(config).encode(), out / "config.toml", "config")
                low = check_free_space(
                    out, checkpoint_bytes(trainer), 3 + config["train"]["keep_last"]
                )
                if low:
                    _say_error(f"warning: {low}")
            where = "resuming" if resume else "writing"
            _say(
                f"{where} in {out} (latest.pt, train_log.csv/.jsonl, eval_log.csv/.jsonl, "
                f"loss.png, reconstructions.png) on {trainer.world_size} process(es), "
                f"device {trainer.device}"
            )
            history = trainer.fit(resume="latest" if resume else None)
            if trainer.is_main:
                save_model(trainer, config, out / LAST_MODEL)
        except (ConfigError, CheckpointError, RunLockedError) as err:
            _say_error(err)
            return 2
        except RunWriteError as err:
            _say_error(
                f"{err}; the last good checkpoint and the logs up to it are in {out} (free "
                "some space or fix the permission, then continue with --resume)"
            )
            return 2
        except TrainingInterrupted as stop:
            _say(f"{stop}; continue with the same command and --resume")
            return stop.exit_code
        except (FloatingPointError, NonConvergenceError) as err:
            hint = (
                " (solver.on_failure = 'raise'; raise solver.max_iter, or --on-failure warn)"
                if isinstance(err, NonConvergenceError)
                else ""
            )
            _say(f"stopped: {err}{hint}; the last good state is in {out / 'latest.pt'}")
            return 1
    summary = f"done: {trainer.step} steps; {trainer.unconverged.summary()}"
    if history["eval"]:
        summary += "\n" + eval_summary(history["eval"][-1])
    _say(f"{summary}\nmodels {out / BEST_MODEL}, {out / LAST_MODEL}; checkpoint {out / LATEST}")
    return 0


def _ignore(line: str) -> None:
    pass


def _say_error(err: object) -> None:
    if distributed.rank() == 0:
        print(f"unrolled train: {err}", file=sys.stderr, flush=True)


def _worker(config: dict, resume: bool) -> int:
    """One process of a run (rank from the environment when distributed)."""
    device = distributed.init_from_env(config["device"])
    try:
        return train(config, resume=resume, device=device)
    finally:
        distributed.shutdown()


def run(args: argparse.Namespace) -> int:
    """Entry point of ``unrolled train``."""
    try:
        return _run(args)
    except KeyboardInterrupt:
        # Before training starts there is nothing to save: say so in a line, no traceback.
        print(
            "unrolled train: stopped by SIGINT during start-up, before the first training "
            "step; no checkpoint was written: run the same command again to start",
            file=sys.stderr,
            flush=True,
        )
        return 130


def _run(args: argparse.Namespace) -> int:
    try:
        config = resolve_config(args)
        if args.print_config:
            print(dump_toml(config), end="")
            return 0
        check_memory(config)
    except (ConfigError, CheckpointError) as err:
        _say_error(err)
        return 2
    if "WORLD_SIZE" in os.environ:  # started by torchrun (or by launch below)
        return _worker(config, args.resume)
    # One writer per run folder: the lock is taken before the folder is looked at and
    # held until every process of the run has ended.
    try:
        lock = RunLock(config["out"]).acquire()
    except (RunLockedError, RunWriteError) as err:
        _say_error(err)
        return 2
    try:
        if lock.message:
            _say(lock.message)
        try:
            check_run_folder(config, args.resume)
            if args.resume:
                check_resumable(config)
        except (ConfigError, CheckpointError) as err:
            _say_error(err)
            return 2
        nproc = config["nproc"]
        if nproc > 1:
            _say(f"starting {nproc} processes on this machine (torch.distributed)")
            # The workers learn from their environment that this process holds the lock.
            saved = {k: os.environ.get(k) for k in lock.environment()}
            os.environ.update(lock.environment())
            try:
                return distributed.launch(_worker, nproc, config, args.resume)
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
        return _worker(config, args.resume)
    finally:
        lock.release()
