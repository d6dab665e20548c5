"""CG iterations to reach the floating-point floor on the seed problem, per blur padding,
with and without the Fourier preconditioner.

For each padding the system is the first layer's data step: ``z = A^T y`` for a
seed batch, ``(A^T A + I/gamma) h = A^T y + z/gamma``, at the seed step size(s) and a
few larger ones (worse conditioned). Each system is solved without preconditioner
and with the Fourier one ``(|K_hat|^2 + 1/gamma)^-1`` forced for every padding; the
row of CG's ``"auto"`` choice repeats the one it picks. The generic ``unrolled.linalg.prox_l2`` is
called, so circular padding is solved by CG here too (its prox has a closed form that
training uses instead).

Iterations to the floor: CG with the seed tolerance and the true residual checked
every iteration (``floor_check_every=1``), so the count is exact, not rounded up to
the default check interval of 10. The backward solve (the implicit gradient's
``u = M v`` for a seeded upstream ``v``) is counted the same way, and the seed solver
settings (default check interval) are counted and timed too.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter

import torch

import unrolled as ur

from .config import BenchConfig
from .problem import make_batches, make_physics

__all__ = ["cg_floor_table"]


def _fourier(op, gamma):
    return op.fourier_preconditioner(gamma)


PRECONDITIONERS = (("none", None), ("fourier", _fourier))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cg_floor_table(cfg: BenchConfig, size: int, batch: int, device) -> list[dict]:
    """One row per (padding, gamma, preconditioner); see the module docstring."""
    device = torch.device(device)
    dtype = cfg.torch_dtype
    seed_gammas = {float(cfg.stepsize)}
    gammas = sorted(seed_gammas | {float(g) for g in cfg.cg_extra_gammas})
    rows = []
    for padding in cfg.cg_paddings:
        physics = make_physics(cfg, device, dtype, padding)
        ((x, y),) = make_batches(cfg, size, batch, 1, device, dtype, padding)
        z0 = physics.A_adjoint(y)
        v = torch.randn(z0.shape, generator=torch.Generator().manual_seed(cfg.seed + 2))
        v = v.to(device=device, dtype=dtype)
        for gamma in gammas:
            gamma_t = torch.tensor(gamma, device=device, dtype=dtype)
            auto = "fourier" if physics.preconditioner(gamma_t) is not None else "none"
            for name, choice in PRECONDITIONERS:
                floor_solver = ur.CG(
                    max_iter=cfg.cg_max_iter,
                    tol=cfg.tol,
                    floor_check_every=1,
                    on_failure="ignore",
                    preconditioner=choice,
                )
                z = z0.clone().requires_grad_(True)
                h, info = ur.linalg.prox_l2(
                    physics, z, y, gamma_t, solver=floor_solver, return_info=True
                )
                h.backward(v)
                seed_solver = ur.CG(
                    max_iter=cfg.max_iter,
                    tol=cfg.tol,
                    check_every=cfg.check_every,
                    on_failure="ignore",
                    preconditioner=choice,
                )
                times = []
                with torch.no_grad():
                    for _ in range(3):
                        _sync(device)
                        start = time.perf_counter()
                        _, seed_info = ur.linalg.prox_l2(
                            physics, z0, y, gamma_t, solver=seed_solver, return_info=True
                        )
                        _sync(device)
                        times.append(time.perf_counter() - start)
                seed_its = float(seed_info.forward.iterations.double().mean())
                solve_s = statistics.median(times)
                fwd, bwd = info.forward, info.backward
                rows.append(
                    {
                        "padding": padding,
                        "gamma": gamma,
                        "seed_gamma": gamma in seed_gammas,
                        "preconditioner": name,
                        "auto_choice": auto,
                        "forward_iterations": float(fwd.iterations.double().mean()),
                        "forward_status": Counter(fwd.status).most_common(1)[0][0],
                        "forward_residual_max": float(fwd.residual.max()),
                        "backward_iterations": float(bwd.iterations.double().mean()),
                        "backward_status": Counter(bwd.status).most_common(1)[0][0],
                        "backward_residual_max": float(bwd.residual.max()),
                        "seed_solver_iterations": seed_its,
                        "seed_solver_time_s": solve_s,
                        "seed_solver_time_per_iteration_s": solve_s / max(seed_its, 1.0),
                    }
                )
            # "auto" runs whichever of the two the operator picks: the same numbers.
            picked = next(r for r in rows[-2:] if r["preconditioner"] == auto)
            rows.append({**picked, "preconditioner": "auto"})
    return rows
