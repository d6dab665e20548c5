"""Training steps of several modes, interleaved, with their time, memory, CG work and
gradient error.

Interleaving: round ``r`` runs one step of every mode on batch ``r`` (the order rotated
each round), so a slow spell of the machine hits every mode alike and per-round
ratios stay meaningful. The first ``warmup`` rounds are not timed: round 0 gives each
mode's gradient at the common initial weights (compared with the float64 reference),
and the last warm-up round is metered (bytes saved for backward, peak allocated).
"""

from __future__ import annotations

import contextlib
import math
import statistics
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unrolled.train import PeakMemoryMeter, SavedTensorMeter, Timer

from .config import BenchConfig
from .problem import build_model, make_physics, make_solver

__all__ = ["Lane", "build_lanes", "train_step", "run_interleaved", "reference_gradient"]


@dataclass
class Lane:
    """One mode under test: its network, optimiser, and what its steps measured."""

    mode: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    physics: nn.Module
    device: torch.device
    steps: list[dict] = field(default_factory=list)
    memory: dict = field(default_factory=dict)
    grads: dict | None = None


def _stats(model: nn.Module):
    return getattr(model.fidelity, "stats", None)


def build_lanes(
    cfg: BenchConfig,
    modes,
    denoiser: nn.Module,
    device,
    *,
    solver=None,
    deepinv=None,
) -> dict[str, Lane]:
    """A :class:`Lane` per mode, all from ``denoiser``'s weights."""
    device = torch.device(device)
    dtype = cfg.torch_dtype
    lanes = {}
    for mode in modes:
        model = build_model(cfg, mode, denoiser, device, dtype, solver=solver, deepinv=deepinv)
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], cfg.lr)
        physics = make_physics(cfg, device, dtype)
        lanes[mode] = Lane(mode, model, optimizer, physics, device)
    return lanes


def _gradients(model: nn.Module) -> dict[str, Tensor]:
    """The gradient of every trained parameter of the network (denoiser and scalars), by
    name; zeros where a parameter got none (the step size of the denoiser-only mode)."""
    out = {}
    for name, p in model.named_parameters():
        if name.startswith(("priors.", "scalars.")):
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            out[name] = g.detach().to(device="cpu", dtype=torch.float64, copy=True)
    return out


def train_step(
    lane: Lane,
    x: Tensor,
    y: Tensor,
    *,
    meter: bool = False,
    peak_alloc: bool = True,
    keep_grads: bool = False,
) -> dict:
    """One training step (MSE loss, backward, Adam step) of ``lane``.

    Returns ``{"forward", "backward", "optimizer", "total"}`` seconds (synchronised on
    CUDA), the mean CG iterations per forward and backward solve of this step, and the
    number of unconverged samples. With ``meter``: also the bytes saved for backward
    and the peak allocated over forward and backward (stored in ``lane.memory``).
    """
    model, device = lane.model, lane.device
    stats = _stats(model)
    if stats is not None:
        stats.reset()
    lane.optimizer.zero_grad(set_to_none=True)
    record: dict = {}
    if meter:
        peak = PeakMemoryMeter(device) if peak_alloc else contextlib.nullcontext()
        with Timer(device) as total, peak:
            with SavedTensorMeter() as saved:
                loss = F.mse_loss(model(y, lane.physics), x)
            loss.backward()
        lane.memory = {
            "saved_bytes": int(saved.saved_bytes),
            "peak_saved_bytes": int(saved.peak_saved_bytes),
            "peak_alloc_bytes": int(peak.peak_bytes) if peak_alloc else None,
        }
        record["metered"] = True
        record["total"] = total.seconds
    else:
        with Timer(device) as fwd:
            loss = F.mse_loss(model(y, lane.physics), x)
        with Timer(device) as bwd:
            loss.backward()
        record["forward"], record["backward"] = fwd.seconds, bwd.seconds
    if keep_grads:
        lane.grads = _gradients(model)
    with Timer(device) as opt:
        lane.optimizer.step()
    record["optimizer"] = opt.seconds
    if not meter:
        record["total"] = record["forward"] + record["backward"] + record["optimizer"]
    record["loss"] = float(loss.detach())
    if stats is not None:
        record["cg_forward"] = float(stats.mean_forward)
        record["cg_backward"] = float(stats.mean_backward)
        record["unconverged"] = int(stats.unconverged)
    return record


