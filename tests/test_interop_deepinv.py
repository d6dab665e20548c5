"""unrolled.interop.deepinv against the real deepinv (0.5.0), in float64 at tiny sizes.

Truths: deepinv's own ``A`` / ``A_adjoint``; a dense float64 solve whose matrix is
deepinv's ``A`` applied to the canonical basis (never this library's code); the
closed-form gradients of DESIGN.md section 1 for ``z``, ``y``, ``gamma``, and plain
autograd through the dense solve for the physics' tensors; deepinv's own prox run to
full accuracy (its CG with ``eps=0``) inside deepinv's unfolded HQS. deepinv is
installed in CI; set UNROLLED_REQUIRE_DEEPINV=1 to make its absence a failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch

import unrolled as ur
from unrolled.testing import adjointness_error

try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a CUDA torchvision on a CPU torch
        from unrolled.interop import deepinv as interop
except ImportError as err:
    if os.environ.get("UNROLLED_REQUIRE_DEEPINV"):
        raise
    pytest.skip(f"deepinv not installed: {err}", allow_module_level=True)

from benchmarks.deepinv_interop import CASES, dense_matrix, dense_truth, ours

dinv = interop.dinv
DT = torch.float64
# CG to a relative residual of 1e-13: the error of h (and of every gradient, one more
# solve) is below cond(A^T A + I/gamma) * 1e-13 ~ 1e-11 for these well-conditioned cases.
SOLVER = ur.CG(max_iter=2000, tol=1e-13)
GRAD_TOL = 1e-8  # the bound; the measured errors are ~1e-12 (benchmarks/deepinv_interop)


def rel(a, b) -> float:
    return ur.testing.relative_error(a, b)


@pytest.fixture(params=list(CASES), ids=list(CASES))
def case(request):
    return CASES[request.param]


def test_forward_and_adjoint_equal_deepinvs(case):
    g = torch.Generator().manual_seed(0)
    physics, shape, _ = case.build()
    op = interop.as_operator(physics)
    x = torch.randn(shape, dtype=DT, generator=g)
    ax = physics.A(x)
    y = torch.randn(ax.shape, dtype=DT, generator=g)
    wrap_in = interop.to_complex if op.complex else (lambda t, name="x": t)
    wrap_out = interop.to_real if op.complex else (lambda t, name="x": t)
    assert rel(wrap_out(op.A(wrap_in(x))), ax) <= 1e-15
    assert rel(wrap_out(op.A_adjoint(wrap_in(y))), physics.A_adjoint(y)) <= 1e-15
    assert adjointness_error(op, wrap_in(x)) <= 1e-13


def test_prox_and_gradients_equal_dense_closed_form(case):
    physics, shape, names = case.build()
    truth = dense_truth(case, shape, seed=1)
    got = ours(case, shape, seed=1, solver=SOLVER)
    assert rel(got["h"], truth["h"]) <= 1e-10
    for key in ("z", "y", "gamma", *names):
        assert rel(got[key], truth[key]) <= GRAD_TOL, key


@pytest.mark.parametrize("backward", ["unroll", "checkpoint"])
@pytest.mark.parametrize("name", ["Blur(valid)", "MultiCoilMRI", "Tomography"])
def test_other_backward_modes_through_deepinv_physics(name, backward):
    # Converged, the derivative of the solve done is the exact one for z, y, gamma. For the
    # physics' tensors these modes differentiate deepinv's A_adjoint as written: exact for
    # the blur; Tomography's autograd adjoint has no derivative in its tensors (the
    # implicit mode needs none), so only the implicit mode is checked there.
    case = CASES[name]
    truth = dense_truth(case, seed=1)
    got = ours(case, seed=1, solver=SOLVER, backward=backward)
    keys = ("z", "y", "gamma", *(case.tensors if name == "Blur(valid)" else ()))
    for key in keys:
        assert rel(got[key], truth[key]) <= GRAD_TOL, key


def test_gradient_reaches_a_network_without_side_effects():
    # a kernel made by a "network" (a non-leaf): the network gets the exact gradient,
    # under autograd.grad and backward alike, and nothing is written into .grad elsewhere
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(9, dtype=DT, generator=g, requires_grad=True)
    physics = dinv.physics.Blur(filter=torch.ones(1, 1, 3, 3, dtype=DT) / 9, padding="valid")
    z = torch.randn(2, 1, 7, 7, dtype=DT, generator=g)
    y = torch.randn(2, 1, 5, 5, dtype=DT, generator=g)
    v = torch.randn(2, 1, 7, 7, dtype=DT, generator=g)
    op = interop.as_operator(physics)

    def loss():
        physics.filter = torch.softmax(logits, 0).reshape(1, 1, 3, 3)
        return (v * ur.prox_l2(op, z, y, 0.8, solver=SOLVER)).sum()

    (first,) = torch.autograd.grad(loss(), logits)
    (second,) = torch.autograd.grad(loss(), logits)
    loss().backward()
    torch.testing.assert_close(second, first, rtol=0, atol=0)
    torch.testing.assert_close(logits.grad, first, rtol=0, atol=0)

    def dense_loss(lg):
        physics.filter = torch.softmax(lg, 0).reshape(1, 1, 3, 3)
        a = dense_matrix(physics, (1, 1, 7, 7))
        m = a.T @ a + torch.eye(49, dtype=DT) / 0.8
        rhs = (y.reshape(2, -1) @ a) + z.reshape(2, -1) / 0.8
        return (v.reshape(2, -1) * torch.linalg.solve(m, rhs.T).T).sum()

    (truth,) = torch.autograd.grad(dense_loss(logits), logits)
    assert rel(first, truth) <= GRAD_TOL
    # deepinv's own prox leaves the kernel out of the graph: autograd.grad cannot reach it
    physics.filter = torch.softmax(logits, 0).reshape(1, 1, 3, 3)
    h = dinv.optim.L2().prox(z, y, physics, gamma=0.8)
    with pytest.raises(RuntimeError, match="not have been used in the graph"):
        torch.autograd.grad((v * h).sum(), logits)


class _Weighted(dinv.physics.LinearPhysics):
    """A user's own deepinv physics holding an nn.Parameter: A x = w * roll(x)."""

    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def A(self, x, **kwargs):  # noqa: N802
        return self.w * torch.roll(x, 1, dims=-1)

    def A_adjoint(self, y, **kwargs):  # noqa: N802
        return torch.roll(self.w * y, -1, dims=-1)


