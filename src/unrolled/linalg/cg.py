"""Batched (preconditioned) conjugate gradient for Hermitian positive-definite systems.

Each sample ``i`` of the batch is its own system ``K x_i = b_i`` and stops on its own
relative test ``||b_i - K x_i|| <= tol * ||b_i||``; a stopped sample is frozen (its
step length is zero) while the others go on. There is no absolute epsilon: a
right-hand side of size 1e-8 is solved to the same relative accuracy as one of size 1.

In finite precision the recursively updated residual keeps falling after the true
residual ``b - K x`` has reached the floor the dtype allows (about ``eps * cond``).
With ``stop_at_floor`` the true residual is recomputed (one extra application of ``K``)
once a sample's recursive residual is near the dtype's reach (below ``FLOOR_ZONE * eps``
relative), then every ``floor_check_every`` iterations, and in any case every
``FLOOR_FALLBACK * floor_check_every`` iterations; once it is dominated by rounding (the
recursive and true residuals differ by more than half the true one) the sample stops as
``"stagnated"``. Well-conditioned solves that reach ``tol`` first never pay for a check. A
tolerance below what the dtype can reach then costs a few iterations, not
``max_iter``. Stagnated samples count as converged to the floor.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .._validation import check_bool, check_choice, check_int, check_real, describe
from ._vectors import batch_inner, batch_norm

__all__ = ["CG", "SolveInfo", "NonConvergenceError", "NonConvergenceWarning", "cg"]

ON_FAILURE = ("warn", "raise", "ignore")
#: iterations between two convergence checks on a GPU when ``check_every`` is ``None``
CUDA_CHECK_EVERY = 8
#: true-residual checks start once a recursive relative residual is below this times eps
FLOOR_ZONE = 1e3
#: ... and happen at least every this many times ``floor_check_every`` iterations anyway
FLOOR_FALLBACK = 4


class NonConvergenceWarning(UserWarning):
    """A solve stopped at ``max_iter`` before reaching its tolerance."""


class NonConvergenceError(RuntimeError):
    """A solve stopped at ``max_iter`` before reaching its tolerance (``on_failure="raise"``)."""


@dataclass(frozen=True)
class CG:
    """Settings of a conjugate-gradient solve (the solve's, not the operator's).

    Args:
        max_iter: iterations at most, per sample.
        tol: relative tolerance on the residual, ``||r_i|| <= tol ||b_i||``.
        on_failure: what a sample that ends at ``max_iter`` unconverged triggers:
            ``"warn"`` (default), ``"raise"`` or ``"ignore"``.
        stop_at_floor: stop a sample whose true residual has reached the
            floating-point floor (status ``"stagnated"``, counted as converged).
        floor_check_every: iterations at least between two true-residual checks (one extra
            application of the system operator each).
        check_every: iterations between two host synchronisations of the
            all-converged test. Frozen samples stay frozen in between, so the answer
            does not depend on it; ``None`` (default) is 1 on the CPU, where a check is
            free, and ``CUDA_CHECK_EVERY`` on a GPU, where each one stalls the stream
            with a device-to-host copy.
        preconditioner: ``None``, ``"auto"`` (the operator's own, where it offers
            one that pays off), or a callable ``(operator, gamma) -> M`` returning a
            function that applies an approximation of the inverse system.

    Raises:
        TypeError: a setting of the wrong type (e.g. ``max_iter=2.0`` or ``tol="1e-6"``).
        ValueError: a setting out of range (e.g. ``max_iter=-1`` or ``on_failure="stop"``).
    """

    max_iter: int = 100
    tol: float = 1e-8
    on_failure: str = "warn"
    stop_at_floor: bool = True
    floor_check_every: int = 5
    check_every: int | None = None
    preconditioner: object = "auto"

    def __post_init__(self):
        # Checked only: the fields keep the values given (an int tol stays an int).
        check_int("max_iter", self.max_iter, minimum=0)
        check_real("tol", self.tol, minimum=0)
        check_choice("on_failure", self.on_failure, ON_FAILURE)
        check_bool("stop_at_floor", self.stop_at_floor)
        check_int("floor_check_every", self.floor_check_every, minimum=1)
        check_int("check_every", self.check_every, minimum=1, allow_none=True)
        _check_preconditioner(self.preconditioner)

    def solve(self, matvec, b, *, x0=None, precond=None, iterations=None, what="solve"):
        """Solve ``matvec(x) = b``; see :func:`cg`."""
        return cg(
            matvec,
            b,
            x0=x0,
            precond=precond,
            max_iter=self.max_iter,
            tol=self.tol,
            on_failure=self.on_failure,
            stop_at_floor=self.stop_at_floor,
            floor_check_every=self.floor_check_every,
            check_every=self.check_every,
            iterations=iterations,
            what=what,
        )


@dataclass
class SolveInfo:
    """What a batched solve did, per sample.

    Attributes:
        iterations: ``(B,)`` int64, iterations each sample ran.
        residual: ``(B,)`` final relative residual ``||b - K x|| / ||b||`` (the true
            residual for stagnated samples, the recursive one otherwise; 0 for b = 0).
        converged: ``(B,)`` bool, reached ``tol`` or the floating-point floor.
        status: per sample ``"converged"``, ``"stagnated"``, ``"max_iter"`` or
            ``"nonfinite"`` (the right-hand side holds NaN/inf: the solution is NaN).
        max_iter, tol: the settings the solve ran with.
    """

    iterations: Tensor
    residual: Tensor
    converged: Tensor
    status: list[str] = field(default_factory=list)
    max_iter: int = 0
    tol: float = 0.0

    @property
    def all_converged(self) -> bool:
        return bool(self.converged.all())

    def __repr__(self) -> str:
        its = self.iterations.tolist()
        res = [f"{r:.1e}" for r in self.residual.tolist()]
        return f"SolveInfo(iterations={its}, residual={res}, status={self.status})"


def _check_preconditioner(value) -> None:
    expected = "None, 'auto' or a callable (operator, gamma) -> M"
    if isinstance(value, str):
        if value != "auto":
            raise ValueError(f"preconditioner: expected {expected}, got {value!r}")
    elif value is not None and not callable(value):
        raise TypeError(f"preconditioner: expected {expected}, got {describe(value)}")


def _per_sample(v: Tensor, like: Tensor) -> Tensor:
    return v.reshape((-1,) + (1,) * (like.ndim - 1))


def cg(
    matvec: Callable[[Tensor], Tensor],
    b: Tensor,
    *,
    x0: Tensor | None = None,
    precond: Callable[[Tensor], Tensor] | None = None,
    max_iter: int = 100,
    tol: float = 1e-8,
    on_failure: str = "warn",
    stop_at_floor: bool = True,
    floor_check_every: int = 5,
    check_every: int | None = None,
    iterations: Tensor | None = None,
    what: str = "solve",
) -> tuple[Tensor, SolveInfo]:
    """Solve ``K x = b`` per sample for a Hermitian positive-definite ``K``.

    Args:
        matvec: ``x -> K x`` on tensors shaped like ``b``.
        b: right-hand side ``(B, ...)``, real or complex.
        x0: initial guess (default zero).
        precond: ``r -> M r`` with ``M`` Hermitian positive definite, ``M ~ K^-1``.
        iterations: replay mode: run exactly ``iterations[i]`` steps on sample ``i``
            and ignore the stopping tests (used to re-run a solve under autograd).
        what: how warnings and errors name this solve.

    Returns:
        ``(x, info)``. Differentiable by autograd when run under it (every iterate
        is then kept: memory grows with the iteration count).
    """
    if b.ndim < 1:
        raise ValueError(f"b: expected a batched tensor (B, ...), got shape {tuple(b.shape)}")
    batch = b.shape[0]
    if check_every is None:
        check_every = 1 if b.device.type == "cpu" else CUDA_CHECK_EVERY
    real_dtype = b.real.dtype if b.is_complex() else b.dtype
    device = b.device

    b_norm = batch_norm(b)
    threshold = tol * b_norm
    zero_rhs = b_norm == 0
    if x0 is None:
        x = torch.zeros_like(b)
        r = b
    else:
        # A zero right-hand side has the solution zero, whatever the guess.
        x = torch.where(_per_sample(zero_rhs, b), torch.zeros_like(x0), x0)
        r = b - matvec(x)
    r_norm = batch_norm(r)

    replay = iterations is not None
    if replay:
        target = iterations.to(device)
        active = target > 0
    else:
        active = (r_norm > threshold) & ~zero_rhs
    status_code = torch.zeros(batch, dtype=torch.int8, device=device)  # 0 conv, 1 stag, 2 max
    true_residual = torch.full((batch,), float("nan"), dtype=real_dtype, device=device)
    its = torch.zeros(batch, dtype=torch.int64, device=device)

    # Without autograd the iterates are updated in place (no allocation per iteration);
    # under autograd every update is a new tensor, as the backward pass needs them all.
    in_place = not torch.is_grad_enabled()
    if in_place and r is b:
        r = b.clone()  # x is already a fresh tensor; r must not alias the caller's b
    z = precond(r) if precond is not None else r
    p = z.clone() if in_place and z is r else z
    rz = batch_inner(r, z)
    floor_zone = FLOOR_ZONE * torch.finfo(real_dtype).eps * b_norm
    last_floor_check = 0
    # Hoisted out of the loop: at small images each tensor call costs as much as its work.
    sample_shape = (-1,) + (1,) * (b.ndim - 1)
    zero = torch.zeros((), dtype=real_dtype, device=device)
    one = torch.ones((), dtype=real_dtype, device=device)
    # Replay runs each sample's recorded count; a normal solve stops at max_iter at most.
    limit = (int(target.max()) if batch else 0) if replay else max_iter
    k = 0
    # (an all-inactive start: a zero right-hand side, or a guess already within tol)
    if not replay and not bool(active.any()):
        limit = 0
    while k < limit:
        kp = matvec(p)
        pkp = batch_inner(p, kp)
        # Inactive samples (and a breakdown, pkp = 0, which only happens at r = 0) take a
        # zero step, so their x and r stay exactly as they are; their beta is zero too,
        # which keeps their p bounded.
        step = (pkp > zero).logical_and_(active)
        alpha_b = _masked_ratio(rz, pkp, step, zero, one, in_place).view(sample_shape)
        if alpha_b.dtype != b.dtype:
            alpha_b = alpha_b.to(b.dtype)
        if in_place:
            x.addcmul_(alpha_b, p)
            r.addcmul_(alpha_b, kp, value=-1)
        else:
            x = torch.addcmul(x, alpha_b, p)
            r = torch.addcmul(r, alpha_b, kp, value=-1)
        k += 1
        # A sample once inactive stays so: its count is the last k at which it was active.
        its.masked_fill_(active, k)

        # Without a preconditioner <r, z> is ||r||^2 already.
        rz_new = batch_inner(r, r) if precond is None else None
        r_norm = rz_new.clamp_min(0).sqrt() if precond is None else batch_norm(r)
        # (active is the solver's own tensor: updated in place, one call less)
        if replay:
            active.logical_and_(its < target)
            if k >= limit:
                break
        else:
            active.logical_and_(r_norm > threshold)
            if stop_at_floor and _floor_check_due(
                k, last_floor_check, floor_check_every, check_every, active, r_norm, floor_zone
            ):
                last_floor_check = k
                # The recursion r drifts from b - Kx by rounding; when the drift is as large
                # as the true residual, further steps cannot make the true residual smaller.
                with torch.no_grad():
                    true_r = b - matvec(x)
                    true_norm = batch_norm(true_r)
                    drift = batch_norm(true_r - r)
                floor = active & (drift > 0.5 * true_norm)
                status_code = torch.where(floor, torch.ones_like(status_code), status_code)
                true_residual = torch.where(floor, true_norm, true_residual)
                active = active & ~floor
            # Stop before the next direction: its preconditioner application would be
            # wasted on the last iteration.
            if k % check_every == 0 and not bool(active.any()):
                break

        if precond is not None:
            z = precond(r)
            rz_new = batch_inner(r, z)
        else:
            z = r  # (a new tensor each iteration under autograd)
        beta_b = _masked_ratio(rz_new, rz, step, zero, one, in_place).view(sample_shape)
        if beta_b.dtype != b.dtype:
            beta_b = beta_b.to(b.dtype)
        # p <- z + beta p; writing into p while reading it is safe (elementwise, same index)
        p = torch.addcmul(z, beta_b, p, out=p) if in_place else torch.addcmul(z, beta_b, p)
        rz = rz_new

    if not replay:
        status_code = torch.where(active, torch.full_like(status_code, 2), status_code)
    nonfinite = ~torch.isfinite(b_norm)
    if bool(nonfinite.any()):
        # The stopping test is never true for a NaN/inf right-hand side, which would leave
        # x at its start (zero): a silent, wrong solution. NaN says what happened.
        x = torch.where(_per_sample(nonfinite, b), torch.full_like(x, float("nan")), x)
        status_code = torch.where(nonfinite, torch.full_like(status_code, 3), status_code)
    rel = torch.where(status_code == 1, true_residual, r_norm)
    rel = torch.where(zero_rhs, torch.zeros_like(rel), rel / torch.where(zero_rhs, 1, b_norm))
    names = ("converged", "stagnated", "max_iter", "nonfinite")
    codes = status_code.tolist()
    info = SolveInfo(
        iterations=its,
        residual=rel.detach(),
        converged=status_code < 2,  # max_iter and nonfinite are not
        status=[names[c] for c in codes],
        max_iter=max_iter,
        tol=tol,
    )
    if 2 in codes:
        _report_failure(info, on_failure, what)
    return x, info


def _masked_ratio(num: Tensor, den: Tensor, mask: Tensor, zero, one, no_grad: bool) -> Tensor:
    """``num / den`` where ``mask``, 0 elsewhere. Under autograd the denominator is masked
    too: a 0 / 0 in the discarded branch would still make its gradient NaN."""
    if no_grad:
        return torch.where(mask, num / den, zero)
    return torch.where(mask, num / torch.where(mask, den, one), zero)


def _floor_check_due(k, last, every, check_every, active, r_norm, zone) -> bool:
    """Whether to recompute the true residual at iteration ``k`` (see the module doc)."""
    since = k - last
    if since >= FLOOR_FALLBACK * every:
        return True
    # Looking at the residuals needs a host synchronisation: only where one happens anyway.
    if since < every or k % check_every != 0:
        return False
    return bool((active & (r_norm < zone)).any())


def _report_failure(info: SolveInfo, on_failure: str, what: str) -> None:
    failed = [i for i, s in enumerate(info.status) if s == "max_iter"]
    worst = max(info.residual[i].item() for i in failed)
    message = (
        f"{what}: CG reached max_iter={info.max_iter} before tol={info.tol:g} for "
        f"{len(failed)} of {len(info.status)} samples (worst relative residual {worst:.2e})"
    )
    if what.startswith("implicit"):
        message += (
            "; the implicit gradient is only approximate when the forward solve has not converged"
        )
    if on_failure == "raise":
        raise NonConvergenceError(message)
    if on_failure == "warn":
        warnings.warn(message, NonConvergenceWarning, stacklevel=4)
