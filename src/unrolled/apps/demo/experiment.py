"""The demo's experiment: data, physics and model from a :class:`DemoConfig`, one training
run per backward mode, and the memory measurements.

Every run starts from the same weights (one state dict loaded into each model), sees the
same batches in the same order and the same measurement noise (the
:class:`~unrolled.train.Trainer` seeds both from ``(seed, epoch, iteration)``), so the
runs differ only in how the gradient is computed.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset

from ... import data as datasets
from ...evaluation import fit_baselines
from ...physics.spec import blur_spec, mri_spec
from ...train import (
    PeakMemoryMeter,
    SavedTensorMeter,
    Trainer,
    derive_seed,
    epoch_batches,
    make_loader,
    median,
    mse,
    peak_rss_subprocess,
    seeded_noise,
)
from ..experiment import Experiment
from .config import DemoConfig, Mode

__all__ = [
    "ModeResult",
    "build_data",
    "demo_baselines",
    "build_model",
    "build_physics",
    "physics_spec",
    "channels_for",
    "measure_step",
    "rss_of_mode",
    "train_mode",
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
    """Image channels the model sees: 3 (RGB) for blur, 1 (complex) for MRI."""
    return CHANNELS if cfg.physics == "blur" else 1


# -- physics and model ----------------------------------------------------------------------


def physics_spec(cfg: DemoConfig) -> dict:
    """The measurement as plain values (stored in the saved models)."""
    if cfg.physics == "mri":
        return mri_spec(
            acceleration=cfg.acceleration, coils=cfg.coils, noise_sigma=cfg.noise, seed=cfg.seed
        )
    return blur_spec(cfg.blur_sigma, padding="valid", noise_sigma=cfg.noise)


def experiment_of(cfg: DemoConfig, mode: Mode | None = None) -> Experiment:
    """Unfolded HQS with a shared DnCNN, trainable stepsize and sigma, and an L2 data step
    solved by CG with the backward of ``mode`` (default: the first mode)."""
    mode = cfg.modes[0] if mode is None else mode
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
        solver={"max_iter": cfg.max_iter, "tol": cfg.tol},
        backward=mode.backward,
    )


def build_physics(cfg: DemoConfig) -> nn.Module:
    """The measurement model: blur (valid padding) + Gaussian noise, or multi-coil MRI."""
    experiment = experiment_of(cfg)
    if experiment.is_complex:
        if cfg.eval_size != cfg.img_size:
            raise ValueError(
                f"eval_size: MRI's mask is drawn for the training size {cfg.img_size}, "
                f"got held-out images of {cfg.eval_size}"
            )
        return experiment.build_physics((cfg.img_size, cfg.img_size))
    physics = experiment.build_physics()
    k = physics.kernel.shape[-1]
    smallest = min(cfg.img_size, cfg.eval_size, cfg.finetune_size)
    if smallest <= k:
        raise ValueError(
            f"img_size: valid padding needs images larger than the {k}x{k} blur kernel "
            f"(blur sigma {cfg.blur_sigma}), got {smallest}; use a larger --img-size "
            "or a smaller --blur-sigma"
        )
    return physics


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


# -- memory ---------------------------------------------------------------------------------

#: kineto's log level: its profiler prints a start and a stop notice (level 5, above its
#: errors) each time PeakMemoryMeter records CPU allocations; 6 keeps the demo's output to
#: the demo. Kineto reads the level when the profiler first starts in a process.
KINETO_QUIET = "6"


def _forward_backward(model: nn.Module, physics: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    loss = mse(model(y, physics), x)
    loss.backward()
    return loss


def measure_step(
    model: nn.Module, physics: nn.Module, x: Tensor, y: Tensor, device: torch.device | str
) -> dict:
    """Memory of one training step's forward and backward, after one unmeasured warm-up step
    (so one-off allocations, e.g. FFT plans and thread pools, are left out).

    Returns ``peak_bytes`` (every allocation and free over forward and backward, tensors
    recomputed by checkpointing included: :class:`~unrolled.train.PeakMemoryMeter`),
    ``saved_bytes`` (peak of bytes held for backward, :class:`SavedTensorMeter`; it does not
    see what checkpointing recomputes), ``meter`` and the CG iterations of the step. The
    gradients are cleared afterwards; the parameters are not changed.
    """
    device = torch.device(device)
    model.zero_grad(set_to_none=True)
    _forward_backward(model, physics, x, y)
    model.zero_grad(set_to_none=True)
    stats = fidelity_of(model).stats
    stats.reset()
    os.environ.setdefault("KINETO_LOG_LEVEL", KINETO_QUIET)  # a level set by the user wins
    with PeakMemoryMeter(device) as peak:
        with SavedTensorMeter() as saved:
            loss = mse(model(y, physics), x)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return {
        "peak_bytes": int(peak.peak_bytes),
        "saved_bytes": int(saved.peak_saved_bytes),
        "meter": (
            "torch.cuda.max_memory_allocated"
            if device.type == "cuda"
            else "CPU allocator events (torch profiler)"
        ),
        "cg_forward": stats.mean_forward,
        "cg_backward": stats.mean_backward,
    }


def first_batch(cfg: DemoConfig, loader, trainer: Trainer):
    """The first training batch and its measurement, exactly as the trainer's step 1."""
    x = next(epoch_batches(loader, cfg.seed, 0))
    x = (x[0] if isinstance(x, (tuple, list)) else x).to(trainer.device)
    return x, trainer.measure(x, 0, 0)