def test_a_users_physics_parameter_gets_its_gradient_by_backward():
    g = torch.Generator().manual_seed(11)
    physics = _Weighted(torch.rand(1, 1, 4, 4, dtype=DT, generator=g))
    z = torch.randn(2, 1, 4, 4, dtype=DT, generator=g)
    y = torch.randn(2, 1, 4, 4, dtype=DT, generator=g)
    v = torch.randn(2, 1, 4, 4, dtype=DT, generator=g)
    (v * ur.prox_l2(interop.as_operator(physics), z, y, 0.6, solver=SOLVER)).sum().backward()

    a = dense_matrix(physics, (1, 1, 4, 4))
    m = a.T @ a + torch.eye(16, dtype=DT) / 0.6
    h = torch.linalg.solve(m, (y.reshape(2, -1) @ a + z.reshape(2, -1) / 0.6).T).T
    (truth,) = torch.autograd.grad((v.reshape(2, -1) * h).sum(), physics.w)
    assert rel(physics.w.grad, truth) <= GRAD_TOL


def test_no_gradient_written_as_a_side_effect():
    # autograd.grad for z alone: the kernel's .grad stays untouched with ours (deepinv's
    # implicit backward writes into it)
    def kernel_grad_after(prox):
        leaf = torch.rand(1, 1, 3, 3, dtype=DT, generator=torch.Generator().manual_seed(4))
        physics = dinv.physics.Blur(filter=leaf.requires_grad_(), padding="valid")
        z = torch.ones(1, 1, 6, 6, dtype=DT, requires_grad=True)
        h = prox(z, torch.ones(1, 1, 4, 4, dtype=DT), physics)
        torch.autograd.grad(h.sum(), z)
        return leaf.grad

    def mine(z, y, physics):
        return ur.prox_l2(interop.as_operator(physics), z, y, 1.0, solver=SOLVER)

    def theirs(z, y, physics):
        return dinv.optim.L2().prox(z, y, physics, gamma=1.0)

    assert kernel_grad_after(mine) is None
    assert kernel_grad_after(theirs) is not None


