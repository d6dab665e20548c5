"""``unrolled eval``: a trained model on a folder of images, next to the classical baselines.

The model file (``unrolled.save``, ``unrolled demo``, ``unrolled train``) holds the model
and the measurement it was trained for; flags can change the measurement. Every image is
measured with noise drawn from ``--seed`` and the image's position, reconstructed by the
model and by each baseline (weights picked on ``--validation`` images, never on the
images scored), and scored: PSNR over the whole image and over the region the measurement
determines, and SSIM. ``--save DIR`` writes the reconstructions as PNG.

Every measurement of :mod:`unrolled.physics.spec` is scored. A blur or a downsampling
takes each image as it is (cut to whole multiples of the factor); an inpainting or MRI
mask is drawn for one size, the smallest side of the images, to which every image is
centre-cropped; a compressed-sensing model is scored on centre crops of the size it was
trained for. MRI images are complex: the grey level times a smooth phase drawn from
``--seed``, as in ``unrolled demo --physics mri``; the saved reconstructions show the
magnitude.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import torch

from .. import data as datasets
from ..evaluation import fit_baselines, format_scores, score_methods
from ..models import ComplexDenoiser
from ..saving import ModelFileError, load_file
from .experiment import ENSEMBLE_SETTINGS, Experiment, ensemble_setting

__all__ = ["add_arguments", "run"]

#: the largest side of an evaluated image; larger ones are centre-cropped to it
DEFAULT_MAX_SIZE = 512
#: the largest side of a validation crop (scikit-image's smallest training photograph is
#: 303 pixels high)
MAX_VALIDATION_SIZE = 256


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    parser.add_argument("--model", required=True, help="a model file (.pt)")
    parser.add_argument(
        "--data",
        default="samples",
        help="folder:DIR (every image below DIR) or samples (scikit-image's held-out photographs)",
    )
    parser.add_argument(
        "--validation",
        default="samples",
        help="images the baselines' weights are picked on: samples (scikit-image's training "
        "photographs), deadleaves, or folder:DIR (centre crops); crops of the evaluated "
        f"images' smallest side, at most {MAX_VALIDATION_SIZE} (and at most the folder's "
        "smallest side), as a weight picked on smaller images is too strong for larger ones",
    )
    parser.add_argument(
        "--max-size",
        type=int,
        default=DEFAULT_MAX_SIZE,
        help="centre-crop larger images to this side",
    )
    parser.add_argument("--seed", type=int, default=0, help="noise seed")
    parser.add_argument("--blur-sigma", type=float, help="override the stored blur's sigma")
    parser.add_argument("--padding", help="override the stored blur's padding")
    parser.add_argument("--noise", type=float, help="override the stored noise std")
    parser.add_argument(
        "--ensemble",
        choices=ENSEMBLE_SETTINGS,
        help="override the stored ensemble: average each denoiser call over the quarter "
        "turns of its input (dihedral: and their mirror images), or none",
    )
    parser.add_argument("--save", help="folder for the reconstructions (PNG)")


def _crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return x[..., top : top + min(h, size), left : left + min(w, size)]


def _images(spec: str, channels: int, max_size: int) -> list[tuple[str, torch.Tensor]]:
    if spec == "samples":
        folder = datasets.SampleImages("eval", channels=channels, random_crops=False)
        names = [f"sample-{i}" for i in range(len(folder))]
    elif spec.startswith("folder:") and len(spec) > len("folder:"):
        folder = datasets.ImageFolder(spec[len("folder:") :], channels=channels, train=False)
        names = [p.stem for p in folder.files]
    else:
        raise ValueError(f"data: expected samples or folder:DIR, got {spec!r}")
    return [(n, _crop(folder[i], max_size)) for i, n in enumerate(names)]


def _validation(spec: str, channels: int, size: int, *, exact: bool, count: int = 16):
    """``(images, side)``: ``size``-sided crops of the validation images; unless ``exact``
    (an operator drawn for one image size), a folder of smaller images gives crops of its
    smallest side instead."""
    if spec == "samples":
        images = datasets.SampleImages("train", crop=size, channels=channels, length=count, seed=1)
        return images, size
    if spec == "deadleaves":
        return datasets.DeadLeaves(size, channels, count, seed=1), size
    if spec.startswith("folder:") and len(spec) > len("folder:"):
        path = spec[len("folder:") :]
        if not exact:
            whole = datasets.ImageFolder(path, channels=channels, train=False)
            size = min([size, *(min(whole[i].shape[-2:]) for i in range(len(whole)))])
        return datasets.ImageFolder(path, crop=size, channels=channels, train=False), size
    raise ValueError(f"validation: expected samples, deadleaves or folder:DIR, got {spec!r}")


def _noise_seed(seed: int, name: str) -> int:
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _measure(physics, x: torch.Tensor, seed: int) -> torch.Tensor:
    """``physics(x)`` for a batch ``x``, with the noise drawn from ``seed`` alone."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        return physics(x)


