"""Unfolded algorithms: their maths against a dense reference, training, gradients in the
two backward modes, layer checkpointing, parameter sharing and input checks."""

from __future__ import annotations

import doctest
import inspect

import pytest
import torch
from torch import nn
from torch.autograd.graph import saved_tensors_hooks

import unrolled as ur
import unrolled.unfolded.hqs
from unrolled.models import DnCNN, PnP
from unrolled.physics import Blur, GaussianNoise, gaussian_kernel
from unrolled.testing import dense_matrix
from unrolled.unfolded import ADMM, DRS, HQS, PGD, ScalarSpec, Unfolded, build

ALGORITHMS = ["hqs", "admm", "pgd", "drs"]


def discs(n=2, size=16, seed=0, dtype=torch.float32):
    """``(n, 1, size, size)`` images: a few overlapping discs of random grey levels."""
    g = torch.Generator().manual_seed(seed)
    rows, cols = torch.meshgrid(
        torch.arange(size, dtype=torch.float64),
        torch.arange(size, dtype=torch.float64),
        indexing="ij",
    )
    out = torch.zeros(n, 1, size, size, dtype=torch.float64)
    for i in range(n):
        for _ in range(3):
            centre = torch.rand(2, generator=g, dtype=torch.float64) * size
            radius = 2 + torch.rand((), generator=g, dtype=torch.float64) * size / 4
            level = 0.3 + 0.7 * torch.rand((), generator=g, dtype=torch.float64)
            inside = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 < radius**2
            out[i, 0] += level * inside
    return out.clamp(0, 1).to(dtype)


def problem(dtype=torch.float32, size=16):
    x = discs(size=size, dtype=dtype)
    physics = Blur(
        gaussian_kernel(1.0, dtype=dtype), padding="valid", noise=GaussianNoise(0.03, generator=1)
    )
    return x, physics, physics(x)


def model_for(algorithm, *, backward="implicit", tol=1e-6, max_iter=50, seed=0, **kwargs):
    torch.manual_seed(seed)
    options = {
        "layers": 3,
        "denoiser": DnCNN(1, 1, depth=3, features=8),
        "fidelity": ur.L2(solver=ur.CG(max_iter=max_iter, tol=tol), backward=backward),
        "sigma": 0.05,
        **kwargs,
    }
    return build(algorithm, **options)


# -- the maths, against a dense float64 reference ------------------------------------------


class Shrink(nn.Module):
    """``D(x, sigma) = x / (1 + sigma)``: a simple denoiser whose effect is easy to write."""

    def forward(self, x, sigma):
        return x / (1 + sigma)