def test_snapshot_reassigning_the_kernel_before_backward_changes_nothing():
    g = torch.Generator().manual_seed(3)
    leaf = torch.rand(1, 1, 3, 3, dtype=DT, generator=g, requires_grad=True)
    z = torch.randn(1, 1, 6, 6, dtype=DT, generator=g)
    y = torch.randn(1, 1, 4, 4, dtype=DT, generator=g)

    def grad(reassign: bool):
        physics = dinv.physics.Blur(filter=leaf * 1.0, padding="valid")
        h = ur.prox_l2(interop.as_operator(physics), z, y, 1.0, solver=SOLVER)
        if reassign:
            physics.filter = torch.zeros(1, 1, 3, 3, dtype=DT)
        return torch.autograd.grad(h.square().sum(), leaf)[0]

    torch.testing.assert_close(grad(True), grad(False), rtol=0, atol=0)


def test_refuses_what_it_cannot_wrap():
    with pytest.raises(TypeError, match="LinearPhysics, got torch.Tensor"):
        interop.as_operator(torch.zeros(3))
    with pytest.raises(TypeError, match="got unrolled.physics.blur.Blur"):
        interop.as_operator(ur.physics.Blur(torch.ones(3, 3) / 9))
    nonlinear = dinv.physics.Physics(A=lambda x, **kw: x.square())
    with pytest.raises(TypeError, match=r"got deepinv.physics.forward.Physics, a nonlinear"):
        interop.as_operator(nonlinear)
    no_adjoint = dinv.physics.LinearPhysics(A=lambda x, **kw: 2 * x)
    with pytest.raises(ValueError, match="got deepinv.physics.forward.LinearPhysics with none"):
        interop.as_operator(no_adjoint)
    blur = dinv.physics.Blur(filter=torch.ones(1, 1, 3, 3, dtype=DT))
    with pytest.raises(TypeError, match="TensorList"):
        interop.as_operator(blur.stack(blur))
    with pytest.raises(TypeError, match="complex: expected True, False or None, got 'yes'"):
        interop.as_operator(blur, complex="yes")
    with pytest.raises(TypeError, match="solver: expected an unrolled.CG"):
        interop.L2(solver="CG")
    with pytest.raises(ValueError, match="backward: expected one of"):
        interop.L2(backward="exact")
    with pytest.raises(ValueError, match=r"x: expected a complex tensor of shape \(B, 1, ...\)"):
        interop.as_operator(dinv.physics.MRI(img_size=(4, 4))).A(torch.zeros(1, 2, 4, 4))
    with pytest.raises(TypeError, match=r"y: expected a torch.Tensor, got \[1.0\]"):
        interop.to_complex([1.0], "y")


def test_a_tensor_hidden_in_a_closure_is_refused_not_silently_dropped():
    w = torch.rand(1, 1, 3, 3, dtype=DT, requires_grad=True)
    physics = dinv.physics.LinearPhysics(A=lambda x, **kw: w * x, A_adjoint=lambda y, **kw: w * y)
    z = torch.randn(1, 1, 3, 3, dtype=DT)
    with pytest.raises(ValueError, match="requires grad but is not one of its parameters"):
        ur.prox_l2(interop.as_operator(physics), z, z, 1.0, solver=SOLVER)


