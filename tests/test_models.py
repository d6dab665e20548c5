"""Denoisers (DnCNN, UNet) and the plug-and-play prior."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from unrolled.models import ComplexDenoiser, DnCNN, PnP, UNet


def _images(b=2, c=3, h=8, w=8, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, c, h, w, generator=g, dtype=dtype)


def _small(**kwargs):
    torch.manual_seed(0)
    return DnCNN(**{"in_channels": 3, "out_channels": 3, "depth": 3, "features": 8, **kwargs})


# -- DnCNN -------------------------------------------------------------------------------


def test_dncnn_structure_and_shape():
    model = _small()
    x = _images()
    assert model(x, 0.1).shape == x.shape
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3
    assert convs[0].in_channels == 3 + 1  # the noise-level channel
    assert convs[-1].out_channels == 3
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert DnCNN(1, 2, depth=2, features=4, residual=False)(_images(c=1), 0.1).shape == (2, 2, 8, 8)


def test_dncnn_sigma_changes_output_and_gradient_matches_finite_difference():
    model = _small().double()
    x = _images(dtype=torch.float64)
    weights = _images(dtype=torch.float64, seed=1)
    assert not torch.allclose(model(x, 0.01), model(x, 0.2))

    sigma = torch.tensor(0.05, dtype=torch.float64, requires_grad=True)
    (model(x, sigma) * weights).sum().backward()
    assert sigma.grad is not None and sigma.grad.abs() > 0
    # Central difference: O(h^2) truncation plus O(eps / h) rounding, about 1e-10 here,
    # unless a ReLU kink lies within h of an activation (probability ~ h * density).
    h = 1e-6
    with torch.no_grad():
        plus = (model(x, 0.05 + h) * weights).sum()
        minus = (model(x, 0.05 - h) * weights).sum()
    fd = (plus - minus) / (2 * h)
    assert sigma.grad.item() == pytest.approx(fd.item(), rel=1e-6)


def test_dncnn_sigma_forms_agree():
    model = _small()
    x = _images()
    ref = model(x, 0.07)
    assert torch.equal(model(x, torch.tensor(0.07)), ref)
    assert torch.equal(model(x, torch.tensor([0.07])), ref)
    # One level per sample is the same as denoising each sample on its own.
    per_sample = model(x, torch.tensor([0.02, 0.3]))
    assert torch.allclose(per_sample[:1], model(x[:1], 0.02), atol=1e-6)
    assert torch.allclose(per_sample[1:], model(x[1:], 0.3), atol=1e-6)
    assert torch.equal(model(x, torch.tensor([0.02, 0.3]).reshape(2, 1, 1, 1)), per_sample)


def test_dncnn_residual_flag():
    residual = _small(residual=True)
    plain = _small(residual=False)
    plain.load_state_dict(residual.state_dict())
    x = _images()
    assert torch.allclose(residual(x, 0.1), x - plain(x, 0.1), atol=1e-6)
    sigma_map = torch.full_like(x[:, :1], 0.1)
    assert torch.equal(plain(x, 0.1), plain.net(torch.cat([x, sigma_map], dim=1)))


def test_dncnn_initialisation_statistics():
    torch.manual_seed(0)
    model = DnCNN(3, 3, depth=4, features=32, last_init_scale=0.1)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    for i, conv in enumerate(convs):
        fan_in = conv.in_channels * 9
        expected = 0.1 / math.sqrt(fan_in) if i == len(convs) - 1 else math.sqrt(2 / fan_in)
        # The sample std of n >= 3 * 32 * 9 normal weights is within 3 / sqrt(2n) ~ 9%
        # of the true std with overwhelming probability (the hidden layers have n = 9216).
        n = conv.weight.numel()
        assert conv.weight.std().item() == pytest.approx(expected, rel=3 / math.sqrt(2 * n))
        assert abs(conv.weight.mean().item()) < 4 * expected / math.sqrt(n)
        assert torch.count_nonzero(conv.bias) == 0
    # He init keeps the mean square of the activations about constant through the ReLU
    # layers, and the small last layer makes the residual a small correction of x.
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        correction = (x - model(x, 0.1)).pow(2).mean() / x.pow(2).mean()
    assert 1e-4 < correction.item() < 0.1


def test_dncnn_rejects_bad_inputs():
    model = _small()
    x = _images()
    with pytest.raises(ValueError, match="complex"):
        model(torch.complex(x, x), 0.1)
    with pytest.raises(ValueError, match=r"x: expected shape \(B, 3, H, W\)"):
        model(x[:, :2], 0.1)
    with pytest.raises(ValueError, match="sigma"):
        model(x, -0.1)
    with pytest.raises(ValueError, match="sigma"):
        model(x, torch.tensor([0.1, -0.1]))
    with pytest.raises(ValueError, match="sigma"):
        model(x, torch.ones(3))
    with pytest.raises(TypeError, match="^x: expected a torch.Tensor, got ndarray of shape"):
        model(x.numpy(), 0.1)
    with pytest.raises(TypeError, match="^sigma: expected a number >= 0 or a tensor, got '0.1'"):
        model(x, "0.1")


# -- UNet --------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(8, 8), (7, 9), (5, 13), (1, 3)])
@pytest.mark.parametrize("levels", [2, 3])
def test_unet_any_size(size, levels):
    torch.manual_seed(0)
    model = UNet(2, 2, base=4, levels=levels)
    x = _images(c=2, h=size[0], w=size[1]).requires_grad_()
    sigma = torch.tensor([0.05, 0.1], requires_grad=True)
    out = model(x, sigma)
    assert out.shape == x.shape
    (out * _images(c=2, h=size[0], w=size[1], seed=3)).sum().backward()
    assert x.grad.abs().sum() > 0
    assert (sigma.grad.abs() > 0).all()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_unet_is_a_function_of_each_sample_and_residual_flag():
    torch.manual_seed(0)
    residual = UNet(1, 1, base=4, levels=2)
    plain = UNet(1, 1, base=4, levels=2, residual=False)
    plain.load_state_dict(residual.state_dict())
    x = _images(c=1, h=6, w=10)
    assert torch.allclose(residual(x, 0.1), x - plain(x, 0.1), atol=1e-6)
    # Padding and cropping act per sample: no sample leaks into another.
    assert torch.allclose(residual(x, 0.1)[1:], residual(x[1:], 0.1), atol=1e-6)


def test_unet_rejects_bad_inputs():
    with pytest.raises(ValueError, match="complex"):
        x = _images(c=3)
        UNet(base=4)(torch.complex(x, x), 0.1)


# -- PnP ---------------------------------------------------------------------------------


def test_pnp_prox_is_the_denoiser():
    denoiser = _small()
    prior = PnP(denoiser)
    x = _images()
    assert torch.equal(prior.prox(x, 0.1), denoiser(x, 0.1))
    assert torch.equal(prior(x, 0.1), denoiser(x, 0.1))
    assert sum(p.numel() for p in prior.parameters()) == sum(
        p.numel() for p in denoiser.parameters()
    )
    with pytest.raises(TypeError, match="^denoiser: expected an nn.Module.*, got a function"):
        PnP(lambda x, s: x)


# -- constructor arguments: a wrong type is a TypeError, a wrong value a ValueError ------

SHARED_WRONG_TYPES = [
    ({"in_channels": 1.0}, "in_channels"),
    ({"out_channels": "3"}, "out_channels"),
    ({"bias": 1}, "bias"),
    ({"residual": None}, "residual"),
    ({"last_init_scale": "0.1"}, "last_init_scale"),
]
SHARED_WRONG_VALUES = [
    ({"in_channels": 0}, "in_channels"),
    ({"in_channels": 3, "out_channels": 1}, "out_channels"),  # residual needs equal channels
    ({"last_init_scale": -0.1}, "last_init_scale"),
    ({"last_init_scale": float("inf")}, "last_init_scale"),
]
CONSTRUCTORS = {
    "DnCNN": (
        DnCNN,
        [({"depth": 2.0}, "depth"), ({"features": True}, "features")],
        [({"depth": 1}, "depth"), ({"features": 0}, "features")],
    ),
    "UNet": (
        UNet,
        [({"levels": 2.0}, "levels"), ({"base": "4"}, "base")],
        [({"levels": 0}, "levels"), ({"levels": 7}, "levels"), ({"base": 0}, "base")],
    ),
}


def _argument_cases(kind):
    index = 1 if kind == "type" else 2
    shared = SHARED_WRONG_TYPES if kind == "type" else SHARED_WRONG_VALUES
    return [
        pytest.param(cls, kwargs, argument, id=f"{name}-{argument}")
        for name, (cls, *own) in CONSTRUCTORS.items()
        for kwargs, argument in shared + own[index - 1]
    ]


@pytest.mark.parametrize(("cls", "kwargs", "argument"), _argument_cases("type"))
def test_wrong_constructor_types_are_type_errors(cls, kwargs, argument):
    with pytest.raises(TypeError, match=rf"^{argument}: expected .*, got "):
        cls(**kwargs)


@pytest.mark.parametrize(("cls", "kwargs", "argument"), _argument_cases("value"))
def test_wrong_constructor_values_are_value_errors(cls, kwargs, argument):
    with pytest.raises(ValueError, match=rf"^{argument}: .*got ") as caught:
        cls(**kwargs)
    assert type(caught.value) is ValueError


def test_complex_denoiser_arguments():
    with pytest.raises(TypeError, match="^denoiser: expected an nn.Module"):
        ComplexDenoiser("dncnn")
    model = ComplexDenoiser(DnCNN(2, 2, depth=2, features=4))
    with pytest.raises(TypeError, match="^x: expected a complex tensor"):
        model([[1j]], 0.1)
    with pytest.raises(ValueError, match=r"^x: expected a complex tensor .*got shape \(1, 1, 4\)"):
        model(torch.ones(1, 1, 4, dtype=torch.complex64), 0.1)
