"""``unrolled train``: train an unfolded network from a config file and/or flags.

Examples::

    unrolled train --config examples/configs/hqs_blur.toml
    unrolled train --algorithm admm --layers 3 --epochs 5 --out runs/admm
    unrolled train --config run.toml --resume            # continue runs/.../latest.pt
    unrolled train --config run.toml --nproc 2           # 2 processes, DDP (gloo / nccl)
    torchrun --standalone --nproc-per-node 2 -m unrolled train --config run.toml

Values are taken from the defaults, then the config file, then the flags (``--set
section.key=value`` reaches every key). The effective configuration is written to
``<out>/config.toml``; ``--resume`` refuses a configuration that differs from it in a key
that changes the steps already taken. Exit status: 0 done, 2 bad configuration or
checkpoint, ``128 + signal`` when stopped by SIGINT / SIGTERM (a checkpoint is written
first).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path
from typing import Any

import torch

from ..physics.spec import blur_spec, physics_from_spec
from . import distributed
from .checkpoint import LATEST, PREVIOUS, CheckpointError, numbered_checkpoints
from .config import (
    RESUME_MAY_CHANGE,
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
from .pretrain import pretrain_denoiser
from .signals import TrainingInterrupted

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
    return validate_config(config)


# -- building the experiment ---------------------------------------------------------------


class _Collate:
    """Stack a list of ``(C, H, W)`` images into a batch of the run's dtype (picklable,
    for loader workers)."""

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype

    def __call__(self, items):
        return torch.stack(list(items)).to(self.dtype)


def _datasets(config: dict):
    from .. import data as datasets

    d, seed = config["data"], config["seed"]
    size, channels = d["size"], d["channels"]
    if d["source"] == "deadleaves":
        train = datasets.DeadLeaves(size, channels, length=d["train_images"], seed=seed)
        # Another seed: evaluation images are never training images.
        evals = datasets.DeadLeaves(
            size, channels, length=max(d["eval_images"], 1), seed=seed + 1_000_003
        )
    elif d["source"] in ("samples", "mixed"):
        train = datasets.SampleImages(
            "train", crop=size, channels=channels, length=d["train_images"], seed=seed
        )
        if d["source"] == "mixed":
            leaves = datasets.DeadLeaves(size, channels, length=d["train_images"], seed=seed)
            train = datasets.Interleaved([train, leaves])
        # Held-out photographs, larger than the training crops (the networks are fully
        # convolutional), as random crops fixed by the seed.
        evals = datasets.SampleImages(
            "eval",
            crop=min(2 * size, 256),
            channels=channels,
            length=max(d["eval_images"], 1),
            random_crops=True,
            seed=seed + 1,
        )
    else:
        train = datasets.ImageFolder(d["path"], crop=size, channels=channels, seed=seed)
        evals = datasets.ImageFolder(
            d["eval_path"] or d["path"], crop=size, channels=channels, train=False
        )
    if d["eval_images"] == 0:
        evals = None
    elif evals is not None and len(evals) > d["eval_images"]:
        evals = torch.utils.data.Subset(evals, range(d["eval_images"]))
    return train, evals


def physics_spec(config: dict) -> dict:
    """The measurement of ``config`` as plain values (stored with the saved models)."""
    p = config["physics"]
    noise = p["noise_sigma"] if p["noise"] == "gaussian" else 0.0
    return blur_spec(
        p["kernel_sigma"], padding=p["padding"], noise_sigma=noise, kernel_size=p["kernel_size"]
    )


def _cosine_schedule(train: dict, per_epoch: int):
    """A factory of the cosine decay of the learning rate to 0 over the run's steps."""
    total = per_epoch * train["epochs"]
    if train["max_steps"] is not None:
        total = min(total, train["max_steps"])
    return functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=max(total, 1))