def test_deepinv_optim_hqs_with_our_l2_matches_deepinvs_converged():
    g = torch.Generator().manual_seed(9)
    physics = _blur()
    x = torch.rand(2, 1, 8, 8, dtype=DT, generator=g)
    y = physics.A(x) + 0.01 * torch.randn(2, 1, 6, 6, dtype=DT, generator=g)

    def solve(fidelity):
        algo = dinv.optim.HQS(
            data_fidelity=fidelity,
            prior=dinv.optim.Tikhonov(),
            lambda_reg=0.1,
            stepsize=0.5,
            max_iter=4,
            early_stop=False,
        )
        return algo(y, physics)

    ref = solve(ExactDeepinvL2())
    fidelity = interop.L2(solver=SOLVER)
    assert rel(solve(fidelity), ref) <= 1e-12
    assert torch.allclose(fidelity.fn(x, y, physics), dinv.optim.L2().fn(x, y, physics))


def test_import_unrolled_does_not_import_deepinv():
    code = "import sys, unrolled; assert 'deepinv' not in sys.modules, 'imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_complex_convention_is_deepinvs():
    # deepinv's own conversion drops the channel axis; ours keeps it as one complex channel
    x = torch.randn(2, 2, 3, 5, dtype=DT, generator=torch.Generator().manual_seed(10))
    mixin = dinv.utils.mixins.MRIMixin
    torch.testing.assert_close(
        interop.to_complex(x)[:, 0], mixin.to_torch_complex(x), rtol=0, atol=0
    )
    torch.testing.assert_close(interop.to_real(interop.to_complex(x)), x, rtol=0, atol=0)


def test_autograd_adjoint_is_accepted():
    # no A_adjoint, but img_size: deepinv's autograd adjoint is a true adjoint
    physics = dinv.physics.LinearPhysics(A=lambda x, **kw: x.cumsum(-1), img_size=(1, 3, 4))
    op = interop.as_operator(physics)
    assert adjointness_error(op, torch.zeros(2, 1, 3, 4)) <= 1e-6  # float32 default dtype


# -- deepinv's unfolded HQS: ours against deepinv's own prox at full accuracy ----------


class ExactDeepinvL2(dinv.optim.L2):
    """deepinv's L2 with its CG run to full accuracy: no absolute eps in its denominators."""

    def prox(self, x, y, physics, *args, gamma=1.0, **kwargs):
        return physics.prox_l2(x, y, self.norm * gamma, max_iter=2000, tol=1e-14, eps=0.0)


def _hqs(fidelity, seed=4):
    torch.manual_seed(seed)
    denoiser = dinv.models.DnCNN(1, 1, depth=3, nf=8, pretrained=None).to(DT)
    return dinv.unfolded.unfolded_builder(
        "HQS",
        params_algo={"stepsize": 0.7, "g_param": 0.05, "lambda": 1.0},
        trainable_params=["stepsize", "g_param"],
        data_fidelity=fidelity,
        prior=dinv.optim.PnP(denoiser),
        max_iter=3,
    ).to(DT)  # float64 step sizes too: deepinv computes 1/gamma in gamma's dtype


def _hqs_data(seed=5):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 1, 10, 10, dtype=DT, generator=g)
    return x


def _run(fidelity, physics, x, wrt=None):
    model = _hqs(fidelity)
    y = physics.A(x)
    loss = (model(y, physics) - x).square().mean()
    params = [p for p in model.parameters() if p.requires_grad] + list(wrt or [])
    # the step sizes and noise levels of a layer that does not reach the output get None
    return loss, torch.autograd.grad(loss, params, allow_unused=True)


def _blur(filter=None):
    g = torch.Generator().manual_seed(6)
    if filter is None:
        filter = torch.rand(1, 1, 3, 3, dtype=DT, generator=g)
        filter = filter / filter.sum()
    return dinv.physics.Blur(filter=filter, padding="valid")


