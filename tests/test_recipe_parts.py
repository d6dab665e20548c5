"""The pieces of the training recipe: initial estimates per physics, physics specs,
interleaved data, denoiser pretraining, shipped weights."""

import pytest
import torch

import unrolled as ur
from unrolled.data import DeadLeaves, Interleaved
from unrolled.physics import initial_estimate
from unrolled.physics.initial import smooth_least_squares
from unrolled.physics.spec import blur_spec, mri_spec, physics_from_spec
from unrolled.saving import describe
from unrolled.testing import dense_matrix
from unrolled.train.pretrain import pretrain_denoiser
from unrolled.train.step import make_optimizer
from unrolled.weights import find_shipped


def test_auto_initial_estimate_per_physics():
    g = torch.Generator().manual_seed(0)
    blur = ur.physics.Blur(ur.physics.gaussian_kernel(1.0), padding="valid")
    x = torch.rand(1, 1, 12, 12, generator=g)
    y = blur.A(x)
    # the float64 ratio, rounded once: near the corners a float32 ratio of two FFT
    # convolutions is wrong in the third digit, the estimate must not be
    y64 = y.double()
    expected = (blur.A_adjoint(y64) / blur.A_adjoint(torch.ones_like(y64))).float()
    torch.testing.assert_close(initial_estimate(blur, y), expected, rtol=2e-6, atol=0)
    mri = physics_from_spec(mri_spec(acceleration=2, coils=2), (8, 8))
    z = torch.randn(1, 1, 8, 8, dtype=torch.complex64, generator=g)
    k = mri.A(z)
    torch.testing.assert_close(initial_estimate(mri, k), mri.A_adjoint(k))
    with pytest.raises(ValueError, match="method"):
        initial_estimate(blur, y, "zeros")


def test_smooth_initial_estimate_against_a_dense_solve():
    g = torch.Generator().manual_seed(5)
    blur = ur.physics.Blur(ur.physics.gaussian_kernel(1.0), padding="valid")
    x = torch.rand(1, 1, 10, 9, generator=g, dtype=torch.float64)
    y = blur.A(x) + 0.05 * torch.randn(blur.output_shape(x.shape), generator=g, dtype=x.dtype)
    # the normal matrix A^T A + w D^T D, D the forward differences without wrap-around
    a = dense_matrix(blur, x.shape, torch.float64)

    def eye(n: int) -> torch.Tensor:
        return torch.eye(n, dtype=torch.float64)

    rows, cols = eye(10)[1:] - eye(10)[:-1], eye(9)[1:] - eye(9)[:-1]
    d = torch.cat([torch.kron(rows, eye(9)), torch.kron(eye(10), cols)])
    weight = 0.7
    normal = a.T @ a + weight * d.T @ d
    expected = torch.linalg.solve(normal, a.T @ y.flatten()).reshape(x.shape)
    tight = ur.CG(max_iter=500, tol=1e-13)
    torch.testing.assert_close(
        smooth_least_squares(blur, y, weight, solver=tight), expected, rtol=1e-9, atol=1e-11
    )
    # the default solve stops at a relative residual of 1e-4
    estimate = initial_estimate(blur, y, "smooth", weight)
    residual = normal @ estimate.flatten() - a.T @ y.flatten()
    assert residual.norm() <= 1e-4 * (a.T @ y.flatten()).norm()
    with pytest.raises(TypeError, match="weight"):
        initial_estimate(blur, y, "smooth")
    with pytest.raises(ValueError, match="weight"):
        initial_estimate(blur, y, "auto", 0.5)
    denoiser = ur.models.DnCNN(1, 1, depth=2, features=2)
    with pytest.raises(TypeError, match="init_weight"):
        ur.unfolded.HQS(layers=1, denoiser=denoiser, init="smooth")
    with pytest.raises(ValueError, match="init_weight"):
        ur.unfolded.HQS(layers=1, denoiser=denoiser, init_weight=0.5)
    model = ur.unfolded.HQS(layers=1, denoiser=denoiser.double(), init="smooth", init_weight=0.7)
    seen = []
    model.init_state = lambda x0: seen.append(x0) or (x0,)
    model(y, blur)
    torch.testing.assert_close(seen[0], estimate)


