"""What ``unrolled train`` builds from its configuration: the :class:`Experiment` (physics,
solver, model), the training and evaluation images, and the Trainer's settings."""

from __future__ import annotations

import functools
import sys
import warnings

import torch

from .. import data as datasets
from ..physics.spec import (
    blur_spec,
    compressed_sensing_spec,
    downsampling_spec,
    inpainting_spec,
    mri_spec,
)
from ..train import Trainer, distributed
from .experiment import Experiment, complex_dtype, ensemble_setting
from .train_config import ConfigError

__all__ = ["build_experiment", "experiment_of", "physics_spec"]

#: operators whose operator is drawn for one image size: evaluated on training-size crops
_SIZED = ("inpainting", "compressed_sensing", "mri", "multicoil_mri")


def physics_spec(config: dict) -> dict:
    """The measurement of ``config`` as plain values (stored with the saved models)."""
    p, d = config["physics"], config["data"]
    noise = p["noise_sigma"] if p["noise"] == "gaussian" else 0.0
    operator, seed = p["operator"], config["seed"]
    if operator == "inpainting":
        return inpainting_spec(keep=p["keep"], noise_sigma=noise, seed=seed)
    if operator == "downsampling":
        return downsampling_spec(factor=p["factor"], padding=p["padding"], noise_sigma=noise)
    if operator == "compressed_sensing":
        shape = (d["channels"], d["size"], d["size"])
        return compressed_sensing_spec(ratio=p["ratio"], shape=shape, noise_sigma=noise, seed=seed)
    if operator in ("mri", "multicoil_mri"):
        coils = p["coils"] if operator == "multicoil_mri" else None
        return mri_spec(acceleration=p["acceleration"], coils=coils, noise_sigma=noise, seed=seed)
    return blur_spec(
        p["kernel_sigma"], padding=p["padding"], noise_sigma=noise, kernel_size=p["kernel_size"]
    )


def experiment_of(config: dict) -> Experiment:
    """The experiment ``config`` describes."""
    m, s = config["model"], config["solver"]
    solver = dict(
        max_iter=s["max_iter"],
        tol=s["tol"],
        # 'warn' is the trainer's count once per epoch, not a warning per solve.
        on_failure="raise" if s["on_failure"] == "raise" else "ignore",
        preconditioner=None if s["preconditioner"] == "none" else "auto",
    )
    return Experiment(
        physics=physics_spec(config),
        channels=config["data"]["channels"],
        algorithm=m["algorithm"],
        layers=m["layers"],
        denoiser=m["denoiser"],
        depth=m["depth"],
        features=m["features"],
        levels=m["levels"],
        stepsize=m["stepsize"],
        sigma=m["sigma"],
        trainable=tuple(m["trainable"]),
        share_parameters=m["share_parameters"],
        share_denoiser=m["share_denoiser"],
        checkpoint_layers=m["checkpoint_layers"],
        init=m["init"],
        init_weight=m["init_weight"],
        ensemble=ensemble_setting(m["ensemble"]),
        solver=solver,
        backward=s["backward"],
    )


class _Collate:
    """Stack a list of ``(C, H, W)`` images into a batch of the run's dtype (picklable,
    for loader workers)."""

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype

    def __call__(self, items):
        return torch.stack(list(items)).to(self.dtype)


def _warn(line: str) -> None:
    if distributed.rank() == 0:
        print(f"unrolled train: {line}", file=sys.stderr, flush=True)


def _folder(path: str, key: str, data: dict, shown: set[str], **kwargs):
    """An image folder whose every file was read once; its errors name ``key``; the files
    it leaves out (``--skip-bad-images``) are listed once (``shown``: lines printed)."""
    try:
        with warnings.catch_warnings(record=True) as skipped:
            warnings.simplefilter("always")
            folder = datasets.ImageFolder(
                path, check_files=True, skip_unreadable=data["skip_bad_images"], **kwargs
            )
    except (OSError, TypeError, ValueError) as err:
        raise ConfigError(f"{key}: {err}") from err
    for w in skipped:  # the evaluation set may be the same folder: once is enough
        line = f"warning: {path}: " + str(w.message).replace("\n", "\n  ")
        if line not in shown:
            shown.add(line)
            _warn(line)
    return folder


