"""The least-squares prox and its backward modes against dense float64 closed forms."""

import pytest
import torch

import unrolled as ur
from unrolled.linalg import CG, MatrixOperator, NonConvergenceWarning, prox_l2, prox_l2_with_info
from unrolled.physics import Blur, gaussian_kernel
from unrolled.testing import dense_prox
from unrolled.testing import relative_error as rel
from unrolled.train import SavedTensorMeter


@pytest.fixture(autouse=True)
def _seeded_global_rng():
    # Tests that draw from torch's global generator draw the same numbers on every run,
    # whichever tests ran before them.
    torch.manual_seed(0)


F64 = torch.float64
TIGHT = CG(max_iter=1000, tol=1e-13)


def blur_problem(padding="valid", shape=(2, 3, 10, 10), sigma=1.0, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    kernel = gaussian_kernel(sigma, 5, dtype=dtype) + 0.05 * torch.rand(
        5, 5, dtype=dtype, generator=g
    )
    op = Blur(kernel, padding=padding)
    z = torch.randn(shape, dtype=dtype, generator=g)
    y = op.A(torch.rand(shape, dtype=dtype, generator=g))
    y = y + 0.1 * torch.randn(y.shape, dtype=dtype, generator=g)
    return op, z, y


# -- forward -------------------------------------------------------------------------


@pytest.mark.parametrize("padding", ["valid", "circular", "reflect"])
def test_prox_equals_dense_solve_blur(padding):
    op, z, y = blur_problem(padding)
    gamma = torch.tensor([0.3, 4.0], dtype=F64)
    h = prox_l2(op, z, y, gamma, solver=TIGHT)
    truth = dense_prox(Blur(op.kernel, padding=padding), z, y, gamma)
    assert rel(h, truth) <= 1e-10


def test_prox_equals_dense_solve_complex():
    g = torch.Generator().manual_seed(3)
    m = torch.randn(2, 6, 9, dtype=torch.complex128, generator=g)  # one matrix per sample
    op = MatrixOperator(m)
    z = torch.randn(2, 9, dtype=torch.complex128, generator=g)
    y = torch.randn(2, 6, dtype=torch.complex128, generator=g)
    h = prox_l2(op, z, y, 0.7, solver=TIGHT)
    assert h.dtype == torch.complex128
    assert rel(h, dense_prox(op, z, y, 0.7)) <= 1e-10


# -- implicit gradients against the dense closed form ---------------------------------

GAMMAS = {
    "float": lambda: 0.8,
    "0-d tensor": lambda: torch.tensor(0.8, dtype=F64, requires_grad=True),
    "per sample": lambda: torch.tensor([0.3, 2.0], dtype=F64, requires_grad=True),
    "broadcast": lambda: (
        torch.tensor([0.5, 1.0, 3.0], dtype=F64).reshape(1, 3, 1, 1).requires_grad_()
    ),
}


@pytest.mark.parametrize("padding", ["valid", "circular"])
@pytest.mark.parametrize("gamma_kind", list(GAMMAS))
def test_implicit_gradients_match_dense_closed_form(padding, gamma_kind):
    op, z, y = blur_problem(padding)
    kernel = op.kernel.clone().requires_grad_()
    op.kernel = kernel
    z.requires_grad_()
    y.requires_grad_()
    gamma = GAMMAS[gamma_kind]()
    v = torch.randn(z.shape, dtype=F64, generator=torch.Generator().manual_seed(9))

    h = prox_l2(op, z, y, gamma, solver=TIGHT, backward="implicit")
    inputs = [z, y, kernel] + ([gamma] if isinstance(gamma, torch.Tensor) else [])
    grads = torch.autograd.grad((h * v).sum(), inputs)

    truth = dense_prox(Blur(kernel, padding=padding), z, y, gamma)
    grads_truth = torch.autograd.grad((truth * v).sum(), inputs)
    assert rel(h, truth) <= 1e-10
    for name, g, t in zip(["z", "y", "kernel", "gamma"], grads, grads_truth, strict=False):
        assert g.shape == t.shape, name
        assert rel(g, t) <= 1e-8, name


def test_implicit_gradients_complex_operator():
    g = torch.Generator().manual_seed(4)
    m = torch.randn(5, 7, dtype=torch.complex128, generator=g).requires_grad_()
    z = torch.randn(2, 7, dtype=torch.complex128, generator=g).requires_grad_()
    y = torch.randn(2, 5, dtype=torch.complex128, generator=g).requires_grad_()
    gamma = torch.tensor([0.5, 2.0], dtype=F64, requires_grad=True)
    v = torch.randn(2, 7, dtype=torch.complex128, generator=g)
    # a real loss of complex h: Re <v, h>
    loss = lambda h: (v.conj() * h).real.sum()  # noqa: E731
    grads = torch.autograd.grad(
        loss(prox_l2(MatrixOperator(m), z, y, gamma, solver=TIGHT)), [z, y, gamma, m]
    )
    truth = torch.autograd.grad(loss(dense_prox(MatrixOperator(m), z, y, gamma)), [z, y, gamma, m])
    for g_, t in zip(grads, truth, strict=True):
        assert rel(g_, t) <= 1e-8


def test_gradcheck_implicit():
    op, z, y = blur_problem("valid", shape=(2, 1, 6, 6))
    kernel = op.kernel[1:4, 1:4].clone().requires_grad_()
    y = torch.randn(2, 1, 4, 4, dtype=F64, generator=torch.Generator().manual_seed(5))
    z.requires_grad_()
    y.requires_grad_()
    gamma = torch.tensor([0.5, 1.5], dtype=F64, requires_grad=True)

    def f(z, y, gamma, kernel):
        return prox_l2(Blur(kernel), z, y, gamma, solver=CG(max_iter=500, tol=1e-14))

    assert torch.autograd.gradcheck(f, (z, y, gamma, kernel))


def test_implicit_matches_unroll_float32_seed_problem():
    # The seed problem: 3x32x32, Gaussian blur sigma 2.5, valid padding, tol 1e-8
    # (below float32's reach: the solve stops at the floor).
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=g)
    kernel = gaussian_kernel(2.5)
    y = Blur(kernel).A(x)
    y = y + 0.1 * torch.randn(y.shape, generator=g)
    v = torch.randn(x.shape, generator=g)
    grads = {}
    for mode in ("unroll", "implicit"):
        k = kernel.clone().requires_grad_()
        z = x.clone().requires_grad_()
        yy = y.clone().requires_grad_()
        gamma = torch.tensor([1.0, 0.5], requires_grad=True)
        h = prox_l2(Blur(k), z, yy, gamma, solver=CG(max_iter=100, tol=1e-8), backward=mode)
        grads[mode] = torch.autograd.grad((h * v).sum(), [z, yy, gamma, k])
    for name, a, b in zip(
        ["z", "y", "gamma", "kernel"], grads["implicit"], grads["unroll"], strict=True
    ):
        assert rel(a, b) <= 1e-3, name


