"""Batched conjugate gradient against dense solves."""

import dataclasses

import pytest
import torch

from unrolled.linalg import CG, NonConvergenceError, NonConvergenceWarning, cg
from unrolled.testing import relative_error as rel


@pytest.fixture(autouse=True)
def _seeded_global_rng():
    # Tests that draw from torch's global generator draw the same numbers on every run,
    # whichever tests ran before them.
    torch.manual_seed(0)


def spd_batch(eigenvalues, seed=0, dtype=torch.float64):
    """One SPD matrix per sample, ``Q_i diag(eigenvalues[i]) Q_i^H`` with a random unitary Q_i."""
    g = torch.Generator().manual_seed(seed)
    mats = []
    for ev in eigenvalues:
        ev = torch.as_tensor(ev, dtype=torch.float64)
        q, _ = torch.linalg.qr(torch.randn(len(ev), len(ev), dtype=dtype, generator=g))
        mats.append(q @ torch.diag(ev).to(dtype) @ q.conj().T)
    return torch.stack(mats)


def matvec_of(k):
    return lambda x: (k @ x.unsqueeze(-1)).squeeze(-1)


def test_matches_dense_solve_real_and_complex():
    for dtype in (torch.float64, torch.complex128):
        k = spd_batch([torch.linspace(1, 50, 30), torch.logspace(0, 2, 30)], dtype=dtype)
        b = torch.randn(2, 30, dtype=dtype, generator=torch.Generator().manual_seed(1))
        x, info = cg(matvec_of(k), b, tol=1e-13, max_iter=200)
        truth = torch.linalg.solve(k, b)
        assert info.all_converged
        # the residual test bounds the error by cond(K) * tol = 100 * 1e-13
        assert rel(x, truth) <= 1e-10


