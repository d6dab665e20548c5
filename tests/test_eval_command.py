"""`unrolled eval`: a saved model scored on a folder of images next to the baselines."""

from __future__ import annotations

import re

import pytest
import torch
from PIL import Image

import unrolled as ur
from unrolled.apps.evaluate import _measure, _noise_seed
from unrolled.apps.train_config import default_config, load_config_file, merge
from unrolled.apps.train_setup import build_experiment
from unrolled.cli import main
from unrolled.physics.spec import blur_spec, physics_from_spec


def _folder(tmp_path, n=2, size=40):
    folder = tmp_path / "photos"
    folder.mkdir(parents=True)
    for i in range(n):
        x = ur.data.DeadLeaves(size, 3, n, seed=7)[i]
        img = (x.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        Image.fromarray(img).save(folder / f"img{i}.png")
    return folder


def _model_file(tmp_path):
    torch.manual_seed(0)
    model = ur.unfolded.HQS(
        layers=2,
        denoiser=ur.models.DnCNN(3, 3, depth=2, features=4),
        fidelity=ur.L2(solver=ur.CG(max_iter=50, tol=1e-6)),
    )
    spec = blur_spec(1.0, noise_sigma=0.05)
    return ur.save(model, tmp_path / "m.pt", physics=spec), model, spec


def test_eval_scores_the_folder_and_saves_pngs(tmp_path, capsys):
    path, model, spec = _model_file(tmp_path)
    folder = _folder(tmp_path)
    out = tmp_path / "recon"
    code = main(
        ["eval", "--model", str(path), "--data", f"folder:{folder}", "--validation",
         "deadleaves", "--save", str(out)]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0
    for label in ("normalised adjoint", "Tikhonov", "smooth LS", "trained model"):
        assert label in printed
    # the baselines' weights are picked on images of the scored images' size, or on a
    # validation folder's whole images where those are smaller
    assert "picked on 40x40 crops of deadleaves" in printed
    small = _folder(tmp_path / "small", size=24)
    assert main(["eval", "--model", str(path), "--data", f"folder:{folder}",
                 "--validation", f"folder:{small}"]) == 0  # fmt: skip
    assert f"picked on 24x24 crops of folder:{small}" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["img0.png", "img1.png"]
    # The model's whole-image PSNR, recomputed by hand with the same noise draws.
    physics = physics_from_spec(spec)
    values = []
    for i in range(2):
        x = ur.data.ImageFolder(folder, train=False)[i]
        y = _measure(physics, x.unsqueeze(0), _noise_seed(0, f"img{i}"))
        with torch.no_grad():
            values.append(ur.evaluation.psnr(model(y, physics), x.unsqueeze(0)))
    expected = float(torch.cat(values).double().mean())
    row = next(line for line in printed.splitlines() if line.startswith("trained model"))
    assert float(re.findall(r"(-?\d+\.\d+) dB", row)[0]) == round(expected, 2)


def test_eval_refuses_bad_inputs_in_one_line(tmp_path, capsys):
    path, _, _ = _model_file(tmp_path)
    assert main(["eval", "--model", str(tmp_path / "none.pt")]) == 2
    assert "no such file" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["eval", "--model", str(path), "--data", f"folder:{empty}"]) == 2
    err = capsys.readouterr().err
    assert "no image files" in err and err.count("\n") == 1


OPERATORS = {
    "blur": ur.physics.Blur,
    "inpainting": ur.physics.Inpainting,
    "downsampling": ur.physics.Downsampling,
    "compressed_sensing": ur.physics.CompressedSensing,
    "mri": ur.physics.MRI,
    "multicoil_mri": ur.physics.MultiCoilMRI,
}


@pytest.mark.parametrize("operator", OPERATORS)
def test_train_then_eval_each_operator(operator, tmp_path, capsys):
    """``unrolled train --operator X`` runs two steps and saves a model whose file names
    its measurement; ``unrolled eval`` rebuilds that measurement and scores the model."""
    out = tmp_path / "run"
    argv = ["train", "--operator", operator, "--img-size", "16", "--layers", "2",
            "--depth", "2", "--features", "4", "--num-images", "4", "--eval-images", "0",
            "--batch-size", "2", "--max-steps", "2", "--max-iter", "5", "--blur-sigma", "1.0",
            "--device", "cpu", "--set", "train.progress=false", "--set", "train.plots=false",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    assert "done: 2 steps" in capsys.readouterr().out
    saved = ur.saving.load_file(out / "last.pt")
    physics = physics_from_spec(dict(saved.physics), (16, 16))
    assert type(physics) is OPERATORS[operator]
    assert physics.noise is not None and physics.noise.sigma == pytest.approx(0.05)
    # The file records the whole measurement: rebuilt from it, the operator is the one
    # the run trained with (same kernel, mask, matrix or coil maps).
    config = default_config()
    merge(config, load_config_file(out / "config.toml"))
    trained = build_experiment(config)["physics"]
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(5))
    if operator in ("mri", "multicoil_mri"):
        x = torch.polar(x, 2 * x.flip(-1))
    torch.testing.assert_close(physics.A(x), trained.A(x), rtol=0, atol=0)

    folder = _folder(tmp_path, size=24)
    code = main(["eval", "--model", str(out / "last.pt"), "--data", f"folder:{folder}",
                 "--validation", "deadleaves"])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0
    assert f"physics: {saved.physics['operator']} (" in printed
    row = next(line for line in printed.splitlines() if line.startswith("trained model"))
    full, determined = (float(v) for v in re.findall(r"(-?\d+\.\d+) dB", row)[:2])
    # An untrained reconstruction of [0, 1] images still lands in a plausible range.
    assert 3.0 < full < 60.0 and 3.0 < determined < 60.0


def test_eval_can_set_the_ensemble(tmp_path, capsys):
    path, model, spec = _model_file(tmp_path)
    folder = _folder(tmp_path)
    args = ["eval", "--model", str(path), "--data", f"folder:{folder}", "--validation",
            "deadleaves"]  # fmt: skip
    assert main([*args, "--ensemble", "dihedral"]) == 0
    printed = capsys.readouterr().out
    assert f"{path} (ensemble: dihedral) on 2 image(s)" in printed
    # the trained model's row is the model averaged over the eight transforms
    model.ensemble = "dihedral"
    model.eval()
    physics = physics_from_spec(spec)
    values = []
    for i in range(2):
        x = ur.data.ImageFolder(folder, train=False)[i].unsqueeze(0)
        y = _measure(physics, x, _noise_seed(0, f"img{i}"))
        with torch.no_grad():
            values.append(ur.evaluation.psnr(model(y, physics), x))
    expected = float(torch.cat(values).double().mean())
    row = next(line for line in printed.splitlines() if line.startswith("trained model"))
    assert float(re.findall(r"(-?\d+\.\d+) dB", row)[0]) == round(expected, 2)
    with pytest.raises(SystemExit) as exit_:  # argparse's own refusal of a bad choice
        main([*args, "--ensemble", "turns"])
    assert exit_.value.code == 2
    assert "--ensemble: invalid choice: 'turns'" in capsys.readouterr().err