def _datasets(config: dict):
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
        # Held-out photographs, larger than the training crops where the operator allows
        # it (the networks are fully convolutional), as random crops fixed by the seed.
        sized = config["physics"]["operator"] in _SIZED
        evals = datasets.SampleImages(
            "eval",
            crop=size if sized else min(2 * size, 256),
            channels=channels,
            length=max(d["eval_images"], 1),
            random_crops=True,
            seed=seed + 1,
        )
    else:
        # Every file is decoded once here, so a bad one is refused (or, asked to, left out)
        # at start-up rather than found in the middle of an epoch.
        shown: set[str] = set()
        train = _folder(d["path"], "data.path", d, shown, crop=size, channels=channels, seed=seed)
        key = "data.eval_path" if d["eval_path"] else "data.path"
        evals = _folder(
            d["eval_path"] or d["path"], key, d, shown, crop=size, channels=channels, train=False
        )
    if d["eval_images"] == 0:
        evals = None
    elif evals is not None and len(evals) > d["eval_images"]:
        evals = torch.utils.data.Subset(evals, range(d["eval_images"]))
    return train, evals


def _baseline_images(config: dict, eval_set):
    """Images the baselines' weights are picked on: training-source pictures of the
    evaluation images' size (not those images), where the source allows; else None (the
    training batches)."""
    d = config["data"]
    if eval_set is None or d["source"] == "folder":
        return None
    size = tuple(eval_set[0].shape[-2:])
    if d["source"] == "deadleaves":
        images = datasets.DeadLeaves(size, d["channels"], 16, seed=config["seed"] + 2_000_003)
    else:
        images = datasets.SampleImages(
            "train", crop=size, channels=d["channels"], length=16, seed=config["seed"] + 2
        )
    return images


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
    dtype = torch.float64 if config["train"]["dtype"] == "float64" else torch.float32
    t, seed, size = config["train"], config["seed"], config["data"]["size"]
    experiment = experiment_of(config)
    physics = experiment.build_physics((size, size), dtype=dtype)
    torch.manual_seed(seed)  # the model's initial weights
    model = experiment.build_model().to(dtype)
    train_set, eval_set = _datasets(config)
    baseline_set = _baseline_images(config, eval_set)
    # MRI: every set as complex images, each with phases of its own.
    train_set = experiment.images(train_set, seed)
    if eval_set is not None:
        eval_set = experiment.images(eval_set, seed + 1)
    if baseline_set is not None:
        baseline_set = experiment.images(baseline_set, seed + 2)
    collate = _Collate(complex_dtype(dtype) if experiment.is_complex else dtype)
    train_data = Trainer.make_loader(
        train_set,
        t["batch_size"],
        shuffle=True,
        num_workers=config["data"]["num_workers"],
        seed=seed,
        collate_fn=collate,
    )
    pretrain_data = train_data
    d = config["data"]
    if d["pretrain_source"] is not None or d["pretrain_size"] is not None:
        source = d["pretrain_source"] or d["source"]
        size = d["pretrain_size"] or d["size"]
        pretrain_set, _ = _datasets({**config, "data": {**d, "source": source, "size": size}})
        pretrain_data = Trainer.make_loader(
            experiment.images(pretrain_set, seed),
            t["batch_size"],
            shuffle=True,
            seed=seed,
            collate_fn=collate,
        )
    eval_data = baseline_data = None
    if eval_set is not None:
        eval_data = torch.utils.data.DataLoader(
            eval_set, batch_size=t["batch_size"], shuffle=False, collate_fn=collate
        )
    if baseline_set is not None:
        baseline_data = torch.utils.data.DataLoader(
            baseline_set, batch_size=t["batch_size"], collate_fn=collate
        )
    trainer_kwargs = dict(
        baseline_data=baseline_data,
        lr=t["lr"],
        scalar_lr=t["scalar_lr"],
        epochs=t["epochs"],
        device=device,
        seed=seed,
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
        pretrain_data=pretrain_data,
        model=model,
        physics=physics,
        train_data=train_data,
        eval_data=eval_data,
        trainer_kwargs=trainer_kwargs,
    )