# -- operator tensors however they are held ----------------------------------------------


def test_kernel_parameter_and_kernel_from_network_get_unroll_gradients():
    op, z, y = blur_problem("valid")
    v = torch.randn(z.shape, dtype=F64)

    class KernelNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = torch.nn.Sequential(
                torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 25)
            ).double()

        def forward(self, code):
            return torch.softmax(self.net(code), dim=-1).reshape(5, 5)

    results = {}
    for mode in ("unroll", "implicit"):
        param = torch.nn.Parameter(op.kernel.clone())
        h = prox_l2(Blur(param), z, y, 0.9, solver=TIGHT, backward=mode)
        (h * v).sum().backward()
        net = KernelNet()
        h2 = prox_l2(Blur(net(torch.ones(4, dtype=F64))), z, y, 0.9, solver=TIGHT, backward=mode)
        (h2 * v).sum().backward()
        results[mode] = [param.grad] + [p.grad for p in net.parameters()]
    for a, b in zip(results["implicit"], results["unroll"], strict=True):
        assert a is not None and a.abs().sum() > 0
        assert rel(a, b) <= 1e-8


def test_buffer_requiring_grad_gets_its_gradient():
    op, z, y = blur_problem("circular")
    op.kernel.requires_grad_()  # a buffer with requires_grad
    prox_l2(op, z, y, 1.0, solver=TIGHT).sum().backward()
    truth_k = op.kernel.detach().clone().requires_grad_()
    dense_prox(Blur(truth_k, padding="circular"), z, y, 1.0).sum().backward()
    assert rel(op.kernel.grad, truth_k.grad) <= 1e-8