def reference(algorithm, x0, y, matrix, stepsize, sigma, extra):
    """The documented iterations with a dense solve, on flattened samples (rows)."""
    n = matrix.shape[1]
    aty = y @ matrix

    def prox(z, gamma):
        system = matrix.T @ matrix + torch.eye(n, dtype=matrix.dtype) / gamma
        return torch.linalg.solve(system, (aty + z / gamma).T).T

    def denoise(v, s):
        return v / (1 + s)

    if algorithm == "hqs":
        z = x0
        for g, s in zip(stepsize, sigma, strict=True):
            z = denoise(prox(z, g), s)
        return z
    if algorithm == "pgd":
        x = x0
        for g, s in zip(stepsize, sigma, strict=True):
            x = denoise(x - g * ((x @ matrix.T - y) @ matrix), s)
        return x
    if algorithm == "admm":
        z, u = x0, torch.zeros_like(x0)
        for g, s, b in zip(stepsize, sigma, extra, strict=True):
            x = prox(z - u, g)
            z = denoise(x + u, s)
            u = u + b * (x - z)
        return z
    z = x0
    for g, s, lam in zip(stepsize, sigma, extra, strict=True):
        x = prox(z, g)
        w = denoise(2 * x - z, s)
        z = z + lam * (w - x)
    return w


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_iterations_match_dense_reference(algorithm):
    x, physics, y = problem(torch.float64, size=10)
    stepsize, sigma = [0.5, 1.5, 0.8], [0.1, 0.02, 0.3]
    extra = {"admm": ("beta", [1.0, 0.5, 1.5]), "drs": ("relaxation", [1.0, 0.5, 1.5])}
    kwargs = {extra[algorithm][0]: extra[algorithm][1]} if algorithm in extra else {}
    model = build(
        algorithm,
        layers=3,
        denoiser=Shrink(),
        fidelity=ur.L2(solver=ur.CG(max_iter=500, tol=1e-13)),
        stepsize=stepsize,
        sigma=sigma,
        trainable=(),
        **kwargs,
    ).double()
    # The scalars are stored as float32 logs (the default dtype at construction): take the
    # values the model really uses.
    stepsize, sigma = model.stepsize.tolist(), model.sigma.tolist()
    extra_values = model.scalars[extra[algorithm][0]].tolist() if kwargs else [None] * 3
    matrix = dense_matrix(physics, (1, 1, 10, 10), dtype=torch.float64)
    flat_y = y.reshape(2, -1)
    # The default initial estimate of a blur: A^T y / A^T 1, from the dense matrix.
    x0 = ((flat_y @ matrix) / (torch.ones_like(flat_y) @ matrix)).reshape(x.shape)
    want = reference(algorithm, x0.reshape(2, -1), flat_y, matrix, stepsize, sigma, extra_values)
    with torch.no_grad():
        got = model(y, physics)
        # An explicit x0 is used instead of the default initial estimate.
        got_x0 = model(y, physics, x0=2 * x0)
    # CG stops at a relative residual of 1e-13 on systems with condition number
    # <= 1 + gamma ||A||^2 <= 2.5: each solve is accurate to ~1e-12, a few layers to ~1e-11.
    torch.testing.assert_close(got.reshape(2, -1), want, rtol=1e-10, atol=1e-10)
    want_x0 = reference(
        algorithm, 2 * x0.reshape(2, -1), flat_y, matrix, stepsize, sigma, extra_values
    )
    torch.testing.assert_close(got_x0.reshape(2, -1), want_x0, rtol=1e-10, atol=1e-10)


# -- training --------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_training_reduces_the_loss(algorithm):
    x, physics, y = problem()
    model = model_for(algorithm)
    optimiser = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(30):
        optimiser.zero_grad()
        loss = (model(y, physics) - x).pow(2).mean()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    # At initialisation the network is a near-identity denoiser after a data step with
    # gamma = 1: the estimate is still blurred and dark near the borders (the valid blur
    # leaves them under-determined). Learning gamma, sigma and the denoiser removes a good
    # part of that error; in 30 steps the four algorithms reach 0.45-0.57 x the initial
    # loss, so 0.7 leaves a margin while a model that does not learn (ratio ~1) fails.
    assert losses[-1] < 0.7 * losses[0], losses
    assert all(torch.isfinite(torch.tensor(losses)))


# -- gradients: implicit = unroll when the solves converge ------------------------------------


