"""The data step of two versions of ``unrolled`` side by side, interleaved in one process:
the prox of the seed system (blur sigma 2.5, valid padding, gamma 1, batch 8 x 3 channels,
``CG(max_iter=100, tol=1e-8)``, preconditioner ``"auto"``), forward and implicit backward.

``--base DIR`` is another checkout's ``src`` folder (e.g. ``git archive <commit> | tar -x
-C /tmp/base``, then ``--base /tmp/base/src``); it is imported under another name, so
both run in one process, alternating round by round. Prints the medians and the median
of the per-round ratios (this tree / base).

``python -m benchmarks.ab_data_step --base /tmp/base/src --sizes 32 64``
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time

import torch

import unrolled

__all__ = ["load_other", "compare"]


def load_other(src: str, name: str = "unrolled_base"):
    """Import the ``unrolled`` package under ``src`` as ``name``."""
    spec = importlib.util.spec_from_file_location(
        name, f"{src}/unrolled/__init__.py", submodule_search_locations=[f"{src}/unrolled"]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def compare(base, size: int, *, rounds: int = 14, warmup: int = 2) -> dict:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, size, size, generator=g)
    v = torch.randn(8, 3, size, size, generator=g)
    gamma = torch.tensor(1.0, requires_grad=True)
    setups = {}
    for name, lib in (("base", base), ("this", unrolled)):
        physics = lib.physics.Blur(lib.physics.gaussian_kernel(2.5), padding="valid")
        clean = physics.A(x)
        noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))
        setups[name] = (lib, physics, clean + 0.1 * noise)
    times = {name: [] for name in setups}
    iterations = {}
    for r in range(warmup + rounds):
        order = list(setups.items())
        for name, (lib, physics, y) in order if r % 2 else order[::-1]:
            z = physics.A_adjoint(y).requires_grad_()
            start = time.perf_counter()
            solver = lib.CG(max_iter=100, tol=1e-8)
            h, info = lib.linalg.prox_l2(physics, z, y, gamma, solver=solver, return_info=True)
            h.backward(v)
            if r >= warmup:
                times[name].append(time.perf_counter() - start)
            iterations[name] = (
                int(info.forward.iterations.max()),
                int(info.backward.iterations.max()),
            )
    ratios = [a / b for a, b in zip(times["this"], times["base"], strict=True)]
    return {
        "size": size,
        "base_ms": 1e3 * statistics.median(times["base"]),
        "this_ms": 1e3 * statistics.median(times["this"]),
        "ratio": statistics.median(ratios),
        "iterations": iterations,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, help="the other checkout's src folder")
    p.add_argument("--sizes", nargs="+", type=int, default=[32, 64])
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    base = load_other(args.base)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| size | base ms | this ms | this / base (paired) | CG its fwd / bwd base -> this |")
    print("|---|---|---|---|---|")
    for size in args.sizes:
        r = compare(base, size)
        b, t = r["iterations"]["base"], r["iterations"]["this"]
        print(
            f"| {size} | {r['base_ms']:.1f} | {r['this_ms']:.1f} | {r['ratio']:.3f} "
            f"| {b[0]} / {b[1]} -> {t[0]} / {t[1]} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
