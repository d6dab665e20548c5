"""Where a CG iteration's time goes at small images: operator calls, allocations and
wall time per iteration of the seed data step, by difference of two fixed-length solves.

Two solves of the first layer's system (gamma = 100) run with ``tol=0`` and no floor stop, so they
take exactly ``short`` and ``long`` iterations; the profiler's counts (aten operator
calls, allocations) and the wall times of the two differ by ``long - short``
iterations' worth: what one iteration costs, set-up excluded. Times are medians over
interleaved rounds (the two lengths alternate, so a busy spell hits both).

``python -m benchmarks.cg_profile --sizes 32 64`` prints the table.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter

import torch
from torch.profiler import ProfilerActivity, profile

import unrolled as ur

from .config import BenchConfig
from .problem import make_batches, make_physics

__all__ = ["per_iteration"]


def _solve(physics, z, y, gamma, iterations: int, preconditioner):
    solver = ur.CG(
        max_iter=iterations, tol=0.0, stop_at_floor=False, on_failure="ignore",
        preconditioner=preconditioner,
    )  # fmt: skip
    with torch.no_grad():
        return ur.linalg.prox_l2(physics, z, y, gamma, solver=solver)


def _counts(fn) -> tuple[Counter, int]:
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    ops: Counter = Counter()
    allocations = 0
    for event in prof.events():
        if event.name == "[memory]":
            allocations += event.cpu_memory_usage > 0
        elif event.name.startswith("aten::"):
            ops[event.name] += 1
    return ops, allocations


def per_iteration(
    size: int, batch: int, *, padding: str = "valid", preconditioner=None, rounds: int = 7,
    short: int = 5, long: int = 25,
) -> dict:  # fmt: skip
    """Aten calls, top-level aten calls by name, allocations and seconds per CG iteration."""
    cfg = BenchConfig()
    physics = make_physics(cfg, "cpu", torch.float32, padding)
    ((_, y),) = make_batches(cfg, size, batch, 1, "cpu", torch.float32, padding)
    z = physics.A_adjoint(y)
    # A stiff step size, so that no residual underflows to zero within ``long`` iterations
    # (at gamma = 1 float32 reaches an exact 0 after ~18); an iteration costs the same.
    gamma = torch.tensor(100.0)
    runs = {n: (lambda n=n: _solve(physics, z, y, gamma, n, preconditioner)) for n in (short, long)}
    for fn in runs.values():
        fn()  # warm-up: lazy initialisation, caches
    (ops_s, alloc_s), (ops_l, alloc_l) = _counts(runs[short]), _counts(runs[long])
    steps = long - short
    times = {short: [], long: []}
    for _ in range(rounds):
        for n, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[n].append(time.perf_counter() - start)
    diff = ops_l.copy()
    diff.subtract(ops_s)
    return {
        "size": size,
        "batch": batch,
        "padding": padding,
        "aten_calls": sum(diff.values()) / steps,
        "allocations": (alloc_l - alloc_s) / steps,
        "by_name": {k: v / steps for k, v in diff.most_common() if v > 0},
        "seconds": (statistics.median(times[long]) - statistics.median(times[short])) / steps,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", type=int, default=[32, 64])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--padding", default="valid")
    p.add_argument("--top", type=int, default=12, help="aten operators listed per size")
    p.add_argument(
        "--preconditioner", default="none", choices=("none", "auto", "fourier", "boundary")
    )
    args = p.parse_args(argv)
    choice = {
        "none": None,
        "auto": "auto",
        "fourier": lambda op, g: op.fourier_preconditioner(g),
        "boundary": lambda op, g: op.boundary_preconditioner(g),
    }[args.preconditioner]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, padding {args.padding}, "
        f"preconditioner {args.preconditioner}"
    )
    print("| size | aten calls / it | allocations / it | ms / it |")
    print("|---|---|---|---|")
    rows = [
        per_iteration(s, args.batch, padding=args.padding, preconditioner=choice)
        for s in args.sizes
    ]
    for r in rows:
        print(f"| {r['size']} | {r['aten_calls']:.0f} | {r['allocations']:.0f} "
              f"| {1e3 * r['seconds']:.3f} |")  # fmt: skip
    for r in rows:
        top = list(r["by_name"].items())[: args.top]
        print(f"\n{r['size']}x{r['size']}: " + ", ".join(f"{k[6:]} {v:g}" for k, v in top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
