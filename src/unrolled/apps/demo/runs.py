"""One training run per backward mode, from the same weights, batches and noise, and the
held-out scores of the runs and of the classical baselines.

Every run starts from the same weights (one state dict loaded into each model), sees the
same batches in the same order and the same measurement noise (the
:class:`~unrolled.train.Trainer` seeds both from ``(seed, epoch, iteration)``), so the
runs differ only in how the gradient is computed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ...evaluation import fit_baselines
from ...train import (
    Trainer,
    derive_seed,
    make_loader,
    median,
    mse,
    seeded_noise,
)
from .config import DemoConfig, Mode
from .experiment import build_data, build_model, build_physics
from .memory import first_batch, measure_step, rss_of_mode

__all__ = [
    "ModeResult",
    "baseline_loss",
    "demo_baselines",
    "eval_batch",
    "score_heldout",
    "train_mode",
]


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
    scalars_only: bool = False,
) -> ModeResult:
    """Train the model of ``mode`` from ``state`` for one pass over ``train_set`` per epoch
    (``cfg.epochs`` epochs when ``measure``, else one) and score it on ``eval_set``.

    ``measure``: also measure the memory of one step (and its RSS with ``cfg.rss``).
    ``scalars_only``: keep the denoiser's weights fixed, train the per-layer scalars.
    ``eval_y``: measurements of a few held-out images, reconstructed after training for
    the figure. ``baselines``: fitted classical baselines, scored next to the model.
    """
    device = cfg.torch_device
    physics = build_physics(cfg).to(device)
    model = build_model(cfg, mode)
    model.load_state_dict(state)
    model.to(device)
    if scalars_only:
        model.priors.requires_grad_(False)
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
