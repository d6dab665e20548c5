"""The demo's experiment: data, physics and model from a :class:`DemoConfig` (through the
shared :class:`~unrolled.apps.experiment.Experiment`).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset

from ... import data as datasets
from ...fidelity import L2
from ...physics.spec import (
    blur_spec,
    compressed_sensing_spec,
    downsampling_spec,
    inpainting_spec,
    mri_spec,
)
from ...train import (
    derive_seed,
)
from ..experiment import Experiment, ensemble_setting
from .config import MRI_PHYSICS, SIZED_PHYSICS, DemoConfig, Mode

__all__ = [
    "build_data",
    "build_model",
    "build_physics",
    "channels_for",
    "experiment_of",
    "has_closed_form_prox",
    "initial_state",
    "physics_spec",
]

CHANNELS = 3


# -- data -----------------------------------------------------------------------------------


def _folder_split(path: str, cfg: DemoConfig, crop: int, count: int) -> tuple[Dataset, Dataset]:
    """Random ``crop`` crops of the first images of a folder for training, centre crops
    (``eval_size``) of the held-out rest (the last tenth, at least one image) for
    evaluation; or the ``train`` and ``test``/``val`` sub-folders when there are such."""
    root = os.path.expanduser(path)
    subdirs = {
        name: os.path.join(root, name)
        for name in ("train", "test", "val")
        if os.path.isdir(os.path.join(root, name))
    }
    held_out = subdirs.get("test") or subdirs.get("val")
    if "train" in subdirs and held_out:
        train = datasets.ImageFolder(subdirs["train"], crop=crop, seed=cfg.seed)
        evals = datasets.ImageFolder(held_out, crop=cfg.eval_size, train=False)
        return (
            Subset(train, range(min(count, len(train)))),
            Subset(evals, range(min(cfg.num_eval, len(evals)))),
        )
    train = datasets.ImageFolder(root, crop=crop, seed=cfg.seed)
    evals = datasets.ImageFolder(root, crop=cfg.eval_size, train=False)
    n = len(train)
    if n < 2:
        raise ValueError(f"data: folder:{path} needs at least 2 images (train + held out), got {n}")
    n_eval = max(1, n // 10)
    n_train = min(count, n - n_eval)
    return Subset(train, range(n_train)), Subset(evals, range(n - n_eval, n))


def build_data(
    cfg: DemoConfig, crop: int | None = None, count: int | None = None
) -> tuple[Dataset, Dataset, str]:
    """``(training set, held-out set, description)`` of real ``(3, S, S)`` images in ``[0, 1]``.

    Training: ``count`` (default ``num_images``) crops of side ``crop`` (default
    ``img_size``); held out: ``num_eval`` crops of side ``eval_size`` of other pictures.
    ``samples``: scikit-image's training photographs, and its evaluation photographs held
    out. ``deadleaves``: two independent procedural sets. ``bsds``: BSDS500 train / test
    (downloaded once into the cache). ``folder:PATH``: see :func:`_folder_split`.
    """
    size = cfg.img_size if crop is None else crop
    n = cfg.num_images if count is None else count
    n_eval, eval_size = cfg.num_eval, cfg.eval_size
    if cfg.data == "samples":
        train = datasets.SampleImages("train", crop=size, length=n, seed=cfg.seed)
        evals = datasets.SampleImages(
            "eval", crop=eval_size, length=n_eval, random_crops=True, seed=cfg.seed + 1
        )
        what = (
            f"scikit-image photographs: {n} training crops of 9 photos, {n_eval} held-out "
            f"{eval_size}x{eval_size} crops of 3 others"
        )
    elif cfg.data == "deadleaves":
        train = datasets.DeadLeaves(size, CHANNELS, n, seed=cfg.seed)
        # An independent stream of images for evaluation.
        evals = datasets.DeadLeaves(
            eval_size, CHANNELS, n_eval, seed=derive_seed(cfg.seed, 99) % 2**31
        )
        what = f"dead leaves: {n} training images, {n_eval} held-out {eval_size}x{eval_size}"
    elif cfg.data == "bsds":
        root = datasets.download_dataset("BSDS500")
        images = os.path.join(root, "BSR", "BSDS500", "data", "images")
        train, evals = _folder_split(images, cfg, size, n)
        what = f"BSDS500: {len(train)} training crops, {len(evals)} test crops"
    else:
        path = cfg.data[len("folder:") :]
        train, evals = _folder_split(path, cfg, size, n)
        what = f"folder {path}: {len(train)} training crops, {len(evals)} held-out"
    experiment = experiment_of(cfg)
    if experiment.is_complex:
        train = experiment.images(train, cfg.seed)
        evals = experiment.images(evals, derive_seed(cfg.seed, 98) % 2**31)
        what += "; grey, times a smooth random phase (complex)"
    return train, evals, what


def channels_for(cfg: DemoConfig) -> int:
    """Image channels the model sees: 1 (complex) for MRI, 3 (RGB) otherwise."""
    return 1 if cfg.physics in MRI_PHYSICS else CHANNELS


# -- physics and model ----------------------------------------------------------------------


def physics_spec(cfg: DemoConfig) -> dict:
    """The measurement as plain values (stored in the saved models); ``cfg`` resolved."""
    noise, seed = cfg.noise, cfg.seed
    if cfg.physics == "inpainting":
        return inpainting_spec(keep=cfg.keep, noise_sigma=noise, seed=seed)
    if cfg.physics == "downsampling":
        # Valid padding, as for blur: no closed-form prox, so the data step is a CG solve.
        return downsampling_spec(factor=cfg.factor, padding="valid", noise_sigma=noise)
    if cfg.physics == "compressed_sensing":
        shape = (CHANNELS, cfg.img_size, cfg.img_size)
        return compressed_sensing_spec(ratio=cfg.ratio, shape=shape, noise_sigma=noise, seed=seed)
    if cfg.physics in MRI_PHYSICS:
        coils = cfg.coils if cfg.physics == "multicoil_mri" else None
        return mri_spec(acceleration=cfg.acceleration, coils=coils, noise_sigma=noise, seed=seed)
    return blur_spec(cfg.blur_sigma, padding="valid", noise_sigma=noise)


#: the smoothness weight of the blur's initial estimate per unit of noise variance: the
#: smooth least-squares baseline picks about 0.56 at noise 0.1, and its best weight grows
#: with the noise variance
SMOOTH_INIT_PER_VARIANCE = 50.0


def initial_estimate_of(cfg: DemoConfig) -> tuple[str, float | None]:
    """``(init, init_weight)`` of the model: for the blur (with noise), least squares with a
    smoothness penalty, which fills the band along the border the valid blur leaves
    undetermined (docs/training-recipe.md); elsewhere the ``"auto"`` estimate."""
    if cfg.physics == "blur" and cfg.noise > 0:
        # 6 significant digits: 50 * 0.1**2 is 0.5000000000000001, the shipped model's 0.5
        return "smooth", float(f"{SMOOTH_INIT_PER_VARIANCE * cfg.noise**2:.6g}")
    return "auto", None


def experiment_of(cfg: DemoConfig, mode: Mode | None = None) -> Experiment:
    """Unfolded HQS with a shared DnCNN, trainable stepsize and sigma, and an L2 data step
    solved by CG with the backward of ``mode`` (default: the first mode)."""
    mode = cfg.modes[0] if mode is None else mode
    init, init_weight = initial_estimate_of(cfg)
    return Experiment(
        physics=physics_spec(cfg),
        channels=channels_for(cfg),
        layers=cfg.layers,
        depth=cfg.depth,
        features=cfg.features,
        stepsize=cfg.stepsize,
        sigma=cfg.sigma,
        trainable=("stepsize", "sigma"),
        checkpoint_layers=mode.checkpoint_layers,
        init=init,
        init_weight=init_weight,
        ensemble=ensemble_setting(cfg.ensemble),
        solver={"max_iter": cfg.max_iter, "tol": cfg.tol},
        backward=mode.backward,
    )


def build_physics(cfg: DemoConfig) -> nn.Module:
    """The measurement model of ``cfg.physics`` with its Gaussian noise (``cfg`` resolved);
    a ValueError naming the setting when the image sizes do not suit it."""
    experiment = experiment_of(cfg)
    if cfg.physics in SIZED_PHYSICS:
        if cfg.eval_size != cfg.img_size:
            raise ValueError(
                f"eval_size: the {cfg.physics} operator is drawn for the training size "
                f"{cfg.img_size}, got held-out images of {cfg.eval_size}"
            )
        return experiment.build_physics((cfg.img_size, cfg.img_size))
    physics = experiment.build_physics()
    if cfg.physics == "downsampling":
        for name in ("img_size", "eval_size"):
            size = getattr(cfg, name)
            try:
                physics.output_shape((1, CHANNELS, size, size))
            except ValueError as err:
                raise ValueError(f"{name}: {err}") from None
        return physics
    k = physics.kernel.shape[-1]
    smallest = min(cfg.img_size, cfg.eval_size, cfg.finetune_size)
    if smallest <= k:
        raise ValueError(
            f"img_size: valid padding needs images larger than the {k}x{k} blur kernel "
            f"(blur sigma {cfg.blur_sigma}), got {smallest}; use a larger --img-size "
            "or a smaller --blur-sigma"
        )
    return physics


def has_closed_form_prox(cfg: DemoConfig, physics: nn.Module) -> bool:
    """Whether the data step of ``physics`` is solved in closed form (no CG): then every
    backward mode differentiates the same formula, and the modes differ only where layers
    are checkpointed. Found by one prox on a zero image of the training size."""
    dtype = torch.complex64 if cfg.physics in MRI_PHYSICS else torch.float32
    z = torch.zeros(1, channels_for(cfg), cfg.img_size, cfg.img_size, dtype=dtype)
    fidelity = L2()
    with torch.no_grad():
        fidelity.prox(z, physics.A(z), physics, 1.0)
    return fidelity.stats.forward_solves == 0


def build_model(cfg: DemoConfig, mode: Mode) -> nn.Module:
    """The network of ``mode`` (see :func:`experiment_of`), freshly initialised."""
    return experiment_of(cfg, mode).build_model()


def initial_state(cfg: DemoConfig) -> dict[str, Tensor]:
    """The weights every run starts from (a function of the seed only)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = build_model(cfg, cfg.modes[0])
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def fidelity_of(model: nn.Module) -> nn.Module:
    return model.fidelity
