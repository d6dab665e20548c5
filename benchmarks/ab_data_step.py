"""The data step of two versions of ``unrolled`` side by side, interleaved in one process:
the prox of the seed system (blur sigma 2.5, valid padding, gamma 1, batch 8 x 3 channels,
``CG(max_iter=100, tol=1e-8)``, preconditioner ``"auto"``), forward and implicit backward.

``--base DIR`` is another checkout's ``src`` folder (e.g. ``git archive <commit> | tar -x
-C /tmp/base``, then ``--base /tmp/base/src``); it is imported under another name, so
both run in one process, alternating round by round. Prints the medians and the median
of the per-round ratios (this tree / base).

``python -m benchmarks.ab_data_step --base /tmp/base/src --sizes 32 64``

With ``--steps N``: also whole training steps of the seed HQS (5 layers, DnCNN, Adam)
with either version's data step and of the denoiser-only network, interleaved round by
round for ``N`` rounds: the least-squares overhead of each version, paired with the
denoiser-only step of the same round, and the aten operator calls of one step (exact).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time

import torch

import unrolled

__all__ = ["load_other", "compare", "compare_steps"]


def load_other(src: str, name: str = "unrolled_base"):
    """Import the ``unrolled`` package under ``src`` as ``name``."""
    spec = importlib.util.spec_from_file_location(
        name, f"{src}/unrolled/__init__.py", submodule_search_locations=[f"{src}/unrolled"]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _prox_with_info(lib, physics, z, y, gamma, solver):
    """The prox and its solve statistics, in either version's spelling (a version before
    ``prox_l2_with_info`` asked for them with ``return_info=True``)."""
    if hasattr(lib.linalg, "prox_l2_with_info"):
        return lib.linalg.prox_l2_with_info(physics, z, y, gamma, solver=solver)
    return lib.prox_l2(physics, z, y, gamma, solver=solver, return_info=True)


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
            h, info = _prox_with_info(lib, physics, z, y, gamma, solver)
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


def compare_steps(base, size: int, rounds: int) -> dict:
    """Least-squares overhead of each version's training step (see the module doc)."""
    import copy

    import torch.nn.functional as F
    from torch.profiler import ProfilerActivity, profile

    from .config import BenchConfig
    from .problem import IdentityFidelity, initial_denoiser, make_batches

    cfg = BenchConfig()
    denoiser = initial_denoiser(cfg)
    batches = make_batches(cfg, size, cfg.batch, rounds + 1, "cpu", torch.float32)
    lanes = {}
    for name, lib in (("denoiser", unrolled), ("base", base), ("this", unrolled)):
        fidelity = (
            IdentityFidelity()
            if name == "denoiser"
            else lib.L2(solver=lib.CG(max_iter=cfg.max_iter, tol=cfg.tol))
        )
        model = lib.unfolded.HQS(
            layers=cfg.layers, denoiser=copy.deepcopy(denoiser), fidelity=fidelity,
            stepsize=cfg.stepsize, sigma=cfg.sigma, trainable=("stepsize", "sigma"),
        )  # fmt: skip
        physics = lib.physics.Blur(lib.physics.gaussian_kernel(cfg.blur_sigma), padding="valid")
        params = [p for p in model.parameters() if p.requires_grad]
        lanes[name] = (model, physics, torch.optim.Adam(params, cfg.lr))
    times = {name: [] for name in lanes}
    names = list(lanes)
    for r in range(rounds + 1):  # round 0 warms up
        x, y = batches[r]
        for name in names[r % 3 :] + names[: r % 3]:
            model, physics, optimizer = lanes[name]
            optimizer.zero_grad()
            start = time.perf_counter()
            F.mse_loss(model(y, physics), x).backward()
            optimizer.step()
            if r:
                times[name].append(time.perf_counter() - start)
    out = {"size": size, "rounds": rounds}
    x, y = batches[0]
    for name, (model, physics, _) in lanes.items():
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            F.mse_loss(model(y, physics), x).backward()
        calls = [e.name for e in prof.events() if e.name.startswith("aten::")]
        ratios = [a / b for a, b in zip(times[name], times["denoiser"], strict=True)]
        out[name] = {
            "overhead": statistics.median(ratios) - 1,
            "overhead_per_round": [q - 1 for q in ratios],
            "step_s": statistics.median(times[name]),
            "aten_calls": len(calls),
            "ffts": sum("fft" in c for c in calls),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, help="the other checkout's src folder")
    p.add_argument("--sizes", nargs="+", type=int, default=[32, 64])
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--steps", type=int, default=0, help="training-step rounds (0: none)")
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
    if args.steps:
        print("\n| size | version | overhead (paired median) | per round | step s | aten calls "
              "/ step | FFTs / step |\n|---|---|---|---|---|---|---|")  # fmt: skip
        for size in args.sizes:
            r = compare_steps(base, size, args.steps)
            for name in ("denoiser", "base", "this"):
                v = r[name]
                rounds = " ".join(f"{100 * q:+.0f}%" for q in v["overhead_per_round"])
                print(
                    f"| {size} | {name} | {100 * v['overhead']:+.1f}% | {rounds} "
                    f"| {v['step_s']:.2f} | {v['aten_calls']} | {v['ffts']} |"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