def test_per_sample_stopping_freezes_converged_samples():
    # Sample 0 has 3 distinct eigenvalues: CG is exact after 3 steps. Sample 1 has 40
    # distinct eigenvalues with cond 100: the CG bound ((sqrt(100)-1)/(sqrt(100)+1))^k
    # needs k > 40 for 1e-10, so it runs to the finite-termination step, about 40.
    three = torch.tensor([1.0, 4.0, 9.0]).repeat_interleave(14)[:40]
    spread = torch.linspace(1, 100, 40)
    k = spd_batch([three, spread])
    b = torch.randn(2, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    x, info = cg(matvec_of(k), b, tol=1e-10, max_iter=200)
    assert info.iterations.tolist()[0] == 3
    assert 38 <= info.iterations.tolist()[1] <= 45
    assert info.status == ["converged", "converged"]
    assert rel(x, torch.linalg.solve(k, b)) < 1e-7
    # The converged sample's solution is bit-for-bit the one it had at its iteration 3.
    x3, info3 = cg(matvec_of(k), b, tol=1e-10, max_iter=3, on_failure="ignore")
    assert torch.equal(x3[0], x[0])
    assert info3.status == ["converged", "max_iter"]


def test_relative_stopping_is_scale_invariant():
    k = spd_batch([torch.logspace(0, 2, 25)])
    b = torch.randn(1, 25, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    x1, info1 = cg(matvec_of(k), b, tol=1e-6)
    x2, info2 = cg(matvec_of(k), b * 1e-8, tol=1e-6)
    # Same work up to one step of rounding, same accuracy (tol * cond = 1e-4 at most).
    assert abs(info1.iterations.item() - info2.iterations.item()) <= 1
    truth = torch.linalg.solve(k, b)
    assert rel(x1, truth) < 1e-4 and rel(x2 * 1e8, truth) < 1e-4


def test_zero_rhs_returns_zero_at_once():
    k = spd_batch([torch.linspace(1, 5, 10), torch.linspace(1, 5, 10)])
    b = torch.randn(2, 10, dtype=torch.float64)
    b[1] = 0
    x0 = torch.ones(2, 10, dtype=torch.float64)
    x, info = cg(matvec_of(k), b, x0=x0, tol=1e-12)
    assert torch.equal(x[1], torch.zeros(10, dtype=torch.float64))
    assert info.iterations[1] == 0 and info.residual[1] == 0 and bool(info.converged[1])
    assert info.iterations[0] > 0


def test_warm_start_and_preconditioner_agree_with_plain_solve():
    ev = torch.logspace(0, 4, 60)
    k = spd_batch([ev])
    b = torch.randn(1, 60, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    truth = torch.linalg.solve(k, b)
    plain, info_plain = cg(matvec_of(k), b, tol=1e-12, max_iter=500)
    # The exact inverse as preconditioner converges in one step.
    kinv = torch.linalg.inv(k)
    pre, info_pre = cg(matvec_of(k), b, tol=1e-12, precond=matvec_of(kinv))
    assert info_pre.iterations.item() <= 2 < info_plain.iterations.item()
    assert rel(plain, truth) < 1e-8 and rel(pre, truth) < 1e-8
    warm, info_warm = cg(matvec_of(k), b, x0=truth, tol=1e-10)
    assert info_warm.iterations.item() == 0


def test_preconditioner_is_applied_once_per_iteration_and_not_after_the_last():
    # The first direction needs one application, each later direction one more; the
    # residual after the last step is tested without one.
    k = spd_batch([torch.logspace(0, 3, 40), torch.linspace(1, 5, 40)], seed=7)
    b = torch.randn(2, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    diag = torch.diagonal(k, dim1=1, dim2=2)
    calls = []

    def jacobi(r):
        calls.append(1)
        return r / diag

    for check_every in (1, 3):
        calls.clear()
        x, info = cg(matvec_of(k), b, precond=jacobi, tol=1e-10, check_every=check_every)
        assert rel(x, torch.linalg.solve(k, b)) < 1e-8
        iterations = int(info.iterations.max())
        # with checks every 3 iterations, the run may go on to the next multiple of 3
        ran = iterations if check_every == 1 else -(-iterations // 3) * 3
        assert len(calls) == ran, (check_every, iterations, len(calls))


def test_check_every_gives_identical_results():
    k = spd_batch([torch.logspace(0, 2, 30), torch.linspace(1, 3, 30)])
    b = torch.randn(2, 30, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    x1, i1 = cg(matvec_of(k), b, tol=1e-10, check_every=1)
    x7, i7 = cg(matvec_of(k), b, tol=1e-10, check_every=7)
    assert torch.equal(x1, x7)
    assert i1.iterations.tolist() == i7.iterations.tolist()


def test_autograd_and_in_place_paths_compute_the_same_iterates():
    # Without autograd CG updates its vectors in place, under it out of place; the two
    # run the same arithmetic, so checkpoint's replay under autograd re-runs exactly the
    # forward's solve. Ill-conditioned and cut short at max_iter, where any difference in
    # rounding would grow to a visible one.
    ev = torch.logspace(0, 5, 12)
    for dtype in (torch.float32, torch.float64, torch.complex128):
        k = spd_batch([ev, ev.flip(0), torch.linspace(1, 3, 12)], seed=4, dtype=dtype)
        b = torch.randn(3, 12, dtype=dtype, generator=torch.Generator().manual_seed(5))
        diag = torch.diagonal(k, dim1=1, dim2=2).real
        for precond in (None, lambda r, d=diag: r / d):
            kwargs = dict(precond=precond, max_iter=10, tol=1e-12, on_failure="ignore")
            with torch.no_grad():
                x_in_place, info = cg(matvec_of(k), b, **kwargs)
            with torch.enable_grad():
                x_graph, info_graph = cg(matvec_of(k), b.clone().requires_grad_(), **kwargs)
            assert torch.equal(x_in_place, x_graph.detach())
            assert torch.equal(info.iterations, info_graph.iterations)


def test_failure_policies():
    k = spd_batch([torch.logspace(0, 4, 50)])
    b = torch.randn(1, 50, dtype=torch.float64)
    with pytest.warns(NonConvergenceWarning, match="max_iter=5"):
        _, info = cg(matvec_of(k), b, max_iter=5, tol=1e-12)
    assert info.status == ["max_iter"] and not info.all_converged
    with pytest.raises(NonConvergenceError, match="max_iter=5"):
        cg(matvec_of(k), b, max_iter=5, tol=1e-12, on_failure="raise")
    _, info = cg(matvec_of(k), b, max_iter=5, tol=1e-12, on_failure="ignore")
    assert info.iterations.item() == 5


def test_float32_stops_at_the_precision_floor():
    # tol 1e-12 is out of reach in float32: the solve stops once the true residual
    # is rounding-dominated instead of running to max_iter, and that answer is as good
    # as running all the iterations.
    k = spd_batch([torch.logspace(0, 3, 200)], dtype=torch.float32)
    b = torch.randn(1, 200, generator=torch.Generator().manual_seed(6))
    truth = torch.linalg.solve(k.double(), b.double())
    x, info = cg(matvec_of(k), b, tol=1e-12, max_iter=2000)
    assert info.status == ["stagnated"] and info.all_converged
    assert info.iterations.item() < 2000
    assert info.residual.item() < 1e-4  # the float32 floor, eps * cond ~ 1e-7 * 1e3
    # Without floor detection the recursive residual keeps falling (it is not the true
    # residual any more) and the solve runs much longer for nothing.
    full, info_full = cg(
        matvec_of(k), b, tol=1e-12, max_iter=2000, stop_at_floor=False, on_failure="ignore"
    )
    assert info_full.iterations.item() > 1.5 * info.iterations.item()
    err_floor = rel(x.double(), truth)
    err_full = rel(full.double(), truth)
    assert err_floor < 1e-3 and err_floor < 10 * err_full + 1e-5


def test_solver_settings_are_validated():
    # A wrong value is a ValueError, a wrong type a TypeError; the setting is named first.
    with pytest.raises(ValueError, match="^tol: expected a finite number >= 0, got -1$"):
        CG(tol=-1)
    with pytest.raises(ValueError, match="^max_iter: expected an integer >= 0, got -1$"):
        CG(max_iter=-1)
    with pytest.raises(ValueError, match="^on_failure: expected one of"):
        CG(on_failure="loud")
    with pytest.raises(ValueError, match="^check_every: expected an integer >= 1"):
        CG(check_every=0)
    with pytest.raises(ValueError, match="^preconditioner: expected None, 'auto'"):
        CG(preconditioner="jacobi")
    with pytest.raises(TypeError, match="^max_iter: expected an integer >= 0, got 2.5$"):
        CG(max_iter=2.5)
    with pytest.raises(TypeError, match="^max_iter: expected an integer >= 0, got True$"):
        CG(max_iter=True)
    with pytest.raises(TypeError, match="^tol: expected a finite number >= 0, got '1e-6'$"):
        CG(tol="1e-6")
    with pytest.raises(TypeError, match="^on_failure: expected one of"):
        CG(on_failure=None)
    with pytest.raises(TypeError, match="^stop_at_floor: expected True or False, got 1$"):
        CG(stop_at_floor=1)
    with pytest.raises(TypeError, match="^floor_check_every: expected an integer >= 1"):
        CG(floor_check_every=1.0)
    with pytest.raises(TypeError, match="^preconditioner: expected None, 'auto'"):
        CG(preconditioner=3)
    with pytest.raises(dataclasses.FrozenInstanceError):  # settings belong to one solve
        CG().tol = 1.0  # type: ignore[misc]