def _loss_and_grads(model, x, physics, y):
    loss = (model(y, physics) - x).pow(2).sum()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_implicit_and_unrolled_gradients_agree(algorithm):
    x, physics, y = problem(torch.float64)
    layers, max_iter = 3, 60
    grads = {}
    for backward in ("unroll", "implicit"):
        model = model_for(
            algorithm,
            backward=backward,
            tol=0.0,  # an exact solve: CG runs until float64's floor stops it
            max_iter=max_iter,
            trainable=True,
            stepsize=[0.5, 1.0, 2.0],
            sigma=[0.03, 0.05, 0.08],
        ).double()
        loss, grads[backward] = _loss_and_grads(model, x, physics, y)
        # Every layer's step size and noise level reaches the loss, in both modes.
        for name in ("log_stepsize", "log_sigma"):
            assert (grads[backward][f"scalars.{name}"] != 0).all(), (backward, name)
        # Every solve reached the floor within max_iter (a stagnated solve counts as
        # converged), so no solve ran more than max_iter iterations.
        assert model.fidelity.stats.unconverged == 0
    # Both modes run the same forward pass; they differ in how the solves are
    # differentiated. With exact solves both are the derivative of the exact prox up to
    # rounding: the unrolled one back-propagates through k <= max_iter CG iterations (its
    # truncation term k rho^k, rho = (sqrt(kappa) - 1) / (sqrt(kappa) + 1) ~ 0.27, is
    # below eps at the floor), the implicit one solves the adjoint system to the floor.
    # Each iteration adds ~eps relative error, amplified by the condition number
    # kappa <= 1 + gamma_max ||A||^2 = 3 (||A|| <= sum(kernel) = 1): each of the two
    # solves per layer is off by <= kappa * k * eps, and the layers add their errors (the
    # prox and the near-identity denoiser do not amplify them). PGD has no solve: its two
    # modes are the same computation and must agree exactly.
    eps = torch.finfo(torch.float64).eps
    kappa = 1 + 2.0 * 1.0**2
    solves = 0 if algorithm == "pgd" else 2 * layers
    bound = solves * kappa * max_iter * eps  # 2.4e-13; measured <= 1e-14
    assert grads["unroll"].keys() == grads["implicit"].keys()
    for name, g in grads["unroll"].items():
        h = grads["implicit"][name]
        scale = g.norm().clamp_min(torch.finfo(torch.float64).tiny)
        assert ((g - h).norm() / scale).item() <= bound, name


# -- layer checkpointing ----------------------------------------------------------------------


