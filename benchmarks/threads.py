"""The data step with one and with two intra-op threads, interleaved in one process.

The prox of the seed system (``benchmarks.problem``: blur sigma 2.5, valid padding,
dead-leaves images with noise 0.1, batch 8 x 3 channels, the seed CG; gamma 1), forward
and implicit backward, timed with ``torch.set_num_threads(1)`` and ``(2)`` in turn (the
order alternating round by round, so a busy spell hits both). Prints per size the
medians and the median, least and largest per-round ratio (two threads / one): whether
a second thread speeds the data step up at that size.

``python -m benchmarks.threads --sizes 32 64 128 256``
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import unrolled as ur

from .config import BenchConfig
from .problem import make_batches, make_physics, make_solver

__all__ = ["compare_threads"]


def _data_step(size: int):
    """One prox of the seed problem (its physics, measurements and solver), forward and
    implicit backward, as a function of nothing."""
    cfg = BenchConfig()
    physics = make_physics(cfg, "cpu", torch.float32)
    ((x, y),) = make_batches(cfg, size, 8, 1, "cpu", torch.float32)
    z = x.clone().requires_grad_(True)
    gamma = torch.tensor(1.0, requires_grad=True)
    solver = make_solver(cfg)

    def step() -> None:
        ur.prox_l2(physics, z, y, gamma, solver=solver).sum().backward()

    return step


def _timed(step, threads: int) -> float:
    torch.set_num_threads(threads)
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def compare_threads(size: int, rounds: int, warmup: int = 2) -> dict:
    """Medians (ms) with 1 and 2 threads, and the per-round ratios 2 / 1."""
    step = _data_step(size)
    for threads in (1, 2):
        for _ in range(warmup):
            _timed(step, threads)
    times: dict[int, list[float]] = {1: [], 2: []}
    for k in range(rounds):
        for threads in (1, 2) if k % 2 == 0 else (2, 1):
            times[threads].append(_timed(step, threads))
    ratios = [two / one for one, two in zip(times[1], times[2], strict=True)]
    return {
        "size": size,
        "one_ms": statistics.median(times[1]) * 1e3,
        "two_ms": statistics.median(times[2]) * 1e3,
        "ratio": statistics.median(ratios),
        "least": min(ratios),
        "largest": max(ratios),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128, 256])
    p.add_argument("--rounds", type=int, default=20, help="rounds at 64x64 and below")
    p.add_argument("--large-rounds", type=int, default=8, help="rounds above 64x64")
    a = p.parse_args()
    before = torch.get_num_threads()
    print("| size | 1 thread ms | 2 threads ms | 2 / 1 (median of rounds) | least / largest |")
    print("|---|---|---|---|---|")
    try:
        for size in a.sizes:
            r = compare_threads(size, a.rounds if size <= 64 else a.large_rounds)
            print(
                f"| {size} | {r['one_ms']:.1f} | {r['two_ms']:.1f} | {r['ratio']:.2f} | "
                f"{r['least']:.2f} / {r['largest']:.2f} |",
                flush=True,
            )
    finally:
        torch.set_num_threads(before)


if __name__ == "__main__":
    main()
