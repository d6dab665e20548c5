"""ur.save / ur.load: a model rebuilt from data, bit-identical outputs, refusals."""

import doctest
import pickle

import pytest
import torch

import unrolled as ur
import unrolled.saving
from unrolled.saving import ModelFileError, describe, load_file


def _model(algorithm="hqs", denoiser=None, **kw):
    torch.manual_seed(0)
    denoiser = denoiser or ur.models.DnCNN(3, 3, depth=3, features=4)
    return ur.unfolded.build(
        algorithm,
        layers=2,
        denoiser=denoiser,
        fidelity=ur.L2(solver=ur.CG(max_iter=30, tol=1e-6), backward="implicit"),
        **kw,
    )


@pytest.mark.parametrize(
    "algorithm, denoiser",
    [
        ("hqs", None),
        ("admm", None),
        ("pgd", ur.models.UNet(3, 3, base=4, levels=1)),
        ("drs", None),
    ],
)
def test_round_trip_is_bit_identical(tmp_path, algorithm, denoiser):
    model = _model(algorithm, denoiser)
    with torch.no_grad():  # move the weights and scalars away from their initial values
        for p in model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    physics = ur.physics.Blur(ur.physics.gaussian_kernel(1.0), padding="valid")
    y = physics(torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2)))
    path = ur.save(model, tmp_path / "m.pt", physics={"physics": "blur"}, info={"steps": 3})
    loaded = ur.load(path)
    assert type(loaded) is type(model) and not loaded.training
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(y, physics), model(y, physics))
    saved = load_file(path)
    assert saved.physics == {"physics": "blur"} and saved.info == {"steps": 3}
    assert describe(saved.model) == describe(model)


def test_the_initial_estimate_travels_with_the_model(tmp_path):
    model = _model(init="adjoint")
    loaded = ur.load(ur.save(model, tmp_path / "m.pt"))
    assert loaded.init == "adjoint" and loaded.init_weight is None
    smooth = _model(init="smooth", init_weight=0.3)
    loaded = ur.load(ur.save(smooth, tmp_path / "s.pt"))
    assert loaded.init == "smooth" and loaded.init_weight == 0.3
    physics = ur.physics.Blur(ur.physics.gaussian_kernel(1.0), padding="valid")
    y = physics(torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(4)))
    smooth.eval()
    with torch.no_grad():
        assert torch.equal(loaded(y, physics), smooth(y, physics))


def test_complex_denoiser_round_trip(tmp_path):
    model = _model(denoiser=ur.models.ComplexDenoiser(ur.models.DnCNN(2, 2, depth=2, features=3)))
    loaded = ur.load(ur.save(model, tmp_path / "m.pt"))
    assert describe(loaded) == describe(model)


def test_refusals_name_the_file(tmp_path):
    with pytest.raises(ModelFileError, match="no such file"):
        ur.load(tmp_path / "missing.pt")
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(b"\x00" * 100)
    with pytest.raises(ModelFileError, match="damaged"):
        ur.load(damaged)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ModelFileError, match="not an unrolled model file"):
        ur.load(other)
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"format": "unrolled.model", "x": Evil()}, f)
    with pytest.raises(ModelFileError):
        ur.load(evil)
    assert not marker.exists()


def test_save_refuses_what_it_cannot_describe(tmp_path):
    class Custom(torch.nn.Module):
        def forward(self, x, sigma):
            return x

    with pytest.raises(TypeError, match="Custom"):
        ur.save(_model(denoiser=Custom()), tmp_path / "m.pt")


def test_wrong_arguments_are_type_errors_naming_them(tmp_path):
    model = _model()
    with pytest.raises(TypeError, match="^model: expected an unfolded algorithm, got a DnCNN"):
        ur.save(ur.models.DnCNN(1, 1, depth=2), tmp_path / "m.pt")
    with pytest.raises(TypeError, match="^path: expected a str or os.PathLike, got 3"):
        ur.save(model, 3)
    with pytest.raises(TypeError, match="^physics: expected a dict of plain values or None"):
        ur.save(model, tmp_path / "m.pt", physics=["blur"])
    with pytest.raises(TypeError, match="^info: expected a dict of plain values or None"):
        ur.save(model, tmp_path / "m.pt", info="trained")
    with pytest.raises(TypeError, match="^model: expected a CG preconditioner None or 'auto'"):
        model.fidelity = ur.L2(solver=ur.CG(preconditioner=lambda r: r))
        ur.save(model, tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()
    with pytest.raises(TypeError, match="^path: expected a str or os.PathLike, got None"):
        ur.load(None)


def test_a_file_that_cannot_be_rebuilt_is_a_value_error_naming_it(tmp_path):
    path = ur.save(_model(), tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    payload["model"]["denoiser"]["type"] = "Wiener"
    torch.save(payload, path)
    with pytest.raises(ModelFileError, match=r"m\.pt: cannot be rebuilt \(denoiser: expected"):
        ur.load(path)
    assert issubclass(ModelFileError, ValueError)


def test_the_docstring_examples_run():
    result = doctest.testmod(unrolled.saving, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, result
