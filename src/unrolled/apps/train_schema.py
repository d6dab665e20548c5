"""The keys of ``unrolled train``'s configuration: each with its default, a check and a
description of what it accepts (:data:`SCHEMA`), and which may change on ``--resume``."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..physics import PADDINGS
from .experiment import ENSEMBLE_HELP, ENSEMBLE_SETTINGS

__all__ = [
    "MAX_SEED",
    "OPERATORS",
    "RESUME_MAY_CHANGE",
    "SCALAR_NAMES",
    "SCHEMA",
    "ConfigError",
    "Key",
    "choice",
    "default_config",
]


class ConfigError(ValueError):
    """A configuration value, key or file that cannot be used; the message names it."""


@dataclass(frozen=True)
class Key:
    """One configuration key: its default, a check, and a description of what it accepts."""

    default: Any
    expected: str
    check: Callable[[Any], bool]
    choices: tuple | None = None
    help: str = ""


def _int(low: int, *, none: bool = False) -> Callable[[Any], bool]:
    return lambda v: (
        (none and v is None) or (isinstance(v, int) and not isinstance(v, bool) and v >= low)
    )


def _number(low: float, *, strict: bool, none: bool = False) -> Callable[[Any], bool]:
    def check(v: Any) -> bool:
        if none and v is None:
            return True
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        return v > low if strict else v >= low

    return check


def _fraction(default: float, help: str) -> Key:
    """A number in (0, 1]."""
    return Key(
        default, "a number in (0, 1]", lambda v: _number(0, strict=True)(v) and v <= 1, help=help
    )


def choice(default: Any, values: tuple, help: str = "") -> Key:
    """A key that accepts one of ``values``."""
    # Same type too: True == 1 in Python, but true is not a channel count.
    return Key(
        default,
        f"one of {values}",
        lambda v: any(type(v) is type(c) and v == c for c in values),
        values,
        help,
    )


def _bool(default: bool, help: str = "") -> Key:
    return Key(default, "true or false", lambda v: isinstance(v, bool), (True, False), help)


def _str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(s, str) for s in v)


SCALAR_NAMES = ("stepsize", "sigma", "beta", "relaxation")
#: the measurements ``physics.operator`` names
OPERATORS = ("blur", "inpainting", "downsampling", "compressed_sensing", "mri", "multicoil_mri")
#: the largest seed: torch's generators take 64-bit seeds, and derived seeds add to it
MAX_SEED = 2**63 - 1

SCHEMA: dict[str, dict[str, Key] | Key] = {
    "seed": Key(
        0,
        "an integer in [0, 2**63 - 1]",
        lambda v: _int(0)(v) and v <= MAX_SEED,
        help="the one seed of the run",
    ),
    "device": Key(
        "auto",
        "'auto', 'cpu', 'cuda' or 'cuda:N'",
        lambda v: (
            isinstance(v, str)
            and (v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit()))
        ),
        help="'auto': the process's GPU if CUDA is available, else CPU",
    ),
    "out": Key("runs/unrolled", "a folder path (string)", lambda v: isinstance(v, str) and v != ""),
    "nproc": Key(1, "an integer >= 1", _int(1), help="processes (DDP) started on this machine"),
    "physics": {
        "operator": choice(
            "blur",
            OPERATORS,
            "mri and multicoil_mri measure complex images (grey level times a smooth phase)",
        ),
        "kernel_sigma": Key(1.6, "a number > 0", _number(0, strict=True), help="blur"),
        "kernel_size": Key(
            None,
            "an integer >= 1, or none (2 * ceil(3 sigma) + 1)",
            _int(1, none=True),
            help="blur",
        ),
        "padding": choice("valid", PADDINGS, "blur, downsampling"),
        "keep": _fraction(0.5, "inpainting: the fraction of pixels kept"),
        "factor": Key(2, "an integer >= 1", _int(1), help="downsampling: the decimation factor"),
        "ratio": _fraction(0.5, "compressed_sensing: measurements per unknown"),
        "acceleration": Key(4, "an integer >= 1", _int(1), help="mri, multicoil_mri"),
        "coils": Key(4, "an integer >= 1", _int(1), help="multicoil_mri"),
        "noise": choice("gaussian", ("gaussian", "none")),
        "noise_sigma": Key(0.05, "a number >= 0", _number(0, strict=False)),
    },
    "model": {
        "algorithm": choice("hqs", ("hqs", "admm", "pgd", "drs")),
        "layers": Key(5, "an integer >= 1", _int(1)),
        "denoiser": choice("dncnn", ("dncnn", "unet")),
        "depth": Key(7, "an integer >= 2 (DnCNN convolutions)", _int(2)),
        "features": Key(32, "an integer >= 1 (DnCNN features, UNet base width)", _int(1)),
        "levels": Key(2, "an integer >= 1 (UNet levels)", _int(1)),
        "share_denoiser": _bool(True, "one denoiser for all layers"),
        "stepsize": Key(1.0, "a number > 0", _number(0, strict=True)),
        "sigma": Key(0.05, "a number > 0", _number(0, strict=True)),
        "trainable": Key(
            ["stepsize", "sigma"],
            f"a list of scalar names among {SCALAR_NAMES} that the algorithm has",
            lambda v: _str_list(v) and all(s in SCALAR_NAMES for s in v),
            SCALAR_NAMES,
        ),
        "share_parameters": _bool(False, "one value of each scalar for all layers"),
        "checkpoint_layers": _bool(False, "recompute each layer in backward"),
        "init": choice(
            "auto",
            ("auto", "adjoint", "normalized_adjoint", "smooth"),
            "the initial estimate: 'auto' is A^T y / A^T 1 for blur, A^H y otherwise; "
            "'smooth': least squares with a smoothness penalty of weight init_weight",
        ),
        "init_weight": Key(
            None,
            "a number > 0 with init = 'smooth', else none",
            _number(0, strict=True, none=True),
        ),
        "ensemble": choice("none", ENSEMBLE_SETTINGS, ENSEMBLE_HELP),
    },
    "solver": {
        "max_iter": Key(30, "an integer >= 1", _int(1)),
        "tol": Key(1e-6, "a number >= 0", _number(0, strict=False)),
        "backward": choice("implicit", ("implicit", "unroll", "checkpoint")),
        "preconditioner": choice("none", ("none", "auto")),
        "on_failure": choice(
            "warn",
            ("warn", "raise", "ignore"),
            "solves stopped at max_iter: 'warn' prints their count once per epoch, 'raise' "
            "stops the run at the first; the log's cg_unconverged column counts them anyway",
        ),
    },
    "data": {
        "source": choice(
            "deadleaves",
            ("deadleaves", "samples", "mixed", "folder"),
            "mixed: scikit-image's training photographs and dead leaves, alternating",
        ),
        "path": Key(
            None,
            "a folder of images (string), for source = 'folder'",
            lambda v: v is None or (isinstance(v, str) and v != ""),
        ),
        "eval_path": Key(
            None,
            "a folder of evaluation images (string; default: path, centre crops)",
            lambda v: v is None or (isinstance(v, str) and v != ""),
        ),
        "size": Key(32, "an integer >= 8 (square crops)", _int(8)),
        "pretrain_source": Key(
            None,
            "'deadleaves', 'samples' or 'mixed', or none (source)",
            lambda v: v is None or v in ("deadleaves", "samples", "mixed"),
            help="the images of the denoiser's pretraining, where they differ from source",
        ),
        "pretrain_size": Key(
            None,
            "an integer >= 8, or none (size)",
            _int(8, none=True),
            help="the crop side of the denoiser's pretraining, where it differs from size",
        ),
        "channels": choice(1, (1, 3)),
        "train_images": Key(64, "an integer >= 1", _int(1)),
        "eval_images": Key(8, "an integer >= 0 (0: no evaluation)", _int(0)),
        "num_workers": Key(0, "an integer >= 0", _int(0)),
        "skip_bad_images": _bool(
            False, "leave out unreadable or too small image files (listed in a warning)"
        ),
    },
    "train": {
        "epochs": Key(2, "an integer >= 1", _int(1)),
        "batch_size": Key(8, "an integer >= 1 (per process)", _int(1)),
        "lr": Key(5e-4, "a number > 0", _number(0, strict=True)),
        "scalar_lr": Key(
            None,
            "a number > 0, or none",
            _number(0, strict=True, none=True),
            help="learning rate of the per-layer step sizes and denoiser levels (none: lr)",
        ),
        "pretrain_steps": Key(
            0,
            "an integer >= 0",
            _int(0),
            help="steps of Gaussian denoising (levels up to 2 x the noise) before unrolling",
        ),
        "pretrain_lr": Key(1e-3, "a number > 0", _number(0, strict=True)),
        "freeze_denoiser": _bool(
            False,
            "after pretraining, keep the denoiser's weights fixed and train the per-layer "
            "scalars only",
        ),
        "schedule": choice(
            "constant", ("constant", "cosine"), "cosine: the learning rate decays to 0 at the end"
        ),
        "dtype": choice("float32", ("float32", "float64")),
        "checkpoint_every": Key(
            "epoch",
            "'epoch' or an integer >= 1 (steps)",
            lambda v: v == "epoch" or _int(1)(v),
        ),
        "keep_last": Key(1, "an integer >= 0", _int(0)),
        "log_every": Key(1, "an integer >= 1", _int(1)),
        "eval_every": Key(1, "an integer >= 1 (epochs)", _int(1)),
        "max_steps": Key(None, "an integer >= 1, or none", _int(1, none=True)),
        "grad_clip": Key(None, "a number > 0, or none", _number(0, strict=True, none=True)),
        "nonfinite": choice("raise", ("raise", "skip")),
        "progress": _bool(True, "tqdm progress bar"),
        "plots": _bool(True, "loss.png and reconstructions.png at the end"),
    },
}

#: keys that may differ between a run and its ``--resume`` (they do not change the
#: steps already taken)
RESUME_MAY_CHANGE = {
    "train.epochs",
    "train.max_steps",
    "train.progress",
    "train.plots",
    "train.log_every",
    "train.eval_every",
    "train.keep_last",
    "train.checkpoint_every",
    "solver.on_failure",
    "data.num_workers",
    "device",
    "out",
}


def default_config() -> dict:
    """A fresh configuration holding every default."""
    config: dict[str, Any] = {}
    for name, entry in SCHEMA.items():
        if isinstance(entry, Key):
            config[name] = copy.deepcopy(entry.default)
        else:
            config[name] = {k: copy.deepcopy(v.default) for k, v in entry.items()}
    return config