# -- RSS of a separate process ----------------------------------------------------------------


def _rss_setup(config: dict, mode_name: str, state: dict, threads: int):
    """In the child: build everything a training step needs (not measured)."""
    from .config import parse_modes

    torch.set_num_threads(threads)
    cfg = DemoConfig.from_dict(config)
    (mode,) = parse_modes(mode_name)
    physics = build_physics(cfg)
    model = build_model(cfg, mode)
    model.load_state_dict(state)
    train, _, _ = build_data(cfg)
    loader = make_loader(train, cfg.batch_size)
    trainer = Trainer(model, physics, loader, lr=cfg.lr, progress=False, seed=cfg.seed)
    x, y = first_batch(cfg, loader, trainer)
    # Touch the libraries' one-off buffers (thread pools, conv kernels) on a tiny input.
    small = torch.randn(1, 2, 8, 8, requires_grad=True)
    nn.functional.conv2d(small, torch.randn(2, 2, 3, 3)).sum().backward()
    return model, physics, trainer.optimizer, x, y


def _rss_steps(state, steps: int) -> float:
    """In the child: ``steps`` training steps (forward, backward, Adam update)."""
    model, physics, optimizer, x, y = state
    loss = torch.zeros(())
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = _forward_backward(model, physics, x, y)
        optimizer.step()
    return float(loss)


def rss_of_mode(cfg: DemoConfig, mode: Mode, state: dict) -> dict:
    """Peak resident memory above the baseline (imports, data, model built) of a fresh
    process running ``cfg.rss_steps`` training steps of ``mode`` on the first batch (CPU)."""
    cpu_cfg = DemoConfig.from_dict({**cfg.to_dict(), "device": "cpu"})
    setup = functools.partial(
        _rss_setup, cpu_cfg.to_dict(), mode.name, state, torch.get_num_threads()
    )
    report = peak_rss_subprocess(_rss_steps, cfg.rss_steps, setup=setup, timeout=600)
    return {
        "peak_above_baseline_bytes": int(report.peak_above_baseline_bytes),
        "baseline_bytes": int(report.baseline_bytes),
        "peak_bytes": int(report.peak_bytes),
        "hwm_reset": bool(report.hwm_reset),
        "steps": cfg.rss_steps,
    }


# -- one run ----------------------------------------------------------------------------------


@dataclass
class ModeResult:
    """What one training run produced (plain numbers, the trained model, a few estimates)."""

    mode: Mode
    losses: list[float]
    times: list[float]
    time_per_iter: float
    memory: dict | None
    cg_forward: float
    cg_backward: float
    cg_unconverged: int
    before: dict
    after: dict
    stepsize: list[float]
    sigma: list[float]
    train_seconds: float
    model: nn.Module | None = field(default=None, repr=False)
    baseline_scores: dict = field(default_factory=dict)
    rss: dict | None = None
    estimates: Tensor | None = field(default=None, repr=False)


def _metrics(record: dict) -> dict:
    return {k: float(record[k]) for k in ("psnr", "psnr_determined", "ssim")}