def build_experiment(config: dict, device: torch.device | str = "cpu") -> dict:
    """The parts of a run described by ``config``: ``model``, ``physics``, ``train_data``
    (a loader sharded over processes when distributed), ``eval_data`` (or None) and the
    Trainer keyword arguments ``trainer_kwargs``. The model is initialised from
    ``config["seed"]`` (the same on every process)."""
    import unrolled as ur

    dtype = torch.float64 if config["train"]["dtype"] == "float64" else torch.float32
    m, s, t = config["model"], config["solver"], config["train"]
    physics = physics_from_spec(physics_spec(config), dtype=dtype)
    solver = ur.CG(
        max_iter=s["max_iter"],
        tol=s["tol"],
        on_failure=s["on_failure"],
        preconditioner=None if s["preconditioner"] == "none" else "auto",
    )
    fidelity = ur.L2(solver=solver, backward=s["backward"])
    channels = config["data"]["channels"]
    torch.manual_seed(config["seed"])  # the model's initial weights
    if m["denoiser"] == "dncnn":
        denoiser = ur.models.DnCNN(channels, channels, depth=m["depth"], features=m["features"])
    else:
        denoiser = ur.models.UNet(channels, channels, base=m["features"], levels=m["levels"])
    scalars = {"stepsize": m["stepsize"], "sigma": m["sigma"]}
    model = ur.unfolded.build(
        m["algorithm"],
        layers=m["layers"],
        denoiser=denoiser,
        fidelity=fidelity,
        trainable=tuple(m["trainable"]),
        share_parameters=m["share_parameters"],
        share_denoiser=m["share_denoiser"],
        checkpoint_layers=m["checkpoint_layers"],
        init=m["init"],
        **scalars,
    ).to(dtype)
    train_set, eval_set = _datasets(config)
    from .trainer import Trainer

    collate = _Collate(dtype)
    train_data = Trainer.make_loader(
        train_set,
        t["batch_size"],
        shuffle=True,
        num_workers=config["data"]["num_workers"],
        seed=config["seed"],
        collate_fn=collate,
    )
    eval_data = None
    if eval_set is not None:
        eval_data = torch.utils.data.DataLoader(
            eval_set, batch_size=t["batch_size"], shuffle=False, collate_fn=collate
        )
    trainer_kwargs = dict(
        lr=t["lr"],
        epochs=t["epochs"],
        device=device,
        seed=config["seed"],
        out_dir=config["out"],
        log_every=t["log_every"],
        checkpoint_every=t["checkpoint_every"],
        keep_last=t["keep_last"],
        eval_every=t["eval_every"],
        max_steps=t["max_steps"],
        grad_clip=t["grad_clip"],
        nonfinite=t["nonfinite"],
        progress=t["progress"],
        plots=t["plots"],
        scheduler=(_cosine_schedule(t, len(train_data)) if t["schedule"] == "cosine" else None),
    )
    return dict(
        model=model,
        physics=physics,
        train_data=train_data,
        eval_data=eval_data,
        trainer_kwargs=trainer_kwargs,
    )


# -- running ----------------------------------------------------------------------------------


def _say(message: str) -> None:
    if distributed.rank() == 0:
        print(f"unrolled train: {message}", flush=True)


def _check_run_folder(config: dict, resume: bool) -> None:
    """Refuse to start over an existing run, or to resume one with a different config."""
    out = Path(config["out"])
    saved = out / "config.toml"
    has_run = (out / "latest.pt").exists() or (out / "previous.pt").exists()
    if not resume:
        if has_run:
            raise ConfigError(
                f"out: {out} already holds a run (latest.pt); continue it with --resume or "
                "choose another --out"
            )
        return
    if not saved.is_file():
        return
    old = default_config()
    merge(old, load_config_file(saved), where=f"config file {saved}")
    changed = [
        f"{section}.{k}" if section else k
        for section, k, a, b in _diff(old, config)
        if (f"{section}.{k}" if section else k) not in RESUME_MAY_CHANGE
    ]
    if changed:
        raise ConfigError(
            f"--resume: the run in {out} was made with a different configuration "
            f"({', '.join(changed)} differ from {saved}); resuming would not continue that run"
        )


def _diff(a: dict, b: dict):
    for name, value in a.items():
        if isinstance(value, dict):
            for k, v in value.items():
                if b[name][k] != v:
                    yield name, k, v, b[name][k]
        elif b[name] != value:
            yield "", name, value, b[name]


