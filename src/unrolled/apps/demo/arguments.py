"""The flags of ``unrolled demo`` and the :class:`DemoConfig` they describe."""

from __future__ import annotations

import argparse

from ..experiment import ENSEMBLE_HELP, ENSEMBLE_SETTINGS
from .config import (
    DEFAULT_EPOCHS,
    DEFAULT_MODES,
    PHYSICS,
    PHYSICS_ALIASES,
    DemoConfig,
    parse_data,
    parse_modes,
)

__all__ = ["add_arguments", "config_from_args"]


def _argtype(parse, what: str):
    def convert(text: str):
        try:
            return parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    convert.__name__ = what
    return convert


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's flags (sizes left unset take the device's defaults)."""
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    d = DemoConfig()
    g = parser.add_argument_group("problem")
    g.add_argument(
        "--physics",
        choices=PHYSICS + tuple(PHYSICS_ALIASES),
        default=d.physics,
        help="the measurement; mri: multi-coil MRI (an alias of multicoil_mri, as always in "
        "the demo); singlecoil_mri is what unrolled train calls mri",
    )
    g.add_argument(
        "--data",
        type=_argtype(parse_data, "data"),
        default="auto",
        help="samples | deadleaves | bsds | folder:PATH | auto (samples if scikit-image "
        "is installed, else deadleaves)",
    )
    g.add_argument("--img-size", type=int, help="crop size (default: 32 on CPU, 64 on CUDA)")
    g.add_argument("--num-images", type=int, help="training images (64 CPU, 480 CUDA)")
    g.add_argument("--num-eval", type=int, help="held-out crops (6 CPU, 24 CUDA)")
    g.add_argument(
        "--eval-size",
        type=int,
        help="side of the held-out crops (blur, downsampling: 128; others: --img-size)",
    )
    g.add_argument("--blur-sigma", type=float, default=d.blur_sigma, help="blur only")
    g.add_argument("--noise", type=float, default=d.noise, help="measurement noise std")
    g.add_argument("--acceleration", type=int, default=d.acceleration, help="MRI only")
    g.add_argument("--coils", type=int, default=d.coils, help="multicoil_mri only")
    g.add_argument("--keep", type=float, default=d.keep, help="inpainting: fraction kept")
    g.add_argument("--factor", type=int, default=d.factor, help="downsampling factor")
    g.add_argument(
        "--ratio", type=float, default=d.ratio, help="compressed_sensing: measurements per pixel"
    )
    g = parser.add_argument_group("model and solver")
    g.add_argument("--layers", type=int, default=d.layers)
    g.add_argument("--depth", type=int, default=d.depth, help="DnCNN convolutions")
    g.add_argument("--features", type=int, default=d.features, help="DnCNN channels")
    g.add_argument("--stepsize", type=float, default=d.stepsize, help="initial HQS step")
    g.add_argument("--sigma", type=float, default=d.sigma, help="initial denoiser level")
    g.add_argument(
        "--ensemble",
        choices=ENSEMBLE_SETTINGS,
        default=d.ensemble,
        help=ENSEMBLE_HELP,
    )
    g.add_argument("--max-iter", type=int, default=d.max_iter, help="CG iterations at most")
    g.add_argument("--tol", type=float, default=d.tol, help="CG relative tolerance")
    g.add_argument(
        "--modes",
        type=_argtype(parse_modes, "modes"),
        default=",".join(DEFAULT_MODES),
        help="comma-separated runs: unroll, implicit, checkpoint, each optionally +ckpt "
        "(layer checkpointing)",
    )
    g = parser.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    g.add_argument("--batch-size", type=int, help="batch size (8 CPU, 32 CUDA)")
    g.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate")
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument(
        "--from-scratch",
        action="store_true",
        help="save the models trained from random weights, even where the package ships "
        "weights for this configuration",
    )
    g.add_argument(
        "--finetune-steps",
        type=int,
        default=d.finetune_steps,
        help="steps of fine-tuning the shipped model's step sizes and denoiser levels, per mode",
    )
    g.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:1, ...")
    g.add_argument("--threads", type=int, help="intra-op CPU threads (default: 1 on CPU)")
    g = parser.add_argument_group("output")
    g.add_argument("--out", default=d.out, help="folder for loss.png, report.json, ...")
    g.add_argument(
        "--rss",
        action="store_true",
        help="cross-check memory: peak RSS of a separate process per mode running "
        "--rss-steps training steps",
    )
    g.add_argument("--rss-steps", type=int, default=d.rss_steps)
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


#: flags whose value is the DemoConfig field of the same name
_SAME_NAME = (
    "physics", "device", "img_size", "num_images", "num_eval", "eval_size",
    "finetune_steps", "batch_size", "epochs", "max_iter", "tol", "data", "out", "seed",
    "layers", "depth", "features", "lr", "stepsize", "sigma", "blur_sigma", "noise",
    "acceleration", "coils", "rss", "rss_steps", "threads", "keep", "factor", "ratio",
    "ensemble",
)  # fmt: skip


def config_from_args(args: argparse.Namespace) -> DemoConfig:
    modes = args.modes if isinstance(args.modes, tuple) else parse_modes(args.modes)
    return DemoConfig(
        modes=modes,
        pretrained=not args.from_scratch,
        progress=not args.no_progress,
        **{name: getattr(args, name) for name in _SAME_NAME},
    )