def test_unfolded_hqs_matches_deepinv_at_full_accuracy():
    x = _hqs_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        loss_ref, grads_ref = _run(ExactDeepinvL2(), _blur(), x)
    fidelity = interop.L2(solver=SOLVER)
    loss, grads = _run(fidelity, _blur(), x)
    loss, loss_ref = float(loss.detach()), float(loss_ref.detach())
    assert abs(loss - loss_ref) <= 1e-12 * loss_ref  # both exact to ~1e-14
    assert [g is None for g in grads] == [r is None for r in grads_ref]
    for g, r in zip(grads, grads_ref, strict=True):
        assert g is None or rel(g, r) <= GRAD_TOL
    assert fidelity.stats.forward_solves == 3 and fidelity.stats.backward_solves == 3


def test_unfolded_hqs_network_made_kernel_gets_the_exact_gradient_deepinvs_misses():
    # the kernel is the output of a network (softmax of trainable logits): deepinv's
    # implicit backward writes a gradient into the kernel tensor's .grad and gives the
    # logits none through the prox; ours gives them the exact one. The truth: autograd
    # through deepinv's own CG run to full accuracy (implicit_backward_solver=False).
    x = _hqs_data()
    logits = torch.randn(9, dtype=DT, generator=torch.Generator().manual_seed(7))

    def run(fidelity, implicit=True):
        leaf = logits.clone().requires_grad_()
        physics = _blur(torch.softmax(leaf, 0).reshape(1, 1, 3, 3))
        physics.implicit_backward_solver = implicit
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return _run(fidelity, physics, x, wrt=[leaf])[1][-1]

    truth = run(ExactDeepinvL2(), implicit=False)
    theirs = run(ExactDeepinvL2(), implicit=True)
    mine = run(interop.L2(solver=SOLVER))
    assert rel(mine, truth) <= GRAD_TOL
    assert rel(theirs, truth) > 1e-2


def test_l2_accepts_an_unrolled_operator_and_mri_in_deepinvs_real_form():
    g = torch.Generator().manual_seed(8)
    mask = (torch.rand(6, 6, generator=g) > 0.4).to(DT)
    physics = dinv.physics.MRI(mask=mask, img_size=(6, 6))
    z = torch.randn(2, 2, 6, 6, dtype=DT, generator=g)
    y = physics.A(torch.randn(2, 2, 6, 6, dtype=DT, generator=g))
    fidelity = interop.L2(sigma=0.5, solver=SOLVER)
    h = fidelity.prox(z, y, physics, gamma=0.3)  # step 0.3 / 0.5^2
    op = interop.as_operator(physics)  # complex view
    h_complex = ur.prox_l2(op, interop.to_complex(z), interop.to_complex(y), 1.2, solver=SOLVER)
    assert rel(h, interop.to_real(h_complex)) <= 1e-12
    assert rel(fidelity.prox(z, y, op.physics, gamma=0.3), h) == 0
    # deepinv's closed-form prox of its decomposable MRI is a third truth
    assert rel(h, physics.prox_l2(z, y, 1.2)) <= 1e-12


def test_example_runs_and_our_gradient_is_the_accurate_one():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.path.join(root, "src") + os.pathsep + env.get("PYTHONPATH", "")
    script = os.path.join(root, "examples", "deepinv_interop.py")
    proc = subprocess.run(
        [sys.executable, script, "--smoke"], capture_output=True, text=True, timeout=240, env=env
    )
    assert proc.returncode == 0, proc.stderr
    rows = {}
    for line in proc.stdout.splitlines():
        if line.startswith(("deepinv L2", "unrolled L2")):
            name, rest = line[:13].strip(), line[13:].replace(" MB", "").split()
            rows[name] = [float(v) for v in rest]
    assert set(rows) == {"deepinv L2", "unrolled L2"}, proc.stdout
    # columns: s/step, MB saved, CG fwd, CG bwd, grad err (all), grad err (steps), loss
    ours, theirs = rows["unrolled L2"], rows["deepinv L2"]
    assert ours[4] <= 1e-5 and ours[5] <= 1e-5  # float32 network: ~1e-7 measured
    assert theirs[4] > 10 * ours[4]
    assert theirs[2] == 100  # deepinv's float32 CG never meets tol=1e-8: max_iter every time
