"""Time per training step against the gradient's accuracy, for both libraries: the
comparison at equal gradient error.

A stopping rule alone can make one library look fast (the other may never meet a
tolerance its float32 arithmetic cannot reach). So every solver setting a user would
try is run: tolerances from 1e-2 to 1e-8, the reference library's defaults
(``max_iter=50, tol=1e-4``) and several ``max_iter`` caps, for ``unrolled``'s implicit
and unrolled backward and deepinv's. Each setting is one network (same weights, same
batches) among all the others in one interleaved run (see :mod:`benchmarks.measure`);
its point is (gradient relative error against the float64 reference, median time per
training step). The data step's time is the step minus the denoiser-only step of the
same round (median over rounds).

From the two lower fronts (the fastest setting at each error level or better):
"at equal gradient error, X times faster" is read off at every error the reference
library reaches. The whole step cannot be faster than the denoiser-only step (the
bound), so the data step alone is reported too.

Also: milliseconds per CG iteration of each library's solve of the first layer's system
at matched iteration counts (fixed-length solves, by difference of two lengths),
forward solve and implicit backward.

``python -m benchmarks.equal_accuracy --quick`` (32x32, batch 4, 15 networks, 2 rounds) or
without ``--quick`` (32x32 and 64x64, batch 8, 31 networks per size, 5 rounds); writes
``equal_accuracy.json``, ``equal_accuracy.md`` and ``equal_accuracy_<size>.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

import unrolled as ur

from .config import BenchConfig, machine_info
from .measure import build_lanes, reference_gradient, relative_error, run_interleaved
from .problem import initial_denoiser, make_batches, make_physics, make_solver
from .reference import DeepinvL2, load_deepinv

__all__ = ["SETTINGS", "sweep", "fronts", "per_iteration_ms", "main"]

#: (max_iter, tol) per library: tolerance sweeps at a generous cap, then caps
SETTINGS = {
    "ours": [(100, t) for t in (1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-8)] + [(2, 1e-8), (3, 1e-8)],
    "deepinv": [(100, 1e-8), (50, 1e-4), (100, 1e-3), (100, 1e-2)]
    + [(m, 1e-4) for m in (5, 10, 20)],
}
QUICK_SETTINGS = {
    "ours": [(100, t) for t in (1e-2, 1e-4, 1e-8)] + [(2, 1e-8)],
    "deepinv": [(100, 1e-8), (50, 1e-4), (10, 1e-4)],
}
CURVES = {
    "ours": ("implicit", "unroll"),
    "deepinv": ("deepinv-implicit", "deepinv-unroll"),
}


def _label(mode: str, max_iter: int, tol: float) -> str:
    return f"{mode} max_iter={max_iter} tol={tol:g}"


def sweep(cfg: BenchConfig, size: int, settings: dict, deepinv, *, iters: int, log) -> dict:
    """One interleaved run of every (mode, setting) and the denoiser-only network."""
    denoiser = initial_denoiser(cfg)
    device, dtype = torch.device(cfg.device), cfg.torch_dtype
    batches = make_batches(cfg, size, cfg.batch, 1 + iters, device, dtype)
    ref, _ = reference_gradient(cfg, denoiser, batches[0], device, "implicit")
    lanes = build_lanes(cfg, ["denoiser"], denoiser, device)
    points = {}
    for library, modes in CURVES.items():
        if library == "deepinv" and deepinv is None:
            continue
        for mode in modes:
            for max_iter, tol in settings[library]:
                label = _label(mode, max_iter, tol)
                solver = make_solver(cfg, max_iter=max_iter, tol=tol, on_failure="ignore")
                lane = build_lanes(cfg, [mode], denoiser, device, solver=solver, deepinv=deepinv)
                lanes[label] = lane[mode]
                points[label] = {"library": library, "mode": mode, "max_iter": max_iter, "tol": tol}
    log(f"equal accuracy {size}x{size}: {len(lanes)} networks, {iters} timed rounds")
    run_interleaved(cfg, lanes, batches, warmup=1, iters=iters, peak_alloc=False)
    base = {s["round"]: s["total"] for s in lanes["denoiser"].steps if not s["warmup"]}
    for label, point in points.items():
        timed = [s for s in lanes[label].steps if not s["warmup"]]
        point["step_s"] = statistics.median(s["total"] for s in timed)
        point["data_s"] = statistics.median(s["total"] - base[s["round"]] for s in timed)
        point["grad_rel_error"] = relative_error(lanes[label].grads, ref)
        point["cg_forward"] = statistics.median(s.get("cg_forward", 0.0) for s in timed)
        point["cg_backward"] = statistics.median(s.get("cg_backward", 0.0) for s in timed)
    return {
        "size": size,
        "batch": cfg.batch,
        "rounds": iters,
        "denoiser_step_s": statistics.median(base.values()),
        "points": points,
    }


def _front(points: list[dict], key: str) -> list[dict]:
    """The settings no other beats on both error and time (sorted by error)."""
    front, best = [], float("inf")
    for p in sorted(points, key=lambda p: (p["grad_rel_error"], p[key])):
        if p[key] < best:
            front.append(p)
            best = p[key]
    return front


def _cheapest_at(front: list[dict], error: float, key: str) -> float | None:
    """The least time on ``front`` among settings with an error at most ``error``."""
    times = [p[key] for p in front if p["grad_rel_error"] <= error]
    return min(times) if times else None


def fronts(result: dict) -> dict:
    """Speed-ups of our implicit mode over deepinv's implicit mode at equal gradient error,
    for the whole step and the data step, at each point of deepinv's front."""
    pts = list(result["points"].values())
    out = {}
    for key in ("step_s", "data_s"):
        ours = _front([p for p in pts if p["mode"] == "implicit"], key)
        theirs = _front([p for p in pts if p["mode"] == "deepinv-implicit"], key)
        rows = []
        for p in theirs:
            mine = _cheapest_at(ours, p["grad_rel_error"], key)
            if mine is not None and mine > 0:
                rows.append(
                    {
                        "error": p["grad_rel_error"],
                        "deepinv": p[key],
                        "ours": mine,
                        "speedup": p[key] / mine,
                        "deepinv_setting": (p["max_iter"], p["tol"]),
                    }
                )
        out[key] = {
            "at_deepinv_points": rows,
            "min_speedup": min((r["speedup"] for r in rows), default=None),
        }
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def per_iteration_ms(cfg: BenchConfig, size: int, deepinv, *, short=10, long=30, rounds=5):
    """ms per CG iteration, forward solve and implicit backward, for both libraries on the
    first layer's system (seed step size), at the same fixed iteration counts."""
    device, dtype = torch.device(cfg.device), cfg.torch_dtype
    physics = make_physics(cfg, device, dtype)
    ((_, y),) = make_batches(cfg, size, cfg.batch, 1, device, dtype)
    z0 = physics.A_adjoint(y)
    v = torch.randn(z0.shape, generator=torch.Generator().manual_seed(cfg.seed + 2)).to(z0)
    gamma = torch.tensor(float(cfg.stepsize), device=device, dtype=dtype)

    def ours(n, preconditioner):
        solver = ur.CG(
            max_iter=n,
            tol=0.0,
            stop_at_floor=False,
            on_failure="ignore",
            preconditioner=preconditioner,
        )
        return lambda z: ur.linalg.prox_l2(physics, z, y, gamma, solver=solver)

    def theirs(n):
        # tol = 0 is refused by nothing and met by nothing: exactly n iterations
        dl2 = DeepinvL2(
            deepinv,
            physics.kernel,
            padding=cfg.padding,
            implicit=True,
            max_iter=n,
            tol=0.0,
            device=device,
        )
        return lambda z: dl2.prox(z, y, None, float(cfg.stepsize))

    solvers = {
        "ours (no preconditioner)": lambda n: ours(n, None),
        "ours (auto preconditioner)": lambda n: ours(n, "auto"),
    }
    if deepinv is not None:
        solvers["deepinv"] = theirs
    times = {(name, n, part): [] for name in solvers for n in (short, long) for part in "fb"}
    built = {(name, n): make(n) for name, make in solvers.items() for n in (short, long)}
    for r in range(rounds + 1):
        for (name, n), fn in built.items():
            z = z0.clone().requires_grad_(True)
            _sync(device)
            start = time.perf_counter()
            h = fn(z)
            _sync(device)
            mid = time.perf_counter()
            h.backward(v)
            _sync(device)
            end = time.perf_counter()
            if r:  # round 0 warms up
                times[(name, n, "f")].append(mid - start)
                times[(name, n, "b")].append(end - mid)
    out = {}
    for name in solvers:
        per = {}
        for part, word in (("f", "forward"), ("b", "backward")):
            a = statistics.median(times[(name, long, part)])
            b = statistics.median(times[(name, short, part)])
            per[f"{word}_ms"] = 1e3 * (a - b) / (long - short)
        out[name] = per
    return {"size": size, "batch": cfg.batch, "iterations": (short, long), "libraries": out}


