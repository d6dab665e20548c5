"""The pieces of the training recipe: initial estimates per physics, physics specs,
interleaved data, denoiser pretraining, shipped weights."""

import pytest
import torch

import unrolled as ur
from unrolled.data import DeadLeaves, Interleaved
from unrolled.physics import initial_estimate
from unrolled.physics.spec import blur_spec, mri_spec, physics_from_spec
from unrolled.saving import describe
from unrolled.train.pretrain import pretrain_denoiser
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