def train_mode(
    cfg: DemoConfig,
    mode: Mode,
    state: dict,
    train_set: Dataset,
    eval_set: Dataset,
    eval_y: Tensor,
    baselines: list,
    *,
    lr: float | None = None,
    measure: bool = True,
) -> ModeResult:
    """Train the model of ``mode`` from ``state`` for one pass over ``train_set`` per epoch
    (``cfg.epochs`` epochs when ``measure``, else one) and score it on ``eval_set``.

    ``measure``: also measure the memory of one step (and its RSS with ``cfg.rss``).
    ``eval_y``: measurements of a few held-out images, reconstructed after training for
    the figure. ``baselines``: fitted classical baselines, scored next to the model.
    """
    device = cfg.torch_device
    physics = build_physics(cfg).to(device)
    model = build_model(cfg, mode)
    model.load_state_dict(state)
    model.to(device)
    loader = make_loader(train_set, cfg.batch_size)
    eval_loader = make_loader(eval_set, cfg.batch_size, shuffle=False)
    epochs = cfg.epochs if measure else 1
    trainer = Trainer(
        model,
        physics,
        loader,
        eval_data=eval_loader,
        lr=cfg.lr if lr is None else lr,
        epochs=epochs,
        device=device,
        seed=cfg.seed,
        out_dir=None,
        eval_every=epochs,
        progress=cfg.progress,
        tensorboard=False,
        plots=False,
        baselines=baselines,
    )
    memory = rss = None
    if measure:
        x, y = first_batch(cfg, loader, trainer)
        memory = measure_step(model, physics, x, y, device)
        rss = rss_of_mode(cfg, mode, state) if cfg.rss else None

    history = trainer.fit()
    train = history["train"]
    losses = [float(r["loss"]) for r in train]
    times = [float(r["time_s"]) for r in train]
    evals = history["eval"]
    model.eval()
    with torch.no_grad():
        estimates = model(eval_y.to(device), physics).detach().cpu()
    return ModeResult(
        mode=mode,
        losses=losses,
        times=times,
        # The first step pays for one-off set-up (allocator growth, caches): left out.
        time_per_iter=median(times, skip_first=1 if len(times) > 1 else 0),
        memory=memory,
        cg_forward=_mean(r.get("cg_forward", 0.0) for r in train),
        cg_backward=_mean(r.get("cg_backward", 0.0) for r in train),
        cg_unconverged=int(sum(r.get("cg_unconverged", 0) for r in train)),
        before=_metrics(evals[0]),
        after=_metrics(evals[-1]),
        stepsize=[float(v) for v in model.stepsize.detach().cpu()],
        sigma=[float(v) for v in model.sigma.detach().cpu()],
        train_seconds=float(sum(times)),
        model=model,
        baseline_scores=dict(trainer.baseline_scores or {}),
        rss=rss,
        estimates=estimates,
    )


#: training-source images the baselines' weights are picked on
VALIDATION_IMAGES = 8


def _measured(cfg: DemoConfig, images: Dataset, count: int, physics: nn.Module, stream: int):
    """The first ``count`` images in batches, with their measurements (noise drawn from
    ``(seed, stream, batch index)``)."""
    count = min(count, len(images))
    pairs = []
    for i, start in enumerate(range(0, count, cfg.batch_size)):
        x = torch.stack([images[j] for j in range(start, min(start + cfg.batch_size, count))])
        with torch.no_grad(), seeded_noise(physics, derive_seed(cfg.seed, stream, i), "cpu"):
            pairs.append((x, physics.to("cpu")(x)))
    return pairs


def demo_baselines(cfg: DemoConfig, physics: nn.Module) -> list:
    """The classical baselines, their weights picked on ``VALIDATION_IMAGES`` crops of the
    held-out size from the training source: other pictures than the held-out ones, and of
    their size (the weight that suits a small crop does not suit a large image)."""
    images, _, _ = build_data(cfg, crop=cfg.eval_size, count=VALIDATION_IMAGES)
    return fit_baselines(physics, _measured(cfg, images, VALIDATION_IMAGES, physics, 55))


def baseline_loss(
    cfg: DemoConfig, train_set: Dataset, physics: nn.Module, baselines: list
) -> tuple[str, float]:
    """``(label, training loss)`` of the best baseline on the first two training batches:
    the level a trained network's training loss must get below."""
    pairs = _measured(cfg, train_set, 2 * cfg.batch_size, physics, 56)
    losses = {
        b.label: sum(float(mse(b(physics, y), x)) for x, y in pairs) / len(pairs) for b in baselines
    }
    best = min(losses, key=losses.get)
    return best, losses[best]


def score_heldout(runs: list[ModeResult]) -> dict:
    """Held-out scores of the baselines and of each run's final model (all measured with the
    same noise), as ``{"baselines": {label: metrics}, "models": {mode: metrics},
    "best_baseline": label}``."""
    baselines = runs[0].baseline_scores
    best = max(baselines, key=lambda k: baselines[k]["psnr"])
    return {
        "baselines": baselines,
        "best_baseline": best,
        "models": {r.mode.name: r.after for r in runs},
    }


def _mean(values) -> float:
    values = [float(v) for v in values]
    return sum(values) / len(values) if values else 0.0


def eval_batch(cfg: DemoConfig, eval_set: Dataset, physics: nn.Module, n: int = 4):
    """The first ``n`` held-out images and their measurements (noise from the seed)."""
    x = torch.stack([eval_set[i] for i in range(min(n, len(eval_set)))])
    with torch.no_grad(), seeded_noise(physics, derive_seed(cfg.seed, 77), "cpu"):
        y = physics.to("cpu")(x)
    return x, y
