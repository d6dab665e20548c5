"""Scaling: bytes saved for backward vs CG ``max_iter``; time and memory vs image size
and vs batch size."""

from __future__ import annotations

from .config import DEEPINV, BenchConfig
from .measure import build_lanes, run_interleaved, summarise, train_step
from .problem import make_batches, make_solver

__all__ = ["available", "saved_vs_max_iter", "sweep"]


def _peak(cfg: BenchConfig) -> bool:
    return cfg.peak_alloc and cfg.scale_peak_alloc


def available(modes, deepinv) -> list[str]:
    """``modes`` less deepinv's when deepinv is not importable."""
    return [m for m in modes if deepinv is not None or m not in DEEPINV]


def saved_vs_max_iter(cfg: BenchConfig, denoiser, device, deepinv=None, progress=None) -> dict:
    """One metered training step per (``max_iter``, mode) at ``scale_max_iter_size``, every
    CG running exactly ``max_iter`` iterations (``tol=0``, no floor stop), so the memory
    of the unrolled solve shows its growth and the implicit one its flatness."""
    size, batch = cfg.scale_max_iter_size, cfg.batch
    ((x, y),) = make_batches(cfg, size, batch, 1, device, cfg.torch_dtype)
    modes = available(cfg.scale_max_iter_modes, deepinv)
    rows = []
    for max_iter in cfg.scale_max_iters:
        solver = make_solver(
            cfg, max_iter=max_iter, tol=0.0, stop_at_floor=False, on_failure="ignore"
        )
        lanes = build_lanes(cfg, modes, denoiser, device, solver=solver, deepinv=deepinv)
        for mode, lane in lanes.items():
            record = train_step(lane, x, y, meter=True, peak_alloc=_peak(cfg))
            row = {"max_iter": max_iter, "mode": mode, **lane.memory}
            row["time_s"] = record["total"]
            row["cg_forward"] = record.get("cg_forward")
            row["cg_backward"] = record.get("cg_backward")
            rows.append(row)
            if progress is not None:
                progress(f"max_iter={max_iter} {mode}", row)
        del lanes
    return {"size": size, "batch": batch, "modes": modes, "rows": rows}


def sweep(
    cfg: BenchConfig,
    denoiser,
    device,
    *,
    sizes,
    batches,
    deepinv=None,
    progress=None,
) -> list[dict]:
    """Time and memory of ``scale_modes`` for every ``(size, batch)`` pair, each pair an
    interleaved run of ``scale_warmup`` + ``scale_iters`` rounds."""
    modes = available(cfg.scale_modes, deepinv)
    rows = []
    for size in sizes:
        for batch in batches:
            data = make_batches(
                cfg, size, batch, cfg.scale_warmup + cfg.scale_iters, device, cfg.torch_dtype
            )
            lanes = build_lanes(cfg, modes, denoiser, device, deepinv=deepinv)
            run_interleaved(
                cfg,
                lanes,
                data,
                warmup=cfg.scale_warmup,
                iters=cfg.scale_iters,
                peak_alloc=_peak(cfg),
            )
            for mode, lane in lanes.items():
                row = {"size": size, "batch": batch, "mode": mode, **summarise(lane)}
                rows.append(row)
                if progress is not None:
                    progress(f"size={size} batch={batch} {mode}", row)
            del lanes, data
    return rows