def _table(results: dict) -> str:
    lines = []
    for size, res in results["sizes"].items():
        sw = res["sweep"]
        lines += [
            f"### {size}x{size}, batch {sw['batch']}: time per training step vs gradient error",
            "",
            f"Denoiser-only step (the bound): {1e3 * sw['denoiser_step_s']:.0f} ms "
            f"(median of {sw['rounds']} rounds).",
            "",
            "| mode | max_iter | tol | CG its fwd / bwd | grad rel. error | step ms "
            "| data step ms |",
            "|---|---|---|---|---|---|---|",
        ]
        for p in sorted(sw["points"].values(), key=lambda p: (p["mode"], p["grad_rel_error"])):
            lines.append(
                f"| {p['mode']} | {p['max_iter']} | {p['tol']:g} "
                f"| {p['cg_forward']:.1f} / {p['cg_backward']:.1f} | {p['grad_rel_error']:.2e} "
                f"| {1e3 * p['step_s']:.0f} | {1e3 * p['data_s']:.0f} |"
            )
        lines += ["", "At equal gradient error (deepinv implicit's front against ours):", ""]
        lines += [
            "| deepinv setting | error | deepinv step ms | ours step ms | step speed-up "
            "| deepinv data ms | ours data ms | data speed-up |",
            "|---" * 8 + "|",
        ]
        step = {r["deepinv_setting"]: r for r in res["fronts"]["step_s"]["at_deepinv_points"]}
        data = {r["deepinv_setting"]: r for r in res["fronts"]["data_s"]["at_deepinv_points"]}
        for setting in dict.fromkeys([*step, *data]):
            s, d = step.get(setting), data.get(setting)

            err = (s or d)["error"]
            lines.append(
                f"| max_iter={setting[0]} tol={setting[1]:g} | {err:.2e} | {cell(s, 'deepinv')} "
                f"| {cell(s, 'ours')} | {cell(s, 'speedup')} | {cell(d, 'deepinv')} "
                f"| {cell(d, 'ours')} | {cell(d, 'speedup')} |"
            )
        f = res["fronts"]
        lines += [
            "",
            f"Least speed-up over deepinv's front: whole step "
            f"{_fmt(f['step_s']['min_speedup'])}, data step {_fmt(f['data_s']['min_speedup'])}.",
        ]
        it = res["per_iteration"]
        lines += [
            "",
            f"ms per CG iteration (system `A^T A + I/gamma`, "
            f"gamma {results['config']['stepsize']:g}, "
            f"iterations {it['iterations'][0]} vs {it['iterations'][1]}):",
            "",
            "| solver | forward ms / it | implicit backward ms / it |",
            "|---|---|---|",
        ]
        for name, per in it["libraries"].items():
            lines.append(f"| {name} | {per['forward_ms']:.2f} | {per['backward_ms']:.2f} |")
        lines.append("")
    return "\n".join(lines)