def _save_png(x: torch.Tensor, path: Path) -> None:
    from PIL import Image

    x = x.abs() if x.is_complex() else x  # MRI: the magnitude
    img = (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    array = img.permute(1, 2, 0).numpy() if img.shape[0] == 3 else img[0].numpy()
    Image.fromarray(array).save(path)


def _size_for(spec: dict, images: list[tuple[str, torch.Tensor]]) -> int | None:
    """The one side every image is centre-cropped to, for operators drawn for one image
    size (``None``: the operator takes each image as it is)."""
    operator = spec["operator"]
    if operator == "compressed_sensing":
        side = int(spec["shape"][-1])
        small = [n for n, x in images if min(x.shape[-2:]) < side]
        if small:
            raise ValueError(
                f"data: this model measures {side}x{side} images; {small[0]} is smaller"
            )
        return side
    if operator in ("inpainting", "mri"):
        return min(min(x.shape[-2:]) for _, x in images)
    return None


def _fit(spec: dict, images: list[tuple[str, torch.Tensor]]) -> list[tuple[str, torch.Tensor]]:
    """The images cropped to what the operator measures."""
    side = _size_for(spec, images)
    if side is not None:
        return [(n, _crop(x, side)) for n, x in images]
    if spec["operator"] == "downsampling":  # whole multiples of the decimation factor
        f = int(spec["factor"])
        return [(n, x[..., : x.shape[-2] // f * f, : x.shape[-1] // f * f]) for n, x in images]
    return images


def _channels(spec: dict, denoiser) -> int:
    if spec["operator"] == "compressed_sensing":
        return int(spec["shape"][0])
    return 1 if isinstance(denoiser, ComplexDenoiser) else denoiser.in_channels


def evaluate(args: argparse.Namespace) -> str:
    saved = load_file(args.model)
    model = saved.model
    if args.ensemble is not None:
        model.ensemble = ensemble_setting(args.ensemble)
    spec = dict(saved.physics)
    if not spec:
        raise ValueError(f"model: {args.model} holds no physics description; it cannot be scored")
    for key, value in (
        ("kernel_sigma", args.blur_sigma),
        ("padding", args.padding),
        ("noise_sigma", args.noise),
    ):
        if value is not None:
            spec[key] = value
    experiment = Experiment(physics=spec)
    channels = _channels(spec, model.priors[0].denoiser)
    images = _fit(spec, _images(args.data, channels, args.max_size))
    side = _size_for(spec, images)
    physics = experiment.build_physics(None if side is None else (side, side))
    smallest = min(min(x.shape[-2:]) for _, x in images)
    validation, validation_side = _validation(
        args.validation,
        channels,
        side or min(smallest, MAX_VALIDATION_SIZE),
        exact=side is not None,
    )
    if experiment.is_complex:  # MRI: grey levels times a smooth phase from the seed
        images = list(
            zip(
                [n for n, _ in images],
                experiment.images([x for _, x in images], args.seed),
                strict=True,
            )
        )
        validation = experiment.images(validation, args.seed + 1)
    val_pairs = []
    for i in range(0, len(validation), 8):
        x = torch.stack([validation[j] for j in range(i, min(i + 8, len(validation)))])
        val_pairs.append((x, _measure(physics, x, _noise_seed(args.seed + 1, f"val{i}"))))
    baselines = fit_baselines(physics, val_pairs)
    pairs = [
        (x.unsqueeze(0), _measure(physics, x.unsqueeze(0), _noise_seed(args.seed, n)))
        for n, x in images
    ]
    methods = {"A^T y": lambda y: physics.A_adjoint(y)}
    methods.update({b.label: (lambda y, b=b: b(physics, y)) for b in baselines})
    methods["trained model"] = lambda y: model(y, physics)
    scores = score_methods(methods, physics, pairs)
    if args.save:
        out = Path(args.save)
        out.mkdir(parents=True, exist_ok=True)
        with torch.no_grad():
            for (name, _), (_, y) in zip(images, pairs, strict=True):
                _save_png(model(y, physics)[0], out / f"{name}.png")
    what = ", ".join(f"{k}={v}" for k, v in spec.items() if k != "operator")
    ensemble = "" if model.ensemble is None else f" (ensemble: {model.ensemble})"
    lines = [
        f"unrolled eval: {args.model}{ensemble} on {len(images)} image(s) from {args.data}",
        f"  physics: {spec['operator']} ({what}); noise seed {args.seed}; baselines' weights "
        f"picked on {validation_side}x{validation_side} crops of {args.validation}",
        format_scores(scores, best_of=[b.label for b in baselines]),
    ]
    if args.save:
        lines.append(f"wrote {len(images)} reconstruction(s) to {args.save}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Entry point: 0 on success, 2 on a bad file, folder or setting (one line)."""
    try:
        print(evaluate(args))
    except (ModelFileError, TypeError, ValueError, ImportError, OSError) as err:
        print(f"unrolled eval: error: {err}", file=sys.stderr)
        return 2
    return 0