def _saved_bytes(model, x, physics, y):
    """Bytes autograd saves outside checkpointed regions during the forward pass."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with saved_tensors_hooks(pack, lambda t: t):
        out = model(y, physics)
    (out - x).pow(2).sum().backward()
    return total


@pytest.mark.parametrize("backward", ["implicit", "unroll", "checkpoint"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_layer_checkpointing_changes_nothing_but_memory(algorithm, backward):
    x, physics, y = problem(torch.float64)
    results = {}
    for flag in (False, True):
        model = model_for(
            algorithm,
            backward=backward,
            tol=1e-12,
            max_iter=300,
            trainable=True,
            checkpoint_layers=flag,
        ).double()
        results[flag] = _loss_and_grads(model, x, physics, y)
    # The recomputation repeats the same float64 operations in the same order on the same
    # inputs (CPU kernels are deterministic), so the results agree to rounding at most.
    torch.testing.assert_close(results[True][0], results[False][0], rtol=1e-14, atol=0)
    for name, g in results[False][1].items():
        torch.testing.assert_close(results[True][1][name], g, rtol=1e-12, atol=1e-15)


def test_layer_checkpointing_keeps_only_layer_inputs():
    x, physics, y = problem(torch.float64)
    per_layer = {}
    for flag in (False, True):
        sizes = []
        for layers in (2, 6):
            model = model_for("hqs", layers=layers, checkpoint_layers=flag).double()
            sizes.append(_saved_bytes(model, x, physics, y))
        per_layer[flag] = (sizes[1] - sizes[0]) / 4
    # With checkpointing a layer keeps only its inputs (the state z and y, plus two
    # scalars); without, every activation of the denoiser and the data step.
    inputs = x.numel() * 8 + y.numel() * 8 + 2 * 8
    assert per_layer[True] <= inputs
    assert per_layer[True] < per_layer[False] / 10


# -- parameters: sharing, storage, positivity ------------------------------------------------


def test_shared_and_per_layer_denoisers():
    denoiser_size = sum(p.numel() for p in DnCNN(1, 1, depth=3, features=8).parameters())
    shared = model_for("hqs", layers=4)
    separate = model_for("hqs", layers=4, share_denoiser=False)
    scalars = 2 * 4  # stepsize and sigma, one per layer
    assert sum(p.numel() for p in shared.parameters()) == denoiser_size + scalars
    assert sum(p.numel() for p in separate.parameters()) == 4 * denoiser_size + scalars
    # The copies start equal and then learn apart.
    first, second = separate.prior(0), separate.prior(1)
    assert first is not second
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)
    x, physics, y = problem()
    (separate(y, physics) - x).pow(2).mean().backward()
    grad0 = torch.cat([p.grad.flatten() for p in first.parameters()])
    grad1 = torch.cat([p.grad.flatten() for p in second.parameters()])
    assert not torch.allclose(grad0, grad1)


def test_shared_scalars_are_one_parameter():
    model = model_for("admm", layers=4, share_parameters=True, trainable=True, stepsize=0.7)
    scalar_params = dict(model.scalars.named_parameters())
    assert set(scalar_params) == {"log_stepsize", "log_sigma", "log_beta"}
    assert all(p.shape == (1,) for p in scalar_params.values())
    torch.testing.assert_close(model.stepsize, torch.full((4,), 0.7))
    only_sigma = model_for("hqs", layers=4, share_parameters=("sigma",))
    assert only_sigma.scalars.raw("sigma").shape == (1,)
    assert only_sigma.scalars.raw("stepsize").shape == (4,)


def test_scalars_storage_and_values():
    trained = model_for("drs", stepsize=[0.5, 1.0, 2.0], relaxation=[0.5, 1.0, 1.5])
    fixed = model_for("drs", stepsize=[0.5, 1.0, 2.0], relaxation=[0.5, 1.0, 1.5], trainable=())
    # float32 exp(log(v)) and 2 sigmoid(logit(v / 2)) give v back to a few ulps.
    torch.testing.assert_close(trained.stepsize, torch.tensor([0.5, 1.0, 2.0]))
    torch.testing.assert_close(trained.relaxation, torch.tensor([0.5, 1.0, 1.5]))
    torch.testing.assert_close(trained.sigma, torch.full((3,), 0.05))
    names = {n for n, _ in trained.scalars.named_parameters()}
    assert names == {"log_stepsize", "log_sigma"}
    assert not list(fixed.scalars.parameters())
    assert {n for n, _ in fixed.scalars.named_buffers()} == {
        "log_stepsize",
        "log_sigma",
        "logit_relaxation",
    }
    # Same keys whatever is trained, so checkpoints load across configurations.
    assert trained.state_dict().keys() == fixed.state_dict().keys()
    fixed.load_state_dict(trained.state_dict())
    # A step on the stored log can never make a step size non-positive.
    with torch.no_grad():
        trained.scalars.raw("stepsize").sub_(100.0)
    assert (trained.stepsize > 0).all()


def test_prior_argument_and_builder():
    torch.manual_seed(0)
    denoiser = DnCNN(1, 1, depth=3, features=8)
    with_prior = ADMM(layers=2, prior=PnP(denoiser))
    with_denoiser = ADMM(layers=2, denoiser=denoiser)
    assert with_prior.prior(0).denoiser is denoiser
    x, physics, y = problem()
    with torch.no_grad():
        assert torch.equal(with_prior(y, physics), with_denoiser(y, physics))
    for name, cls in {"HQS": HQS, "admm": ADMM, "Pgd": PGD, "drs": DRS}.items():
        assert type(build(name, layers=1, denoiser=denoiser)) is cls


# -- bad inputs: a wrong type is a TypeError, a wrong value a ValueError, each naming it ----


WRONG_TYPES = [
    ({"layers": 2.0}, "layers"),
    ({"layers": True}, "layers"),
    ({"stepsize": "1.0"}, "stepsize"),
    ({"sigma": [0.1, "0.2", 0.3]}, "sigma"),
    ({"stepsize": torch.ones(3, dtype=torch.complex64)}, "stepsize"),
    ({"trainable": 1}, "trainable"),
    ({"share_parameters": (1,)}, "share_parameters"),
    ({"fidelity": "l2"}, "fidelity"),
    ({"checkpoint_layers": 1}, "checkpoint_layers"),
    ({"share_denoiser": None}, "share_denoiser"),
    ({"init": None}, "init"),
    ({"beta": 1.0}, "beta"),  # a scalar HQS does not have: an unknown keyword
]

WRONG_VALUES = [
    ({"layers": 0}, "layers"),
    ({"trainable": ("stepsize", "lambda")}, "trainable"),
    ({"stepsize": 0.0}, "stepsize"),
    ({"stepsize": -1.0}, "stepsize"),
    ({"stepsize": [1.0, 1.0]}, "stepsize"),
    ({"stepsize": torch.ones(3, 1)}, "stepsize"),
    ({"sigma": float("nan")}, "sigma"),
    ({"share_parameters": ("gamma",)}, "share_parameters"),
    ({"share_parameters": True, "sigma": [0.1, 0.2, 0.3]}, "sigma"),
    ({"init": "ones"}, "init"),
]


@pytest.mark.parametrize(("kwargs", "argument"), WRONG_TYPES)
def test_wrong_types_are_type_errors_naming_the_argument(kwargs, argument):
    with pytest.raises(TypeError, match=rf"^{argument}: "):
        model_for("hqs", **kwargs)


@pytest.mark.parametrize(("kwargs", "argument"), WRONG_VALUES)
def test_wrong_values_are_value_errors_naming_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=rf"^{argument}: expected") as caught:
        model_for("hqs", **kwargs)
    assert type(caught.value) is ValueError


def test_messages_say_what_was_expected_and_what_came():
    with pytest.raises(TypeError, match=r"^layers: expected an integer >= 1, got 2\.0$"):
        model_for("hqs", layers=2.0)
    with pytest.raises(ValueError, match=r"^stepsize: expected values in \(0, inf\), got -1\.0$"):
        model_for("hqs", stepsize=-1.0)
    with pytest.raises(TypeError, match=r"^checkpoint_layers: expected True or False, got 1$"):
        model_for("hqs", checkpoint_layers=1)
    with pytest.raises(TypeError, match=r"^fidelity: expected .*unrolled\.L2, got 'l2'$"):
        model_for("hqs", fidelity="l2")


def test_more_bad_arguments():
    with pytest.raises(ValueError, match="^relaxation: expected values in"):
        model_for("drs", relaxation=2.0)
    with pytest.raises(ValueError, match="^beta: expected values in"):
        model_for("admm", beta=0)
    with pytest.raises(ValueError, match="^algorithm: expected"):
        build("fista", layers=2, denoiser=Shrink())
    with pytest.raises(TypeError, match="^algorithm: expected"):
        build(HQS, layers=2, denoiser=Shrink())
    with pytest.raises(ValueError, match="^denoiser, prior: expected exactly one of them"):
        HQS(layers=2)
    with pytest.raises(ValueError, match="^denoiser, prior: expected exactly one of them"):
        HQS(layers=2, denoiser=Shrink(), prior=PnP(Shrink()))
    with pytest.raises(TypeError, match="^prior: expected"):
        HQS(layers=2, prior=Shrink())
    with pytest.raises(TypeError, match="^denoiser: expected"):
        HQS(layers=2, denoiser=lambda x, sigma: x)
    model = model_for("hqs")
    x, physics, y = problem()
    with pytest.raises(TypeError, match="^physics: expected a LinearOperator"):
        model(y, lambda t: t)
    with pytest.raises(TypeError, match="^x0: expected a torch.Tensor"):
        model(y, physics, x0=x.numpy())
    with pytest.raises(TypeError, match="^y: expected a torch.Tensor"):
        model(y.numpy(), physics)


# -- the declaration of an algorithm ---------------------------------------------------------


def test_scalars_are_declared_once_with_their_defaults():
    # Each declared scalar is a constructor keyword with its default, in the signature
    # that help() and inspect show, and a scalar not given starts at that default.
    for cls in (HQS, ADMM, PGD, DRS):
        parameters = inspect.signature(cls).parameters
        for spec in cls.SCALARS:
            assert parameters[spec.name].default == spec.default, (cls, spec)
            assert parameters[spec.name].kind is inspect.Parameter.KEYWORD_ONLY
        model = cls(layers=2, denoiser=Shrink())
        for spec in cls.SCALARS:
            torch.testing.assert_close(model.scalars[spec.name], torch.full((2,), spec.default))
    assert [s.name for s in ADMM.SCALARS] == ["stepsize", "sigma", "beta"]
    assert [s.name for s in DRS.SCALARS] == ["stepsize", "sigma", "relaxation"]
    assert "beta" not in inspect.signature(HQS).parameters


def test_a_new_algorithm_is_its_layer_and_its_scalars():
    class Relaxed(Unfolded):
        SCALARS = (*Unfolded.SCALARS, ScalarSpec("weight", 0.5))

        def layer(self, k, state, y, physics, values):
            (z,) = state
            x = self.fidelity.prox(z, y, physics, values["stepsize"])
            return (values["weight"] * self.denoise(k, x, values["sigma"]),)

    x, physics, y = problem(torch.float64, size=10)
    model = Relaxed(2, denoiser=Shrink(), weight=[0.5, 0.25], trainable=("weight",)).double()
    assert {n for n, _ in model.named_parameters()} == {"scalars.log_weight"}
    # The iteration written out with the values the model holds (float32-stored logs).
    gamma, sigma, weight = (model.scalars[n].tolist() for n in ("stepsize", "sigma", "weight"))
    assert gamma == [1.0, 1.0] and weight == pytest.approx([0.5, 0.25], rel=1e-7)
    with torch.no_grad():
        z = x0 = physics.A_adjoint(y)
        for k in range(2):
            z = weight[k] * model.fidelity.prox(z, y, physics, gamma[k]) / (1 + sigma[k])
        got = model(y, physics, x0=x0)
    # The same solves with the scalars applied in another order (and gamma a tensor rather
    # than a float): float64 rounding only, a few eps of |z| <= 1 at each step.
    torch.testing.assert_close(got, z, rtol=1e-12, atol=1e-15)


def test_an_algorithm_without_its_layer_cannot_be_built():
    class NoLayer(Unfolded):
        pass

    with pytest.raises(TypeError, match="abstract method.*layer"):
        NoLayer(2, denoiser=Shrink())


@pytest.mark.parametrize(
    ("scalars", "message"),
    [
        ((ScalarSpec("stepsize", 1.0), ScalarSpec("stepsize", 2.0)), "'stepsize'"),
        ((ScalarSpec("layers", 1.0),), "'layers'"),
        ([ScalarSpec("beta", 1.0)], "tuple of ScalarSpec"),
    ],
)
def test_a_bad_declaration_fails_when_the_class_is_written(scalars, message):
    with pytest.raises(TypeError, match=message):
        type("Bad", (Unfolded,), {"SCALARS": scalars, "layer": lambda *a: a[2]})


def test_a_scalar_declaration_is_checked():
    with pytest.raises(ValueError, match=r"^beta\.default: expected a value in \(0, inf\)"):
        ScalarSpec("beta", 0.0)
    with pytest.raises(ValueError, match=r"^relaxation\.default: expected a value in \(0, 2\)"):
        ScalarSpec("relaxation", 2.0, constraint="relaxation")
    with pytest.raises(ValueError, match="^constraint: expected one of"):
        ScalarSpec("beta", 1.0, constraint="negative")
    with pytest.raises(TypeError, match="^beta.default: expected a finite number"):
        ScalarSpec("beta", "1")
    with pytest.raises(TypeError, match="^name: expected a Python identifier"):
        ScalarSpec("step size", 1.0)


def test_the_docstring_examples_run():
    result = doctest.testmod(unrolled.unfolded.hqs, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, result