def cell(r: dict | None, k: str) -> str:
    if r is None:
        return "-"
    return f"{r[k]:.2f}" if k == "speedup" else f"{1e3 * r[k]:.0f}"


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.2f}x"


def _plot(results: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for size, res in results["sizes"].items():
        sw = res["sweep"]
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for ax, key, title in (
            (axes[0], "step_s", "whole training step"),
            (axes[1], "data_s", "data step (step - denoiser-only)"),
        ):
            for mode in dict.fromkeys(p["mode"] for p in sw["points"].values()):
                pts = [p for p in sw["points"].values() if p["mode"] == mode]
                front = _front(pts, key)
                line = ax.plot(
                    [p["grad_rel_error"] for p in front],
                    [1e3 * p[key] for p in front],
                    "-o",
                    label=mode,
                )[0]
                ax.plot(
                    [p["grad_rel_error"] for p in pts],
                    [1e3 * p[key] for p in pts],
                    "x",
                    color=line.get_color(),
                    alpha=0.5,
                )
            if key == "step_s":
                ax.axhline(
                    1e3 * sw["denoiser_step_s"], color="grey", ls="--", label="denoiser only"
                )
            ax.set_xscale("log")
            ax.set_xlabel("gradient relative error (float64 reference)")
            ax.set_ylabel("ms")
            ax.set_title(f"{size}x{size}, batch {sw['batch']}: {title}")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        path = out / f"equal_accuracy_{size}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(str(path))
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="32x32, batch 4, fewer settings")
    p.add_argument("--sizes", nargs="+", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--rounds", type=int, default=None, help="timed rounds (default 5, quick 2)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--no-deepinv", action="store_true")
    p.add_argument("--deepinv-path", default=None)
    p.add_argument("--out", default="bench-output")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = args.sizes or ([32] if args.quick else [32, 64])
    batch = args.batch or (4 if args.quick else 8)
    rounds = args.rounds or (2 if args.quick else 5)
    settings = QUICK_SETTINGS if args.quick else SETTINGS
    cfg = BenchConfig(device=args.device, batch=batch, sizes=tuple(sizes))
    if args.device.startswith("cuda"):
        cfg = cfg.replace(check_every=10)
    deepinv, why = (None, "--no-deepinv") if args.no_deepinv else load_deepinv(args.deepinv_path)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    results = {
        "command": " ".join(["python -m benchmarks.equal_accuracy", *(argv or sys.argv[1:])]),
        "machine": machine_info(args.device),
        "config": cfg.to_json(),
        "settings": settings,
        "deepinv_missing": why,
        "sizes": {},
    }
    for size in sizes:
        res = {"sweep": sweep(cfg, size, settings, deepinv, iters=rounds, log=log)}
        res["fronts"] = fronts(res["sweep"])
        log(f"equal accuracy {size}x{size}: ms per CG iteration")
        res["per_iteration"] = per_iteration_ms(cfg, size, deepinv)
        results["sizes"][str(size)] = res
    table = _table(results)
    (out / "equal_accuracy.json").write_text(json.dumps(results, indent=1, default=str))
    (out / "equal_accuracy.md").write_text(table + "\n")
    _plot(results, out)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
