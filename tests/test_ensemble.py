"""Self-ensembles: a denoiser averaged over quarter turns (and mirror images) of its input."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import unrolled as ur
from unrolled.models import ENSEMBLES, ensemble_average


def _lopsided(x: torch.Tensor) -> torch.Tensor:
    """A map that no turn or mirror leaves alone: an asymmetric 3x3 filter, squared."""
    kernel = torch.arange(1.0, 10.0, dtype=x.dtype).reshape(1, 1, 3, 3) / 45
    c = x.shape[1]
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), kernel.expand(c, 1, 3, 3), groups=c)


def _numpy_average(x: np.ndarray, denoise, mirrors: bool) -> np.ndarray:
    """The same average, transforms written with NumPy on (..., H, W) arrays."""
    outs = []
    for mirrored in (False, True) if mirrors else (False,):
        for turns in range(4):
            t = np.rot90(x, turns, axes=(-2, -1))
            t = t[..., ::-1] if mirrored else t
            d = denoise(torch.from_numpy(t.copy())).numpy()
            d = d[..., ::-1] if mirrored else d
            outs.append(np.rot90(d, -turns, axes=(-2, -1)))
    return np.mean(outs, axis=0)


@pytest.mark.parametrize("group", list(ENSEMBLES))
def test_the_average_matches_numpy_on_a_non_square_image(group):
    x = torch.rand(2, 3, 7, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got = ensemble_average(_lopsided, x, group)
    expected = _numpy_average(x.numpy(), _lopsided, mirrors=group == "dihedral")
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-15)
    # the map is not equivariant, so the average differs from one call
    assert (got - _lopsided(x)).abs().max() > 1e-3
    assert len(ENSEMBLES[group]) == (8 if group == "dihedral" else 4)


def test_an_equivariant_map_is_left_unchanged():
    x = torch.randn(1, 1, 6, 9, generator=torch.Generator().manual_seed(1), dtype=torch.complex128)
    got = ensemble_average(lambda v: v * v.abs(), x, "dihedral")
    torch.testing.assert_close(got, x * x.abs(), rtol=1e-14, atol=1e-14)


def _hqs(ensemble, denoiser=None):
    torch.manual_seed(0)
    return ur.unfolded.HQS(
        layers=2,
        denoiser=denoiser or ur.models.DnCNN(3, 3, depth=3, features=4),
        fidelity=ur.L2(solver=ur.CG(max_iter=100, tol=1e-10)),
        sigma=0.05,
        ensemble=ensemble,
    ).double()


class _Averaged(torch.nn.Module):
    """A denoiser averaged by hand (NumPy transforms), the reference for the model's."""

    def __init__(self, denoiser):
        super().__init__()
        self.denoiser = denoiser

    def forward(self, x, sigma):
        out = _numpy_average(x.detach().numpy(), lambda v: self.denoiser(v, sigma), False)
        return torch.from_numpy(out.copy())


def test_the_model_averages_in_evaluation_only():
    physics = ur.physics.Blur(ur.physics.gaussian_kernel(1.0, dtype=torch.float64), padding="valid")
    x = torch.rand(2, 3, 14, 12, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y = physics.A(x)
    model, plain = _hqs("rotations"), _hqs(None)
    reference = _hqs(None, _Averaged(plain.priors[0].denoiser))
    with torch.no_grad():
        # training mode calls the denoiser once: what the model without ensemble gives
        assert torch.equal(model(y, physics), plain(y, physics))
        model.eval()
        got = model(y, physics)
        torch.testing.assert_close(got, reference(y, physics), rtol=1e-10, atol=1e-12)
        assert (got - plain(y, physics)).abs().max() > 1e-4


def test_the_ensemble_travels_with_the_model(tmp_path):
    model = _hqs("dihedral")
    loaded = ur.load(ur.save(model, tmp_path / "m.pt"))
    assert loaded.ensemble == "dihedral"
    # a file written before the setting existed loads without one
    saved = torch.load(tmp_path / "m.pt", weights_only=True)
    del saved["model"]["ensemble"]
    torch.save(saved, tmp_path / "old.pt")
    assert ur.load(tmp_path / "old.pt").ensemble is None


def test_bad_ensembles_are_refused_by_name():
    denoiser = ur.models.DnCNN(1, 1, depth=2, features=4)
    with pytest.raises(ValueError, match="ensemble: expected None or one of 'rotations'"):
        ur.unfolded.HQS(denoiser=denoiser, ensemble="flips")
    with pytest.raises(TypeError, match="ensemble: expected None or one of .* got True"):
        ur.unfolded.HQS(denoiser=denoiser, ensemble=True)
