"""``python -m benchmarks.run``: the performance benchmark of ``unrolled``.

Sections (``--sections``, all by default on CPU):

* ``main``: per image size, every mode trained side by side (interleaved rounds): the
  median time per training iteration, the CG iterations, the bytes saved for backward,
  the peak allocated, and the gradient error at the initial weights against a float64
  reference (tight CG).
* ``rss``: peak resident memory above import, each mode in its own process (CPU).
* ``cg``: CG iterations to the floating-point floor per padding, with and without the
  Fourier preconditioner.
* ``scaling``: saved bytes vs CG ``max_iter``; time and memory vs image size and batch.

Writes ``results.json`` (every raw number, the configuration, the machine),
``table.md`` and PNG plots to ``--out``, and prints the table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

from .config import DEEPINV, MODES, SECTIONS, BenchConfig, machine_info, preset
from .measure import (
    build_lanes,
    paired_ratio,
    reference_gradient,
    relative_error,
    run_interleaved,
    summarise,
)
from .problem import initial_denoiser, make_batches

__all__ = ["main", "build_parser", "config_from_args"]

PAIRS = (
    ("implicit", "deepinv-implicit"),
    ("unroll", "deepinv-unroll"),
    ("implicit", "denoiser"),
    ("unroll", "denoiser"),
    ("checkpoint", "denoiser"),
    ("implicit+layers", "denoiser"),
    ("deepinv-implicit", "denoiser"),
    ("implicit", "unroll"),
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--preset",
        choices=("default", "quick", "cuda"),
        default=None,
        help="settings to start from (default: 'cuda' with --device cuda, else "
        "'default'); the flags below override them",
    )
    p.add_argument("--quick", action="store_true", help="same as --preset quick (smoke run)")
    p.add_argument("--device", default=None, help="cpu (default) or cuda[:N]")
    p.add_argument("--out", default="bench-output", help="output folder (default bench-output)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: every usable core)",
    )
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=None)
    p.add_argument(
        "--modes", nargs="+", choices=MODES, default=None, help="modes of the main table"
    )
    p.add_argument("--rss-modes", nargs="+", choices=MODES, default=None)
    p.add_argument("--sizes", nargs="+", type=int, default=None, help="main table image sides")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--iters", type=int, default=None, help="timed iterations per mode")
    p.add_argument("--warmup", type=int, default=None, help="untimed rounds first (>= 1)")
    p.add_argument("--layers", type=int, default=None)
    p.add_argument("--depth", type=int, default=None)
    p.add_argument("--features", type=int, default=None)
    p.add_argument("--blur-sigma", type=float, default=None)
    p.add_argument("--max-iter", type=int, default=None)
    p.add_argument("--tol", type=float, default=None)
    p.add_argument(
        "--check-every",
        type=int,
        default=None,
        help="CG iterations between host synchronisations (GPU)",
    )
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--cg-extra-gammas", nargs="*", type=float, default=None)
    p.add_argument("--scale-max-iters", nargs="+", type=int, default=None)
    p.add_argument("--scale-max-iter-size", type=int, default=None)
    p.add_argument("--scale-sizes", nargs="+", type=int, default=None)
    p.add_argument("--scale-batches", nargs="+", type=int, default=None)
    p.add_argument("--scale-modes", nargs="+", choices=MODES, default=None)
    p.add_argument("--scale-iters", type=int, default=None)
    p.add_argument(
        "--no-peak-alloc",
        action="store_true",
        help="skip the peak-allocated figure (on CPU a profiler that slows the "
        "metered step down 1.5-3x)",
    )
    p.add_argument(
        "--scale-peak-alloc",
        action="store_true",
        help="measure the peak allocated in the scaling sweeps too (default on CUDA)",
    )
    p.add_argument(
        "--deepinv-path",
        default=None,
        help="folder to put first on sys.path to import deepinv (e.g. a pip --target folder)",
    )
    p.add_argument("--no-deepinv", action="store_true", help="skip the deepinv modes")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return p


_FIELDS = {
    "sections": tuple, "modes": tuple, "rss_modes": tuple, "sizes": tuple, "batch": None,
    "iters": None, "warmup": None, "layers": None, "depth": None, "features": None,
    "blur_sigma": None, "max_iter": None, "tol": None, "check_every": None, "seed": None,
    "cg_extra_gammas": tuple, "scale_max_iters": tuple, "scale_max_iter_size": None,
    "scale_sizes": tuple, "scale_batches": tuple, "scale_modes": tuple, "scale_iters": None,
}  # fmt: skip


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """The preset named by the flags, with every flag given applied over it."""
    device = args.device or "cpu"
    name = "quick" if args.quick else args.preset
    if name is None:
        name = "cuda" if torch.device(device).type == "cuda" else "default"
    cfg = preset(name)
    changes = {"device": device}
    for field, kind in _FIELDS.items():
        value = getattr(args, field)
        if value is not None:
            changes[field] = kind(value) if kind else value
    if args.no_peak_alloc:
        changes["peak_alloc"] = False
    if args.scale_peak_alloc:
        changes["scale_peak_alloc"] = True
    if args.threads is not None:
        changes["threads"] = args.threads
    return cfg.replace(**changes)


def _finite(obj):
    """JSON without NaN/inf (``null`` instead), so any JSON reader takes the file."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _run_main(cfg, denoiser, device, deepinv, log) -> dict:
    out = {}
    for size in cfg.sizes:
        batches = make_batches(
            cfg, size, cfg.batch, cfg.warmup + cfg.iters, device, cfg.torch_dtype
        )
        lanes = build_lanes(cfg, cfg.modes, denoiser, device, deepinv=deepinv)
        log(f"main {size}x{size}: float64 reference gradient")
        ref, ref_info = reference_gradient(cfg, denoiser, batches[0], device, "implicit")
        check, check_info = reference_gradient(cfg, denoiser, batches[0], device, "unroll")
        run_interleaved(
            cfg,
            lanes,
            batches,
            warmup=cfg.warmup,
            iters=cfg.iters,
            peak_alloc=cfg.peak_alloc,
            progress=lambda mode, r, rec, size=size: log(
                f"main {size}x{size} round {r} {mode}: {rec['total']:.3f} s"
                + (" (metered)" if rec.get("metered") else "")
            ),
        )
        modes = {}
        for mode, lane in lanes.items():
            summary = summarise(lane)
            if mode != "denoiser":  # another network: its gradient is not comparable
                summary["grad_rel_error"] = relative_error(lane.grads, ref)
                summary["grad_rel_error_denoiser"] = relative_error(lane.grads, ref, "priors.")
                summary["grad_rel_error_scalars"] = relative_error(lane.grads, ref, "scalars.")
            modes[mode] = summary
        paired = {
            f"{a}/{b}": paired_ratio(lanes[a], lanes[b])
            for a, b in PAIRS
            if a in lanes and b in lanes
        }
        entry = {
            "size": size,
            "batch": cfg.batch,
            "iters": cfg.iters,
            "warmup": cfg.warmup,
            "modes": modes,
            "paired": paired,
            "reference": {
                "dtype": "float64",
                "solver": {"max_iter": cfg.ref_max_iter, "tol": cfg.ref_tol},
                "implicit": ref_info,
                "unroll_check": check_info,
                "implicit_vs_unroll_rel_diff": relative_error(check, ref),
            },
        }
        dinv_lane = next((lanes[m] for m in DEEPINV if m in lanes), None)
        if dinv_lane is not None:
            x = batches[0][0]
            with torch.no_grad():
                ours = dinv_lane.physics.A(x)
                theirs = dinv_lane.model.fidelity.physics.A(x)
            entry["deepinv_operator_max_abs_diff"] = float((ours - theirs).abs().max())
        out[str(size)] = entry
        del lanes, batches
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
    except (TypeError, ValueError) as err:
        print(f"benchmarks.run: {err}", file=sys.stderr)
        return 2
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("benchmarks.run: --device cuda: no CUDA device is available", file=sys.stderr)
        return 2
    threads = cfg.threads or machine_info("cpu")["usable_cores"]
    torch.set_num_threads(threads)
    started = time.perf_counter()

    def log(message: str) -> None:
        if not args.quiet:
            print(
                f"[{time.perf_counter() - started:7.1f} s] {message}", file=sys.stderr, flush=True
            )

    deepinv, why = None, "skipped (--no-deepinv)"
    wants_deepinv = any(m in DEEPINV for m in (*cfg.modes, *cfg.rss_modes, *cfg.scale_modes))
    if not args.no_deepinv and wants_deepinv:
        from .reference import load_deepinv

        deepinv, why = load_deepinv(args.deepinv_path)
    if deepinv is None:
        keep = lambda modes: tuple(m for m in modes if m not in DEEPINV)  # noqa: E731
        cfg = cfg.replace(
            modes=keep(cfg.modes),
            rss_modes=keep(cfg.rss_modes),
            scale_modes=keep(cfg.scale_modes),
            scale_max_iter_modes=keep(cfg.scale_max_iter_modes),
        )
        log(f"deepinv: {why}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "command": [
            sys.executable,
            "-m",
            "benchmarks.run",
            *(sys.argv[1:] if argv is None else argv),
        ],
        "config": cfg.to_json(),
        "machine": machine_info(cfg.device),
        "deepinv": {
            "status": f"deepinv {deepinv.__version__}" if deepinv else why,
            "version": getattr(deepinv, "__version__", None),
        },
        "section_seconds": {},
    }
    denoiser = initial_denoiser(cfg)

    def section(name, fn):
        if name not in cfg.sections:
            return
        log(f"section {name}")
        t0 = time.perf_counter()
        results[name] = fn()
        results["section_seconds"][name] = time.perf_counter() - t0

    section("main", lambda: _run_main(cfg, denoiser, device, deepinv, log))

    def rss():
        from .rss import peak_rss

        return {
            str(size): peak_rss(
                cfg,
                cfg.rss_modes,
                size,
                cfg.batch,
                threads,
                import_deepinv=deepinv is not None,
                progress=lambda mode, r, size=size: log(f"rss {size}x{size} {mode}: {r}"),
            )
            for size in cfg.sizes
        }

    section("rss", rss)

    def cg():
        from .cg_floor import cg_floor_table

        size = max(cfg.sizes)
        return {
            "size": size,
            "batch": cfg.batch,
            "rows": cg_floor_table(cfg, size, cfg.batch, device),
        }

    section("cg", cg)

    def scaling():
        from .scaling import saved_vs_max_iter, sweep

        progress = lambda what, row: log(f"scaling {what}")  # noqa: E731
        seed_size = max(cfg.sizes)
        return {
            "max_iter": saved_vs_max_iter(cfg, denoiser, device, deepinv, progress),
            "size": {
                "rows": sweep(cfg, denoiser, device, sizes=cfg.scale_sizes,
                              batches=(cfg.batch,), deepinv=deepinv, progress=progress)
            },
            "batch": {
                "rows": sweep(cfg, denoiser, device, sizes=(seed_size,),
                              batches=cfg.scale_batches, deepinv=deepinv, progress=progress)
            },
        }  # fmt: skip

    section("scaling", scaling)

    from .plots import write_plots
    from .report import headline, markdown

    results["headline"] = headline(results)
    results["machine"]["load_average_end"] = (
        list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    )
    results["total_seconds"] = time.perf_counter() - started
    results["plots"] = write_plots(results, out)
    table = markdown(results)
    (out / "table.md").write_text(table + "\n")
    with open(out / "results.json", "w") as f:
        json.dump(_finite(results), f, indent=1)
    print(table)
    log(f"wrote {out / 'results.json'}, {out / 'table.md'} and {len(results['plots'])} plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