def run_interleaved(
    cfg: BenchConfig,
    lanes: dict[str, Lane],
    batches: list[tuple[Tensor, Tensor]],
    *,
    warmup: int,
    iters: int,
    peak_alloc: bool = True,
    progress=None,
) -> None:
    """``warmup + iters`` rounds, one step of every lane per round on batch ``r``; the
    records go to ``lane.steps`` (warm-up ones flagged)."""
    if len(batches) < warmup + iters:
        raise ValueError(f"batches: expected {warmup + iters}, got {len(batches)}")
    modes = list(lanes)
    for r in range(warmup + iters):
        x, y = batches[r]
        shift = r % len(modes)
        for mode in modes[shift:] + modes[:shift]:
            record = train_step(
                lanes[mode],
                x,
                y,
                meter=r == warmup - 1,
                peak_alloc=peak_alloc,
                keep_grads=r == 0,
            )
            record["round"] = r
            record["warmup"] = r < warmup
            lanes[mode].steps.append(record)
            if progress is not None:
                progress(mode, r, record)


def reference_gradient(
    cfg: BenchConfig, denoiser: nn.Module, batch: tuple[Tensor, Tensor], device, mode: str
) -> tuple[dict[str, Tensor], dict]:
    """The float64 gradient at the initial weights on ``batch``, with a tight CG.

    ``mode`` is ``"implicit"`` (the reference) or ``"unroll"`` (autograd through the
    converged solve, to cross-check the reference). Returns the gradients by name and
    the CG work."""
    ref_cfg = cfg.replace(dtype="float64")
    solver = make_solver(cfg, max_iter=cfg.ref_max_iter, tol=cfg.ref_tol, check_every=1)
    lane = build_lanes(ref_cfg, [mode], denoiser, device, solver=solver)[mode]
    x, y = (t.to(dtype=torch.float64) for t in batch)
    record = train_step(lane, x, y, keep_grads=True)
    info = {k: record[k] for k in ("cg_forward", "cg_backward", "unconverged", "loss")}
    return lane.grads, info


def relative_error(grads: dict[str, Tensor], ref: dict[str, Tensor], prefix: str = "") -> float:
    """``||g - g_ref|| / ||g_ref||`` over the parameters whose name starts with ``prefix``."""
    names = [n for n in ref if n.startswith(prefix)]
    if not names:
        return math.nan
    diff = math.sqrt(sum(float((grads[n] - ref[n]).square().sum()) for n in names))
    norm = math.sqrt(sum(float(ref[n].square().sum()) for n in names))
    return diff / norm if norm > 0 else math.nan


def summarise(lane: Lane) -> dict:
    """Medians over the timed steps, the memory, the CG work, the raw step records."""
    timed = [s for s in lane.steps if not s["warmup"]]

    def med(key):
        values = [s[key] for s in timed if key in s]
        return statistics.median(values) if values else None

    return {
        "time_s": med("total"),
        "forward_s": med("forward"),
        "backward_s": med("backward"),
        "optimizer_s": med("optimizer"),
        "cg_forward": med("cg_forward"),
        "cg_backward": med("cg_backward"),
        "unconverged": sum(s.get("unconverged", 0) for s in lane.steps),
        **lane.memory,
        "steps": lane.steps,
    }


def paired_ratio(a: Lane, b: Lane) -> float | None:
    """Median over the timed rounds of ``time(a) / time(b)`` (same round, same batch)."""
    tb = {s["round"]: s["total"] for s in b.steps if not s["warmup"]}
    ratios = [s["total"] / tb[s["round"]] for s in a.steps if not s["warmup"] and s["round"] in tb]
    return statistics.median(ratios) if ratios else None