def train(config: dict, *, resume: bool = False, device: torch.device | str = "cpu") -> int:
    """Build the experiment of ``config`` and fit it; the exit status of the command."""
    from .trainer import Trainer

    parts = build_experiment(config, device)
    out = Path(config["out"]).resolve()
    steps = config["train"]["pretrain_steps"]
    if steps and not resume:
        # Before the Trainer, whose DDP wrapper then gives every process rank 0's weights.
        # Not resumable by itself: a run killed while pretraining starts it again.
        _say(f"pretraining the denoiser: {steps} steps of Gaussian denoising")
        losses = pretrain_denoiser(
            parts["model"].priors[0].denoiser,
            parts["train_data"],
            steps=steps,
            sigma_max=2 * max(config["physics"]["noise_sigma"], 0.01),
            lr=config["train"]["lr"],
            seed=config["seed"],
            device=device,
        )
        _say(f"pretraining done, loss {losses[0]:.4g} -> {losses[-1]:.4g}")
    trainer = Trainer(
        parts["model"],
        parts["physics"],
        parts["train_data"],
        eval_data=parts["eval_data"],
        eval_callbacks=[_KeepBest(config, out / BEST_MODEL)],
        **parts["trainer_kwargs"],
    )
    if trainer.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.toml").write_text(dump_toml(config), encoding="utf-8")
    where = "resuming" if resume else "writing"
    _say(
        f"{where} in {out} (latest.pt, train_log.csv/.jsonl, eval_log.csv/.jsonl, loss.png, "
        f"reconstructions.png) on {trainer.world_size} process(es), device {trainer.device}"
    )
    try:
        history = trainer.fit(resume="latest" if resume else None)
    except CheckpointError as err:
        _say(f"{err}")
        return 2
    except TrainingInterrupted as stop:
        _say(f"{stop}; continue with the same command and --resume")
        return stop.exit_code
    except FloatingPointError as err:
        _say(f"stopped: {err}; the last good state is in {out / 'latest.pt'}")
        return 1
    if trainer.is_main:
        _save_model(trainer, config, out / LAST_MODEL)
    summary = f"done: {trainer.step} steps; models {out / BEST_MODEL}, {out / LAST_MODEL}"
    if history["eval"]:
        summary += "\n" + eval_summary(history["eval"][-1])
    _say(f"{summary}\ncheckpoint {out / 'latest.pt'}")
    return 0


#: the model files ``unrolled train`` writes (``unrolled.load`` reads them)
BEST_MODEL = "best.pt"
LAST_MODEL = "last.pt"


def eval_summary(record: dict) -> str:
    """One evaluation record as two lines: the model and the best classical baseline."""
    line = (
        f"held-out: trained model PSNR {record['psnr']:.2f} dB (determined region "
        f"{record['psnr_determined']:.2f} dB), SSIM {record['ssim']:.3f}"
    )
    if "baseline" in record:
        line += (
            f"\n          best baseline {record['baseline']}: "
            f"PSNR {record['psnr_baseline']:.2f} dB "
            f"(determined region {record['psnr_determined_baseline']:.2f} dB), SSIM "
            f"{record['ssim_baseline']:.3f}; model - baseline "
            f"{record['psnr'] - record['psnr_baseline']:+.2f} / "
            f"{record['psnr_determined'] - record['psnr_determined_baseline']:+.2f} dB"
        )
    return line


def _save_model(trainer, config: dict, path: Path, record: dict | None = None) -> None:
    from ..saving import save

    module = trainer.module
    info = {
        "command": "unrolled train",
        "step": trainer.step,
        "epoch": trainer.epoch,
        "seed": config["seed"],
        "data": dict(config["data"]),
    }
    if record is not None:
        info["eval"] = {k: v for k, v in record.items() if isinstance(v, (int, float, str))}
    info["learned"] = {
        "stepsize": module.stepsize.detach().cpu().tolist(),
        "sigma": module.sigma.detach().cpu().tolist(),
    }
    save(module, path, physics=physics_spec(config), info=info)


class _KeepBest:
    """After each evaluation, write the model as ``best.pt`` when its PSNR is the best yet."""

    def __init__(self, config: dict, path: Path):
        self.config = config
        self.path = path

    def __call__(self, trainer, record: dict) -> None:
        if not trainer.is_main:
            return
        earlier = [r["psnr"] for r in trainer.history["eval"] if r is not record]
        if not earlier or record["psnr"] > max(earlier) or not self.path.exists():
            _save_model(trainer, self.config, self.path, record)


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
        config = resolve_config(args)
        if args.print_config:
            print(dump_toml(config), end="")
            return 0
        _check_run_folder(config, args.resume)
        if args.resume:
            _check_resumable(config)
    except (ConfigError, CheckpointError) as err:
        print(f"unrolled train: {err}", file=sys.stderr)
        return 2
    nproc = config["nproc"]
    if "WORLD_SIZE" in os.environ:  # started by torchrun (or by launch below)
        return _worker(config, args.resume)
    if nproc > 1:
        _say(f"starting {nproc} processes on this machine (torch.distributed)")
        return distributed.launch(_worker, nproc, config, args.resume)
    return _worker(config, args.resume)


def _check_resumable(config: dict) -> None:
    """Fail early (before starting processes) when --resume has nothing usable."""
    out = Path(config["out"])
    names = [LATEST, PREVIOUS]
    if not any((out / n).exists() for n in names) and not numbered_checkpoints(out):
        raise CheckpointError(f"--resume: no checkpoint in {out} (no {LATEST} nor older ones)")
