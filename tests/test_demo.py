"""`unrolled demo`: the command end to end (subprocess), and the memory ordering it reports."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import unrolled as ur
from unrolled.apps.complex_images import ComplexImages
from unrolled.apps.demo import DemoConfig, run_demo
from unrolled.apps.demo.config import Mode, parse_modes
from unrolled.apps.demo.experiment import build_data, build_model, build_physics, initial_state
from unrolled.apps.demo.memory import measure_step
from unrolled.models import ComplexDenoiser

SRC = str(Path(__file__).resolve().parents[1] / "src")
MODES = ("unroll", "implicit", "implicit+ckpt")
TINY = [
    "--img-size", "16", "--num-images", "8", "--num-eval", "4", "--batch-size", "4",
    "--epochs", "1", "--depth", "3", "--features", "8", "--layers", "2",
    "--blur-sigma", "1.0", "--data", "deadleaves", "--threads", "1", "--no-progress",
    "--eval-size", "24",
]  # fmt: skip


def _run_cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "unrolled", "demo", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def _assert_png(path: Path) -> None:
    assert path.is_file(), path
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.verify()  # a truncated or corrupt file raises here
    with Image.open(path) as im:
        assert im.size[0] > 100 and im.size[1] > 100


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    proc = _run_cli(*TINY, "--out", str(out))
    return proc, out


def test_cli_exits_cleanly_and_writes_its_files(cli_run):
    proc, out = cli_run
    assert proc.returncode == 0, proc.stderr
    for name in ("loss.png", "reconstructions.png"):
        _assert_png(out / name)
    # The table names every run and the profiler's start/stop chatter is not in the output.
    for mode in MODES:
        assert mode in proc.stdout
    assert "profiler_start" not in proc.stdout + proc.stderr


def test_cli_report_fields(cli_run):
    proc, out = cli_run
    report = json.loads((out / "report.json").read_text())
    assert report["reference"] == "unroll"
    assert report["config"]["img_size"] == 16 and report["config"]["epochs"] == 1
    assert list(report["modes"]) == list(MODES)
    steps = 2  # 8 images / batch 4, one epoch
    for name, m in report["modes"].items():
        assert m["time_per_iter_s"] > 0
        assert len(m["times_s"]) == steps and all(t > 0 for t in m["times_s"])
        assert len(m["loss"]) == steps and all(math.isfinite(v) for v in m["loss"])
        mem = m["memory"]
        assert mem["peak_bytes"] > 0 and mem["saved_bytes"] > 0
        # Each reduction is the reference's bytes over this run's, as measured.
        ref_mem = report["modes"]["unroll"]["memory"]
        assert mem["peak_reduction"] == pytest.approx(ref_mem["peak_bytes"] / mem["peak_bytes"])
        assert mem["saved_reduction"] == pytest.approx(ref_mem["saved_bytes"] / mem["saved_bytes"])
        assert m["cg"]["forward"] >= 1
        # unroll differentiates through the iterations: no backward solve; implicit: one
        # backward solve per prox, to the same tolerance, so at least one iteration.
        assert (m["cg"]["backward"] == 0) == (name == "unroll")
        for key in ("before", "after"):
            scores = m["scores"][key]
            assert set(scores) == {"psnr", "psnr_determined", "ssim"}
            assert all(math.isfinite(v) for v in scores.values())
        assert len(m["learned"]["stepsize"]) == 2 and len(m["learned"]["sigma"]) == 2
    ref = report["modes"]["unroll"]
    for name in MODES[1:]:
        m = report["modes"][name]
        # The reported difference is that of the two printed loss curves.
        diffs = [abs(a - b) for a, b in zip(m["loss"], ref["loss"], strict=True)]
        assert m["loss_diff_vs_reference"]["max_abs"] == pytest.approx(max(diffs))
        # Implicit keeps one point per prox for backward, unroll every CG iterate.
        if name.startswith("implicit"):
            assert m["memory"]["saved_reduction"] > 1
        # Same weights, batch and noise: the first forward pass is the same computation
        # whatever the backward mode, so the first losses are bit-identical.
        assert m["loss"][0] == ref["loss"][0]
        # After one Adam step (whose first update is lr * sign(grad), elementwise) the runs
        # can only part where a gradient component changes sign between modes; the
        # gradients agree to CG's float32 accuracy, so the losses agree to far better than
        # 1e-3 relative.
        assert m["loss_diff_vs_reference"]["mean_rel"] < 1e-3
    assert report["files"]["report"].endswith("report.json")
    # The held-out comparison: every baseline, and every saved model, measured alike.
    quality = report["quality"]
    assert set(quality["baselines"]) >= {"normalised adjoint"}
    assert quality["best_baseline"] in quality["baselines"]
    assert list(quality["models"]) == list(MODES)
    assert "vs best baseline" in proc.stdout and "normalised adjoint" in proc.stdout


def test_saved_models_reproduce_the_reported_scores(cli_run):
    """``ur.load`` of a demo file and ``model(y, physics)`` alone give the numbers the demo
    printed (same held-out images and noise: the Trainer's evaluation seeds)."""
    from unrolled.apps.demo.experiment import build_data, build_physics
    from unrolled.train import Trainer, make_loader

    proc, out = cli_run
    report = json.loads((out / "report.json").read_text())
    cfg = DemoConfig.from_dict(report["config"])
    _, eval_set, _ = build_data(cfg)
    loader = make_loader(eval_set, cfg.batch_size, shuffle=False)
    for mode in MODES:
        model = ur.load(out / f"{mode}.pt")
        trainer = Trainer(
            model,
            build_physics(cfg),
            [torch.zeros(1)],
            eval_data=loader,
            seed=cfg.seed,
            progress=False,
            tensorboard=False,
            baselines=None,
        )
        scores = trainer.evaluate()
        for key in ("psnr", "psnr_determined", "ssim"):
            assert scores[key] == pytest.approx(report["quality"]["models"][mode][key], abs=1e-9)


def test_cli_rejects_an_image_smaller_than_the_blur_kernel(tmp_path, capsys):
    # sigma 2.5 -> a 17x17 kernel: valid padding leaves nothing of a 16x16 image. Run in
    # process (the same entry point as the console script) to spare an interpreter start.
    from unrolled.cli import main

    code = main(["demo", "--img-size", "16", "--data", "deadleaves", "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "img_size" in err and "17x17" in err
    assert not (tmp_path / "report.json").exists()


def test_cli_rejects_a_size_the_downsampling_does_not_divide(tmp_path, capsys):
    # 3x: a 11x11 anti-aliasing kernel leaves 6x6 of a 16x16 image, divisible by 3; the
    # held-out 20x20 leaves 10x10, which is not.
    from unrolled.cli import main

    args = ["demo", "--physics", "downsampling", "--factor", "3", "--img-size", "16"]
    code = main([*args, "--eval-size", "20", "--data", "deadleaves", "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("unrolled demo: error: eval_size:") and "10" in err
    assert not (tmp_path / "report.json").exists()


def _small_config(**changes) -> DemoConfig:
    values = dict(
        device="cpu",
        img_size=20,
        num_images=4,
        num_eval=2,
        batch_size=2,
        epochs=1,
        layers=2,
        depth=3,
        features=8,
        blur_sigma=1.0,
        data="deadleaves",
        progress=False,
    )
    values.update(changes)
    return DemoConfig(**values).resolved()


def _peaks(cfg: DemoConfig) -> dict[str, dict]:
    physics = build_physics(cfg)
    state = initial_state(cfg)
    train, _, _ = build_data(cfg)
    x = torch.stack([train[i] for i in range(cfg.batch_size)])
    y = physics(x)
    result = {}
    for mode in cfg.modes:
        model = build_model(cfg, mode)
        model.load_state_dict(state)
        result[mode.name] = measure_step(model, physics, x, y, "cpu")
    return result


def test_peak_memory_ordering_blur():
    # Unroll keeps every CG iterate of every layer; implicit keeps one point per prox, so
    # less; layer checkpointing keeps only the layers' inputs plus one layer's activations
    # at a time, so less again. (Stepsize 10: ~15 CG iterations per solve.)
    peaks = _peaks(_small_config(stepsize=10.0))
    unroll, implicit, ckpt = (peaks[m] for m in MODES)
    assert implicit["peak_bytes"] < unroll["peak_bytes"]
    assert ckpt["peak_bytes"] < implicit["peak_bytes"]
    assert implicit["saved_bytes"] < unroll["saved_bytes"]
    assert ckpt["saved_bytes"] < implicit["saved_bytes"]
    # All three solved the same systems (same weights, same input).
    assert unroll["cg_forward"] == implicit["cg_forward"] == ckpt["cg_forward"] > 1


def test_run_demo_mri_in_process(tmp_path):
    cfg = _small_config(
        physics="mri", img_size=16, coils=4, stepsize=10.0, num_images=4, out=str(tmp_path)
    )
    report = run_demo(cfg, echo=lambda *a: None)
    # "mri" has always meant multi-coil MRI in the demo: it is recorded under that name.
    assert report["config"]["physics"] == "multicoil_mri"
    assert list(report["modes"]) == list(MODES)
    for m in report["modes"].values():
        assert math.isfinite(m["scores"]["after"]["psnr"]) and m["cg"]["forward"] > 1
    # The memory ordering holds for complex multi-coil data too.
    unroll, implicit, ckpt = (report["modes"][m]["memory"]["peak_bytes"] for m in MODES)
    assert ckpt < implicit < unroll
    assert report["modes"]["implicit"]["memory"]["peak_reduction"] > 1
    _assert_png(tmp_path / "reconstructions.png")
    _assert_png(tmp_path / "loss.png")


# Inpainting, compressed sensing and single-coil MRI have a closed-form data step; 2x
# downsampling with valid padding is solved by CG (7x7 anti-aliasing kernel: a 16x16 image
# leaves 10x10, divisible by 2).
CLOSED_FORM = {
    "inpainting": True,
    "downsampling": False,
    "compressed_sensing": True,
    "singlecoil_mri": True,
}


@pytest.mark.parametrize("physics", sorted(CLOSED_FORM))
def test_run_demo_every_physics(physics, tmp_path):
    cfg = _small_config(physics=physics, img_size=16, eval_size=16, out=str(tmp_path))
    report = run_demo(cfg, echo=lambda *a: None)
    assert report["config"]["physics"] == physics
    assert list(report["modes"]) == list(MODES)
    ref = report["modes"]["unroll"]
    for name, m in report["modes"].items():
        assert len(m["loss"]) == 2 and all(math.isfinite(v) for v in m["loss"])
        assert m["time_per_iter_s"] > 0 and m["memory"]["peak_bytes"] > 0
        assert math.isfinite(m["scores"]["after"]["psnr"])
        # Same weights, batch and noise: the first forward pass is the same computation.
        assert m["loss"][0] == ref["loss"][0]
        if CLOSED_FORM[physics]:
            assert m["cg"]["forward"] == 0 and m["cg"]["backward"] == 0
        else:
            assert m["cg"]["forward"] >= 1
            assert (m["cg"]["backward"] == 0) == (name == "unroll")
    notes = report["notes"]
    assert any("closed form" in n for n in notes) == CLOSED_FORM[physics]
    # No shipped weights for this measurement: stage B is skipped, and the report says so.
    assert report["finetuned"] == {}
    assert physics in report["saved_models"]["finetune_skipped"]
    assert any(n.startswith("no fine-tuning") for n in notes)
    assert list(report["quality"]["models"]) == list(MODES)
    _assert_png(tmp_path / "reconstructions.png")
    _assert_png(tmp_path / "loss.png")


def test_complex_images_and_denoiser():
    base = ur.data.DeadLeaves(12, 3, 2, seed=0)
    images = ComplexImages(base, seed=3)
    x = images[1]
    assert x.dtype == torch.complex64 and x.shape == (1, 12, 12)
    # The magnitude is the grey level; the same item is the same every time.
    torch.testing.assert_close(x.abs(), base[1].mean(0, keepdim=True), rtol=1e-5, atol=1e-6)
    assert torch.equal(images[1], x)
    assert x.angle().std() > 0.05  # really complex, not a constant phase

    class Scale(torch.nn.Module):  # acts on (real, imag) channels as a known linear map
        def forward(self, z, sigma):
            return torch.cat([2 * z[:, :1] - z[:, 1:], z[:, :1] + 3 * z[:, 1:]], dim=1)

    z = torch.randn(2, 1, 5, 5, dtype=torch.complex64)
    out = ComplexDenoiser(Scale())(z, 0.1)
    expected = torch.complex(2 * z.real - z.imag, z.real + 3 * z.imag)
    torch.testing.assert_close(out, expected)
    with pytest.raises(ValueError, match="x: expected a complex tensor"):
        ComplexDenoiser(Scale())(z.real, 0.1)


def test_config_errors_name_the_argument():
    assert [m.name for m in parse_modes("unroll, implicit+ckpt")] == ["unroll", "implicit+ckpt"]
    assert parse_modes("checkpoint") == (Mode("checkpoint"),)
    with pytest.raises(ValueError, match="modes: expected names among"):
        parse_modes("implicit+layers")
    with pytest.raises(ValueError, match="modes: expected distinct"):
        parse_modes("unroll,unroll")
    with pytest.raises(ValueError, match="physics: expected one of"):
        DemoConfig(physics="ct")
    assert DemoConfig(physics="mri").physics == "multicoil_mri"
    with pytest.raises(ValueError, match=r"keep: expected a number in \(0, 1\], got 1.5"):
        DemoConfig(keep=1.5)
    with pytest.raises(ValueError, match="factor: expected an integer >= 1, got 0"):
        DemoConfig(factor=0)
    with pytest.raises(ValueError, match="img_size: expected an integer >= 1, got 0"):
        DemoConfig(img_size=0)
    with pytest.raises(ValueError, match="data: expected one of"):
        DemoConfig(data="imagenet")
    with pytest.raises(ValueError, match="lr: expected a finite number > 0"):
        DemoConfig(lr=-1.0)
    with pytest.raises(ValueError, match="ensemble: expected one of 'none', 'rotations'"):
        DemoConfig(ensemble="flips")
    # the setting reaches the model; "none" is no ensemble
    assert build_model(DemoConfig(ensemble="dihedral"), Mode("implicit")).ensemble == "dihedral"
    assert build_model(DemoConfig(ensemble="none"), Mode("implicit")).ensemble is None
    cfg = DemoConfig(device="cpu").resolved()
    assert (cfg.img_size, cfg.num_images, cfg.batch_size) == (32, 64, 8)
    assert DemoConfig.from_dict(cfg.to_dict()) == cfg
