"""Peak resident memory of training, each mode in its own fresh process.

:func:`peak_rss` spawns a process per mode through
:func:`unrolled.train.peak_rss_subprocess`. In the child, :func:`prepare` runs before
the baseline is taken: the imports (torch, unrolled, and deepinv for deepinv's
modes), the network, its optimiser, the batches, and one training step on a tiny
image, which imports what the first step imports lazily (``torch.optim``'s and
autograd's helpers, some of them hundreds of modules) and loads the kernels' code.
The figure is the peak of the resident set above that baseline over ``rss_steps``
training steps at the measured size: the memory a training step needs.

When deepinv is importable, every child imports it, whatever its mode: the heap that
an import leaves behind (memory freed to the allocator but still resident) is reused
by the training step without raising the resident set, so children with different
imports would not be comparable (measured: a denoiser-only child peaked 17 MiB above
a deepinv-implicit one at 32x32 when only the latter imported deepinv).
"""

from __future__ import annotations

import functools

import torch

from unrolled.train import peak_rss_subprocess

from .config import DEEPINV, BenchConfig
from .measure import Lane, build_lanes, train_step
from .problem import initial_denoiser, kernel, make_batches

__all__ = ["peak_rss", "prepare", "train"]


def prepare(
    cfg: BenchConfig, mode: str, size: int, batch: int, threads: int, import_deepinv: bool
) -> tuple:
    """In the child, before the baseline: build everything and warm the code paths up."""
    torch.set_num_threads(threads)
    deepinv = None
    if import_deepinv or mode in DEEPINV:
        from .reference import load_deepinv

        deepinv, why = load_deepinv()
        if deepinv is None:
            raise RuntimeError(why)
    lane = build_lanes(cfg, [mode], initial_denoiser(cfg), "cpu", deepinv=deepinv)[mode]
    batches = make_batches(cfg, size, batch, cfg.rss_steps, "cpu", cfg.torch_dtype)
    tiny = max(kernel(cfg).shape) + 3
    ((x, y),) = make_batches(cfg, tiny, 1, 1, "cpu", cfg.torch_dtype)
    train_step(lane, x, y)
    return lane, batches


def train(state: tuple[Lane, list]) -> dict:
    """In the child, measured: ``rss_steps`` training steps."""
    lane, batches = state
    return {"times_s": [train_step(lane, x, y)["total"] for x, y in batches]}


def peak_rss(
    cfg: BenchConfig,
    modes,
    size: int,
    batch: int,
    threads: int,
    *,
    import_deepinv: bool,
    progress=None,
) -> dict:
    """``{mode: RSS figures}``, one spawned process per mode, run one after the other;
    ``import_deepinv``: every child imports deepinv (see the module docstring)."""
    out = {}
    for mode in modes:
        setup = functools.partial(prepare, cfg, mode, size, batch, threads, import_deepinv)
        try:
            report = peak_rss_subprocess(train, setup=setup, timeout=cfg.rss_timeout)
        except RuntimeError as err:
            out[mode] = {"error": str(err).strip().splitlines()[-1]}
        else:
            out[mode] = {
                "peak_above_import_bytes": report.peak_above_baseline_bytes,
                "baseline_bytes": report.baseline_bytes,
                "peak_bytes": report.peak_bytes,
                "hwm_reset": report.hwm_reset,
                "imports_deepinv": import_deepinv or mode in DEEPINV,
                "times_s": report.result["times_s"],
            }
        if progress is not None:
            progress(mode, out[mode])
    return out