def test_operator_changed_after_forward_does_not_change_gradient():
    op, z, y = blur_problem("valid")
    z.requires_grad_()
    kernel = op.kernel.clone().requires_grad_()
    op.kernel = kernel
    h = prox_l2(op, z, y, 1.0, solver=TIGHT)
    reference = torch.autograd.grad(h.sum(), [z, kernel], retain_graph=True)
    op.kernel = torch.rand(5, 5, dtype=F64)  # replaced before backward
    op.padding = "circular"
    again = torch.autograd.grad(h.sum(), [z, kernel])
    for a, b in zip(again, reference, strict=True):
        assert torch.equal(a, b)
    # Modifying the captured tensor in place is caught instead of silently used.
    h = prox_l2(Blur(kernel), z, y, 1.0, solver=TIGHT)
    with torch.no_grad():
        kernel.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        h.sum().backward()


def test_hidden_tensor_is_refused():
    class Hidden(ur.linalg.LinearOperator):
        def __init__(self, k):
            super().__init__()
            self.stash = [k]  # not an attribute autograd substitution can see

        def A(self, x):
            return x * self.stash[0]

        def A_adjoint(self, y):
            return y * self.stash[0]

    k = torch.rand(4, dtype=F64, requires_grad=True)
    with pytest.raises(ValueError, match="not one of its parameters, buffers"):
        prox_l2(Hidden(k), torch.rand(2, 4, dtype=F64), torch.rand(2, 4, dtype=F64), 1.0)


def test_scale_of_upstream_gradient_does_not_change_relative_accuracy():
    # A loose tol makes the solve error measurable; a relative stopping test keeps it
    # the same when the upstream gradient is 1e-8 times smaller.
    op, z, y = blur_problem("valid")
    z.requires_grad_()
    solver = CG(max_iter=500, tol=1e-6)
    truth_h = dense_prox(Blur(op.kernel, padding="valid"), z, y, 5.0)
    v = torch.randn(z.shape, dtype=F64)
    truth = torch.autograd.grad((truth_h * v).sum(), z)[0]
    errors = []
    for scale in (1.0, 1e-8):
        h = prox_l2(op, z, y, 5.0, solver=solver)
        g = torch.autograd.grad((h * v * scale).sum(), z)[0]
        errors.append(rel(g / scale, truth))
    assert errors[0] < 1e-4
    assert errors[1] <= 10 * errors[0] + 1e-14


def test_double_backward_is_refused_with_a_pointer_to_unroll():
    op, z, y = blur_problem("valid")
    z.requires_grad_()
    h = prox_l2(op, z, y, 1.0, solver=TIGHT)
    with pytest.raises(RuntimeError, match="backward='unroll'"):
        torch.autograd.grad(h.sum(), z, create_graph=True)
    h = prox_l2(op, z, y, 1.0, solver=TIGHT, backward="unroll")
    (g,) = torch.autograd.grad(h.sum(), z, create_graph=True)
    assert g.requires_grad


def test_unconverged_implicit_forward_warns_gradient_is_approximate():
    op, z, y = blur_problem("valid")
    z.requires_grad_()
    with pytest.warns(NonConvergenceWarning, match="implicit gradient is only approximate"):
        prox_l2(op, z, y, 100.0, solver=CG(max_iter=2, tol=1e-12))


def test_info_reports_forward_and_backward_solves():
    op, z, y = blur_problem("valid")
    z.requires_grad_()
    h, info = prox_l2_with_info(op, z, y, 1.0, solver=TIGHT)
    assert info.forward.all_converged and info.backward is None
    h.sum().backward()
    assert info.backward is not None and info.backward.iterations.min() > 0