def test_smooth_initial_estimate_is_differentiable_in_y():
    # linear in y: its vector-Jacobian product is one more solve, checked against finite
    # differences for a real blur and a complex multi-coil MRI
    tight = ur.CG(max_iter=500, tol=1e-13)
    g = torch.Generator().manual_seed(6)
    blur = ur.physics.Blur(ur.physics.gaussian_kernel(1.0), padding="valid")
    y = torch.randn(2, 1, 6, 5, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda y: smooth_least_squares(blur, y, 0.7, solver=tight), y)
    mri = physics_from_spec(mri_spec(acceleration=2, coils=2), (6, 6), dtype=torch.float64)
    z = torch.randn(1, 1, 6, 6, dtype=torch.complex128, generator=g)
    k = mri.A(z).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda k: smooth_least_squares(mri, k, 0.3, solver=tight), k)


def test_unfolded_models_use_their_initial_estimate():
    blur = ur.physics.Blur(ur.physics.gaussian_kernel(1.0), padding="valid")
    y = blur.A(torch.rand(1, 1, 12, 12, generator=torch.Generator().manual_seed(1)))
    kwargs = dict(layers=1, denoiser=ur.models.DnCNN(1, 1, depth=2, features=2))
    torch.manual_seed(0)
    auto = ur.unfolded.HQS(**kwargs)
    torch.manual_seed(0)
    plain = ur.unfolded.HQS(**kwargs, init="adjoint")
    with torch.no_grad():
        assert torch.equal(auto(y, blur), auto(y, blur, x0=initial_estimate(blur, y)))
        assert torch.equal(plain(y, blur), plain(y, blur, x0=blur.A_adjoint(y)))
    with pytest.raises(ValueError, match="init"):
        ur.unfolded.HQS(**kwargs, init="ones")


def test_physics_spec_builds_the_operator_it_names():
    blur = physics_from_spec(blur_spec(2.5, noise_sigma=0.1))
    torch.testing.assert_close(blur.kernel, ur.physics.gaussian_kernel(2.5))
    assert blur.padding == "valid" and blur.noise.sigma == pytest.approx(0.1)
    assert physics_from_spec(blur_spec(1.0)).noise is None
    with pytest.raises(ValueError, match="image_size"):
        physics_from_spec(mri_spec(acceleration=4, coils=2))
    with pytest.raises(ValueError, match="operator"):
        physics_from_spec({"operator": "radar"})


def test_interleaved_alternates_and_passes_epochs_on():
    a, b = DeadLeaves(8, 1, 3, seed=0), DeadLeaves(8, 1, 5, seed=1)
    mixed = Interleaved([a, b])
    assert len(mixed) == 6
    assert torch.equal(mixed[0], a[0]) and torch.equal(mixed[1], b[0])
    assert torch.equal(mixed[5], b[2])
    with pytest.raises(IndexError):
        mixed[6]


def test_pretraining_lowers_the_denoising_loss_reproducibly():
    data = torch.utils.data.DataLoader(DeadLeaves(16, 1, 8, seed=0), batch_size=4)
    losses = []
    for _ in range(2):
        torch.manual_seed(0)
        denoiser = ur.models.DnCNN(1, 1, depth=3, features=8)
        losses.append(pretrain_denoiser(denoiser, data, steps=30, sigma_max=0.2, seed=3))
    assert losses[0] == losses[1]  # the noise is a function of the seed and step only
    assert sum(losses[0][-5:]) < sum(losses[0][:5])


class _RecordingDenoiser(torch.nn.Module):
    """A real (tiny) denoiser that also keeps the levels it is given."""

    def __init__(self):
        super().__init__()
        self.net = ur.models.DnCNN(1, 1, depth=2, features=4)
        self.levels: list[torch.Tensor] = []

    def forward(self, x, sigma):
        self.levels.append(sigma.detach().clone())
        return self.net(x, sigma)


@pytest.mark.parametrize("levels", ["uniform", "log-uniform"])
def test_pretraining_draws_levels_from_the_asked_distribution(levels):
    torch.manual_seed(0)
    data = torch.utils.data.DataLoader(DeadLeaves(8, 1, 64, seed=0), batch_size=64)
    denoiser = _RecordingDenoiser()
    lo, hi = 0.01, 0.2
    pretrain_denoiser(denoiser, data, steps=40, sigma_min=lo, sigma_max=hi, levels=levels)
    drawn = torch.cat(denoiser.levels).double()
    assert drawn.numel() == 40 * 64
    assert lo <= drawn.min() and drawn.max() < hi
    # the fraction of draws below the geometric mean: log(gm/lo) / log(hi/lo) = 1/2 for
    # log-uniform levels, (gm - lo) / (hi - lo) = 0.18 for uniform ones; with 2560 draws
    # the standard error is 0.01
    gm = (lo * hi) ** 0.5
    expected = 0.5 if levels == "log-uniform" else (gm - lo) / (hi - lo)
    assert abs(float((drawn < gm).double().mean()) - expected) < 0.04


