"""CG iterations to reach the floating-point floor on the seed problem, per blur padding
and preconditioner, with the accuracy reached against a dense float64 solve.

For each padding the system is the first layer's data step: ``z = A^T y`` for a
seed batch, ``(A^T A + I/gamma) h = A^T y + z/gamma``, at the seed step size(s) and a
few larger ones (worse conditioned). Each system is solved without preconditioner
and with each preconditioner of the blur forced for every padding (Fourier, boundary,
separable); the row of CG's ``"auto"`` choice repeats the one it picks. The generic
``unrolled.linalg.prox_l2`` is called, so circular padding is solved by CG here too (its
prox has a closed form that training uses instead).

Iterations to the floor: CG with the seed tolerance and the true residual checked
every iteration (``floor_check_every=1``), so the count is exact, not rounded up to
the default check interval of 10. The backward solve (the implicit gradient's
``u = M v`` for a seeded upstream ``v``) is counted the same way, and the seed solver
settings (default check interval) are counted and timed too.

Accuracy: the forward solution and the implicit gradient ``dL/dz = u / gamma`` against a
dense float64 Cholesky solve of the same system (worst relative error over the
samples and channels), where the image is small enough for a dense matrix.

Standalone: ``python -m benchmarks.cg_floor --size 64 --paddings valid`` prints the table.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter

import torch

import unrolled as ur
from unrolled.testing import dense_matrix

from .config import PADDINGS, BenchConfig
from .problem import make_batches, make_physics

__all__ = ["cg_floor_table", "PRECONDITIONERS"]

#: the largest image side (pixels) for which the dense float64 reference is computed
DENSE_MAX_SIDE = 64


def _fourier(op, gamma):
    return op.fourier_preconditioner(gamma)


def _boundary(op, gamma):
    return op.boundary_preconditioner(gamma)


def _separable(op, gamma):
    return op.separable_preconditioner(gamma)


PRECONDITIONERS = (
    ("none", None),
    ("fourier", _fourier),
    ("boundary", _boundary),
    ("separable", _separable),
)


def _dense_reference(physics, z0, y, v, gamma: float):
    """``(h, u / gamma)`` in float64 by a dense Cholesky solve, or ``None`` if too large."""
    b, c, h, w = z0.shape
    if max(h, w) > DENSE_MAX_SIDE:
        return None
    op = _float64_copy(physics)
    a = dense_matrix(op, (1, 1, h, w), dtype=torch.float64)
    system = a.T @ a + torch.eye(h * w, dtype=torch.float64) / gamma
    chol = torch.linalg.cholesky(system)
    rhs = op.A_adjoint(y.double()) + z0.double() / gamma
    sol = torch.cholesky_solve(rhs.reshape(b * c, -1).T, chol).T.reshape(z0.shape)
    u = torch.cholesky_solve(v.double().reshape(b * c, -1).T, chol).T.reshape(z0.shape)
    return sol, u / gamma


def _float64_copy(physics):
    """A float64 CPU copy of a blur operator (same kernel and padding)."""
    return type(physics)(physics.kernel.detach().double().cpu(), padding=physics.padding)


def _worst_rel(a, ref) -> float:
    a = a.detach().double().cpu().flatten(0, 1).flatten(1)
    ref = ref.flatten(0, 1).flatten(1)
    return float(((a - ref).norm(dim=1) / ref.norm(dim=1)).max())


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
            # the seed kernel (a Gaussian) is separable: "auto" takes the exact inverse for
            # every padding but circular; other kernels get AUTO_PRECONDITIONER's pick
            others = physics.AUTO_PRECONDITIONER.get(padding, "none")
            separable = padding != "circular" and physics.separable_preconditioner(gamma_t)
            auto = "separable" if separable else others
            dense = _dense_reference(physics, z0.cpu(), y.cpu(), v.cpu(), gamma)
            for name, choice in PRECONDITIONERS:
                floor_solver = ur.CG(
                    max_iter=cfg.cg_max_iter,
                    tol=cfg.tol,
                    floor_check_every=1,
                    on_failure="ignore",
                    preconditioner=choice,
                )
                z = z0.clone().requires_grad_(True)
                h, info = ur.linalg.prox_l2_with_info(physics, z, y, gamma_t, solver=floor_solver)
                h.backward(v)
                errors = {}
                if dense is not None:
                    errors = {
                        "forward_error": _worst_rel(h, dense[0]),
                        "backward_error": _worst_rel(z.grad, dense[1]),
                    }
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
                        _, seed_info = ur.linalg.prox_l2_with_info(
                            physics, z0, y, gamma_t, solver=seed_solver
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
                        "auto_choice_not_separable": others,
                        "forward_iterations": float(fwd.iterations.double().mean()),
                        "forward_status": Counter(fwd.status).most_common(1)[0][0],
                        "forward_residual_max": float(fwd.residual.max()),
                        "backward_iterations": float(bwd.iterations.double().mean()),
                        "backward_status": Counter(bwd.status).most_common(1)[0][0],
                        "backward_residual_max": float(bwd.residual.max()),
                        "seed_solver_iterations": seed_its,
                        "seed_solver_time_s": solve_s,
                        "seed_solver_time_per_iteration_s": solve_s / max(seed_its, 1.0),
                        **errors,
                    }
                )
            # "auto" runs whichever one the operator picks: the same numbers.
            picked = next(r for r in rows[-len(PRECONDITIONERS) :] if r["preconditioner"] == auto)
            rows.append({**picked, "preconditioner": "auto"})
    return rows


def main(argv: list[str] | None = None) -> int:
    import argparse

    from .report import cg_table

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=64, help="image side (default 64)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--paddings", nargs="+", choices=PADDINGS, default=list(PADDINGS))
    p.add_argument("--gammas", nargs="*", type=float, default=[10.0, 100.0], help="besides 1")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = BenchConfig(cg_paddings=tuple(args.paddings), cg_extra_gammas=tuple(args.gammas))
    rows = cg_floor_table(cfg, args.size, args.batch, "cpu")
    print(
        f"size {args.size}x{args.size}, batch {args.batch}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    print("\n".join(cg_table(rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