# -- checkpoint mode --------------------------------------------------------------------


def test_checkpoint_gradients_equal_unroll_even_when_truncated():
    op, z, y = blur_problem("valid")
    gamma = torch.tensor([1.0, 20.0], dtype=F64)
    v = torch.randn(z.shape, dtype=F64)
    grads = {}
    for mode in ("unroll", "checkpoint"):
        zz = z.clone().requires_grad_()
        yy = y.clone().requires_grad_()
        gg = gamma.clone().requires_grad_()
        k = op.kernel.clone().requires_grad_()
        # 6 iterations: far from converged, so this tests the truncated solve's gradient
        h = prox_l2(
            Blur(k),
            zz,
            yy,
            gg,
            solver=CG(max_iter=6, tol=1e-12, on_failure="ignore"),
            backward=mode,
        )
        grads[mode] = torch.autograd.grad((h * v).sum(), [zz, yy, gg, k])
    for a, b in zip(grads["checkpoint"], grads["unroll"], strict=True):
        assert rel(a, b) <= 1e-12


# -- memory ---------------------------------------------------------------------------


def saved_bytes(mode, max_iter, op, z, y, gamma):
    # No preconditioner: a preconditioned solve can reach an exact zero residual early
    # and stop, and every iteration must run here.
    solver = CG(
        max_iter=max_iter, tol=0, stop_at_floor=False, on_failure="ignore", preconditioner=None
    )
    zz = z.clone().requires_grad_()
    with SavedTensorMeter() as meter:
        h, info = prox_l2_with_info(op, zz, y, gamma, solver=solver, backward=mode)
    assert info.forward.iterations.tolist() == [max_iter] * z.shape[0]  # every iteration ran
    h.sum().backward()
    return meter.saved_bytes


def test_memory_implicit_and_checkpoint_flat_unroll_linear():
    # gamma = 1e4 makes the system badly conditioned, so no residual reaches exactly zero
    # and tol = 0 runs every iteration.
    kernel = torch.nn.Parameter(gaussian_kernel(2.5))
    op = Blur(kernel)
    g = torch.Generator().manual_seed(0)
    z = torch.rand(1, 2, 24, 24, generator=g)
    y = op.A(torch.rand(1, 2, 24, 24, generator=g)).detach()
    gamma = torch.tensor(1e4, requires_grad=True)
    image = z.numel() * z.element_size()
    operator_bytes = kernel.numel() * kernel.element_size()
    for mode in ("implicit", "checkpoint"):
        small, large = (
            saved_bytes(mode, 10, op, z, y, gamma),
            saved_bytes(mode, 300, op, z, y, gamma),
        )
        assert small == large, mode
        assert large <= 4 * image + operator_bytes + 64, mode  # 64: the 0-d gamma and slack
    b10, b20, b300 = (saved_bytes("unroll", n, op, z, y, gamma) for n in (10, 20, 300))
    per_iteration = (b20 - b10) / 10
    assert per_iteration >= image  # at least one image-sized tensor per iteration
    assert abs((b300 - b10) - 290 * per_iteration) <= 0.02 * (b300 - b10)  # linear


# -- bad input ------------------------------------------------------------------------