def test_pretraining_refuses_bad_levels():
    data = [torch.zeros(2, 1, 8, 8)]
    denoiser = ur.models.DnCNN(1, 1, depth=2, features=4)
    with pytest.raises(ValueError, match="levels: expected one of"):
        pretrain_denoiser(denoiser, data, steps=1, sigma_max=0.2, levels="gauss")
    with pytest.raises(ValueError, match="sigma_min: expected > 0 with levels='log-uniform'"):
        pretrain_denoiser(denoiser, data, steps=1, sigma_max=0.2, levels="log-uniform")
    with pytest.raises(ValueError, match="sigma_min: expected below sigma_max=0.2, got 0.3"):
        pretrain_denoiser(denoiser, data, steps=1, sigma_max=0.2, sigma_min=0.3)


def test_the_shipped_model_matches_the_demo_configuration():
    from unrolled.apps.demo import DemoConfig
    from unrolled.apps.demo.experiment import build_model, physics_spec

    cfg = DemoConfig().resolved()
    path = find_shipped(describe(build_model(cfg, cfg.modes[0])), physics_spec(cfg))
    assert path is not None and path.name == "hqs_blur.pt"
    saved = ur.saving.load_file(path)
    assert saved.info["command"].startswith("unrolled train --config")
    # another architecture has no shipped weights
    other = DemoConfig(features=8).resolved()
    assert find_shipped(describe(build_model(other, other.modes[0])), physics_spec(other)) is None


def _small_hqs() -> torch.nn.Module:
    torch.manual_seed(0)
    return ur.unfolded.HQS(
        layers=3, denoiser=ur.models.DnCNN(1, 1, depth=2, features=4), trainable=True
    )


def test_scalar_lr_gives_the_scalars_their_own_group():
    model = _small_hqs()
    scalars = {id(p) for p in model.scalars.parameters()}
    assert len(scalars) == 2  # stepsize and sigma
    optimizer = make_optimizer(None, 1e-4, model, scalar_lr=1e-2)
    weights_group, scalar_group = optimizer.param_groups
    assert {id(p) for p in scalar_group["params"]} == scalars
    assert scalar_group["lr"] == 1e-2 and weights_group["lr"] == 1e-4
    assert len(weights_group["params"]) + 2 == len(list(model.parameters()))
    # Adam's first step moves every coordinate by its group's learning rate
    before = [p.detach().clone() for p in model.parameters()]
    blur = ur.physics.Blur(ur.physics.gaussian_kernel(1.0), padding="valid")
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 1, 12, 12, generator=g)
    (model(blur.A(x), blur) - x).square().mean().backward()
    optimizer.step()
    checked = set()
    for p, old in zip(model.parameters(), before, strict=True):
        moved = (p.detach() - old).abs()
        lr = 1e-2 if id(p) in scalars else 1e-4
        clear = p.grad.abs() > 1e-5  # Adam's eps (1e-8) shortens the steps of tiny gradients
        if clear.any():
            checked.add(lr)
        torch.testing.assert_close(
            moved[clear], torch.full_like(moved[clear], lr), rtol=1e-2, atol=0
        )
    assert checked == {1e-2, 1e-4}  # both groups stepped


def test_scalar_lr_reaches_a_factory_and_the_trainer():
    model = _small_hqs()
    seen = []

    def factory(groups):
        seen.append(groups)
        return torch.optim.SGD(groups, lr=0.5)

    optimizer = make_optimizer(factory, 1e-3, model, scalar_lr=0.05)
    assert [g["lr"] for g in optimizer.param_groups] == [0.5, 0.05]
    assert len(seen) == 1
    # without scalar_lr: one group, as before
    assert len(make_optimizer(None, 1e-3, model).param_groups) == 1
    with pytest.raises(ValueError, match="scalar_lr"):
        make_optimizer(torch.optim.SGD(model.parameters(), lr=0.1), 1e-3, model, scalar_lr=0.1)
    blur = ur.physics.Blur(ur.physics.gaussian_kernel(1.0), padding="valid")
    data = [torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(3))]
    trainer = ur.train.Trainer(
        model, blur, data, lr=1e-3, scalar_lr=3e-2, progress=False, baselines=None
    )
    assert [g["lr"] for g in trainer.optimizer.param_groups] == [1e-3, 3e-2]
    with pytest.raises(ValueError, match="scalar_lr"):
        ur.train.Trainer(model, blur, data, scalar_lr=0.0, progress=False, baselines=None)
