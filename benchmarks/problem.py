"""The benchmark problem: images, blurred noisy measurements, and the network of each mode.

Every mode starts from the same denoiser weights and sees the same batches, so the
modes differ only in their data step: that is what the figures compare. The physics,
the denoiser and the network come from the experiment builder the commands use
(:class:`unrolled.apps.experiment.Experiment`).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

import unrolled as ur
from unrolled.apps.experiment import Experiment
from unrolled.data import DeadLeaves
from unrolled.physics import Blur, gaussian_kernel
from unrolled.physics.spec import blur_spec

from .config import DEEPINV, BenchConfig

__all__ = [
    "IdentityFidelity",
    "experiment",
    "kernel",
    "make_physics",
    "make_batches",
    "initial_denoiser",
    "make_solver",
    "build_model",
]


class IdentityFidelity(nn.Module):
    """A data step that does nothing (``prox(z) = z``): HQS reduced to its denoisers, the
    lower bound on the time and memory of a training step."""

    def prox(self, z: Tensor, y: Tensor, physics, gamma) -> Tensor:
        return z


def experiment(cfg: BenchConfig, *, padding: str | None = None, **changes) -> Experiment:
    """The seed network on the seed blur (noiseless: :func:`make_batches` draws the
    noise), with ``changes`` to the :class:`Experiment`'s fields."""
    settings = dict(
        physics=blur_spec(cfg.blur_sigma, padding=padding or cfg.padding),
        channels=cfg.channels,
        layers=cfg.layers,
        depth=cfg.depth,
        features=cfg.features,
        stepsize=cfg.stepsize,
        sigma=cfg.sigma,
        trainable=("stepsize", "sigma"),
        solver={"max_iter": cfg.max_iter, "tol": cfg.tol, "check_every": cfg.check_every},
    )
    settings.update(changes)
    return Experiment(**settings)


def kernel(cfg: BenchConfig) -> Tensor:
    """The Gaussian blur kernel ``(kh, kw)``, float32 (cast it for other dtypes, so every
    dtype blurs with the same numbers)."""
    return gaussian_kernel(cfg.blur_sigma, dtype=torch.float32)


def make_physics(cfg: BenchConfig, device, dtype: torch.dtype, padding: str | None = None) -> Blur:
    """``Blur(kernel, padding)`` on ``device`` in ``dtype`` (no noise module: the noise is
    drawn once in :func:`make_batches` so every mode sees the same measurements)."""
    # Built in float32 and cast, so every dtype blurs with the same numbers.
    physics = experiment(cfg, padding=padding).build_physics(dtype=torch.float32)
    return physics.to(device=device, dtype=dtype)


def make_batches(
    cfg: BenchConfig,
    size: int,
    batch: int,
    count: int,
    device,
    dtype: torch.dtype,
    padding: str | None = None,
) -> list[tuple[Tensor, Tensor]]:
    """``count`` batches ``(x, y)``: dead-leaves images ``x`` ``(batch, C, size, size)`` and
    ``y = A x + noise * n`` with ``n`` standard normal, both seeded by ``cfg.seed``.

    Images and noise are drawn in float32 on the CPU, then cast and moved, so the data
    are the same numbers on every device and in every dtype."""
    data = DeadLeaves(size, channels=cfg.channels, length=count * batch, seed=cfg.seed)
    physics = make_physics(cfg, "cpu", torch.float32, padding)
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    batches = []
    for i in range(count):
        x = torch.stack([data[i * batch + j] for j in range(batch)])
        clean = physics.A(x)
        y = clean + cfg.noise * torch.randn(clean.shape, generator=generator)
        batches.append((x.to(device=device, dtype=dtype), y.to(device=device, dtype=dtype)))
    return batches


def initial_denoiser(cfg: BenchConfig) -> nn.Module:
    """The DnCNN every mode starts from (float32, CPU), initialised from ``cfg.seed``
    without touching the global random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return experiment(cfg).build_denoiser()


def make_solver(cfg: BenchConfig, **changes) -> ur.CG:
    """The seed CG settings, with ``changes``."""
    return experiment(cfg, solver={**experiment(cfg).solver, **changes}).build_solver()


def build_model(
    cfg: BenchConfig,
    mode: str,
    denoiser: nn.Module,
    device,
    dtype: torch.dtype,
    *,
    solver: ur.CG | None = None,
    deepinv=None,
) -> ur.unfolded.HQS:
    """The seed HQS network of ``mode`` with a copy of ``denoiser``'s weights.

    Modes: ``"denoiser"`` (no data step), ``"unroll"`` / ``"implicit"`` / ``"checkpoint"``
    (the prox's backward), ``"implicit+layers"`` (implicit, plus per-layer activation
    checkpointing), ``"deepinv-unroll"`` / ``"deepinv-implicit"`` (deepinv's data step,
    needs the ``deepinv`` module, see :mod:`benchmarks.reference`).
    """
    solver = solver or make_solver(cfg)
    if mode == "denoiser":
        fidelity: nn.Module = IdentityFidelity()
    elif mode in DEEPINV:
        if deepinv is None:
            raise ValueError(f"mode: {mode!r} needs deepinv, which is not importable")
        from .reference import DeepinvL2

        fidelity = DeepinvL2(
            deepinv,
            kernel(cfg).to(device=device, dtype=dtype),
            padding=cfg.padding,
            implicit=mode == "deepinv-implicit",
            max_iter=solver.max_iter,
            tol=solver.tol,
            device=device,
        )
    else:
        backward = "implicit" if mode == "implicit+layers" else mode
        fidelity = ur.L2(solver=solver, backward=backward)
    model = experiment(cfg, checkpoint_layers=mode == "implicit+layers").build_model(
        denoiser=copy.deepcopy(denoiser), fidelity=fidelity
    )
    return model.to(device=device, dtype=dtype)