def test_bad_inputs_raise_errors_naming_the_argument():
    op, z, y = blur_problem("valid")
    cases = [
        (dict(y=y[..., :-1]), r"y: expected shape \(2, 3, 6, 6\).*got \(2, 3, 6, 5\)"),
        (dict(y=y.float()), r"y: expected dtype torch.float64"),
        (
            dict(z=z.clone().index_fill_(0, torch.tensor([1]), float("nan"))),
            r"z: expected finite values, got NaN or Inf",
        ),
        (
            dict(y=y.clone().index_fill_(0, torch.tensor([0]), float("inf"))),
            r"y: expected finite values, got NaN or Inf",
        ),
        (dict(gamma=0.0), r"gamma: expected finite values > 0, got min 0"),
        (dict(gamma=-1.0), r"gamma: expected finite values > 0, got min -1"),
        (dict(gamma=torch.tensor([1.0, -2.0])), r"gamma: expected finite values > 0, got min -2"),
        (
            dict(gamma=torch.ones(5)),
            r"gamma: expected a number, a \(2,\) tensor or a shape .*got shape \(5,\)",
        ),
        (
            dict(backward="adjoint"),
            r"backward: expected one of 'implicit', 'unroll', 'checkpoint', got 'adjoint'",
        ),
    ]
    # A wrong type (not a tensor, not a number, a bool) is a TypeError.
    type_cases = [
        (dict(gamma="1"), r"gamma: expected a positive number or tensor, got '1'"),
        (dict(gamma=True), r"gamma: expected a positive number or tensor, got True"),
        (dict(z=z.numpy()), r"z: expected a torch.Tensor, got ndarray of shape \(2, 3, 10, 10\)"),
        (dict(y=None), r"y: expected a torch.Tensor, got None"),
        (dict(backward=None), r"backward: expected one of .*, got None"),
    ]
    for error, group in ((ValueError, cases), (TypeError, type_cases)):
        for override, match in group:
            kwargs = dict(z=z, y=y, gamma=1.0, backward="implicit") | override
            with pytest.raises(error, match="^" + match) as raised:
                prox_l2(op, kwargs["z"], kwargs["y"], kwargs["gamma"], backward=kwargs["backward"])
            assert type(raised.value) is error
    with pytest.raises(
        ValueError, match=r"kernel: expected at most the image size \(4, 4\).*\(5, 5\)"
    ):
        prox_l2(op, torch.rand(1, 1, 4, 4, dtype=F64), torch.rand(1, 1, 1, 1, dtype=F64), 1.0)
    with pytest.raises(ValueError, match=r"padding: expected one of .* got 'mirror'"):
        Blur(op.kernel, padding="mirror")


# -- the L2 fidelity --------------------------------------------------------------------


def test_l2_fidelity():
    op, z, y = blur_problem("valid")
    x = torch.randn(z.shape, dtype=F64, requires_grad=True)
    fid = ur.L2(solver=TIGHT)
    value = fid.value(x, y, op)
    assert value.shape == (2,)
    (auto,) = torch.autograd.grad(value.sum(), x)
    assert rel(fid.grad(x, y, op), auto) < 1e-14
    zz = z.clone().requires_grad_()
    h = fid.prox(zz, y, op, 0.5)
    assert rel(h, prox_l2(op, z, y, 0.5, solver=TIGHT)) < 1e-14
    assert fid.stats.forward_solves == 1 and fid.stats.mean_forward > 0
    h.sum().backward()
    assert fid.stats.backward_solves == 1 and fid.stats.mean_backward > 0
    with pytest.raises(ValueError, match="backward: expected one of"):
        ur.L2(backward="implicitly")


def test_unroll_differentiates_through_a_preconditioner():
    # The exact Fourier preconditioner of circular blur makes CG converge in one step;
    # the derivative of that one step equals the true derivative only if the
    # preconditioner's own dependence on gamma and the kernel is differentiated too.
    op, z, y = blur_problem("circular")
    kernel = op.kernel.clone().requires_grad_()
    gamma = torch.tensor([0.5, 3.0], dtype=F64, requires_grad=True)
    solver = CG(tol=1e-12, preconditioner=lambda o, g: o.fourier_preconditioner(g))
    truth = dense_prox(Blur(kernel, padding="circular"), z, y, gamma)
    truth_grads = torch.autograd.grad(truth.sum(), [gamma, kernel])
    for mode in ("unroll", "checkpoint", "implicit"):
        h, info = prox_l2_with_info(
            Blur(kernel, padding="circular"),
            z,
            y,
            gamma,
            solver=solver,
            backward=mode,
        )
        assert info.forward.iterations.max() <= 2
        for a, b in zip(torch.autograd.grad(h.sum(), [gamma, kernel]), truth_grads, strict=True):
            assert rel(a, b) <= 1e-8, mode
